"""The torch backend (``StatisticsBackend``): logits-free statistics in plain PyTorch, (token tile x vocab tile)
matmuls into one reused buffer.

Forward: tokens are the outer loop; each token tile is gathered and converted to the matmul dtype once, then
meets the LM head tile by tile (in matmuls of ``ROW_TILE`` rows: batch invariant), each logits tile folded into
a running (max, sum-exp[, entropy]) per position right after it is computed. ``bias``, ``logit_scale`` and
``1 / temperature`` are folded into the matmul's ``beta`` / ``alpha``, so the epilogue is four in-place passes
over the tile (max, subtract, exp, sum).
Extra memory: one tile plus O(N).

Backward: the vocabulary is the outer loop, so each LM-head tile's gradient is accumulated over all tokens
in fp32 and written once (deterministic, no atomics); the logits tile is recomputed from the gathered hidden
states, turned into ``dL/dz`` with the saved logsumexp, and fed to the two gradient matmuls. Extra memory:
the gathered hidden rows and an fp32 accumulator of their gradient (N x D each) plus tiles.

On CPU the matmuls run in the fastest dtype the hardware has (``cpu_matmul_dtype``).
"""

from __future__ import annotations

import torch

from .._core.transform import LogitTransform
from .cpu_choice import tile_dtypes
from .logits_grad import logits_grad
from .row_tiles import ROW_TILE, pad_rows

TOKEN_BLOCK = 1024
VOCAB_BLOCK = 1024


def _scaled_logits(h: torch.Tensor, w_t: torch.Tensor, bias: torch.Tensor | None, pre: float, post: float | None,
                   out: torch.Tensor) -> torch.Tensor:
    """``z / divisor`` (see ``LogitTransform.folded_scales``) for one tile, written into ``out``
    (h: (t, D), w_t: (D, v), out: (t, v))."""
    if bias is None:
        torch.mm(h, w_t, out=out)
        if pre != 1.0:
            out.mul_(pre)
    else:
        torch.addmm(bias, h, w_t, beta=pre, alpha=pre, out=out)
    if post is not None:
        out.tanh_().mul_(post)
    return out


def _chosen_logits(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                   transform: LogitTransform) -> torch.Tensor:
    """``z[target]`` for one token tile as one dot product per position, in ``h``'s dtype (0 where target < 0)."""
    safe = targets.clamp_min(0)
    z = torch.linalg.vecdot(h, weight[safe].to(h.dtype))
    if transform.bias is not None:
        z += transform.bias[safe].to(h.dtype)
    return torch.where(targets >= 0, transform.scale_and_cap(z), 0.0)


def chosen_and_lse(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    transform: LogitTransform,
    chosen_out: torch.Tensor,
    lse_out: torch.Tensor,
    entropy_out: torch.Tensor | None = None,
    *,
    token_block: int = TOKEN_BLOCK,
    vocab_block: int = VOCAB_BLOCK,
    matmul_dtype: torch.dtype | None = None,
) -> None:
    """``StatisticsBackend.chosen_and_lse`` (``endokernel.backends``); ``matmul_dtype`` overrides the hardware
    choice (tests use it to run the bf16 path on any CPU). Chosen logits are fp32 dot products (float64 for
    float64 inputs) whatever the matmul dtype."""
    num_positions = rows.numel()
    if num_positions == 0:
        return
    vocab = weight.shape[0]
    acc_dtype, mm_dtype = tile_dtypes(hidden, matmul_dtype)
    pre, post = transform.folded_scales(transform.temperature)
    bias = None if transform.bias is None else transform.bias.to(mm_dtype)

    row_tile = min(ROW_TILE, token_block)  # every logits matmul has row_tile rows: batch invariance (row_tiles)
    block_rows = -(-min(token_block, num_positions) // row_tile) * row_tile
    buffer = torch.empty(block_rows * min(vocab_block, vocab), dtype=mm_dtype, device=hidden.device)
    exp_buffer = torch.empty_like(buffer) if entropy_out is not None else None
    for t0 in range(0, num_positions, token_block):
        block = slice(t0, t0 + token_block)
        h = hidden[rows[block]]
        chosen_out[block] = _chosen_logits(h.to(acc_dtype), weight, targets[block], transform)
        positions = h.shape[0]
        h = pad_rows(h.to(mm_dtype), row_tile)
        run_max = run_sum = run_dev = None  # running max, sum of exp, sum of exp * (s - max); s = z / T
        for v0 in range(0, vocab, vocab_block):
            w_t = weight[v0 : v0 + vocab_block].to(mm_dtype).T
            padded = buffer[: h.shape[0] * w_t.shape[1]].view(h.shape[0], w_t.shape[1])
            for r0 in range(0, h.shape[0], row_tile):
                _scaled_logits(h[r0 : r0 + row_tile], w_t, None if bias is None else bias[v0 : v0 + vocab_block],
                               pre, post, padded[r0 : r0 + row_tile])
            tile = padded[:positions]
            size = tile.numel()
            tile_max = tile.amax(dim=1).to(acc_dtype)
            tile.sub_(tile_max[:, None].to(mm_dtype))
            if exp_buffer is None:
                tile_sum = tile.exp_().sum(dim=1, dtype=acc_dtype)
                tile_dev = None
            else:
                exps = torch.exp(tile, out=exp_buffer[:size].view_as(tile))
                tile_sum = exps.sum(dim=1, dtype=acc_dtype)
                tile_dev = torch.linalg.vecdot(exps.to(acc_dtype), tile.to(acc_dtype))
            if run_max is None:
                run_max, run_sum, run_dev = tile_max, tile_sum, tile_dev
                continue
            new_max = torch.maximum(run_max, tile_max)
            old_shift, tile_shift = run_max - new_max, tile_max - new_max
            old_scale, tile_scale = old_shift.exp(), tile_shift.exp()
            if tile_dev is not None:  # re-center both sums of exp * (s - max) on the new max
                run_dev = old_scale * (run_dev + old_shift * run_sum) + tile_scale * (tile_dev + tile_shift * tile_sum)
            run_sum = run_sum * old_scale + tile_sum * tile_scale
            run_max = new_max
        log_sum = run_sum.log()
        lse_out[block] = (run_max + log_sum) * transform.temperature
        if entropy_out is not None:
            entropy_out[block] = log_sum - run_dev / run_sum


def backward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    transform: LogitTransform,
    lse: torch.Tensor,
    entropy: torch.Tensor | None,
    grad_chosen: torch.Tensor,
    grad_lse: torch.Tensor,
    grad_entropy: torch.Tensor | None,
    needs: tuple[bool, bool, bool],
    *,
    token_block: int = TOKEN_BLOCK,
    vocab_block: int = VOCAB_BLOCK,
    matmul_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``StatisticsBackend.backward`` (``endokernel.backends``)."""
    vocab, dim = weight.shape
    num_positions = rows.numel()
    acc_dtype, mm_dtype = tile_dtypes(hidden, matmul_dtype)
    pre, post = transform.folded_scales(1.0)
    bias = None if transform.bias is None else transform.bias.to(mm_dtype)

    h_all = hidden[rows].to(mm_dtype)
    grad_h = torch.zeros(num_positions, dim, dtype=acc_dtype, device=hidden.device) if needs[0] else None
    # each head tile's gradient is complete once its token loop ends: rounded to the head's dtype there, no
    # (V, D) accumulator in fp32 next to the returned gradient
    grad_w = torch.empty(vocab, dim, dtype=weight.dtype, device=hidden.device) if needs[1] else None
    grad_b = torch.empty(vocab, dtype=transform.bias.dtype, device=hidden.device) if needs[2] else None
    per_position = (lse.to(acc_dtype), None if entropy is None else entropy.to(acc_dtype), grad_chosen.to(acc_dtype),
                    grad_lse.to(acc_dtype), None if grad_entropy is None else grad_entropy.to(acc_dtype))

    buffer = torch.empty(min(token_block, num_positions) * min(vocab_block, vocab), dtype=mm_dtype,
                         device=hidden.device)
    for v0 in range(0, vocab, vocab_block):
        w = weight[v0 : v0 + vocab_block].to(mm_dtype)
        tile_bias = None if bias is None else bias[v0 : v0 + vocab_block]
        tile_grad_w = torch.zeros(w.shape, dtype=acc_dtype, device=hidden.device) if needs[1] else None
        tile_grad_b = torch.zeros(w.shape[0], dtype=acc_dtype, device=hidden.device) if needs[2] else None
        for t0 in range(0, num_positions, token_block):
            block = slice(t0, t0 + token_block)
            h = h_all[block]
            tile = buffer[: h.shape[0] * w.shape[0]].view(h.shape[0], w.shape[0])
            z = _scaled_logits(h, w.T, tile_bias, pre, post, tile).to(acc_dtype)
            block_stats = (None if t is None else t[block] for t in per_position)
            grad_raw = logits_grad(z, v0, targets[block], *block_stats, transform).to(mm_dtype)
            if grad_h is not None:
                _accumulate_product(grad_h[block], grad_raw, w)
            if tile_grad_w is not None:
                _accumulate_product(tile_grad_w, grad_raw.T, h)
            if tile_grad_b is not None:
                tile_grad_b += grad_raw.sum(dim=0, dtype=acc_dtype)
        if grad_w is not None:
            grad_w[v0 : v0 + vocab_block] = tile_grad_w
        if grad_b is not None:
            grad_b[v0 : v0 + vocab_block] = tile_grad_b
    return grad_h, grad_w, grad_b


def _accumulate_product(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b``, in place when the matmul dtype is the accumulator's."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
    else:
        acc += (a @ b).to(acc.dtype)
