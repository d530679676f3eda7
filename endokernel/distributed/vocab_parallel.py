"""Per-position statistics over a vocabulary split into blocks, one block per rank of a tp group.

Each rank runs the ordinary statistics op on its block, with the targets outside the block as "no target"
(chosen logit 0). The ranks gather their (chosen, lse[, entropy]) and every rank merges them in rank order, in
float64: ``chosen`` is the sum over blocks (exact: one block holds each target), ``lse = T * logsumexp_r(lse_r
/ T)``, and the entropy of the whole softmax is ``H = sum_r w_r (H_r - log w_r)``, where ``w_r = exp((lse_r -
lse) / T)`` is block r's share of the probability. That is O(N) floats per rank, never a logit.

Gradients: the hidden states are the same on every rank and each rank's statistics cover only its block, so
the hidden states' gradient is the rank-ordered sum of the blocks' contributions (``comm.reduce_grad``); the
gradients of the LM head and bias stay in their block.
"""

from __future__ import annotations

import torch

from .. import ops
from .._core.validate import Head
from . import comm
from .agree import Split


def statistics(hidden: torch.Tensor, head: Head, targets: torch.Tensor, temperature: float, with_entropy: bool,
               blocks: Split | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(chosen, lse, entropy or None), each (N,), at ``hidden`` (N, D) for global ``targets`` (N,) int64
    (negative: no target), over the whole vocabulary of ``blocks`` (this rank's head alone when None)."""
    if blocks is not None:
        hidden = comm.reduce_grad(hidden, blocks.group)
        targets = torch.where((targets >= blocks.lo) & (targets < blocks.hi), targets - blocks.lo, -1)
    chosen, lse, entropy = ops.token_statistics_op(hidden, head.weight, head.bias, targets, temperature,
                                                   head.logit_scale, head.softcap, with_entropy, head.backend)
    entropy = entropy if with_entropy else None
    if blocks is None:
        return chosen, lse, entropy
    parts = torch.stack([chosen, lse] if entropy is None else [chosen, lse, entropy])
    merged = merge(comm.gather_replicated(parts, blocks.group), temperature)
    return tuple(None if m is None else m.to(chosen.dtype) for m in merged)


def merge(gathered: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Whole-vocabulary (chosen, lse, entropy or None), float64, from the blocks' statistics stacked in rank
    order: ``gathered`` (W, 2 or 3, N) holds each block's chosen, lse (and entropy)."""
    blocks = gathered.to(torch.float64)
    chosen = comm.sum_in_rank_order(blocks[:, 0])
    block_lse = blocks[:, 1]
    # the max only keeps exp() in range; the result does not depend on it, so no gradient flows through it
    peak = block_lse.max(dim=0).values.detach()
    lse = peak + temperature * torch.log(comm.sum_in_rank_order(torch.exp((block_lse - peak) / temperature)))
    if blocks.shape[1] == 2:
        return chosen, lse, None
    log_share = (block_lse - lse) / temperature
    entropy = comm.sum_in_rank_order(torch.exp(log_share) * (blocks[:, 2] - log_share))
    return chosen, lse, entropy
