"""The C++ backend (``StatisticsBackend``): the forward statistics as one compiled CPU tile loop
(csrc/chosen_and_lse.cpp).

Same tiling idea as ``torch_tiled``, without Python in the loop: each (token tile x vocab tile) matmul is an
ATen ``mm`` into a small per-thread buffer that stays in L2, folded right away by one vectorized epilogue
(bias, scale, softcap, max, exp, sum and the chosen-token gather in two passes over each row); token tiles
are spread over threads, each position's vocabulary reduction runs in a fixed tile order, so results do not
depend on the thread count. The chosen logit is read from the fp32 logits tile. Extra memory: a token
super-block of hidden rows, one head tile and one logits tile per thread, plus O(N).

Backward (csrc/backward.cpp): vocabulary chunks, then token blocks; each (chunk x block) has its dL/dlogits
recomputed into one buffer by token tiles (matmul, then the fused gradient epilogue on the L2-resident tile); then
work items of about equal cost multiply it out: blocks of positions add their dL/dhidden rows, blocks of vocab
rows their dL/dweight rows and bias sums. Every gradient row is owned by one work item and accumulates in a fixed
order: no atomics, bitwise identical for any thread count. Extra memory: the gathered hidden rows, one chunk of
the head and its fp32 gradient, one vocab_block x token_block dL/dlogits buffer and a tile per thread.
"""

from __future__ import annotations

import torch

from ..._core.alloc import new_empty
from ..._core.transform import LogitTransform
from ..cpu_choice import forced_engine, tile_dtypes
from .loader import extension

TOKEN_BLOCK = 2048  # hidden rows gathered and packed at once
TILE_TOKENS = 64
TILE_VOCAB = 512  # a 512 x 64 fp32 logits tile is 128 KiB: it stays in L2 between the matmul and the epilogue
BACKWARD_TOKEN_BLOCK = 1024
BACKWARD_VOCAB_BLOCK = 2048  # with BACKWARD_TOKEN_BLOCK: an 8 MiB fp32 dL/dlogits buffer
BACKWARD_TILE_ROWS = 256  # vocab rows of one dL/dweight product, long enough for the BLAS (dL/dhidden: as costly)
ENGINES = {"auto": 0, "brgemm": 1, "aten": 2}  # csrc/logits_product.h

__all__ = ["backward", "chosen_and_lse"]


def _engine_code(engine: str | None, acc_dtype: torch.dtype) -> int:
    """The tile engine's code: ``engine``, else the forced one for fp32-accumulated tiles (float64 tiles have
    only ATen's)."""
    if engine is None:
        engine = forced_engine() if acc_dtype == torch.float32 else "auto"
    return ENGINES[engine]


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
    engine: str | None = None,
    isa: str | None = None,
) -> None:
    """``StatisticsBackend.chosen_and_lse`` (``endokernel.backends``); outputs must be contiguous.
    ``matmul_dtype`` overrides the tile dtype, as in ``torch_tiled``; ``engine`` the tile products' ('brgemm'
    or 'aten', see csrc/logits_product.h); ``isa`` the compiled variant. Their defaults: what ``cpu_paths``
    forces, else the running CPU's choice."""
    acc_dtype, mm_dtype = tile_dtypes(hidden, matmul_dtype)
    pre, post = transform.folded_scales(transform.temperature)
    bias = None if transform.bias is None else transform.bias.to(acc_dtype).contiguous()
    # detached: the kernel's worker threads do not inherit the op's autograd exclusion, and ATen's out=
    # matmuls refuse inputs that require grad
    extension(isa).chosen_and_lse(hidden.detach(), weight.detach(), rows.contiguous(), targets.contiguous(), bias,
                                  pre, post, transform.temperature, chosen_out, lse_out, entropy_out, mm_dtype,
                                  token_block, tile_tokens, tile_vocab, _engine_code(engine, acc_dtype))


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
    token_block: int = BACKWARD_TOKEN_BLOCK,
    vocab_block: int = BACKWARD_VOCAB_BLOCK,
    tile_rows: int = BACKWARD_TILE_ROWS,
    tile_tokens: int = TILE_TOKENS,
    tile_vocab: int = TILE_VOCAB,
    matmul_dtype: torch.dtype | None = None,
    engine: str | None = None,
    isa: str | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``StatisticsBackend.backward`` (``endokernel.backends``): grad_h in the accumulation dtype, the head's
    and bias's gradients in their own dtypes; the keywords as for ``chosen_and_lse``."""
    acc_dtype, mm_dtype = tile_dtypes(hidden, matmul_dtype)
    pre, post = transform.folded_scales(1.0)
    bias = None if transform.bias is None else transform.bias.to(acc_dtype).contiguous()
    device = hidden.device
    grad_h = new_empty((rows.numel(), weight.shape[1]), dtype=acc_dtype, device=device) if needs[0] else None
    grad_w = new_empty(tuple(weight.shape), dtype=weight.dtype, device=device) if needs[1] else None
    grad_b = new_empty(weight.shape[0], dtype=transform.bias.dtype, device=device) if needs[2] else None

    def per_position(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(acc_dtype).contiguous()

    extension(isa).backward(hidden.detach(), weight.detach(), rows.contiguous(), targets.contiguous(), bias, pre, post,
                            transform.temperature, per_position(lse), per_position(entropy), per_position(grad_chosen),
                            per_position(grad_lse), per_position(grad_entropy), grad_h, grad_w, grad_b, mm_dtype,
                            token_block, vocab_block, tile_rows, tile_tokens, tile_vocab,
                            _engine_code(engine, acc_dtype))
    return grad_h, grad_w, grad_b
