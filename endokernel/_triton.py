"""Where Triton is, and how a kernel is launched on the tensors' device.

On CUDA tensors a kernel runs compiled. On CPU tensors the very same kernel source runs under Triton's
interpreter, so CI tests the shipped kernels on machines without a GPU. Triton builds its interpreter only
when ``TRITON_INTERPRET=1`` is set before it is imported (its own ``tl.zeros``, ``tl.sum``... are kernels too),
so CPU launches need that variable; the test suite sets it in ``conftest.py``.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # triton ships for Linux only; the torch backends work without it
    triton = None
    tl = None

HAS_TRITON = triton is not None


def require_triton() -> None:
    if not HAS_TRITON:
        raise RuntimeError("backend='triton' needs the 'triton' package (Linux); use backend='torch' instead")


def launch(kernel: Any, grid: tuple[int, ...], device: torch.device, *args: Any, **meta: Any) -> None:
    """``kernel[grid](*args, **meta)``; on CPU tensors only under the interpreter."""
    if device.type == "cpu" and not _is_interpreted(kernel):
        raise RuntimeError(
            "backend='triton' on CPU tensors runs the kernels under Triton's interpreter: set the environment "
            f"variable TRITON_INTERPRET=1 before triton is imported (now {os.environ.get('TRITON_INTERPRET')!r}), "
            "or use backend='torch' on CPU"
        )
    kernel[grid](*args, **meta)


def _is_interpreted(kernel: Any) -> bool:
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction)


@functools.cache
def multiprocessor_count(device: torch.device) -> int:
    """SMs on a GPU; on the interpreter a small number so that vocab splitting is still exercised."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4
