"""Agreement before any work: each rank checks its own arguments, then the ranks of each group exchange one
small int64 vector (an error flag, sizes, fingerprints of the global inputs and of the scalar arguments). Bad
input, on one rank or as a mismatch between ranks, then raises the same error on every rank, instead of
leaving the others waiting in a collective. The exchange also gives each rank its place: the sizes of the
vocabulary blocks (``tp_group``) and of the position chunks (``cp_group``), in rank order.

With both groups (a tp x cp grid) the tp exchange runs first and the cp exchange carries its verdict on, so an
error anywhere in the grid reaches every rank. The group's timeout applies to the exchange.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.distributed as dist

from . import comm

_PRIME = 2**31 - 1


@dataclass(frozen=True)
class Facts:
    """What one rank passed, as far as the other ranks must know it."""

    block: int  # LM-head rows on this rank
    chunk: int  # positions per row in hidden on this rank
    length: int  # positions per row in the global ids / targets
    dim: int  # D
    inputs: dict[str, torch.Tensor | None]  # global tensors every rank passes equal, by argument name
    settings: tuple  # the scalar arguments, equal on every rank


@dataclass(frozen=True)
class Split:
    """A dimension split into consecutive parts over the ranks of a group, in rank order: the vocabulary blocks
    of a tp group, or the position chunks of a cp group."""

    group: dist.ProcessGroup
    rank: int
    sizes: tuple[int, ...]

    @property
    def lo(self) -> int:
        return sum(self.sizes[: self.rank])

    @property
    def hi(self) -> int:
        return self.lo + self.sizes[self.rank]

    @property
    def total(self) -> int:
        return sum(self.sizes)

    def owner(self, index: int) -> int | None:
        """The rank whose part holds ``index`` (None past the end)."""
        end = 0
        for rank, size in enumerate(self.sizes):
            end += size
            if index < end:
                return rank
        return None


@dataclass(frozen=True)
class Plan:
    tp: Split | None  # vocabulary blocks
    cp: Split | None  # position chunks

    def vocab_rows(self, local_rows: int) -> int:
        """Rows of the whole LM head."""
        return local_rows if self.tp is None else self.tp.total


def fingerprint(t: torch.Tensor | None) -> int:
    """A deterministic, device-independent hash of an integer tensor's shape and values (-1 for None)."""
    if t is None:
        return -1
    x = t.detach().reshape(-1).to(torch.int64) % _PRIME
    coefficients = (torch.arange(1, x.numel() + 1, device=x.device) * 48271) % _PRIME
    values = int(((x * coefficients) % _PRIME).sum())  # < 2**31 per term: no overflow below 2**32 elements
    return _digest((tuple(t.shape), values))


def _digest(value: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(value).encode(), digest_size=7).digest(), "little")


_SCALARS = ("tp_group given", "cp_group given", "block", "chunk", "length", "dim", "settings")


def _vector(facts: Facts | None, tp: bool, cp: bool, names: tuple[str, ...]) -> list[int]:
    if facts is None:
        return [0] * (len(_SCALARS) + len(names))
    return [int(tp), int(cp), facts.block, facts.chunk, facts.length, facts.dim, _digest(facts.settings),
            *(fingerprint(facts.inputs[name]) for name in names)]


def _mismatch(kind: str, field: str, values: list[int], ranks: list[int]) -> str:
    where = f"the ranks of {kind} (global ranks {ranks})"
    if field == "block":
        return f"lm_head: {where} hold vocabulary blocks of different sizes {values}; a cp group shares one block"
    if field == "chunk":
        return f"hidden: {where} hold {values} positions per row; the ranks of a tp group hold the same positions"
    if field == "length":
        return f"ids: {where} pass sequences of different lengths {values}"
    if field == "dim":
        return f"hidden: {where} have different feature sizes D {values}"
    if field == "settings":
        return (f"{where} pass different scalar arguments (alpha / temperature, gamma, beta, vocab_size, "
                "logit_scale, softcap, bias or not, dtype, backend); every rank must pass the same")
    if field.endswith("given"):
        return f"{field.split()[0]}: given on some of {where} and not on others"
    return f"{field}: {where} pass different values; every rank must pass the same global {field}"


def _verdict(kind: str, group: dist.ProcessGroup, table: torch.Tensor, names: tuple[str, ...],
             collected: str) -> str | None:
    """The first disagreement in the gathered (W, 1 + fields) table, ignoring the collected field."""
    ranks = dist.get_process_group_ranks(group)
    for index, field in enumerate(_SCALARS + names, start=1):
        column = table[:, index].tolist()
        if field != collected and len(set(column)) > 1:
            return _mismatch(kind, field, column, ranks)
    return None


def agree(tp_group: dist.ProcessGroup | None, cp_group: dist.ProcessGroup | None, names: tuple[str, ...],
          facts: Facts | Exception) -> Plan:
    """Exchange every rank's ``facts`` (or its error) in ``tp_group`` and then ``cp_group``; raise the same
    ValueError / TypeError on every rank if any rank failed or the ranks disagree, else return the plan."""
    error = None
    if isinstance(facts, Exception):
        error = (type(facts).__name__, f"rank {dist.get_rank()}: {facts}")
        facts = None
    vector = _vector(facts, tp_group is not None, cp_group is not None, names)
    sizes: dict[str, tuple[int, ...]] = {}
    for kind, group, collected in (("tp_group", tp_group, "block"), ("cp_group", cp_group, "chunk")):
        if group is None:
            continue
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else None
        table = comm.all_gather(torch.tensor([int(error is not None), *vector], device=device), group).cpu()
        if table[:, 0].any():
            errors = [None] * table.shape[0]
            dist.all_gather_object(errors, error, group=group)
            error = next(e for e in errors if e is not None)
            continue
        sizes[kind] = tuple(table[:, 1 + _SCALARS.index(collected)].tolist())
        message = _verdict(kind, group, table, names, collected)
        if message is None and kind == "cp_group" and sum(sizes[kind]) != facts.length:
            message = (f"hidden: the ranks of cp_group hold {list(sizes[kind])} positions per row (sum "
                       f"{sum(sizes[kind])}), but ids have {facts.length}; the chunks must cover every position")
        if message is not None:
            error = ("ValueError", message)
    if error is not None:
        raise (TypeError if error[0] == "TypeError" else ValueError)(error[1])
    return Plan(*(Split(group, dist.get_rank(group), sizes[kind]) if group is not None else None
                  for kind, group in (("tp_group", tp_group), ("cp_group", cp_group))))
