"""The LM heads the benchmarks sweep, and one benchmark case: a head, a dtype and a token count."""

from __future__ import annotations

from dataclasses import dataclass

import torch

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class Head:
    """An LM head of ``vocab`` rows of size ``dim``, with an optional Gemma-2 style logit softcap."""

    name: str
    dim: int
    vocab: int
    softcap: float | None = None


HEADS = {
    head.name: head
    for head in (
        Head("qwen3-4b", dim=2560, vocab=151936),
        Head("llama3-8b", dim=4096, vocab=128256),
        Head("gemma2-2b", dim=2304, vocab=256000, softcap=30.0),
    )
}


def parse_head(spec: str) -> Head:
    """A head from a name in ``HEADS`` or from ``D:V`` / ``D:V:softcap`` (e.g. ``32:1000``)."""
    if spec in HEADS:
        return HEADS[spec]
    parts = spec.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        dim, vocab = int(parts[0]), int(parts[1])
        softcap = float(parts[2]) if len(parts) == 3 else None
    except ValueError:
        raise ValueError(f"--shapes: {spec!r} is neither one of {sorted(HEADS)} nor D:V[:softcap]") from None
    if dim < 1 or vocab < 1 or (softcap is not None and not softcap > 0):
        raise ValueError(f"--shapes: {spec!r} needs D >= 1, V >= 1 and softcap > 0")
    name = f"d{dim}-v{vocab}" + (f"-cap{parts[2]}" if softcap is not None else "")
    return Head(name, dim, vocab, softcap)


@dataclass(frozen=True)
class Case:
    """One point of the sweep."""

    head: Head
    dtype: torch.dtype
    tokens: int

    @property
    def flops(self) -> int:
        """Multiply-adds of the logits, counted as two: ``2 * N * D * V``."""
        return 2 * self.tokens * self.head.dim * self.head.vocab

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")
