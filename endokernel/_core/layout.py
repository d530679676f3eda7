"""Which positions a reward needs, packed into one flat list.

Row ``b`` (real length ``n_b``, response start ``P_b``) needs the statistics of positions
``t = P_b - 1 .. n_b - 2``: the chosen logit there scores token ``t + 1`` and the soft value there is
``V_t`` of the previous response token. That is exactly one packed entry per response token, so entry
``starts[b] + k`` belongs to response token ``k`` of row ``b``. Prompt and padding positions are never
computed, and the last position (terminal value) is never needed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .validate import check_token_range, prompt_lengths, row_lengths


@dataclass(frozen=True)
class ResponseLayout:
    """Packed positions of a (B, T) batch. Device tensors are int64 on the ids' device."""

    batch: int
    seq_len: int  # T, the padded length
    num_positions: int  # N, total response tokens
    prompt_len: torch.Tensor  # (B,)
    lengths: torch.Tensor  # (B,) real lengths
    starts: torch.Tensor  # (B + 1,) offsets of each row's entries in the packed arrays
    response_pos: torch.Tensor  # (N,) k, the entry's index within its row's response
    rows: torch.Tensor  # (N,) flat index b * T + t into the (B * T) positions
    targets: torch.Tensor  # (N,) ids[b, t + 1], the token each position's chosen logit scores

    @staticmethod
    def build(ids: torch.Tensor, prompt_len: list[int], lengths: list[int]) -> ResponseLayout:
        """``ids``: (B, T) integer; ``prompt_len`` and ``lengths``: validated host lists of B ints."""
        batch, seq_len = ids.shape
        device = ids.device
        counts_host = [n - p for n, p in zip(lengths, prompt_len)]
        num_positions = sum(counts_host)
        counts = torch.tensor(counts_host, dtype=torch.int64, device=device)
        prompt = torch.tensor(prompt_len, dtype=torch.int64, device=device)
        starts = torch.zeros(batch + 1, dtype=torch.int64, device=device)
        torch.cumsum(counts, 0, out=starts[1:])
        row_of = torch.repeat_interleave(torch.arange(batch, device=device), counts, output_size=num_positions)
        k = torch.arange(num_positions, device=device) - starts[row_of]
        rows = row_of * seq_len + prompt[row_of] - 1 + k
        targets = ids.reshape(-1)[rows + 1].to(torch.int64)
        return ResponseLayout(
            batch=batch,
            seq_len=seq_len,
            num_positions=num_positions,
            prompt_len=prompt,
            lengths=torch.tensor(lengths, dtype=torch.int64, device=device),
            starts=starts,
            response_pos=k,
            rows=rows,
            targets=targets,
        )

    def window(self, lo: int, hi: int) -> ResponseLayout:
        """The entries whose position ``t`` lies in [lo, hi) (a context-parallel chunk), in the same order and
        with the same global ``rows``, ``targets`` and ``response_pos``; ``starts`` index the kept entries."""
        keep = ((self.rows % self.seq_len) >= lo) & ((self.rows % self.seq_len) < hi)
        counts = torch.bincount(self.rows[keep] // self.seq_len, minlength=self.batch)
        starts = torch.zeros_like(self.starts)
        torch.cumsum(counts, 0, out=starts[1:])
        return replace(self, num_positions=int(starts[-1]), starts=starts, response_pos=self.response_pos[keep],
                       rows=self.rows[keep], targets=self.targets[keep])


def _checked_lengths(ids: torch.Tensor, attention_mask: torch.Tensor | None, vocab: int) -> list[int]:
    """Each row's real length; raises on a bad mask or on real ids outside [0, vocab)."""
    lengths = row_lengths(attention_mask, ids.shape[0], ids.shape[1], ids.device)
    check_token_range("ids", ids if attention_mask is None else ids[attention_mask.bool()], vocab)
    return lengths


def reward_layout(ids: torch.Tensor, prompt_len: torch.Tensor, attention_mask: torch.Tensor | None,
                  vocab: int) -> ResponseLayout:
    """The positions the rewards of (B, T) ``ids`` need, after checking the mask, ids and prompt lengths."""
    lengths = _checked_lengths(ids, attention_mask, vocab)
    return ResponseLayout.build(ids, prompt_lengths(prompt_len, lengths), lengths)


def logprob_layout(ids: torch.Tensor, attention_mask: torch.Tensor | None, vocab: int) -> ResponseLayout:
    """Every position predicts the next real token: a response starting at 1 (rows may be empty)."""
    lengths = _checked_lengths(ids, attention_mask, vocab)
    return ResponseLayout.build(ids, [min(1, n) for n in lengths], lengths)
