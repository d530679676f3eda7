"""How a kernel is launched on the tensors' device, and the arguments every statistics kernel takes.

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
import triton
import triton.language as tl

from ..._core.transform import LogitTransform

__all__ = ["kernel_flags", "launch", "multiprocessor_count", "tl", "transform_scalars", "triton"]


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


def kernel_flags(hidden: torch.Tensor, transform: LogitTransform) -> dict:
    """The constexpr flags every statistics kernel takes."""
    # fp32 inputs follow torch's own matmul setting: exact fp32 unless the user opted into TF32
    tf32 = hidden.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32
    return dict(
        HAS_BIAS=transform.bias is not None,
        HAS_SCALE=transform.logit_scale is not None,
        HAS_SOFTCAP=transform.softcap is not None,
        INPUT_PRECISION="tf32" if tf32 else "ieee",
        DOT_IN_FP32=hidden.device.type == "cpu" and hidden.dtype == torch.bfloat16,
    )


def transform_scalars(transform: LogitTransform) -> tuple[float, float, float]:
    """(logit_scale, softcap, 1 / temperature) as the kernels take them (unused ones are 1)."""
    return float(transform.logit_scale or 1.0), float(transform.softcap or 1.0), 1.0 / transform.temperature
