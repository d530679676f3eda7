"""The gradient of the per-position statistics with respect to a block of logits, in plain PyTorch; used on
the whole vocabulary by the reference backend and tile by tile by the torch backend (the Triton kernels
restate it in ``triton/tile.py``)."""

from __future__ import annotations

import torch

from .._core.transform import LogitTransform


def logits_grad(
    z: torch.Tensor,
    vocab_offset: int,
    targets: torch.Tensor,
    lse: torch.Tensor,
    entropy: torch.Tensor | None,
    grad_chosen: torch.Tensor,
    grad_lse: torch.Tensor,
    grad_entropy: torch.Tensor | None,
    transform: LogitTransform,
) -> torch.Tensor:
    """dL / d(W h + b) for transformed logits ``z`` (N, v) of vocab rows ``vocab_offset ..``, given per-position
    (N,) statistics and upstream gradients: one-hot * grad_chosen + p * grad_lse - p (log p + H) / T *
    grad_entropy, with p = softmax(z / T) = exp((z - lse) / T). Same dtype as ``z``."""
    temperature = transform.temperature
    log_p = (z - lse[:, None]) / temperature
    grad = log_p.exp()
    if grad_entropy is not None:
        grad *= grad_lse[:, None] - (grad_entropy / temperature)[:, None] * (log_p + entropy[:, None])
    else:
        grad *= grad_lse[:, None]
    hit = (targets >= vocab_offset) & (targets < vocab_offset + z.shape[1])
    grad[hit.nonzero()[:, 0], targets[hit] - vocab_offset] += grad_chosen[hit]
    return transform.grad_to_raw(grad, z)
