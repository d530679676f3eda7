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
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .cpp.backend import ENGINES as ENGINE_CODES
from .cpp.loader import VARIANTS, built_variants, cpp_variant, extension, runnable_variants, usable_variants, why_not
from .cpu_choice import forcing
from .cpu_features import cpu_model, has_native_bf16


@contextlib.contextmanager
def cpu_paths(*, tile_dtype: str | torch.dtype | None = None, engine: str | None = None, isa: str | None = None,
              threads: int | None = None) -> Iterator[None]:
    """Force CPU code paths inside a ``with`` block (None: leave that choice as it is); see the module docstring.

    ``tile_dtype``: 'bfloat16' or 'float32' (or the torch dtypes), the dtype bf16 inputs are multiplied in;
    ``engine``: 'brgemm', 'aten' or 'auto'; ``isa``: 'avx512', 'avx2' or 'default', built and runnable here;
    ``threads``: a thread count for ``torch.set_num_threads``, restored on exit. Applies to the calls made in
    this context (the thread, or asyncio task, that entered it)."""
    if isa is not None:
        why = why_not(isa, torch.backends.cpu.get_cpu_capability(), built_variants())
        if why is not None:
            raise ValueError(f"isa={isa!r}: {why}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    with forcing(tile_dtype, engine, isa):
        threads_before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if threads is not None:
                torch.set_num_threads(threads_before)


def engines(isa: str, tile_dtype: torch.dtype) -> tuple[str, ...]:
    """The C++ tile engines variant ``isa`` can multiply ``tile_dtype`` tiles (fp32 accumulation) with here."""
    brgemm = extension(isa).engine(ENGINE_CODES["auto"], tile_dtype, torch.float32) == ENGINE_CODES["brgemm"]
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
    return [CppPath(isa, tile_dtype, engine) for isa in usable_variants()
            for tile_dtype in (torch.float32, torch.bfloat16) for engine in engines(isa, tile_dtype)]


def describe() -> str:
    """A table of the C++ code paths: which this CPU runs natively, which emulated, which it cannot run."""
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
