"""MkDocs hook: the benchmark results in bench/results/ become part of the site.

A line ``<!-- results: NAME.json -->`` in a page is replaced by that file's tables
(``endokernel.bench.tables.markdown``), so no measured number is typed into the docs by hand; every PNG in
bench/results/ is published under ``results/``, for pages to show as ``![...](../results/NAME.png)``.
"""

from __future__ import annotations

import json
import pathlib
import re

from mkdocs.structure.files import File, Files

from endokernel.bench import tables

RESULTS = pathlib.Path(__file__).resolve().parents[2] / "bench" / "results"
MARKER = re.compile(r"^<!-- results: (?P<name>[\w.-]+\.json) -->$", re.M)


def on_files(files: Files, config) -> Files:
    for path in sorted(RESULTS.glob("*.png")):
        files.append(File(f"results/{path.name}", str(RESULTS.parent), config["site_dir"],
                          config["use_directory_urls"]))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    def table(match: re.Match) -> str:
        path = RESULTS / match["name"]
        if not path.is_file():
            raise FileNotFoundError(f"{page.file.src_path}: no results file bench/results/{match['name']}")
        return tables.markdown(json.loads(path.read_text())) + f"\n\n<small>From `bench/results/{path.name}`.</small>"

    return MARKER.sub(table, markdown)
