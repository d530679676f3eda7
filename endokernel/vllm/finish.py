"""The caller's side: the pooler's per-position statistics (``wire.py``) turned into rewards, per-token rewards
and log-probs by the package's own finalizer (``endokernel._core.finalize``), the one every backend uses."""

from __future__ import annotations

import math

import torch

from .._core.finalize import finalize, finalize_logprobs
from .._core.layout import ResponseLayout
from ..hf.batching import pad_right
from .wire import CHOSEN, LSE

Rows = list[tuple[list[int], int]]


def _packed(rows: Rows, stats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, ResponseLayout]:
    """Packed chosen and lse (float32, entry ``starts[b] + k`` for response token k of row b) and their layout."""
    for i, ((ids, start), rows_stats) in enumerate(zip(rows, stats)):
        if rows_stats.shape != (len(ids) - start, 2):
            raise ValueError(f"row {i}: statistics of shape {tuple(rows_stats.shape)}, expected "
                             f"({len(ids) - start}, 2)")
    ids, _ = pad_right([ids for ids, _ in rows])
    layout = ResponseLayout.build(ids, [start for _, start in rows], [len(ids) for ids, _ in rows])
    packed = torch.cat([s.float() for s in stats])
    return packed[:, CHOSEN].contiguous(), packed[:, LSE].contiguous(), layout


def rewards_from_statistics(rows: Rows, stats: list[torch.Tensor], *, alpha: float, vocab_size: int,
                            gamma: float, beta: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(B,) float32 rewards and B per-token reward tensors (float32, one per response token) of ``rows``
    (non-empty responses) from their (n - P, 2) statistics; terminal value ``alpha * log(vocab_size)``."""
    if not rows:
        return torch.zeros(0), []
    chosen, lse, layout = _packed(rows, stats)
    rewards, per_token = finalize(chosen, lse, layout, terminal=alpha * math.log(vocab_size), gamma=gamma,
                                  beta=beta, out_dtype=torch.float32, use_triton=False)
    return rewards, [per_token[b, start:len(ids)] for b, (ids, start) in enumerate(rows)]


def logprobs_from_statistics(rows: Rows, stats: list[torch.Tensor], *, temperature: float) -> list[torch.Tensor]:
    """Each response token's log-probability ``log softmax(L_{t-1} / temperature)[x_t]`` (float32, one tensor per
    row) from statistics taken at ``alpha = temperature``."""
    if not rows:
        return []
    chosen, lse, layout = _packed(rows, stats)
    logprobs, _ = finalize_logprobs(chosen, lse, None, layout, temperature)
    return [logprobs[b, start:len(ids)] for b, (ids, start) in enumerate(rows)]
