"""The logit transforms every backend applies: ``z = (W h + bias) * logit_scale``, then
``softcap * tanh(z / softcap)``; and the temperature of the distribution ``softmax(z / temperature)`` whose
statistics are taken (``alpha`` of the soft value, or the sampling temperature of log-probs)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LogitTransform:
    """Validated transform parameters; ``None`` means the step is skipped."""

    temperature: float = 1.0
    bias: torch.Tensor | None = None  # (V,), any float dtype
    logit_scale: float | None = None
    softcap: float | None = None

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Transformed logits ``z`` (not divided by the temperature), in ``logits``' dtype; (..., V) -> (..., V)."""
        return self.scale_and_cap(logits if self.bias is None else logits + self.bias.to(logits.dtype))

    def scale_and_cap(self, z: torch.Tensor) -> torch.Tensor:
        """The transforms after the bias: for logits whose bias was already added (e.g. gathered ones)."""
        if self.logit_scale is not None:
            z = z * self.logit_scale
        if self.softcap is not None:
            z = self.softcap * torch.tanh(z / self.softcap)
        return z

    def grad_to_raw(self, grad_z: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Chain rule from ``dL/dz`` to ``dL/d(W h + bias)``, given the transformed ``z``; in place on ``grad_z``."""
        if self.softcap is not None:
            grad_z.mul_(1 - (z / self.softcap).square())
        if self.logit_scale is not None:
            grad_z.mul_(self.logit_scale)
        return grad_z

    def folded_scales(self, divisor: float) -> tuple[float, float | None]:
        """(pre, post) for kernels that fold the transforms into their matmul: ``z / divisor = (W h + b) * pre``,
        or with a softcap ``tanh((W h + b) * pre) * post``."""
        scale = self.logit_scale or 1.0
        if self.softcap is None:
            return scale / divisor, None
        return scale / self.softcap, self.softcap / divisor
