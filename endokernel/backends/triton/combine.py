"""Merge the per-split partial statistics of ``forward`` in split order (deterministic, no atomics)."""

from __future__ import annotations

from .runtime import tl, triton
from .tile import LOG2E


@triton.jit
def combine_splits_kernel(
    part_ptr, stride,  # (4, S, N) fp32: max, sum of exp, sum of exp * (s - max), chosen; stride S * N
    chosen_ptr, lse_ptr, entropy_ptr,  # (N,) fp32 outputs
    num_positions, num_splits, temperature, inv_temperature,
    HAS_ENTROPY: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < num_positions

    top = tl.full((BLOCK,), float("-inf"), tl.float32)
    max_ptrs = part_ptr + offs
    for _ in range(num_splits):
        top = tl.maximum(top, tl.load(max_ptrs, mask=mask, other=0.0))
        max_ptrs += num_positions  # pointer arithmetic stays 64-bit for any S * N

    total = tl.zeros((BLOCK,), tl.float32)
    deviation = tl.zeros((BLOCK,), tl.float32)
    chosen = tl.zeros((BLOCK,), tl.float32)
    max_ptrs = part_ptr + offs
    sum_ptrs = max_ptrs + stride
    dev_ptrs = sum_ptrs + stride
    chosen_ptrs = dev_ptrs + stride
    for _ in range(num_splits):
        shift = (tl.load(max_ptrs, mask=mask, other=0.0) - top) * inv_temperature
        scale = tl.exp2(shift * LOG2E)
        split_sum = tl.load(sum_ptrs, mask=mask, other=0.0)
        total += split_sum * scale
        if HAS_ENTROPY:
            deviation += scale * (tl.load(dev_ptrs, mask=mask, other=0.0) + shift * split_sum)
        # only the split holding the target adds a nonzero value, so this sum is exact
        chosen += tl.load(chosen_ptrs, mask=mask, other=0.0)
        max_ptrs += num_positions
        sum_ptrs += num_positions
        dev_ptrs += num_positions
        chosen_ptrs += num_positions

    total = tl.where(mask, total, 1.0)  # no log of 0 on the tail
    log_total = tl.log(total)
    tl.store(lse_ptr + offs, top + log_total * temperature, mask=mask)
    tl.store(chosen_ptr + offs, chosen, mask=mask)
    if HAS_ENTROPY:
        tl.store(entropy_ptr + offs, log_total - deviation / total, mask=mask)
