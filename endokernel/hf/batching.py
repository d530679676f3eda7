"""Length bucketing: rows sorted by length into token-budget batches, rows grouped by a shared prompt, and right
padding into tensors."""

from __future__ import annotations

from collections.abc import Sequence

import torch

DEFAULT_MAX_TOKENS = 8192  # padded tokens per batch when neither a row nor a token limit is given


def check_limits(batch_size: object, max_tokens: object) -> None:
    """ValueError unless each limit is a positive int or None."""
    for name, value in (("batch_size", batch_size), ("max_tokens", max_tokens)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int or None, got {value!r}")


def length_buckets(lengths: Sequence[int], *, batch_size: int | None = None, max_tokens: int | None = None,
                   max_padding: float | None = None) -> list[list[int]]:
    """Indices into ``lengths`` grouped into batches, longest rows first (ties in input order).

    A batch holds at most ``batch_size`` rows, and its padded size (rows x its longest row) stays within
    ``max_tokens`` (a row longer than that gets a batch of its own). With neither limit given, ``max_tokens``
    is ``DEFAULT_MAX_TOKENS``. ``max_padding``: also close a batch before its padding would exceed this share
    of its padded size (for few rows of very different lengths, as the responses to one prompt). Sorting by
    length keeps padding small, and the first batch is the largest, so a batch that does not fit in memory
    fails at once.
    """
    check_limits(batch_size, max_tokens)
    if batch_size is None and max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        batch = batches[-1] if batches else None
        # rows arrive longest first, so a batch's first row sets its padded length
        full = batch is None or (batch_size is not None and len(batch) >= batch_size) or (
            max_tokens is not None and lengths[batch[0]] * (len(batch) + 1) > max_tokens) or (
            max_padding is not None and _padding(lengths, batch + [i]) > max_padding)
        if full:
            batches.append([i])
        else:
            batch.append(i)
    return batches


def _padding(lengths: Sequence[int], batch: list[int]) -> float:
    """The share of a batch's padded size that is padding (its first row is its longest)."""
    padded = lengths[batch[0]] * len(batch)
    return 1.0 - sum(lengths[i] for i in batch) / padded


def prompt_groups(rows: Sequence[tuple[Sequence[int], int]], index: Sequence[int]) -> tuple[list[list[int]], list[int]]:
    """``index`` (into ``rows`` of (token ids, response start)) split into groups of two or more rows whose prompt
    tokens ``ids[:start]`` are identical (in first-seen order, rows in input order), and the other rows."""
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i in index:
        ids, start = rows[i]
        by_prompt.setdefault(tuple(ids[:start]), []).append(i)
    groups = [group for group in by_prompt.values() if len(group) > 1]
    alone = [group[0] for group in by_prompt.values() if len(group) == 1]
    return groups, sorted(alone)


def pad_right(rows: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows -> right-padded ``ids`` (B, T) int64 and ``attention_mask`` (B, T) int64 (1 = real)."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(rows), width), dtype=torch.int64)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row, dtype=torch.int64)
        mask[r, : len(row)] = 1
    return ids, mask
