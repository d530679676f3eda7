"""Data-parallel scoring: every rank of a group is given the same items; each computes a share balanced by
token count, and every rank gets all results back in input order."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.distributed as dist


def process_group(data_parallel: object) -> dist.ProcessGroup:
    """The group of a ``data_parallel`` argument: True for the default group, or a ProcessGroup."""
    if data_parallel is not True and not isinstance(data_parallel, dist.ProcessGroup):
        raise TypeError(f"data_parallel must be a bool or a torch.distributed ProcessGroup, got {data_parallel!r}")
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("data_parallel needs an initialised torch.distributed process group "
                         "(torchrun, then torch.distributed.init_process_group)")
    return dist.group.WORLD if data_parallel is True else data_parallel


def shard_by_tokens(lengths: Sequence[int], shards: int) -> list[list[int]]:
    """Indices of ``lengths`` in ``shards`` groups of nearly equal token sums: longest first, each to the group
    with the fewest tokens so far (the first such group on ties); each group's indices in input order."""
    totals = [0] * shards
    groups: list[list[int]] = [[] for _ in range(shards)]
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        lightest = min(range(shards), key=lambda g: (totals[g], g))
        groups[lightest].append(i)
        totals[lightest] += lengths[i]
    return [sorted(group) for group in groups]


def map_sharded(fn: Callable[[list[int]], list], lengths: Sequence[int], fingerprint: str,
                group: dist.ProcessGroup) -> list:
    """``fn(indices)`` returns the results of those items; each rank runs it on its share of the items (by
    ``lengths``, their token counts) and every rank returns all results in input order. ``fingerprint`` names
    the inputs: the ranks check first that they were given the same ones (a ValueError on every rank if not)."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    prints: list = [None] * world
    dist.all_gather_object(prints, fingerprint, group=group)
    if len(set(prints)) > 1:
        raise ValueError(f"data_parallel: the ranks of the group (global ranks {dist.get_process_group_ranks(group)}) "
                         "were given different inputs; every rank must pass the same ones")
    shards = shard_by_tokens(lengths, world)
    gathered: list = [None] * world
    dist.all_gather_object(gathered, fn(shards[rank]), group=group)
    results: list = [None] * len(lengths)
    for shard, values in zip(shards, gathered):
        for i, value in zip(shard, values):
            results[i] = value
    return results
