"""Per-position statistics, one module per backend, all with the same contract:

``chosen_and_lse(hidden (M, D), weight (V, D), rows (N,) int64, targets (N,) int64, transform,
chosen_out (N,), lse_out (N,))`` writes, for each position ``n`` with logits ``z = transform(W @ hidden[rows[n]])``,
``chosen_out[n] = z[targets[n]]`` (0 where ``targets[n] < 0``) and ``lse_out[n] = alpha * logsumexp(z / alpha)``.
"""

from __future__ import annotations

import importlib

import torch

from .._triton import HAS_TRITON, require_triton
from ..transform import LogitTransform

BACKENDS = ("auto", "reference", "torch", "triton")
_MODULES = {"reference": "reference", "torch": "torch_tiled", "triton": "triton_fwd"}


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend for ``backend`` on ``device``: 'auto' is triton on CUDA, torch elsewhere."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and HAS_TRITON else "torch"
    if backend == "triton":
        require_triton()
    return backend


def chosen_and_lse(
    backend: str,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    transform: LogitTransform,
    chosen_out: torch.Tensor,
    lse_out: torch.Tensor,
) -> None:
    """Run the concrete ``backend`` (see ``resolve_backend``)."""
    module = importlib.import_module(f".{_MODULES[backend]}", __name__)  # triton modules load only when used
    module.chosen_and_lse(hidden, weight, rows, targets, transform, chosen_out, lse_out)
