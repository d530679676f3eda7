"""What the running CPU is and what its matrix units can do (``cpu_paths`` chooses the code paths from it)."""

from __future__ import annotations

import functools


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
