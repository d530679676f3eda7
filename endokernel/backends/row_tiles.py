"""Matmuls of one row count, for batch invariance in the backends that multiply with the BLAS.

A multithreaded BLAS (MKL, oneDNN, cuBLAS) splits a product by its shape, so the rounding of one row of
``h @ W.T`` can change with the number of rows beside it: a sequence's statistics would then depend on the batch
it is scored in. Products of a fixed ``ROW_TILE`` rows (the last tile padded with zero rows) are split the same
way whatever the batch, and a row's result is the same bits alone or in any batch (tests/test_contexts.py).
The price, measured on an AVX2-only AMD EPYC, 2 threads, fp32 torch-backend forward (medians of 3): 1.75 s
against 1.49 s at N = 2048, D = 2560, V = 16384 (more, smaller products), 2.7 s against 1.3 s at D = 64, where a
product is too small to pay for its call; a short input pays for up to ROW_TILE - 1 rows of padding.
"""

from __future__ import annotations

import torch

ROW_TILE = 64


def pad_rows(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``x`` (n, ...) with zero rows appended up to a multiple of ``multiple`` rows."""
    return torch.nn.functional.pad(x, (0, 0) * (x.dim() - 1) + (0, -x.shape[0] % multiple))


def row_tiled_logits(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``h @ weight.T`` ((n, D) x (V, D) -> (n, V)) as products of ``ROW_TILE`` rows; differentiable."""
    if h.shape[0] == 0:
        return h @ weight.T
    return torch.cat([tile @ weight.T for tile in pad_rows(h, ROW_TILE).split(ROW_TILE)])[: h.shape[0]]
