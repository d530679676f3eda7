"""From per-position statistics to rewards; shared by every backend.

Packed entry ``j = starts[b] + k`` holds, for response token ``k`` of row ``b`` (position ``t = P_b + k``),
``chosen[j] = L_{t-1}[x_t]`` and ``lse[j] = V_{t-1}``. So ``r_k = chosen[j] - lse[j + 1]``, with the terminal
value ``alpha * log(vocab_size)`` for the row's last token, and ``R_b = sum_k max(gamma**k, beta) * r_k``,
summed in float64 in a fixed order (deterministic).
"""

from __future__ import annotations

import torch

from ._alloc import new_empty
from .layout import ResponseLayout


def discount_weights(length: int, gamma: float, beta: float, device: torch.device) -> torch.Tensor:
    """``max(gamma**k, beta)`` for ``k = 0 .. length - 1``; (length,) float64."""
    k = torch.arange(length, dtype=torch.float64, device=device)
    return torch.pow(gamma, k).clamp_min_(beta)


def finalize(
    chosen: torch.Tensor,
    lse: torch.Tensor,
    layout: ResponseLayout,
    *,
    terminal: float,
    gamma: float,
    beta: float,
    out_dtype: torch.dtype,
    use_triton: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``chosen``, ``lse``: (N,) packed statistics. Returns rewards (B,) and per-token rewards (B, T) in
    ``out_dtype``, the latter 0 outside responses. ``use_triton`` runs the Triton finalizer kernel."""
    device = chosen.device
    weights = discount_weights(layout.seq_len, gamma, beta, device)
    rewards = new_empty(layout.batch, dtype=out_dtype, device=device)
    per_token = new_empty((layout.batch, layout.seq_len), dtype=out_dtype, device=device)
    if use_triton:
        from .triton_finalize import finalize_rewards

        finalize_rewards(chosen, lse, layout, weights, terminal, rewards, per_token)
        return rewards, per_token

    next_lse = torch.empty_like(lse)
    next_lse[:-1] = lse[1:]
    ends = layout.starts[1:]
    next_lse[ends[ends > layout.starts[:-1]] - 1] = terminal  # each non-empty row's last token
    token_rewards = chosen - next_lse
    positions = layout.rows + 1  # flat index of t = P + k
    per_token.zero_().view(-1)[positions] = token_rewards.to(out_dtype)
    weighted = torch.zeros((layout.batch, layout.seq_len), dtype=torch.float64, device=device)
    weighted.view(-1)[positions] = weights[layout.response_pos] * token_rewards.to(torch.float64)
    rewards.copy_(weighted.sum(dim=1))
    return rewards, per_token
