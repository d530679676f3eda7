"""Per-position statistics, one module per backend, all with the same contract.

Forward ``chosen_and_lse(hidden (M, D), weight (V, D), rows (N,) int64, targets (N,) int64, transform,
chosen_out (N,), lse_out (N,), entropy_out (N,) or None)`` writes, for each position ``n`` with logits
``z = transform(W @ hidden[rows[n]])`` and temperature ``T``: ``chosen_out[n] = z[targets[n]]`` (0 where
``targets[n] < 0``), ``lse_out[n] = T * logsumexp(z / T)`` and, when asked, the entropy of ``softmax(z / T)``.

Backward ``backward(hidden, weight, rows, targets, transform, lse, entropy, grad_chosen, grad_lse,
grad_entropy, needs)`` returns ``(grad_h (N, D), grad_weight (V, D), grad_bias (V,))``, ``grad_h`` in the
accumulation dtype (float32, or float64 for float64 inputs), the other two in it or already in the weight's and
bias's dtypes (accumulated in it, rounded once), ``None`` where ``needs`` (hidden, weight, bias) is False.
``grad_h`` row ``n`` belongs to ``hidden[rows[n]]``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

from .._cpp import cpp_available, extension
from .._triton import HAS_TRITON, require_triton

BACKENDS = ("auto", "reference", "torch", "triton", "cpp")
_MODULES = {"reference": "reference", "torch": "torch_tiled", "triton": "triton_backend", "cpp": "cpp_backend"}


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend for ``backend`` on ``device``: 'auto' is triton on CUDA, on CPU cpp where it is built
    (measured 1.1-1.2x faster than torch, at the matmul floor: bench/results/amd-epyc-2026-11-30-cpp.json; fwd+bwd
    1.1x: amd-epyc-2026-11-30-cpp-fwd-bwd.json), torch elsewhere."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if device.type == "cuda" and HAS_TRITON:
            return "triton"
        return "cpp" if device.type == "cpu" and cpp_available() else "torch"
    if backend == "triton":
        require_triton()
    if backend == "cpp":
        extension()  # raises with the reason where the kernels are missing
        if device.type != "cpu":
            raise ValueError(f"backend='cpp' runs on CPU tensors, got tensors on {device}")
    return backend


def module(backend: str) -> ModuleType:
    """The module implementing a concrete backend (triton modules load only when used)."""
    return importlib.import_module(f".{_MODULES[backend]}", __name__)
