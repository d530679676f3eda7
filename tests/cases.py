"""Random inputs for parity tests: odd sizes, padded batches, per-row prompt lengths, every transform."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch


def fresh_seed() -> int:
    """A new seed per call (ENDOKERNEL_TEST_SEED pins it to reproduce a failure); tests print it on failure."""
    pinned = os.environ.get("ENDOKERNEL_TEST_SEED")
    return int(pinned) if pinned else int.from_bytes(os.urandom(4), "little")


@dataclass
class Case:
    hidden: torch.Tensor  # (B, T, D)
    weight: torch.Tensor  # (V, D)
    ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    prompt_len: list[int]
    kwargs: dict = field(default_factory=dict)  # alpha, gamma, beta, bias, logit_scale, softcap, vocab_size
    seed: int = 0

    def cast(self, dtype: torch.dtype) -> "Case":
        kwargs = dict(self.kwargs)
        return Case(self.hidden.to(dtype), self.weight.to(dtype), self.ids, self.attention_mask,
                    self.prompt_len, kwargs, self.seed)

    @property
    def lengths(self) -> list[int]:
        return self.attention_mask.sum(1).tolist()


def make_case(*, batch: int, seq_len: int, vocab: int, dim: int, dtype=torch.float32, seed: int | None = None,
              empty_row: bool = False, **kwargs) -> Case:
    """Rows of random real lengths in [1, seq_len] (one row full), random prompt lengths in [1, length];
    ``empty_row`` makes row 0's response empty. Logits come out with a standard deviation of about 3."""
    seed = fresh_seed() if seed is None else seed
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, seq_len, dim, generator=g)
    weight = torch.randn(vocab, dim, generator=g) * (3.0 / dim**0.5)
    ids = torch.randint(0, vocab, (batch, seq_len), generator=g)
    lengths = torch.randint(1, seq_len + 1, (batch,), generator=g)
    lengths[-1] = seq_len
    mask = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()
    ids = torch.where(mask.bool(), ids, 0)
    prompt_len = [int(torch.randint(1, n + 1, (1,), generator=g)) for n in lengths.tolist()]
    if empty_row:
        prompt_len[0] = int(lengths[0])
    if kwargs.pop("bias", False):
        kwargs["bias"] = torch.randn(vocab, generator=g)
    return Case(hidden.to(dtype), weight.to(dtype), ids, mask, prompt_len, kwargs, seed)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (normwise); NaN anywhere counts as infinite error."""
    actual, expected = actual.detach().double(), expected.detach().double()
    if not torch.isfinite(actual).all():
        return float("inf")
    scale = expected.abs().max().clamp_min(1e-30)
    return float((actual - expected).abs().max() / scale)
