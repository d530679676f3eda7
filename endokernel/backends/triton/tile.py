"""Triton building blocks shared by the forward and backward kernels: the logits tile of a block of positions
against a block of vocabulary rows, the logit transforms, the online fold of a tile into per-row statistics,
and the gradient of the statistics with respect to a tile. The backward recomputes its tiles with the very
code of the forward, so both see the same logits.

Operands come either through tensor descriptors (``*_DESC``: TMA on sm_90+, a (rows, D) view whose blocks are
zero-padded past its edges) or through pointers (any GPU and the interpreter; masked loads).
"""

from __future__ import annotations

from .runtime import tl, triton

LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)


@triton.jit
def grouped_tile(tile_id, tiles_t, tiles_v, GROUP_T: tl.constexpr):
    """(token tile, vocab tile) of ``tile_id`` in grouped order: ``GROUP_T`` consecutive token tiles walk the
    vocab tiles together, so programs running at the same time share their LM head rows in L2."""
    per_group = GROUP_T * tiles_v
    first_t = (tile_id // per_group) * GROUP_T
    group_t = tl.minimum(tiles_t - first_t, GROUP_T)
    in_group = tile_id % per_group
    return first_t + in_group % group_t, in_group // group_t


@triton.jit
def position_rows(h_src, rows_ptr, t0, num_positions, stride_hn, H_DESC: tl.constexpr, BLOCK_T: tl.constexpr):
    """(offs_t, t_mask, h_rows) of the position tile starting at t0: with a descriptor, its rows are the positions
    themselves; with pointers, each position's hidden row is gathered through rows_ptr (64-bit offsets)."""
    offs_t = t0 + tl.arange(0, BLOCK_T)
    t_mask = offs_t < num_positions
    if H_DESC:
        h_rows = offs_t
    else:
        h_rows = h_src + tl.load(rows_ptr + offs_t, mask=t_mask, other=0).to(tl.int64) * stride_hn
    return offs_t, t_mask, h_rows


@triton.jit
def logits_tile(
    h_src, h_rows, t0, t_mask, w_src, v0, vocab, dim, stride_hd, stride_wv, stride_wd,
    H_DESC: tl.constexpr, W_DESC: tl.constexpr, INPUT_PRECISION: tl.constexpr, DOT_IN_FP32: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Raw logits W h (fp32, BLOCK_T x BLOCK_V) of positions ``t0 ..`` against vocab rows ``v0 ..``.

    ``h_src``: a descriptor of the positions' hidden rows (``H_DESC``) or unused, the rows then being the
    pointers ``h_rows`` (masked by ``t_mask``); ``w_src``: a descriptor of the LM head (``W_DESC``) or its base
    pointer. Rows past the masks hold finite garbage or zeros: callers mask them."""
    offs_v = v0 + tl.arange(0, BLOCK_V)
    if not W_DESC:
        w_rows = w_src + offs_v.to(tl.int64) * stride_wv
    acc = tl.zeros((BLOCK_T, BLOCK_V), tl.float32)
    for d0 in range(0, dim, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        # 64-bit: a transposed hidden or head has stride_hd = N or stride_wd = V, and (D - 1) * V can pass 2**31
        offs_d64 = offs_d.to(tl.int64)
        if H_DESC:
            h = h_src.load([t0, d0])
        else:
            h = tl.load(h_rows[:, None] + offs_d64[None, :] * stride_hd,
                        mask=t_mask[:, None] & (offs_d < dim)[None, :], other=0.0)
        if W_DESC:
            w = w_src.load([v0, d0])
        else:
            w = tl.load(w_rows[:, None] + offs_d64[None, :] * stride_wd,
                        mask=(offs_v < vocab)[:, None] & (offs_d < dim)[None, :], other=0.0)
        if DOT_IN_FP32:  # Triton's interpreter multiplies bf16 bit patterns in tl.dot (triton-lang/triton#11584)
            h = h.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(h, tl.trans(w), acc, input_precision=INPUT_PRECISION)
    return acc


@triton.jit
def transform(raw, bias, logit_scale, softcap, HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr,
              HAS_SOFTCAP: tl.constexpr):
    """z = softcap(scale * (raw + bias)), fp32; ``bias`` broadcasts against ``raw`` (unused without HAS_BIAS)."""
    if HAS_BIAS:
        raw += bias
    if HAS_SCALE:
        raw *= logit_scale
    if HAS_SOFTCAP:
        # softcap * tanh(z / softcap) with tanh = sign * (1 - e) / (1 + e), e = exp(-2|x|): never overflows;
        # the fast division (a few ulp) keeps the epilogue short of registers (IEEE division needs many)
        x = raw * (1.0 / softcap)
        e = tl.exp2(tl.abs(x) * (-2.0 * LOG2E))
        tanh_abs = tl.fdiv(1.0 - e, 1.0 + e)
        raw = softcap * tl.where(x < 0, -tanh_abs, tanh_abs)
    return raw


@triton.jit
def transform_logits(logits, offs_v, v_mask, bias_ptr, logit_scale, softcap,
                     HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SOFTCAP: tl.constexpr):
    """``transform`` of a tile whose columns are the vocab rows ``offs_v``."""
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_v, mask=v_mask, other=0.0).to(tl.float32)[None, :]
    return transform(logits, bias, logit_scale, softcap, HAS_BIAS, HAS_SCALE, HAS_SOFTCAP)


@triton.jit
def column_halves(tile, BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr):
    """A (BLOCK_T, BLOCK_V) tile as its left and right (BLOCK_T, BLOCK_V // 2) halves."""
    return tl.split(tl.permute(tl.reshape(tile, (BLOCK_T, 2, BLOCK_V // 2)), (0, 2, 1)))


@triton.jit
def column_slices(tile, BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, SLICES: tl.constexpr):
    """A (BLOCK_T, BLOCK_V) tile as ``SLICES`` (2 or 4) consecutive (BLOCK_T, BLOCK_V // SLICES) column slices,
    left to right: an epilogue that takes them one at a time needs a fraction of the registers."""
    left, right = column_halves(tile, BLOCK_T, BLOCK_V)
    if SLICES == 2:
        slices = (left, right)
    else:
        tl.static_assert(SLICES == 4, "SLICES must be 2 or 4")
        slices = column_halves(left, BLOCK_T, BLOCK_V // 2) + column_halves(right, BLOCK_T, BLOCK_V // 2)
    return slices


@triton.jit
def fold_tile(z, v_mask, run_max, run_sum, run_dev, inv_temperature, HAS_ENTROPY: tl.constexpr):
    """Fold a transformed tile ``z`` into the running (max, sum of exp, sum of exp * (s - max)) of its rows,
    s = z / T; columns outside ``v_mask`` are skipped. (The chosen logit is not picked here: a per-element
    compare with the targets costs the epilogue more registers than the whole fold; ``combine`` computes it.)"""
    new_max = tl.maximum(run_max, tl.max(tl.where(v_mask[None, :], z, float("-inf")), axis=1))
    centered = (z - new_max[:, None]) * inv_temperature
    exps = tl.where(v_mask[None, :], tl.exp2(centered * LOG2E), 0.0)
    shift = (run_max - new_max) * inv_temperature  # -inf on the first tile, where run_sum is 0
    old_scale = tl.exp2(shift * LOG2E)
    if HAS_ENTROPY:
        shift = tl.where(run_sum > 0, shift, 0.0)
        run_dev = old_scale * (run_dev + shift * run_sum) + tl.sum(exps * centered, axis=1)
    run_sum = run_sum * old_scale + tl.sum(exps, axis=1)
    return new_max, run_sum, run_dev


@triton.jit
def logits_grad(
    z, offs_v, targets, lse, entropy, grad_chosen, grad_lse, grad_entropy, logit_scale, softcap, inv_temperature,
    HAS_ENTROPY: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
):
    """dL / d(W h + b) for a tile ``z`` (BLOCK_T, BLOCK_V) given per-row upstream gradients:
    one-hot * grad_chosen + p * grad_lse - p (log p + H) / T * grad_entropy, with p = softmax(z / T)."""
    log_p = (z - lse[:, None]) * inv_temperature
    p = tl.exp2(log_p * LOG2E)
    grad = p * grad_lse[:, None]
    if HAS_ENTROPY:
        grad -= (grad_entropy * inv_temperature)[:, None] * p * (log_p + entropy[:, None])
    grad += tl.where(offs_v[None, :] == targets[:, None], grad_chosen[:, None], 0.0)
    if HAS_SOFTCAP:
        capped = z * (1.0 / softcap)
        grad *= 1.0 - capped * capped
    if HAS_SCALE:
        grad *= logit_scale
    return grad
