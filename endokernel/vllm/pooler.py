"""The pooler of the pooling variants: per-position statistics of each sequence from its final hidden states,
computed by endokernel's backends on this rank's real head rows, never as logits.

Each engine step hands the pooler the hidden states of the tokens it scheduled: a whole sequence, or with
chunked prefill a piece of one, and with a prefix-cache hit only the positions after the hit. For each piece
the pooler computes the statistics of the positions the reward needs (``t = P - 1 .. n - 2``, see
``wire.py``) at once, and keeps them (two floats per position, never hidden states) in the request's
``PoolingStates`` until the sequence is complete; then it answers them in position order. Pieces are kept with
their first position, so a piece computed twice (a preempted request run again) replaces the first copy. A
sequence some of whose needed positions never came (a cache hit that reached past ``P - 1``) is answered with
zero rows, and the caller scores it again without reading the cache.

Under tensor parallelism every rank holds the same hidden states and one block of the vocabulary: each computes
its block's statistics (targets outside the block count as "no target", chosen logit 0), the ranks all-gather
them, and each merges them in rank order in float64 (``endokernel.distributed.vocab_parallel.merge``), so every
rank answers the same bits.
"""

from __future__ import annotations

from collections.abc import Set

import torch
from vllm.distributed import get_tp_group
from vllm.model_executor.layers.pooler import Pooler, PoolingParamsUpdate
from vllm.tasks import PoolingTask
from vllm.v1.pool.metadata import PoolingMetadata

from ..api import token_statistics
from ..distributed.vocab_parallel import merge
from .head import HeadShard, head_shard
from .wire import parse_options

TASKS = frozenset({"token_classify"})  # vLLM's GPU model runner V2 refuses the "plugin" task


class EndogenousPooler(Pooler):
    """(n - P, 2) float32 statistics per finished sequence (``wire.py``); None for one still in prefill.

    Args:
        model: the causal LM it belongs to (read at each step for its head, which loads after construction).
        backend: endokernel's backend ('auto': triton on CUDA, cpp or torch on a CPU).
    """

    def __init__(self, model: torch.nn.Module, backend: str = "auto") -> None:
        super().__init__()
        self._model = (model,)  # a tuple: not a submodule (the model holds the pooler)
        self.backend = backend

    def get_supported_tasks(self) -> Set[PoolingTask]:
        return TASKS

    def get_pooling_updates(self, task: PoolingTask) -> PoolingParamsUpdate:
        return PoolingParamsUpdate(requires_token_ids=True)  # the targets x_{t+1}

    def forward(self, hidden_states: torch.Tensor, pooling_metadata: PoolingMetadata) -> list[torch.Tensor | None]:
        """``hidden_states``: (scheduled tokens, D), the step's pieces in request order."""
        cursor = pooling_metadata.get_pooling_cursor()
        counts = cursor.num_scheduled_tokens_cpu.tolist()
        ends = cursor.seq_lens_cpu.tolist()  # one past each piece's last position
        lengths = cursor.prompt_lens_cpu.tolist()
        ids = pooling_metadata.get_prompt_token_ids_cpu()
        plans, rows, targets, alphas, offset = [], [], [], [], 0
        for count, end, length, params, tokens in zip(counts, ends, lengths, pooling_metadata.pooling_params, ids):
            start, alpha = parse_options(params.extra_kwargs, length)
            first = end - count  # this piece's first position
            lo, hi = max(first, start - 1), min(end, length - 1)  # needed positions in the piece
            plans.append((lo, max(hi - lo, 0)))
            if hi > lo:
                rows.append(torch.arange(offset + lo - first, offset + hi - first))
                targets.append(tokens[lo + 1 : hi + 1].to(torch.int64))
                alphas.append(torch.full((hi - lo,), alpha, dtype=torch.float64))
            offset += count
        stats = self._statistics(hidden_states, rows, targets, alphas) if rows else None
        out: list[torch.Tensor | None] = []
        done, states = 0, pooling_metadata.pooling_states
        for (lo, count), state, finished, length, params in zip(plans, states, cursor.get_finished_mask(), lengths,
                                                                pooling_metadata.pooling_params):
            if count:
                state.hidden_states_cache.append((lo, stats[done : done + count]))
                done += count
            if not finished:
                out.append(None)
                continue
            start, _ = parse_options(params.extra_kwargs, length)
            out.append(_assemble(state.hidden_states_cache, start - 1, length - 1, hidden_states.device))
            state.clean()
        return out

    def _statistics(self, hidden_states: torch.Tensor, rows: list[torch.Tensor], targets: list[torch.Tensor],
                    alphas: list[torch.Tensor]) -> torch.Tensor:
        """(N, 2) float32 [chosen, lse] over the whole vocabulary at the given rows, one kernel call per alpha."""
        shard = head_shard(self._model[0])
        device = hidden_states.device
        rows_cpu, targets_cpu, alpha_cpu = torch.cat(rows), torch.cat(targets), torch.cat(alphas)
        out = torch.empty((rows_cpu.numel(), 2), dtype=torch.float32, device=device)
        for alpha in alpha_cpu.unique().tolist():  # one value in practice
            pick = (alpha_cpu == alpha).nonzero()[:, 0]
            hidden = hidden_states[rows_cpu[pick].to(device, non_blocking=True)].to(shard.weight.dtype)
            out[pick.to(device)] = _whole_vocabulary(hidden, targets_cpu[pick].to(device, non_blocking=True),
                                                     shard, alpha, self.backend)
        return out


def _whole_vocabulary(hidden: torch.Tensor, targets: torch.Tensor, shard: HeadShard, alpha: float,
                      backend: str) -> torch.Tensor:
    """(N, 2) float32 statistics of global ``targets`` from this rank's block, merged across the TP group."""
    local = torch.where((targets >= shard.lo) & (targets < shard.hi), targets - shard.lo, -1)
    chosen, lse = token_statistics(hidden, shard.weight, local, alpha=alpha, bias=shard.bias,
                                   logit_scale=shard.logit_scale, softcap=shard.softcap, backend=backend)
    tp = get_tp_group()
    if tp.world_size == 1:
        return torch.stack([chosen, lse], dim=1).float()
    gathered = tp.all_gather(torch.stack([chosen, lse]).unsqueeze(0), dim=0)  # (W, 2, N), rank order
    chosen, lse, _ = merge(gathered, alpha)
    return torch.stack([chosen, lse], dim=1).float()


def _assemble(pieces: list[tuple[int, torch.Tensor]], lo: int, hi: int, device: torch.device) -> torch.Tensor:
    """The statistics of positions [lo, hi) from (first position, rows) pieces, later pieces winning; (0, 2)
    when some position is missing."""
    out = torch.empty((max(hi - lo, 0), 2), dtype=torch.float32, device=device)
    seen = torch.zeros(out.shape[0], dtype=torch.bool)
    for first, rows in pieces:
        out[first - lo : first - lo + rows.shape[0]] = rows
        seen[first - lo : first - lo + rows.shape[0]] = True
    return out if bool(seen.all()) else out[:0]
