"""The forward's second kernel: merge the per-split partial statistics in split order (deterministic, no
atomics), and compute each position's chosen logit z[target] = transform(h . W[target]) directly (a D-long
dot per position, negligible next to the N x V x D of the statistics; picking it out of the logits tiles
would cost the statistics kernel's epilogue more registers than the whole online logsumexp)."""

from __future__ import annotations

from .runtime import tl, triton
from .tile import LOG2E, transform


@triton.jit
def combine_splits_kernel(
    part_ptr, stride,  # (3, S, N) fp32: max, sum of exp, sum of exp * (s - max); stride S * N
    hidden_ptr, weight_ptr, bias_ptr, rows_ptr, targets_ptr,
    chosen_ptr, lse_ptr, entropy_ptr,  # (N,) fp32 outputs
    num_positions, num_splits, dim,
    stride_hn, stride_hd, stride_wv, stride_wd,
    logit_scale, softcap, temperature, inv_temperature,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ENTROPY: tl.constexpr,
    BLOCK: tl.constexpr, BLOCK_D: tl.constexpr,
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
    max_ptrs = part_ptr + offs
    sum_ptrs = max_ptrs + stride
    dev_ptrs = sum_ptrs + stride
    for _ in range(num_splits):
        shift = (tl.load(max_ptrs, mask=mask, other=0.0) - top) * inv_temperature
        scale = tl.exp2(shift * LOG2E)
        split_sum = tl.load(sum_ptrs, mask=mask, other=0.0)
        total += split_sum * scale
        if HAS_ENTROPY:
            deviation += scale * (tl.load(dev_ptrs, mask=mask, other=0.0) + shift * split_sum)
        max_ptrs += num_positions
        sum_ptrs += num_positions
        dev_ptrs += num_positions

    total = tl.where(mask, total, 1.0)  # no log of 0 on the tail
    log_total = tl.log(total)
    tl.store(lse_ptr + offs, top + log_total * temperature, mask=mask)
    if HAS_ENTROPY:
        tl.store(entropy_ptr + offs, log_total - deviation / total, mask=mask)

    # row and column offsets 64-bit: row * stride passes 2**31 for large inputs, and so does (D - 1) * stride
    # for a transposed hidden (stride_hd = N) or head (stride_wd = V)
    targets = tl.load(targets_ptr + offs, mask=mask, other=-1).to(tl.int64)
    picked = mask & (targets >= 0)
    h_rows = hidden_ptr + tl.load(rows_ptr + offs, mask=mask, other=0).to(tl.int64) * stride_hn
    w_rows = weight_ptr + tl.where(picked, targets, 0) * stride_wv
    dot = tl.zeros((BLOCK,), tl.float32)
    for d0 in range(0, dim, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        offs_d64 = offs_d.to(tl.int64)
        d_mask = picked[:, None] & (offs_d < dim)[None, :]
        h = tl.load(h_rows[:, None] + offs_d64[None, :] * stride_hd, mask=d_mask, other=0.0).to(tl.float32)
        w = tl.load(w_rows[:, None] + offs_d64[None, :] * stride_wd, mask=d_mask, other=0.0).to(tl.float32)
        dot += tl.sum(h * w, axis=1)
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + targets, mask=picked, other=0.0).to(tl.float32)
    chosen = transform(dot, bias, logit_scale, softcap, HAS_BIAS, HAS_SCALE, HAS_SOFTCAP)
    tl.store(chosen_ptr + offs, tl.where(picked, chosen, 0.0), mask=mask)
