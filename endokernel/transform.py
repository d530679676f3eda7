"""The logit transforms every backend applies: ``z = (W h + bias) * logit_scale``, then
``softcap * tanh(z / softcap)``, and the temperature ``alpha`` of the soft value ``alpha * lse(z / alpha)``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LogitTransform:
    """Validated transform parameters; ``None`` means the step is skipped."""

    alpha: float = 1.0
    bias: torch.Tensor | None = None  # (V,), any float dtype
    logit_scale: float | None = None
    softcap: float | None = None

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Transformed logits ``z`` (not divided by alpha), in ``logits``' dtype; (..., V) -> (..., V)."""
        return self.scale_and_cap(logits if self.bias is None else logits + self.bias.to(logits.dtype))

    def scale_and_cap(self, z: torch.Tensor) -> torch.Tensor:
        """The transforms after the bias: for logits whose bias was already added (e.g. gathered ones)."""
        if self.logit_scale is not None:
            z = z * self.logit_scale
        if self.softcap is not None:
            z = self.softcap * torch.tanh(z / self.softcap)
        return z

    @property
    def log2e_over_alpha(self) -> float:
        """Folded scale for kernels that use exp2: ``exp((z - m) / alpha) == exp2((z - m) * log2e_over_alpha)``."""
        return math.log2(math.e) / self.alpha
