"""The readable statement of the statistics: materialize the (N, V) logits, then gather and logsumexp.

Memory O(N * V): for tests, small inputs and float64 checks, not for production sizes.
"""

from __future__ import annotations

import torch

from ..transform import LogitTransform


def chosen_and_lse(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    transform: LogitTransform,
    chosen_out: torch.Tensor,
    lse_out: torch.Tensor,
) -> None:
    """Same contract as every backend: see ``endokernel.stats.chosen_and_lse``. Computes in float64 for
    float64 inputs, else in float32."""
    dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    logits = transform.apply(hidden[rows].to(dtype) @ weight.to(dtype).T)
    picked = logits.gather(1, targets.clamp_min(0)[:, None])[:, 0]
    chosen_out.copy_(torch.where(targets >= 0, picked, 0.0))
    lse_out.copy_(transform.alpha * torch.logsumexp(logits / transform.alpha, dim=1))
