"""How a kernel is launched on the tensors' device, and the arguments every statistics kernel takes.

On CUDA tensors a kernel runs compiled. On CPU tensors the very same kernel source runs under Triton's
interpreter, so CI tests the shipped kernels on machines without a GPU. Triton builds its interpreter only
when ``TRITON_INTERPRET=1`` is set before it is imported (its own ``tl.zeros``, ``tl.sum``... are kernels too),
so CPU launches need that variable; the test suite sets it in ``conftest.py``.

A compiled kernel launches on the current CUDA device and its current stream (Triton reads both at launch), so
``Launch.run`` makes the tensors' device current first (``on_device``): a model on cuda:1 while cuda:0 is
current then runs on cuda:1, on torch's current stream there, ordered with torch's own work.

Launchers first build a ``Launch`` (kernel, grid, arguments, constexprs and options) from tensors and facts
about the device, then run it: the compile report (``report.py``) builds the very same ``Launch`` from meta
tensors for any target and compiles it ahead of time.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from typing import Any, ContextManager

import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget

from ..._core.transform import LogitTransform

try:  # host-side tensor descriptors (TMA on sm_90+): Triton >= 3.4
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - older Triton: the pointer kernels only
    TensorDescriptor = None

__all__ = ["COMPILE_OPTIONS", "GPUTarget", "Launch", "Operands", "contiguous_row_start", "device_target",
           "kernel_flags", "multiprocessor_count", "on_device", "operands", "tl", "transform_scalars", "triton"]

COMPILE_OPTIONS = ("num_warps", "num_stages")  # Launch.meta keys that are compile options, not constexprs


@dataclass
class Launch:
    """One kernel launch: ``kernel[grid](*args, **meta)``; ``meta`` holds constexprs and ``COMPILE_OPTIONS``."""

    kernel: Any
    grid: tuple[int, ...]
    args: tuple
    meta: dict

    def run(self, device: torch.device) -> None:
        """Launch on ``device`` (the tensors'); on CPU tensors only under the interpreter."""
        if device.type == "cpu" and not _is_interpreted(self.kernel):
            raise RuntimeError(
                "backend='triton' on CPU tensors runs the kernels under Triton's interpreter: set the environment "
                f"variable TRITON_INTERPRET=1 before triton is imported (now {os.environ.get('TRITON_INTERPRET')!r}),"
                " or use backend='torch' on CPU")
        with on_device(device):
            self.kernel[self.grid](*self.args, **self.meta)


def on_device(device: torch.device) -> ContextManager:
    """``device`` as the current CUDA device while the block runs (Triton launches on the current device and
    stream, i.e. torch's current stream of that device); nothing to do for CPU tensors."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.cuda.device(device)


def _is_interpreted(kernel: Any) -> bool:
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction)


@functools.cache
def _cuda_target(index: int) -> GPUTarget:
    props = torch.cuda.get_device_properties(index)
    if torch.version.hip:  # ROCm builds of torch report device type 'cuda'
        arch = props.gcnArchName.split(":")[0]
        return GPUTarget("hip", arch, 64 if arch.startswith("gfx9") else 32)
    return GPUTarget("cuda", props.major * 10 + props.minor, 32)


def device_target(device: torch.device) -> GPUTarget | None:
    """The compile target of ``device``; None for CPU tensors (the interpreter)."""
    if device.type != "cuda":
        return None
    return _cuda_target(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def multiprocessor_count(device: torch.device) -> int:
    """SMs (CUs on AMD) of a GPU; on the interpreter a small number so that vocab splits and the persistent
    loop are still exercised."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def kernel_flags(dtype: torch.dtype, device_type: str, transform: LogitTransform) -> dict:
    """The constexpr flags every statistics kernel takes, for inputs of ``dtype`` on ``device_type``."""
    # fp32 inputs follow torch's own matmul setting: exact fp32 unless the user opted into TF32
    tf32 = dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32
    return dict(
        HAS_BIAS=transform.bias is not None,
        HAS_SCALE=transform.logit_scale is not None,
        HAS_SOFTCAP=transform.softcap is not None,
        INPUT_PRECISION="tf32" if tf32 else "ieee",
        DOT_IN_FP32=device_type == "cpu" and dtype == torch.bfloat16,
    )


def transform_scalars(transform: LogitTransform) -> tuple[float, float, float]:
    """(logit_scale, softcap, 1 / temperature) as the kernels take them (unused ones are 1)."""
    return float(transform.logit_scale or 1.0), float(transform.softcap or 1.0), 1.0 / transform.temperature


def _descriptor_ready(tensor: torch.Tensor) -> bool:
    """Whether a 2-D tensor can back a tensor descriptor: unit stride along its rows' elements, 16-byte aligned
    base and row stride (so an odd D in bf16 falls back to pointer loads)."""
    size = tensor.element_size()
    return (TensorDescriptor is not None and tensor.dim() == 2 and tensor.stride(1) == 1 and tensor.numel() > 0
            and (tensor.stride(0) * size) % 16 == 0 and tensor.data_ptr() % 16 == 0)


def contiguous_row_start(rows: torch.Tensor) -> int | None:
    """``rows[0]`` when ``rows`` is the range rows[0], rows[0] + 1, ... (one host sync), else None."""
    if rows.numel() == 0:
        return None
    if rows.numel() > 1 and not bool(((rows[1:] - rows[:-1]) == 1).all()):
        return None
    return int(rows[0])


@dataclass(frozen=True)
class Operands:
    """How a kernel reads hidden and the LM head: ``h_src`` / ``w_src`` are tensor descriptors where ``h_desc``
    / ``w_desc``, else the tensors themselves (pointer loads)."""

    h_src: Any
    w_src: Any
    h_desc: bool
    w_desc: bool


def operands(hidden: torch.Tensor, weight: torch.Tensor, num_positions: int, row_start: int | None,
             block_t: int, block_v: int, block_d: int, tma: bool, target: GPUTarget | None) -> Operands:
    """Descriptors when ``tma`` is asked and the target has TMA (or is the interpreter, which runs them too)
    and the layout allows: the head always then, hidden's rows only when the positions are the range
    ``row_start ..`` (``num_positions`` rows)."""
    from .configs import supports_tma

    use = tma and TensorDescriptor is not None and (target is None or supports_tma(target))
    w_desc = use and _descriptor_ready(weight)
    h_view = hidden[row_start : row_start + num_positions] if row_start is not None else None
    h_desc = w_desc and h_view is not None and _descriptor_ready(h_view)
    return Operands(TensorDescriptor.from_tensor(h_view, [block_t, block_d]) if h_desc else hidden,
                    TensorDescriptor.from_tensor(weight, [block_v, block_d]) if w_desc else weight, h_desc, w_desc)
