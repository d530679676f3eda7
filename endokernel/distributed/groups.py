"""The process groups of a call: ``tp_group`` / ``cp_group`` as given, or the mesh group of a DTensor LM head
sharded ``Shard(0)`` on a 1-D device mesh (its local shard is then this rank's vocabulary block)."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist


def _is_dtensor(t: object) -> bool:
    if type(t) is torch.Tensor or type(t) is torch.nn.Parameter:
        return False  # the common case, decided without looking further (and traceable by torch.compile)
    # a DTensor exists only once its module is loaded; importing it here would cost every process a second
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


def _weight_of(lm_head: object) -> object:
    return getattr(lm_head, "weight", None) if isinstance(lm_head, torch.nn.Module) else lm_head


def is_sharded(lm_head: object) -> bool:
    """Whether ``lm_head`` (a tensor, or a module with a ``weight``) is a DTensor."""
    return _is_dtensor(_weight_of(lm_head))


def tp_group_of(lm_head: object, tp_group: dist.ProcessGroup | None) -> dist.ProcessGroup | None:
    """``tp_group``, or the group of a DTensor LM head's 1-D mesh (checked to be sharded on dim 0 in rank order)."""
    weight = _weight_of(lm_head)
    if not _is_dtensor(weight):
        return tp_group
    from torch.distributed.tensor import Shard

    mesh, placements = weight.device_mesh, tuple(weight.placements)
    if mesh.ndim != 1 or placements != (Shard(0),):
        raise ValueError(f"lm_head: a DTensor LM head must be sharded Shard(0) on a 1-D device mesh, got placements "
                         f"{placements} on a {mesh.ndim}-D mesh")
    group = mesh.get_group()
    if tp_group is not None and tp_group is not group:
        raise ValueError("tp_group: the DTensor lm_head brings its mesh's group; pass tp_group=None or that group")
    if mesh.get_local_rank() != dist.get_rank(group):
        raise ValueError("lm_head: the DTensor's mesh must list its ranks in increasing order (shard i on the i-th "
                         "rank of its group), so that the vocabulary blocks are in rank order")
    return group


def local(t: torch.Tensor | None) -> torch.Tensor | None:
    """A DTensor's local shard (differentiable), anything else as it is."""
    return t.to_local() if _is_dtensor(t) else t


def check_groups(tp_group: object, cp_group: object) -> None:
    for name, group in (("tp_group", tp_group), ("cp_group", cp_group)):
        if group is None:
            continue
        if not dist.is_available() or not dist.is_initialized():
            raise ValueError(f"{name} is given, but torch.distributed is not initialised")
        if not isinstance(group, dist.ProcessGroup):
            raise TypeError(f"{name} must be a torch.distributed ProcessGroup, got {type(group).__name__}")
    if tp_group is not None and tp_group is cp_group:
        raise ValueError("tp_group and cp_group must be different groups (a grid's rows and columns)")
