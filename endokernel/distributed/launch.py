"""Commands started by torchrun: ``torchrun --nproc-per-node N -m endokernel <command> ...`` (several machines:
the same with ``--nnodes`` and the ``--rdzv-*`` flags) gives each process RANK, LOCAL_RANK and WORLD_SIZE in its
environment. A command then runs one process per device, cuda:LOCAL_RANK with nccl, or the CPU with gloo, and
lets the first rank do the reading and writing."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@contextlib.contextmanager
def torchrun_group(device: str | None) -> Iterator[tuple[dist.ProcessGroup | None, str | None]]:
    """(the default group, this rank's device) under torchrun with more than one process, else (None,
    ``device``); the group is destroyed on exit. ``device``: 'cuda' (default when available) becomes
    cuda:LOCAL_RANK; 'cpu' uses gloo."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        yield None, device
        return
    place = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if place.type == "cuda":
        place = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if place.index is None else place
        torch.cuda.set_device(place)  # object collectives (results, errors) travel on the current device
    dist.init_process_group("nccl" if place.type == "cuda" else "gloo")
    try:
        yield dist.group.WORLD, str(place)
    finally:
        dist.destroy_process_group()


def on_first_rank(fn: Callable[[], T], group: dist.ProcessGroup | None) -> T:
    """``fn()`` on the group's first rank, its result (or its ValueError, raised again) on every rank."""
    if group is None:
        return fn()
    payload: list = [None]
    if dist.get_rank(group) == 0:
        try:
            payload[0] = (True, fn())
        except ValueError as error:
            payload[0] = (False, str(error))
    dist.broadcast_object_list(payload, src=dist.get_global_rank(group, 0), group=group)
    ok, value = payload[0]
    if not ok:
        raise ValueError(value)
    return value
