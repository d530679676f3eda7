"""Every Python block of the README and of the docs site runs as written, each page's blocks in order in one
namespace (a page may build on its earlier blocks); the blocks assert their own results. A page marked
``<!-- needs: vllm -->`` runs where vLLM is installed (.ci/vllm) and is skipped elsewhere."""

import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)
PAGES = [page for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
         if BLOCK.search(page.read_text())]


def test_the_readme_and_most_pages_have_python_blocks():
    assert PAGES[0].name == "README.md" and len(PAGES) >= 8


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_python_blocks_run(page, tmp_path, monkeypatch):
    if "<!-- needs: vllm -->" in page.read_text() and importlib.util.find_spec("vllm") is None:
        pytest.skip(f"{page.name} needs vLLM (.ci/vllm runs it)")
    blocks = BLOCK.findall(page.read_text())
    monkeypatch.chdir(tmp_path)  # whatever a block writes stays out of the checkout
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict = {"__name__": "__docs__"}
    for index, block in enumerate(blocks):
        exec(compile(block, f"{page.relative_to(ROOT)} python block {index}", "exec"), namespace)
