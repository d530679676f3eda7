"""The CPU code-path choices the tile loops read (``cpu_paths`` forces them; see ``cpu_paths.py``): the forced
tile dtype, C++ tile engine and ISA variant of the calling context, and the dtype bf16 inputs multiply in. Kept apart
from ``cpu_paths.py`` so the C++ backend can read them without importing what lists its own paths."""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .._core.types import accumulation_dtype
from .cpu_features import has_native_bf16

TILE_DTYPE_VARIABLE = "ENDOKERNEL_CPU_TILE_DTYPE"
ENGINE_VARIABLE = "ENDOKERNEL_CPU_ENGINE"
TILE_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
ENGINES = ("auto", "brgemm", "aten")


@dataclass(frozen=True)
class _Forced:
    tile_dtype: torch.dtype | None = None
    engine: str | None = None
    isa: str | None = None


_NOTHING_FORCED = _Forced()  # frozen: a safe shared default
_forced: contextvars.ContextVar[_Forced] = contextvars.ContextVar("endokernel_cpu_paths",
                                                                  default=_NOTHING_FORCED)  # noqa: B039


def _tile_dtype(value: str | torch.dtype | None, name: str) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype) and value in TILE_DTYPES.values():
        return value
    if isinstance(value, str) and value in TILE_DTYPES:
        return TILE_DTYPES[value]
    raise ValueError(f"{name} must be one of {list(TILE_DTYPES)} (or the torch dtypes), got {value!r}")


def _engine(value: str | None, name: str) -> str | None:
    if value is None or value in ENGINES:
        return value
    raise ValueError(f"{name} must be one of {list(ENGINES)}, got {value!r}")


@contextlib.contextmanager
def forcing(tile_dtype: str | torch.dtype | None = None, engine: str | None = None,
            isa: str | None = None) -> Iterator[None]:
    """Force the tile dtype, engine and ISA variant (None: leave as is) for the calls made in this context;
    ``cpu_paths`` validates ``isa`` and the thread count before entering it."""
    tile_dtype = _tile_dtype(tile_dtype, "tile_dtype")
    engine = _engine(engine, "engine")
    now = _forced.get()
    token = _forced.set(_Forced(tile_dtype or now.tile_dtype, engine or now.engine, isa or now.isa))
    try:
        yield
    finally:
        _forced.reset(token)


def forced_tile_dtype() -> torch.dtype | None:
    """The forced tile dtype of bf16 inputs (``cpu_paths``, else ``ENDOKERNEL_CPU_TILE_DTYPE``), or None."""
    return _forced.get().tile_dtype or _tile_dtype(os.environ.get(TILE_DTYPE_VARIABLE) or None, TILE_DTYPE_VARIABLE)


def forced_engine() -> str:
    """The C++ tile engine asked for (``cpu_paths``, else ``ENDOKERNEL_CPU_ENGINE``, else 'auto')."""
    return _forced.get().engine or _engine(os.environ.get(ENGINE_VARIABLE) or None, ENGINE_VARIABLE) or "auto"


def forced_isa() -> str | None:
    """The C++ variant forced by ``cpu_paths``, or None (the one chosen at import)."""
    return _forced.get().isa


def cpu_matmul_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the CPU tile loops multiply ``dtype`` inputs in (accumulation is fp32 either way)."""
    if dtype == torch.bfloat16:
        forced = forced_tile_dtype()
        if forced is not None:
            return forced
        return torch.bfloat16 if has_native_bf16() else torch.float32
    if dtype == torch.float16:
        return torch.float32
    return dtype


def tile_dtypes(hidden: torch.Tensor, matmul_dtype: torch.dtype | None = None) -> tuple[torch.dtype, torch.dtype]:
    """(accumulation dtype, matmul dtype) of the CPU tile loops for ``hidden``'s dtype; ``matmul_dtype``
    overrides every other choice (the backends' tests use it)."""
    if matmul_dtype is None:
        matmul_dtype = cpu_matmul_dtype(hidden.dtype) if hidden.device.type == "cpu" else hidden.dtype
    return accumulation_dtype(hidden.dtype), matmul_dtype
