import os

# Triton's interpreter must be chosen before triton is imported: it runs the shipped kernels on CPU tensors.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    """Every buffer the package allocates for results starts as NaN (or the most negative integer), so an element
    a kernel forgets to write shows up in the result."""
    import endokernel._core.alloc

    monkeypatch.setattr(endokernel._core.alloc, "POISON", True)
