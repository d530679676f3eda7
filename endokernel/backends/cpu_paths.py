"""Which CPU code path runs, and the supported way to force each one, so that every path runs (and is tested) on
any CPU, not only on the kind that would choose it.

Each is chosen from the running CPU unless forced:

- ``tile_dtype``: what the C++ and torch tile loops multiply **bf16 inputs** in: bfloat16 where the CPU has bf16
  units (AVX512-BF16, AMX), float32 elsewhere (emulated bf16 matmuls are ~5x slower). Forcing bfloat16 on a CPU
  without bf16 units runs the same code, its matmuls emulated by oneDNN: slow, correct. Other inputs multiply in
  their own dtype (float16 in float32) whatever is forced.
- ``engine``: what the C++ tile products run on, 'brgemm' (oneDNN's microkernel, where this CPU and torch have
  it) or 'aten' (``at::mm``). float64 inputs always use 'aten'.
- ``isa``: the compiled C++ variant ('avx512', 'avx2', 'default'): any built one this CPU can execute (by
  default the fastest, chosen at import; ``ENDOKERNEL_CPU_ISA`` changes that choice for the process).
- ``threads``: torch's intra-op thread count (``torch.set_num_threads``).

``cpu_paths(...)`` forces them inside a ``with`` block; ``ENDOKERNEL_CPU_TILE_DTYPE`` (bfloat16 / float32) and
``ENDOKERNEL_CPU_ENGINE`` (brgemm / aten) force the first two for a whole process. Every path gives the reference
result up to the rounding of its tile dtype, and the C++ paths are bitwise the same for any thread count.
``endokernel cpu`` lists the paths this CPU runs natively and emulated.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .._core.types import accumulation_dtype
from .cpu_features import cpu_model, has_native_bf16

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
def cpu_paths(*, tile_dtype: str | torch.dtype | None = None, engine: str | None = None, isa: str | None = None,
              threads: int | None = None) -> Iterator[None]:
    """Force CPU code paths inside a ``with`` block (None: leave that choice as it is); see the module docstring.

    ``tile_dtype``: 'bfloat16' or 'float32' (or the torch dtypes), the dtype bf16 inputs are multiplied in;
    ``engine``: 'brgemm', 'aten' or 'auto'; ``isa``: 'avx512', 'avx2' or 'default', built and runnable here;
    ``threads``: a thread count for ``torch.set_num_threads``, restored on exit. Applies to the calls made in
    this context (the thread, or asyncio task, that entered it)."""
    tile_dtype = _tile_dtype(tile_dtype, "tile_dtype")
    engine = _engine(engine, "engine")
    if isa is not None:
        from .cpp import loader

        why = loader.why_not(isa, torch.backends.cpu.get_cpu_capability(), loader.built_variants())
        if why is not None:
            raise ValueError(f"isa={isa!r}: {why}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    now = _forced.get()
    token = _forced.set(_Forced(tile_dtype or now.tile_dtype, engine or now.engine, isa or now.isa))
    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads is not None:
            torch.set_num_threads(threads_before)
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


def engines(isa: str, tile_dtype: torch.dtype) -> tuple[str, ...]:
    """The C++ tile engines variant ``isa`` can multiply ``tile_dtype`` tiles (fp32 accumulation) with here."""
    from .cpp.backend import ENGINES as CODES
    from .cpp.loader import extension

    brgemm = extension(isa).engine(CODES["auto"], tile_dtype, torch.float32) == CODES["brgemm"]
    return ("brgemm", "aten") if brgemm else ("aten",)


@dataclass(frozen=True)
class CppPath:
    """One C++ code path: a variant, the tile dtype of bf16 inputs and a tile engine."""

    isa: str
    tile_dtype: torch.dtype
    engine: str

    @property
    def native(self) -> bool:
        """False where its bf16 tiles are emulated (a CPU without bf16 units)."""
        return self.tile_dtype != torch.bfloat16 or has_native_bf16()

    @property
    def name(self) -> str:
        return f"{self.isa}-{'bf16' if self.tile_dtype == torch.bfloat16 else 'fp32'}-{self.engine}"


def cpp_paths() -> list[CppPath]:
    """Every C++ code path this CPU can execute (built variants it runs x tile dtypes x the engines each has)."""
    from .cpp.loader import usable_variants

    return [CppPath(isa, tile_dtype, engine) for isa in usable_variants()
            for tile_dtype in (torch.float32, torch.bfloat16) for engine in engines(isa, tile_dtype)]


def describe() -> str:
    """A table of the C++ code paths: which this CPU runs natively, which emulated, which it cannot run."""
    from .cpp.loader import VARIANTS, built_variants, cpp_variant, runnable_variants

    lines = [f"CPU: {cpu_model()}; torch capability {torch.backends.cpu.get_cpu_capability()}; bf16 units: "
             f"{'yes' if has_native_bf16() else 'no'}; C++ variants built: {', '.join(built_variants()) or 'none'}; "
             f"default variant here: {cpp_variant()}"]
    runnable = [isa for isa in VARIANTS if isa in built_variants() and isa in runnable_variants()]
    paths = {path.name: path for path in cpp_paths()}
    for isa in VARIANTS:
        for tile in ("fp32", "bf16"):
            for engine in ("brgemm", "aten"):
                path = paths.get(f"{isa}-{tile}-{engine}")
                if path is not None:
                    state = "native" if path.native else "emulated (this CPU has no bf16 units)"
                elif isa not in runnable:
                    state = "not run here (variant not runnable on this CPU, or not built)"
                else:
                    state = "not run here (no brgemm for these tiles on this CPU)"
                lines.append(f"  {isa:>7} {tile} tiles {engine:>6}: {state}")
    return "\n".join(lines)
