"""The reference backend (``StatisticsBackend``), the readable statement of the statistics: materialize the
(N, V) logits, then gather, logsumexp and entropy; the backward applies ``logits_grad`` to the whole
materialized logits.

Memory O(N * V): for tests, small inputs and float64 checks, not for production sizes.
"""

from __future__ import annotations

import torch

from .._core.transform import LogitTransform
from .._core.types import accumulation_dtype
from .logits_grad import logits_grad
from .row_tiles import row_tiled_logits


def _statistics(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                transform: LogitTransform) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(chosen, lse, entropy) of ``h`` (N, D) rows, differentiable in h, weight and bias."""
    logits = row_tiled_logits(h, weight)  # h @ weight.T, whatever the other rows (batch invariant)
    if bias is not None:
        logits = logits + bias
    z = transform.scale_and_cap(logits)
    scaled = z / transform.temperature
    picked = z.gather(1, targets.clamp_min(0)[:, None])[:, 0]
    chosen = torch.where(targets >= 0, picked, torch.zeros_like(picked))
    lse = transform.temperature * torch.logsumexp(scaled, dim=1)
    log_p = torch.log_softmax(scaled, dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)
    return chosen, lse, entropy


def chosen_and_lse(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    transform: LogitTransform,
    chosen_out: torch.Tensor,
    lse_out: torch.Tensor,
    entropy_out: torch.Tensor | None = None,
) -> None:
    """``StatisticsBackend.chosen_and_lse`` (``endokernel.backends``), computed in the accumulation dtype."""
    dtype = accumulation_dtype(hidden.dtype)
    bias = None if transform.bias is None else transform.bias.to(dtype)
    chosen, lse, entropy = _statistics(hidden[rows].to(dtype), weight.to(dtype), bias, targets, transform)
    chosen_out.copy_(chosen)
    lse_out.copy_(lse)
    if entropy_out is not None:
        entropy_out.copy_(entropy)


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
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``StatisticsBackend.backward`` (``endokernel.backends``), on the whole materialized logits;
    the statistics are recomputed here rather than taken from the forward."""
    dtype = accumulation_dtype(hidden.dtype)
    h, w = hidden[rows].to(dtype), weight.to(dtype)
    bias = None if transform.bias is None else transform.bias.to(dtype)
    _, lse, entropy = _statistics(h, w, bias, targets, transform)
    z = transform.apply(row_tiled_logits(h, w))
    grad = logits_grad(z, 0, targets, lse, entropy, grad_chosen.to(dtype), grad_lse.to(dtype),
                       None if grad_entropy is None else grad_entropy.to(dtype), transform)
    return (grad @ w if needs[0] else None, grad.T @ h if needs[1] else None, grad.sum(0) if needs[2] else None)
