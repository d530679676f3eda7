"""Merge the per-split partial statistics of ``triton_fwd`` in split order (deterministic, no atomics)."""

from __future__ import annotations

from .._triton import tl, triton


@triton.jit
def combine_splits_kernel(
    part_max_ptr, part_sum_ptr, part_chosen_ptr,  # (S, N) fp32 each
    chosen_ptr, lse_ptr,  # (N,) fp32 outputs
    num_positions, num_splits,
    log2e_over_alpha,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < num_positions

    top = tl.full((BLOCK,), float("-inf"), tl.float32)
    max_ptrs = part_max_ptr + offs
    for _ in range(num_splits):
        top = tl.maximum(top, tl.load(max_ptrs, mask=mask, other=0.0))
        max_ptrs += num_positions  # pointer arithmetic stays 64-bit for any S * N

    total = tl.zeros((BLOCK,), tl.float32)
    chosen = tl.zeros((BLOCK,), tl.float32)
    max_ptrs = part_max_ptr + offs
    sum_ptrs = part_sum_ptr + offs
    chosen_ptrs = part_chosen_ptr + offs
    for _ in range(num_splits):
        split_max = tl.load(max_ptrs, mask=mask, other=0.0)
        total += tl.load(sum_ptrs, mask=mask, other=0.0) * tl.exp2((split_max - top) * log2e_over_alpha)
        # only the split holding the target adds a nonzero value, so this sum is exact
        chosen += tl.load(chosen_ptrs, mask=mask, other=0.0)
        max_ptrs += num_positions
        sum_ptrs += num_positions
        chosen_ptrs += num_positions

    total = tl.where(mask, total, 1.0)  # no log2(0) on the tail
    tl.store(lse_ptr + offs, top + tl.log2(total) / log2e_over_alpha, mask=mask)
    tl.store(chosen_ptr + offs, chosen, mask=mask)
