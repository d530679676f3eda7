"""Logits-free statistics in plain PyTorch: (token tile x vocab tile) matmuls into one reused buffer, each
tile folded into a running (max, sum-exp) per position right after it is computed.

Extra memory: one tile plus O(N). Tokens are the outer loop: each token tile is gathered and converted to
the matmul dtype once, then meets the whole LM head tile by tile (for a head already in the matmul dtype the
tiles are views, no copies). On CPU the matmul runs in the fastest dtype the hardware has
(``cpu_matmul_dtype``); ``bias``, ``logit_scale`` and ``1 / alpha`` are folded into the matmul's ``beta`` /
``alpha``, so the epilogue is four in-place passes over the tile (max, subtract, exp, sum).
"""

from __future__ import annotations

import torch

from ..cpu import cpu_matmul_dtype
from ..transform import LogitTransform

TOKEN_BLOCK = 1024
VOCAB_BLOCK = 1024


def _chosen_logits(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, transform: LogitTransform) -> torch.Tensor:
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
    *,
    token_block: int = TOKEN_BLOCK,
    vocab_block: int = VOCAB_BLOCK,
    matmul_dtype: torch.dtype | None = None,
) -> None:
    """Same contract as every backend (see ``endokernel.stats``); ``matmul_dtype`` overrides the hardware
    choice (tests use it to run the bf16 path on any CPU). Chosen logits are fp32 dot products (float64 for
    float64 inputs) whatever the matmul dtype."""
    num_positions = rows.numel()
    if num_positions == 0:
        return
    vocab = weight.shape[0]
    acc_dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    if matmul_dtype is None:
        matmul_dtype = cpu_matmul_dtype(hidden.dtype) if hidden.device.type == "cpu" else hidden.dtype

    # z / alpha = (W h + b) * pre, then with a softcap: tanh, and a multiply by post
    scale = transform.logit_scale or 1.0
    if transform.softcap is None:
        pre, post = scale / transform.alpha, None
    else:
        pre, post = scale / transform.softcap, transform.softcap / transform.alpha
    bias = None if transform.bias is None else transform.bias.to(matmul_dtype)

    buffer = torch.empty(min(token_block, num_positions) * min(vocab_block, vocab), dtype=matmul_dtype, device=hidden.device)
    for t0 in range(0, num_positions, token_block):
        h = hidden[rows[t0 : t0 + token_block]]
        chosen_out[t0 : t0 + token_block] = _chosen_logits(h.to(acc_dtype), weight, targets[t0 : t0 + token_block], transform)
        h = h.to(matmul_dtype)
        run_max = torch.full((h.shape[0],), float("-inf"), dtype=acc_dtype, device=h.device)
        run_sum = torch.zeros(h.shape[0], dtype=acc_dtype, device=h.device)
        for v0 in range(0, vocab, vocab_block):
            w_t = weight[v0 : v0 + vocab_block].to(matmul_dtype).T
            tile = buffer[: h.shape[0] * w_t.shape[1]].view(h.shape[0], w_t.shape[1])
            if bias is None:
                torch.mm(h, w_t, out=tile)
                if pre != 1.0:
                    tile.mul_(pre)
            else:
                torch.addmm(bias[v0 : v0 + vocab_block], h, w_t, beta=pre, alpha=pre, out=tile)
            if post is not None:
                tile.tanh_().mul_(post)
            tile_max = tile.amax(dim=1).to(acc_dtype)
            tile_sum = tile.sub_(tile_max[:, None].to(matmul_dtype)).exp_().sum(dim=1, dtype=acc_dtype)
            new_max = torch.maximum(run_max, tile_max)
            run_sum.mul_((run_max - new_max).exp_()).add_(tile_sum.mul_((tile_max - new_max).exp_()))
            run_max = new_max
        lse_out[t0 : t0 + token_block] = (run_max + run_sum.log()) * transform.alpha
