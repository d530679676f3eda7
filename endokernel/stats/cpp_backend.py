"""The C++ backend: the forward statistics as one compiled CPU tile loop (csrc/chosen_and_lse.cpp).

Same tiling idea as ``torch_tiled``, without Python in the loop: each (token tile x vocab tile) matmul is an
ATen ``mm`` into a small per-thread buffer that stays in L2, folded right away by one vectorized epilogue
(bias, scale, softcap, max, exp, sum and the chosen-token gather in two passes over each row); token tiles
are spread over threads, each position's vocabulary reduction runs in a fixed tile order, so results do not
depend on the thread count. The chosen logit is read from the fp32 logits tile. Extra memory: a token
super-block of hidden rows, one head tile and one logits tile per thread, plus O(N).

Backward: ``torch_tiled.backward`` (its tiles are large matmuls, where Python overhead is already small).
"""

from __future__ import annotations

import torch

from .._cpp import extension
from ..transform import LogitTransform
from .torch_tiled import _dtypes, _folded_scales, backward

TOKEN_BLOCK = 2048  # hidden rows gathered and converted at once: the head is converted once per super-block
TILE_TOKENS = 128
TILE_VOCAB = 512  # a 128 x 512 fp32 logits tile is 256 KiB: it stays in L2 between the matmul and the epilogue

__all__ = ["backward", "chosen_and_lse"]


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
    tile_tokens: int = TILE_TOKENS,
    tile_vocab: int = TILE_VOCAB,
    matmul_dtype: torch.dtype | None = None,
) -> None:
    """Same contract as every backend (see ``endokernel.stats``); outputs must be contiguous.
    ``matmul_dtype`` overrides the hardware choice, as in ``torch_tiled``."""
    acc_dtype, mm_dtype = _dtypes(hidden, matmul_dtype)
    pre, post = _folded_scales(transform, transform.temperature)
    bias = None if transform.bias is None else transform.bias.to(acc_dtype).contiguous()
    # detached: the kernel's worker threads do not inherit the op's autograd exclusion, and ATen's out=
    # matmuls refuse inputs that require grad
    extension().chosen_and_lse(hidden.detach(), weight.detach(), rows.contiguous(), targets.contiguous(), bias, pre,
                               post, transform.temperature, chosen_out, lse_out, entropy_out, mm_dtype, token_block,
                               tile_tokens, tile_vocab)
