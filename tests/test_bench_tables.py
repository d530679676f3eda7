"""Every results JSON in bench/results renders as markdown from its own numbers (the docs' tables)."""

import json
import pathlib

import pytest

from endokernel.bench import tables

RESULTS = sorted((pathlib.Path(__file__).parents[1] / "bench" / "results").glob("*.json"))


@pytest.mark.parametrize("path", RESULTS, ids=[p.name for p in RESULTS])
def test_every_results_file_renders(path):
    document = json.loads(path.read_text())
    text = tables.markdown(document)
    assert document["environment"]["device_name"] in text and "|---" in text


def test_sweep_table_shows_the_measured_medians():
    path = next(p for p in RESULTS if json.loads(p.read_text())["kind"] == "sweep")
    document = json.loads(path.read_text())
    text = tables.markdown(document)
    measured = [row for row in document["results"] if row["status"] == "ok"]
    assert measured and all(format(row["median_s"], ".4g") in text for row in measured)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown kind"):
        tables.markdown({"kind": "poem", "environment": {}})
