"""The backends: each computes the same per-position statistics, behind one contract (``StatisticsBackend``).

``reference`` (materialized logits, the readable statement), ``torch_tiled`` (logits-free torch tiles),
``cpp`` (compiled CPU tile loops, ``csrc/``) and ``triton`` (fused GPU kernels; on CPU tensors under Triton's
interpreter). ``resolve_backend`` turns a user's ``backend=`` into one of them, ``get`` returns its module.
One finalizer (``endokernel._core.finalize``) turns every backend's statistics into rewards.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Protocol

import torch

from .._core.transform import LogitTransform
from .cpp.loader import cpp_available, require_cpp

BACKENDS = ("auto", "reference", "torch", "triton", "cpp")
# triton ships for Linux only; the other backends work without it. Imported only when a Triton kernel runs.
HAS_TRITON = importlib.util.find_spec("triton") is not None


def require_triton() -> None:
    if not HAS_TRITON:
        raise RuntimeError("backend='triton' needs the 'triton' package (Linux); use backend='torch' instead")


class StatisticsBackend(Protocol):
    """What every backend module provides.

    ``chosen_and_lse`` writes, for each position ``n`` with logits ``z = transform(W @ hidden[rows[n]])`` and
    temperature ``T``: ``chosen_out[n] = z[targets[n]]`` (0 where ``targets[n] < 0``), ``lse_out[n] = T *
    logsumexp(z / T)`` and, when ``entropy_out`` is given, the entropy of ``softmax(z / T)``. ``hidden`` is (M, D),
    ``weight`` (V, D) of hidden's dtype, ``rows`` and ``targets`` (N,) int64; outputs (N,) in the accumulation
    dtype (``accumulation_dtype``: float32, float64 for float64 inputs). Every output element is written.

    ``backward`` returns ``(grad_h (N, D), grad_weight (V, D), grad_bias (V,))`` from per-position (N,) ``lse``,
    ``entropy`` (or None) and upstream gradients; ``grad_h`` in the accumulation dtype, row ``n`` belonging to
    ``hidden[rows[n]]``; the other two in it or already in the weight's and bias's dtypes (accumulated in it,
    rounded once); ``None`` where ``needs`` (hidden, weight, bias) is False. Nothing of size N x V is kept.
    """

    def chosen_and_lse(self, hidden: torch.Tensor, weight: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor,
                       transform: LogitTransform, chosen_out: torch.Tensor, lse_out: torch.Tensor,
                       entropy_out: torch.Tensor | None = None) -> None: ...

    def backward(self, hidden: torch.Tensor, weight: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor,
                 transform: LogitTransform, lse: torch.Tensor, entropy: torch.Tensor | None,
                 grad_chosen: torch.Tensor, grad_lse: torch.Tensor, grad_entropy: torch.Tensor | None,
                 needs: tuple[bool, bool, bool],
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]: ...


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend for ``backend`` on ``device``: 'auto' is triton on CUDA (ROCm builds of torch
    report 'cuda' too), on CPU cpp where it is built (measured at the matmul floor and 1.1-1.2x faster than
    torch: bench/results/amd-epyc-2026-11-30-cpp.json), torch elsewhere."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if device.type == "cuda" and HAS_TRITON:
            return "triton"
        return "cpp" if device.type == "cpu" and cpp_available() else "torch"
    if backend == "triton":
        require_triton()
    if backend == "cpp":
        require_cpp()
        if device.type != "cpu":
            raise ValueError(f"backend='cpp' runs on CPU tensors, got tensors on {device}")
    return backend


def get(backend: str) -> StatisticsBackend | ModuleType:
    """The module of a concrete backend; triton's loads only when used (it needs the triton package)."""
    if backend == "reference":
        from . import reference

        return reference
    if backend == "torch":
        from . import torch_tiled

        return torch_tiled
    if backend == "cpp":
        from . import cpp

        return cpp
    if backend == "triton":
        from . import triton

        return triton
    raise ValueError(f"no backend {backend!r}; resolve it first (one of {BACKENDS[1:]})")
