"""Triton backward of the statistics, logits-free and deterministic.

Two kernels recompute the logits tiles (with the forward's own ``transformed_logits``) and turn them into
``dL/d(W h + b)`` with the saved logsumexp (``logits_grad``):
- ``grad_hidden_kernel``: one program per token tile walks the whole vocabulary and accumulates its rows of
  dH = G @ W in an fp32 buffer that only it touches;
- ``grad_weight_kernel``: one program per vocab tile walks all tokens and accumulates its rows of dW = G^T @ H
  (and db = column sums of G) likewise.
Each accumulator has a single owner that adds in a fixed order: no atomics, bitwise identical run to run.
Extra memory: fp32 accumulators of dH (N x D) and dW (V x D).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..._core.transform import LogitTransform
from .runtime import kernel_flags, launch, tl, transform_scalars, triton
from .tile import logits_grad, transformed_logits


@triton.jit
def _grad_tile(
    hidden_ptr, weight_ptr, bias_ptr, rows_ptr, targets_ptr, lse_ptr, entropy_ptr,
    grad_chosen_ptr, grad_lse_ptr, grad_entropy_ptr,
    offs_t, t_mask, offs_v, v_mask, dim, stride_hn, stride_hd, stride_wv, stride_wd,
    logit_scale, softcap, inv_temperature,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ENTROPY: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, DOT_IN_FP32: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dL/d(W h + b) for positions ``offs_t`` x vocab rows ``offs_v`` (0 outside the masks), and the row
    pointers of those positions' hidden states."""
    rows = tl.load(rows_ptr + offs_t, mask=t_mask, other=0).to(tl.int64)
    h_rows = hidden_ptr + rows * stride_hn
    targets = tl.load(targets_ptr + offs_t, mask=t_mask, other=-1).to(tl.int64)
    lse = tl.load(lse_ptr + offs_t, mask=t_mask, other=0.0)
    grad_chosen = tl.load(grad_chosen_ptr + offs_t, mask=t_mask, other=0.0)
    grad_lse = tl.load(grad_lse_ptr + offs_t, mask=t_mask, other=0.0)
    entropy = lse  # placeholders when there is no entropy term
    grad_entropy = lse
    if HAS_ENTROPY:
        entropy = tl.load(entropy_ptr + offs_t, mask=t_mask, other=0.0)
        grad_entropy = tl.load(grad_entropy_ptr + offs_t, mask=t_mask, other=0.0)
    z = transformed_logits(
        h_rows, t_mask, weight_ptr + offs_v.to(tl.int64) * stride_wv, v_mask, offs_v, bias_ptr, dim, stride_hd,
        stride_wd, logit_scale, softcap, HAS_BIAS, HAS_SCALE, HAS_SOFTCAP, INPUT_PRECISION, DOT_IN_FP32,
        BLOCK_T, BLOCK_V, BLOCK_D)
    grad = logits_grad(z, offs_v, targets, lse, entropy, grad_chosen, grad_lse, grad_entropy,
                       logit_scale, softcap, inv_temperature, HAS_ENTROPY, HAS_SCALE, HAS_SOFTCAP)
    return tl.where(t_mask[:, None] & v_mask[None, :], grad, 0.0), h_rows


@triton.jit
def grad_hidden_kernel(
    hidden_ptr, weight_ptr, bias_ptr, rows_ptr, targets_ptr, lse_ptr, entropy_ptr,
    grad_chosen_ptr, grad_lse_ptr, grad_entropy_ptr,
    grad_h_ptr,  # (N, D) fp32, zeroed
    num_positions, vocab, dim,
    stride_hn, stride_hd, stride_wv, stride_wd,
    logit_scale, softcap, inv_temperature,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ENTROPY: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, DOT_IN_FP32: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
):
    offs_t = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    t_mask = offs_t < num_positions
    acc_rows = grad_h_ptr + offs_t * dim
    for v0 in range(0, vocab, BLOCK_V):
        offs_v = v0 + tl.arange(0, BLOCK_V)
        v_mask = offs_v < vocab
        grad, h_rows = _grad_tile(
            hidden_ptr, weight_ptr, bias_ptr, rows_ptr, targets_ptr, lse_ptr, entropy_ptr,
            grad_chosen_ptr, grad_lse_ptr, grad_entropy_ptr, offs_t, t_mask, offs_v, v_mask,
            dim, stride_hn, stride_hd, stride_wv, stride_wd, logit_scale, softcap, inv_temperature,
            HAS_BIAS, HAS_SCALE, HAS_SOFTCAP, HAS_ENTROPY, INPUT_PRECISION, DOT_IN_FP32, BLOCK_T, BLOCK_V, BLOCK_D)
        if not DOT_IN_FP32:
            grad = grad.to(weight_ptr.dtype.element_ty)
        w_rows = weight_ptr + offs_v.to(tl.int64) * stride_wv
        for d0 in range(0, dim, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            d_mask = offs_d < dim
            w = tl.load(w_rows[:, None] + offs_d[None, :] * stride_wd, mask=v_mask[:, None] & d_mask[None, :],
                        other=0.0)
            if DOT_IN_FP32:
                w = w.to(tl.float32)
            acc_ptrs = acc_rows[:, None] + offs_d[None, :]
            acc_mask = t_mask[:, None] & d_mask[None, :]
            acc = tl.dot(grad, w, tl.load(acc_ptrs, mask=acc_mask, other=0.0), input_precision=INPUT_PRECISION)
            tl.store(acc_ptrs, acc, mask=acc_mask)
        tl.debug_barrier()  # the next tile reads these rows back, maybe from other threads of this program


@triton.jit
def grad_weight_kernel(
    hidden_ptr, weight_ptr, bias_ptr, rows_ptr, targets_ptr, lse_ptr, entropy_ptr,
    grad_chosen_ptr, grad_lse_ptr, grad_entropy_ptr,
    grad_w_ptr, grad_b_ptr,  # (V, D) fp32 zeroed, (V,) fp32
    num_positions, vocab, dim,
    stride_hn, stride_hd, stride_wv, stride_wd,
    logit_scale, softcap, inv_temperature,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ENTROPY: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, DOT_IN_FP32: tl.constexpr, NEEDS_GRAD_W: tl.constexpr, NEEDS_GRAD_B: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
):
    offs_v = tl.program_id(0) * BLOCK_V + tl.arange(0, BLOCK_V)
    v_mask = offs_v < vocab
    acc_rows = grad_w_ptr + offs_v.to(tl.int64) * dim
    grad_b = tl.zeros((BLOCK_V,), tl.float32)
    for t0 in range(0, num_positions, BLOCK_T):
        offs_t = t0 + tl.arange(0, BLOCK_T).to(tl.int64)
        t_mask = offs_t < num_positions
        grad, h_rows = _grad_tile(
            hidden_ptr, weight_ptr, bias_ptr, rows_ptr, targets_ptr, lse_ptr, entropy_ptr,
            grad_chosen_ptr, grad_lse_ptr, grad_entropy_ptr, offs_t, t_mask, offs_v, v_mask,
            dim, stride_hn, stride_hd, stride_wv, stride_wd, logit_scale, softcap, inv_temperature,
            HAS_BIAS, HAS_SCALE, HAS_SOFTCAP, HAS_ENTROPY, INPUT_PRECISION, DOT_IN_FP32, BLOCK_T, BLOCK_V, BLOCK_D)
        if NEEDS_GRAD_B:
            grad_b += tl.sum(grad, axis=0)
        if NEEDS_GRAD_W:
            grad_t = tl.trans(grad)
            if not DOT_IN_FP32:
                grad_t = grad_t.to(hidden_ptr.dtype.element_ty)
            for d0 in range(0, dim, BLOCK_D):
                offs_d = d0 + tl.arange(0, BLOCK_D)
                d_mask = offs_d < dim
                h = tl.load(h_rows[:, None] + offs_d[None, :] * stride_hd,
                            mask=t_mask[:, None] & d_mask[None, :], other=0.0)
                if DOT_IN_FP32:
                    h = h.to(tl.float32)
                acc_ptrs = acc_rows[:, None] + offs_d[None, :]
                acc_mask = v_mask[:, None] & d_mask[None, :]
                acc = tl.dot(grad_t, h, tl.load(acc_ptrs, mask=acc_mask, other=0.0), input_precision=INPUT_PRECISION)
                tl.store(acc_ptrs, acc, mask=acc_mask)
            tl.debug_barrier()  # the next tile reads these rows back, maybe from other threads of this program
    if NEEDS_GRAD_B:
        tl.store(grad_b_ptr + offs_v, grad_b, mask=v_mask)


@dataclass(frozen=True)
class BackwardConfig:
    block_t: int
    block_v: int
    block_d: int
    num_warps: int = 4
    num_stages: int = 1


def default_config(device: torch.device) -> BackwardConfig:
    if device.type == "cpu":  # the interpreter
        return BackwardConfig(block_t=16, block_v=64, block_d=32)
    return BackwardConfig(block_t=64, block_v=64, block_d=64, num_warps=4, num_stages=2)


def backward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    transform: LogitTransform,
    lse: torch.Tensor,
    entropy: torch.Tensor | None,
    grad_chosen: torch.Tensor,
    grad_lse: torch.Tensor,
    grad_entropy: torch.Tensor | None,
    needs: tuple[bool, bool, bool],
    *,
    config: BackwardConfig | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``StatisticsBackend.backward`` (``endokernel.backends``); gradients in fp32."""
    num_positions = rows.numel()
    vocab, dim = weight.shape
    device = hidden.device
    config = config or default_config(device)
    has_entropy = grad_entropy is not None
    per_position = (lse.float(), entropy.float() if has_entropy else lse.float(), grad_chosen.float(),
                    grad_lse.float(), grad_entropy.float() if has_entropy else lse.float())
    bias = transform.bias if transform.bias is not None else weight
    common = (num_positions, vocab, dim, hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
              *transform_scalars(transform))
    meta = dict(HAS_ENTROPY=has_entropy, **kernel_flags(hidden, transform), BLOCK_T=config.block_t,
                BLOCK_V=config.block_v, BLOCK_D=config.block_d, num_warps=config.num_warps,
                num_stages=config.num_stages)

    grad_h = grad_w = grad_b = None
    if needs[0]:
        grad_h = torch.zeros(num_positions, dim, dtype=torch.float32, device=device)
        if num_positions:
            launch(grad_hidden_kernel, (triton.cdiv(num_positions, config.block_t),), device,
                   hidden, weight, bias, rows, targets, *per_position, grad_h, *common, **meta)
    if needs[1] or needs[2]:
        grad_w = torch.zeros(vocab, dim, dtype=torch.float32, device=device) if needs[1] else None
        grad_b = torch.zeros(vocab, dtype=torch.float32, device=device) if needs[2] else None
        if num_positions:
            launch(grad_weight_kernel, (triton.cdiv(vocab, config.block_v),), device,
                   hidden, weight, bias, rows, targets, *per_position,
                   grad_w if grad_w is not None else lse, grad_b if grad_b is not None else lse, *common,
                   NEEDS_GRAD_W=needs[1], NEEDS_GRAD_B=needs[2], **meta)
    return grad_h, grad_w, grad_b
