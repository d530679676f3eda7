"""Types and dtype rules shared by the public functions, the ops, the backends and the integrations."""

from __future__ import annotations

from typing import NamedTuple

import torch


class TokenStatistics(NamedTuple):
    """Per-position statistics, float32 (float64 for float64 inputs), shaped like the targets."""

    chosen_logit: torch.Tensor  # z[target] after bias / scale / softcap (0 where target < 0)
    lse: torch.Tensor  # alpha * logsumexp(z / alpha)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype statistics, rewards and gradients accumulate in for inputs of ``dtype``: float64 for float64,
    float32 for everything else (bf16 and fp16 included)."""
    return torch.float64 if dtype == torch.float64 else torch.float32
