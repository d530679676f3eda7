"""Benchmark inputs: random hidden states, LM head and targets, built once per (head, dtype) and shared.

On CPU every method runs in its own fresh process (a clean memory high-water mark), so the inputs are written
once to a file that each process maps read-only: one copy in the page cache instead of one per process, and
no process pays the build. The mapped pages are touched before any measurement, so they count in the
baseline resident set, not in a method's peak.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .shapes import Case, Head


@dataclass(frozen=True)
class Inputs:
    """``hidden`` (N, D), ``weight`` (V, D) of one dtype, int64 ``targets`` (N,), the head's softcap."""

    hidden: torch.Tensor
    weight: torch.Tensor
    targets: torch.Tensor
    softcap: float | None

    def first(self, tokens: int) -> Inputs:
        """The first ``tokens`` positions (views, no copies)."""
        return Inputs(self.hidden[:tokens], self.weight, self.targets[:tokens], self.softcap)


def random_inputs(tokens: int, dim: int, vocab: int, dtype: torch.dtype, device: torch.device, seed: int = 0):
    """hidden (tokens, dim), lm_head (vocab, dim) and ids (tokens,), filled in chunks so that building them
    leaves no transient memory peak. Logits come out with a standard deviation of about 3."""
    g = torch.Generator(device=device).manual_seed(seed)
    hidden = torch.empty(tokens, dim, dtype=dtype, device=device)
    weight = torch.empty(vocab, dim, dtype=dtype, device=device)
    for part in (*hidden.split(4096), *weight.split(4096)):
        part.copy_(torch.randn(part.shape, generator=g, device=device))
    weight.mul_(3.0 / dim**0.5)
    ids = torch.randint(0, vocab, (tokens,), generator=g, device=device)
    return hidden, weight, ids


def build(head: Head, dtype: torch.dtype, tokens: int, device: torch.device, seed: int = 0) -> Inputs:
    """Random inputs (logits with a standard deviation of about 3), built without a transient memory peak."""
    hidden, weight, targets = random_inputs(tokens, head.dim, head.vocab, dtype, device, seed)
    return Inputs(hidden, weight, targets, head.softcap)


def save(inputs: Inputs, path: Path) -> None:
    torch.save({"hidden": inputs.hidden, "weight": inputs.weight, "targets": inputs.targets,
                "softcap": inputs.softcap}, path)


def load_mapped(path: Path, case: Case) -> Inputs:
    """The inputs saved at ``path``, memory-mapped and touched, cut to ``case.tokens`` positions."""
    saved = torch.load(path, mmap=True, weights_only=True)
    inputs = Inputs(saved["hidden"], saved["weight"], saved["targets"], saved["softcap"]).first(case.tokens)
    for tensor in (inputs.hidden, inputs.weight, inputs.targets):
        _touch(tensor)
    return inputs


def _touch(tensor: torch.Tensor) -> None:
    """Read one element of every page, so the mapping is resident before the baseline is taken."""
    flat = tensor.reshape(-1)
    flat[:: max(1, 4096 // tensor.element_size())].sum()
