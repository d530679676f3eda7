"""Context parallelism: each rank of a cp group holds a chunk of consecutive positions of every row; ids, mask
and prompt lengths are global. A rank computes the statistics of the positions its chunk holds and finalizes
them with global positions (discount weight by the response index k, per-token rewards at their global place).

One value crosses a chunk boundary. The finalizer gives position t (entry j) the reward of token t + 1,
``chosen_t - V_{t+1}``: at a chunk's last position, V_{t+1} is the lse of the next chunk's first entry. So each
rank publishes, per row, the lse of its first entry, and the rank before takes it as that row's value after
its last entry (``finalize``'s per-row terminal). The chunks' rewards and per-token rewards are then summed
in rank order.

Gradients: the boundary values go back to the rank that computed them (``comm.gather_distinct``); the LM head's
gradient on each rank is its chunk's share: their sum over the cp group is the whole gradient (data-parallel
gradient reduction over dp x cp ranks adds them, as in Megatron-LM).
"""

from __future__ import annotations

import torch

from .._core.layout import ResponseLayout
from . import comm
from .agree import Split


def local_entries(layout: ResponseLayout, chunks: Split | None) -> ResponseLayout:
    """The packed entries whose position lies in this rank's chunk (all of them without a cp group)."""
    return layout if chunks is None else layout.window(chunks.lo, chunks.hi)


def hidden_rows(hidden: torch.Tensor, entries: ResponseLayout, chunks: Split | None) -> torch.Tensor:
    """(N, D) hidden states of ``entries`` from this rank's (B, L, D) chunk (L = T without a cp group)."""
    position = entries.rows % entries.seq_len
    row = entries.rows // entries.seq_len
    lo = 0 if chunks is None else chunks.lo
    return hidden.reshape(-1, hidden.shape[-1])[row * hidden.shape[1] + position - lo]


def next_values(lse: torch.Tensor, entries: ResponseLayout, chunks: Split | None,
                terminal: float) -> float | torch.Tensor:
    """The value after each row's last local entry: ``terminal`` at the row's end, else the lse of the row's
    next entry, the first entry of the next non-empty chunk; (B,) with a cp group, every rank taking part."""
    if chunks is None:
        return terminal
    counts = entries.starts[1:] - entries.starts[:-1]
    present = (counts > 0).nonzero()[:, 0]
    first = lse.new_zeros(entries.batch).index_put((present,), lse[entries.starts[present]])
    published = comm.gather_distinct(first, chunks.group)
    owner = chunks.owner(chunks.hi)  # None for the last chunk, where every row ends
    continues = (counts > 0) & (entries.lengths - 2 >= chunks.hi)  # the row's last entry lies past this chunk
    # ``published`` enters every rank's result, even where no row continues, so that every rank's backward
    # joins gather_distinct's collective
    return torch.where(continues, published[chunks.rank if owner is None else owner], terminal)


def combine(partial: torch.Tensor, chunks: Split | None) -> torch.Tensor:
    """The sum over the cp group's chunks, in rank order (``partial`` itself without one)."""
    return partial if chunks is None else comm.sum_in_rank_order(comm.gather_replicated(partial, chunks.group))
