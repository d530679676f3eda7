"""Kernel configurations: one deterministic default per (target, dtype, D, and for the forward whether its
epilogue is the lightest) and the candidates autotuning tries.

A target is Triton's ``GPUTarget`` (``backend`` 'cuda' or 'hip', ``arch`` 90 or 'gfx942', ``warp_size``), or
``None`` for Triton's interpreter on CPU tensors. The defaults are configurations the compile report
(``endokernel kernels``) shows compiling without spills on sm_80, sm_90a, sm_100 and gfx942, with Triton 3.6
and 3.9.

Which knobs change the result's bits: ``block_v`` (the vocabulary tiles the online logsumexp folds, and the
backward's G tiles), ``block_d`` (the order of the dot products' partial sums), the forward's
``epilogue_split`` (it folds slices) and the vocab splits (``forward.split_columns``: from the vocabulary,
the GPU's SM count, ``group_t`` and ``programs_per_sm``; never from the number of positions, so a row's results
do not depend on the batch it is in). Those that do not, by construction of the kernels: ``block_t``,
``num_warps``, ``num_stages`` and ``tma`` (each row's arithmetic is the same sequence of operations whichever
block of rows, program or load path computes it), with the splits held fixed; tests/test_triton_kernels.py
checks it under the interpreter, and on a GPU the instruction Triton picks for ``tl.dot`` may still differ with
the block shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from triton.backends.compiler import GPUTarget


@dataclass(frozen=True)
class KernelConfig:
    """Tile sizes and launch options of the forward statistics kernel and the backward G kernel.

    ``tma``: load through tensor descriptors (sm_90+); ``epilogue_split`` (1, 2 or 4): run the epilogue (the
    forward's fold, the backward's G) on that many column slices of the accumulator, so that it needs a fraction
    of the registers; ``group_t``: token tiles per group of the grouped tile order; ``programs_per_sm``: size of
    the forward's persistent grid per multiprocessor."""

    block_t: int
    block_v: int
    block_d: int
    num_warps: int = 4
    num_stages: int = 1
    tma: bool = False
    epilogue_split: int = 1
    group_t: int = 8
    programs_per_sm: int = 1

    def __post_init__(self) -> None:
        for name in ("block_t", "block_v", "block_d", "num_warps", "group_t"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1 or value & (value - 1):
                raise ValueError(f"KernelConfig.{name} must be a power of two, got {value!r}")
        if min(self.block_t, self.block_v, self.block_d) < 16:
            raise ValueError(f"KernelConfig: tl.dot needs block_t, block_v and block_d >= 16, got {self}")
        if self.epilogue_split not in (1, 2, 4) or self.block_v // self.epilogue_split < 16:
            raise ValueError(f"KernelConfig.epilogue_split must be 1, 2 or 4 with slices of >= 16 columns, got {self}")
        if self.num_stages < 1 or self.programs_per_sm < 1:
            raise ValueError(f"KernelConfig: num_stages and programs_per_sm must be >= 1, got {self}")

    def as_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        """e.g. ``128x256x64 w8 s3 tma split2``."""
        text = f"{self.block_t}x{self.block_v}x{self.block_d} w{self.num_warps} s{self.num_stages}"
        return text + (" tma" if self.tma else "") + (f" split{self.epilogue_split}" if self.epilogue_split > 1 else "")


INTERPRETER_CONFIG = KernelConfig(block_t=16, block_v=64, block_d=32)  # few large programs run fastest there

DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def supports_tma(target: GPUTarget | None) -> bool:
    """Tensor descriptors lower to TMA on NVIDIA sm_90 and newer."""
    return target is not None and target.backend == "cuda" and int(target.arch) >= 90


def _is_amd(target: GPUTarget) -> bool:
    return target.backend == "hip"


def forward_default(target: GPUTarget | None, dtype: torch.dtype, dim: int, light: bool = False) -> KernelConfig:
    """The forward's configuration for inputs of ``dtype`` with hidden size ``dim``. ``light``: no bias, scale,
    softcap or entropy and the positions one range of hidden's rows, the lightest epilogue, which leaves the
    registers for a 64 x 256 accumulator per warpgroup on sm_90+ (heavier epilogues spill with it)."""
    if target is None:
        return INTERPRETER_CONFIG
    block_d = 64 if dim >= 64 else 32
    if dtype == torch.float32:  # exact fp32 products run on FMA units: small tiles over many threads
        if _is_amd(target):
            return KernelConfig(64, 64, 32, num_warps=4, num_stages=2)
        # one or two slices: whichever keeps ptxas off the 128-register boundary where it spills a register
        return KernelConfig(64, 64, 16, num_warps=8, num_stages=3, tma=supports_tma(target),
                            epilogue_split=1 if target.arch == 90 else 2)
    if _is_amd(target):
        return KernelConfig(128, 128, block_d, num_warps=8, num_stages=2, epilogue_split=2)
    if supports_tma(target):  # two consumer warpgroups, the epilogue in column slices
        if light:
            return KernelConfig(128, 256, block_d, num_warps=8, num_stages=3, tma=True, epilogue_split=4)
        return KernelConfig(128, 128, block_d, num_warps=8, num_stages=4, tma=True, epilogue_split=2)
    return KernelConfig(128, 128, 32, num_warps=8, num_stages=3, epilogue_split=2)


def backward_default(target: GPUTarget | None, dtype: torch.dtype, dim: int) -> KernelConfig:
    """The backward G kernel's configuration: a GEMM tile with an elementwise epilogue, tiled as the forward
    with a full epilogue (five upstream statistics and the one-hot term per tile)."""
    return forward_default(target, dtype, dim)


def forward_candidates(target: GPUTarget | None, dtype: torch.dtype, dim: int,
                       light: bool = False) -> list[KernelConfig]:
    """What autotuning tries (the default first)."""
    default = forward_default(target, dtype, dim, light)
    if target is None:
        return [default, KernelConfig(32, 64, 32)]
    if dtype == torch.float32:
        others = [replace(default, block_t=32, num_warps=4), replace(default, block_v=128)]
    elif _is_amd(target):
        others = [replace(default, block_d=32, epilogue_split=1), replace(default, block_t=64, num_warps=4),
                  replace(default, block_v=256, block_d=32, epilogue_split=4)]
    elif supports_tma(target):
        wide = forward_default(target, dtype, dim, light=True)
        narrow = forward_default(target, dtype, dim, light=False)
        others = [wide, narrow, replace(wide, num_stages=4), replace(narrow, num_stages=3),
                  replace(wide, block_t=256, block_v=128), replace(wide, programs_per_sm=2)]
    else:
        others = [replace(default, block_d=64 if dim >= 64 else 32), replace(default, block_t=64, num_warps=4),
                  replace(default, block_v=256, epilogue_split=4)]
    return list(dict.fromkeys([default, *others]))


def backward_candidates(target: GPUTarget | None, dtype: torch.dtype, dim: int) -> list[KernelConfig]:
    """What autotuning tries for the backward G kernel (the default first)."""
    default = backward_default(target, dtype, dim)
    if target is None:
        return [default, KernelConfig(32, 64, 32)]
    if dtype == torch.float32:
        others = [replace(default, num_stages=4), replace(default, block_t=32, num_warps=4)]
    elif supports_tma(target):
        others = [replace(default, num_stages=3), replace(default, block_d=2 * default.block_d, num_stages=3),
                  replace(default, block_v=256, num_stages=3, epilogue_split=4)]
    else:
        others = [replace(default, block_d=64 if dim >= 64 else default.block_d),
                  replace(default, block_t=64, num_warps=4)]
    return list(dict.fromkeys([default, *others]))
