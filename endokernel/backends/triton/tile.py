"""Triton building blocks shared by the forward and backward kernels: one transformed logits tile, and the
gradient of the statistics with respect to it. Recomputing a tile in the backward uses the very code of the
forward, so both see the same logits."""

from __future__ import annotations

from .runtime import tl, triton

LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)


@triton.jit
def transformed_logits(
    h_rows, t_mask, w_rows, v_mask, offs_v, bias_ptr, dim, stride_hd, stride_wd, logit_scale, softcap,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, DOT_IN_FP32: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """z = softcap(scale * (W h + b)) for BLOCK_T rows (pointers ``h_rows``) x BLOCK_V vocab rows
    (pointers ``w_rows``), fp32. Masked rows and columns hold finite garbage: callers mask them."""
    logits = tl.zeros((BLOCK_T, BLOCK_V), tl.float32)
    for d0 in range(0, dim, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        d_mask = offs_d < dim
        h = tl.load(h_rows[:, None] + offs_d[None, :] * stride_hd, mask=t_mask[:, None] & d_mask[None, :], other=0.0)
        w = tl.load(w_rows[None, :] + offs_d[:, None] * stride_wd, mask=d_mask[:, None] & v_mask[None, :], other=0.0)
        if DOT_IN_FP32:  # Triton's interpreter multiplies bf16 bit patterns in tl.dot (triton-lang/triton#11584)
            h = h.to(tl.float32)
            w = w.to(tl.float32)
        logits = tl.dot(h, w, logits, input_precision=INPUT_PRECISION)
    if HAS_BIAS:
        logits += tl.load(bias_ptr + offs_v, mask=v_mask, other=0.0).to(tl.float32)[None, :]
    if HAS_SCALE:
        logits *= logit_scale
    if HAS_SOFTCAP:
        # softcap * tanh(z / softcap) with tanh = sign * (1 - e) / (1 + e), e = exp(-2|x|): never overflows
        x = logits / softcap
        e = tl.exp2(tl.abs(x) * (-2.0 * LOG2E))
        tanh_abs = (1.0 - e) / (1.0 + e)
        logits = softcap * tl.where(x < 0, -tanh_abs, tanh_abs)
    return logits


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
        capped = z / softcap
        grad *= 1.0 - capped * capped
    if HAS_SCALE:
        grad *= logit_scale
    return grad
