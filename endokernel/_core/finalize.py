"""From per-position statistics to rewards (shared by every backend) and to log-probs.

Packed entry ``j = starts[b] + k`` holds, for response token ``k`` of row ``b`` (position ``t = P_b + k``),
``chosen[j] = L_{t-1}[x_t]`` and ``lse[j] = V_{t-1}``. So ``r_k = chosen[j] - lse[j + 1]``, with the terminal
value ``alpha * log(vocab_size)`` for the row's last token, and ``R_b = sum_k max(gamma**k, beta) * r_k``,
summed in float64 in a fixed order (deterministic). The torch path is made of differentiable torch operations,
so the distributed layer's autograd runs through it.
"""

from __future__ import annotations

import torch

from .alloc import new_empty
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
    terminal: float | torch.Tensor,
    gamma: float,
    beta: float,
    out_dtype: torch.dtype,
    use_triton: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``chosen``, ``lse``: (N,) packed statistics. Returns rewards (B,) and per-token rewards (B, T) in
    ``out_dtype``, the latter 0 outside responses. ``terminal``: the value after each row's last entry, a float,
    or per row a (B,) tensor (torch path only: a context-parallel chunk's rows continue on the next rank).
    ``use_triton`` runs the Triton finalizer kernel."""
    device = chosen.device
    weights = discount_weights(layout.seq_len, gamma, beta, device)
    rewards = new_empty(layout.batch, dtype=out_dtype, device=device)
    per_token = new_empty((layout.batch, layout.seq_len), dtype=out_dtype, device=device)
    if use_triton:
        from ..backends.triton.finalize import finalize_rewards

        finalize_rewards(chosen, lse, layout, weights, terminal, rewards, per_token)
        return rewards, per_token

    next_lse = torch.empty_like(lse)
    next_lse[:-1] = lse[1:]
    ends = layout.starts[1:]
    nonempty = ends > layout.starts[:-1]
    next_lse[ends[nonempty] - 1] = terminal if isinstance(terminal, float) else terminal[nonempty].to(lse.dtype)
    token_rewards = chosen - next_lse
    positions = layout.rows + 1  # flat index of t = P + k
    per_token.zero_().view(-1)[positions] = token_rewards.to(out_dtype)
    weighted = torch.zeros((layout.batch, layout.seq_len), dtype=torch.float64, device=device)
    weighted.view(-1)[positions] = weights[layout.response_pos] * token_rewards.to(torch.float64)
    rewards.copy_(weighted.sum(dim=1))
    return rewards, per_token


def finalize_logprobs(chosen: torch.Tensor, lse: torch.Tensor, entropy: torch.Tensor | None, layout: ResponseLayout,
                      temperature: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, T) log-probs ``(chosen - lse) / temperature`` and entropies (None without ``entropy``) from packed
    statistics of a ``layout`` whose entry at position t predicts token t + 1; 0 elsewhere."""
    positions, shape = layout.rows + 1, (layout.batch, layout.seq_len)
    logprobs = scatter((chosen - lse) / temperature, positions, shape)
    return logprobs, None if entropy is None else scatter(entropy, positions, shape)


def scatter(values: torch.Tensor, positions: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A (B, T) tensor with ``values`` at flat ``positions``, 0 elsewhere."""
    out = new_empty(shape, dtype=values.dtype, device=values.device)
    out.zero_().view(-1)[positions] = values
    return out
