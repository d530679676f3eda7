"""Triton finalizer: one program per row turns packed statistics into per-token rewards and the
discounted sum (float64 accumulation, fixed order). Writes every element of both outputs."""

from __future__ import annotations

import torch

from ..._core.layout import ResponseLayout
from .runtime import Launch, tl, triton


@triton.jit
def finalize_kernel(
    chosen_ptr, lse_ptr,  # (N,) fp32 packed statistics
    starts_ptr, prompt_len_ptr, lengths_ptr,  # (B,) int64 (starts: B + 1)
    weights_ptr,  # (T,) fp64 discount weights max(gamma**k, beta)
    rewards_ptr, per_token_ptr,  # (B,), (B, T) contiguous
    seq_len, terminal,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    start = tl.load(starts_ptr + row)
    prompt = tl.load(prompt_len_ptr + row)
    count = tl.load(lengths_ptr + row) - prompt
    acc = tl.zeros((BLOCK,), tl.float64)
    for t0 in range(0, seq_len, BLOCK):
        t = t0 + tl.arange(0, BLOCK).to(tl.int64)
        k = t - prompt
        in_response = (k >= 0) & (k < count)
        chosen = tl.load(chosen_ptr + start + k, mask=in_response, other=0.0)
        next_lse = tl.load(lse_ptr + start + k + 1, mask=in_response & (k + 1 < count), other=terminal)
        reward = tl.where(in_response, chosen - next_lse, 0.0)
        weight = tl.load(weights_ptr + k, mask=in_response, other=0.0)
        acc += weight * reward.to(tl.float64)
        tl.store(per_token_ptr + row * seq_len + t, reward, mask=t < seq_len)
    tl.store(rewards_ptr + row, tl.sum(acc, axis=0))


def plan(
    chosen: torch.Tensor,
    lse: torch.Tensor,
    layout: ResponseLayout,
    weights: torch.Tensor,
    terminal: float,
    rewards: torch.Tensor,
    per_token: torch.Tensor,
) -> Launch:
    return Launch(finalize_kernel, (layout.batch,),
                  (chosen, lse, layout.starts, layout.prompt_len, layout.lengths, weights, rewards, per_token,
                   layout.seq_len, terminal),
                  dict(BLOCK=256))


def finalize_rewards(
    chosen: torch.Tensor,
    lse: torch.Tensor,
    layout: ResponseLayout,
    weights: torch.Tensor,
    terminal: float,
    rewards: torch.Tensor,
    per_token: torch.Tensor,
) -> None:
    """Fill ``rewards`` (B,) and ``per_token`` (B, T), fp32 and contiguous."""
    if layout.batch == 0:
        return
    plan(chosen, lse, layout, weights, terminal, rewards, per_token).run(chosen.device)
