"""The Python examples of docs/backends/triton.md run as written (offline, on CPU: the Triton kernels under
the interpreter) and check what the page states."""

import pathlib
import re

import pytest

PAGE = pathlib.Path(__file__).parents[1] / "docs" / "backends" / "triton.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", PAGE.read_text(), flags=re.S | re.M)


def test_page_has_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index):
    exec(compile(BLOCKS[index], f"{PAGE.name} python block {index}", "exec"), {})
