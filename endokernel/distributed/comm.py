"""Rank-ordered collectives with the autograd rules tensor and context parallelism need.

Every reduction adds the ranks' values in rank order, so every rank gets bitwise the same value run after run
(an all_reduce leaves its summation order to the backend). Results computed from gathered values are
replicated: the backward passes assume every rank of the group computes the same loss from them, as in
Megatron-LM's vocab-parallel cross-entropy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Traffic:
    """Payload bytes this rank received from its peers (a lower bound on any algorithm's transfers), collective
    calls, and seconds spent in them (waiting for the other ranks included)."""

    received: int = 0
    calls: int = 0
    seconds: float = 0.0


_traffic: Traffic | None = None


@contextlib.contextmanager
def count_traffic() -> Iterator[Traffic]:
    """Count the collectives of this module inside the block (used by the scaling benchmark)."""
    global _traffic
    outer, _traffic = _traffic, Traffic()
    try:
        yield _traffic
    finally:
        _traffic = outer


def all_gather(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """(W, *x.shape): every rank's ``x`` in rank order (same shape on every rank); not differentiable."""
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    start = time.perf_counter()
    dist.all_gather(parts, x, group=group)
    _count(start, (len(parts) - 1) * x.numel() * x.element_size())
    return torch.stack(parts)


def all_reduce(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """The sum of every rank's ``x`` (same shape on every rank), added in rank order in float32 at least, on
    every rank; not differentiable. Each rank sums one 1/W slice (an all_to_all brings it every rank's part),
    then the sums are gathered: 2 (W - 1) / W of x's bytes reach each rank, as in a ring all_reduce."""
    world = dist.get_world_size(group)
    flat = x.reshape(-1)
    size = -(-flat.numel() // world)
    padded = flat.new_zeros(world * size)
    padded[: flat.numel()] = flat
    received = torch.empty_like(padded)
    start = time.perf_counter()
    dist.all_to_all_single(received, padded, group=group)
    _count(start, (world - 1) * size * x.element_size())
    parts = received.view(world, size).to(torch.promote_types(x.dtype, torch.float32))
    return all_gather(sum_in_rank_order(parts).to(x.dtype), group).reshape(-1)[: flat.numel()].view_as(x)


def _count(start: float, received: int) -> None:
    if _traffic is not None:
        _traffic.received += received
        _traffic.calls += 1
        _traffic.seconds += time.perf_counter() - start


def sum_in_rank_order(stacked: torch.Tensor) -> torch.Tensor:
    """``stacked[0] + stacked[1] + ...``, one addition at a time (a fixed order, unlike a reduction kernel)."""
    total = stacked[0]
    for part in stacked[1:]:
        total = total + part
    return total


class _GatherReplicated(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.rank = dist.get_rank(group)
        return all_gather(x, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad[ctx.rank], None  # every rank holds the same gradient of the whole: its own slice is exact


class _GatherDistinct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.rank, ctx.group = dist.get_rank(group), group
        return all_gather(x, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # each rank used other slices: this rank's slice gets every rank's gradient for it
        return sum_in_rank_order(all_gather(grad, ctx.group)[:, ctx.rank]), None


class _ReduceGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return all_reduce(grad, ctx.group), None


def gather_replicated(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """All-gather (W, *x.shape) for values every rank then combines the same way; the backward keeps this
    rank's slice of the (replicated) gradient, with no communication."""
    return _GatherReplicated.apply(x, group)


def gather_distinct(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """All-gather (W, *x.shape) for values each rank uses differently (a chunk boundary); the backward sums
    every rank's gradient for this rank's slice, in rank order."""
    return _GatherDistinct.apply(x, group)


def reduce_grad(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """Identity for an ``x`` replicated on every rank of ``group`` that each rank uses for part of the loss
    (its vocabulary block); the backward sums the ranks' gradients in rank order (Megatron's copy-to-region)."""
    return _ReduceGrad.apply(x, group)
