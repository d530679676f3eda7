"""What the CPU's matrix units can do, so CPU paths multiply in the fastest dtype that keeps accuracy."""

from __future__ import annotations

import functools

import torch

from .._core.types import accumulation_dtype


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def has_native_bf16() -> bool:
    """True where oneDNN multiplies bf16 in hardware (AMX or AVX512-BF16); elsewhere bf16 is emulated, ~5x slower
    than fp32."""
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


def cpu_matmul_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to multiply ``dtype`` inputs in on this CPU (accumulation is fp32 either way)."""
    if dtype == torch.bfloat16 and has_native_bf16():
        return torch.bfloat16
    if dtype in (torch.bfloat16, torch.float16):
        return torch.float32
    return dtype


def tile_dtypes(hidden: torch.Tensor, matmul_dtype: torch.dtype | None = None) -> tuple[torch.dtype, torch.dtype]:
    """(accumulation dtype, matmul dtype) of the CPU tile loops for ``hidden``'s dtype; ``matmul_dtype``
    overrides the hardware choice (tests use it to run the bf16 path on any CPU)."""
    if matmul_dtype is None:
        matmul_dtype = cpu_matmul_dtype(hidden.dtype) if hidden.device.type == "cpu" else hidden.dtype
    return accumulation_dtype(hidden.dtype), matmul_dtype
