"""Public functions: validate the arguments once, pick a backend, compute per-position statistics, finalize."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from . import stats
from ._alloc import new_empty
from ._validate import (
    check_gamma_beta,
    check_head,
    check_integer_tensor,
    check_same_device,
    check_token_range,
    optional_positive_float,
    positive_float,
    prompt_lengths,
    row_lengths,
    unpack_lm_head,
)
from .finalize import finalize
from .layout import ResponseLayout
from .transform import LogitTransform


class TokenStatistics(NamedTuple):
    """Per-position statistics, float32 (float64 for float64 inputs), shaped like the targets."""

    chosen_logit: torch.Tensor  # z[target] after bias / scale / softcap (0 where target < 0)
    lse: torch.Tensor  # alpha * logsumexp(z / alpha)


def _prepare(
    hidden: torch.Tensor, lm_head: torch.Tensor | torch.nn.Module, bias: torch.Tensor | None,
    alpha: float, logit_scale: float | None, softcap: float | None, backend: str,
) -> tuple[torch.Tensor, LogitTransform, str]:
    if not isinstance(hidden, torch.Tensor):
        raise TypeError(f"hidden must be a tensor, got {type(hidden).__name__}")
    weight, bias = unpack_lm_head(lm_head, bias)
    check_same_device(hidden=hidden, lm_head=weight, bias=bias)
    backend = stats.resolve_backend(backend, hidden.device)
    check_head(weight, bias, hidden, backend)
    transform = LogitTransform(
        alpha=positive_float("alpha", alpha),
        bias=bias.detach() if bias is not None else None,
        logit_scale=optional_positive_float("logit_scale", logit_scale),
        softcap=optional_positive_float("softcap", softcap),
    )
    return weight.detach(), transform, backend


def _out_dtype(hidden: torch.Tensor) -> torch.dtype:
    return torch.float64 if hidden.dtype == torch.float64 else torch.float32


@torch.no_grad()
def token_statistics(
    hidden: torch.Tensor,
    lm_head: torch.Tensor | torch.nn.Module,
    targets: torch.Tensor,
    *,
    alpha: float = 1.0,
    bias: torch.Tensor | None = None,
    logit_scale: float | None = None,
    softcap: float | None = None,
    backend: str = "auto",
) -> TokenStatistics:
    """Chosen-token logit and soft value at every position, without building the logits.

    For each position with hidden state ``h`` (``hidden[..., :]``, shape (..., D)) and logits
    ``z = softcap * tanh(((W h + bias) * logit_scale) / softcap)`` (steps skipped when their argument is None):
    ``chosen_logit = z[target]`` (0 where ``target < 0``) and ``lse = alpha * logsumexp(z / alpha)``.
    ``lm_head``: (V, D) tensor of hidden's dtype, or an ``nn.Linear`` (its bias is used). ``targets``: integer
    tensor of hidden's leading shape; values in [0, V), or negative for "no target". Not differentiable.
    """
    weight, transform, backend = _prepare(hidden, lm_head, bias, alpha, logit_scale, softcap, backend)
    check_integer_tensor("targets", targets)
    check_same_device(hidden=hidden, targets=targets)
    if tuple(targets.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(f"targets must have hidden's leading shape {tuple(hidden.shape[:-1])}, got {tuple(targets.shape)}")
    check_token_range("targets", targets, weight.shape[0], allow_negative=True)

    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    rows = torch.arange(flat_hidden.shape[0], device=hidden.device)
    chosen = new_empty(rows.numel(), dtype=_out_dtype(hidden), device=hidden.device)
    lse = new_empty(rows.numel(), dtype=_out_dtype(hidden), device=hidden.device)
    stats.chosen_and_lse(backend, flat_hidden, weight, rows, targets.reshape(-1).to(torch.int64), transform, chosen, lse)
    return TokenStatistics(chosen.view(targets.shape), lse.view(targets.shape))


@torch.no_grad()
def fused_endogenous_reward(
    hidden: torch.Tensor,
    lm_head: torch.Tensor | torch.nn.Module,
    ids: torch.Tensor,
    *,
    prompt_len: int | list[int] | torch.Tensor = 1,
    attention_mask: torch.Tensor | None = None,
    alpha: float = 1.0,
    gamma: float = 0.95,
    beta: float = 0.0,
    vocab_size: int | None = None,
    bias: torch.Tensor | None = None,
    logit_scale: float | None = None,
    softcap: float | None = None,
    return_per_token: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Endogenous reward of each sequence's response, without building the (T x V) logits.

    For a row ``x_0 .. x_{n-1}`` (n its real length) with response start ``P`` and transformed logits ``L_t``,
    response token ``k`` (position ``t = P + k``) gets ``r_k = L_{t-1}[x_t] - V_t`` with
    ``V_t = alpha * logsumexp(L_t / alpha)``, and the terminal ``V_{n-1} = alpha * log(vocab_size)``;
    the row's reward is ``sum_k max(gamma**k, beta) * r_k`` (0.0 for an empty response, ``P = n``).

    Args:
        hidden: (T, D) or (B, T, D) final hidden states (after the final norm); float32, bfloat16 or float16
            (float64 on the 'reference' and 'torch' backends). The last real position is never read.
        lm_head: (V, D) weight of hidden's dtype, or an ``nn.Linear`` whose bias is then used.
        ids: (T,) or (B, T) integer token ids of the whole sequence, prompt and response.
        prompt_len: response start P, an int or (B,) ints, each in [1, row length].
        attention_mask: optional (B, T) (or (T,)) 0/1 mask, right-padded, marking each row's real length.
        alpha: temperature of the soft value, > 0.
        gamma: discount in (0, 1]; beta: floor of the discount weights, >= 0.
        vocab_size: for the terminal value; defaults to lm_head's row count.
        bias: optional (V,) logit bias (not with an ``nn.Linear`` that has one).
        logit_scale: optional multiplier applied after the bias.
        softcap: optional Gemma-2 style cap ``softcap * tanh(z / softcap)``, applied last.
        return_per_token: also return the per-token rewards.
        backend: 'auto' (triton on CUDA, torch on CPU), 'torch' (logits-free tiles), 'triton' (fused kernel;
            on CPU tensors it runs under Triton's interpreter) or 'reference' (materializes the logits).

    Returns:
        float32 rewards of shape (B,) (0-d for unbatched input; float64 for float64 inputs). With
        ``return_per_token``, ``(rewards, per_token)``, ``per_token`` shaped like ``ids`` with ``r_k`` at
        position ``P + k`` and 0 elsewhere. Not differentiable: results carry no gradient.
    """
    weight, transform, backend = _prepare(hidden, lm_head, bias, alpha, logit_scale, softcap, backend)
    gamma, beta = check_gamma_beta(gamma, beta)
    check_integer_tensor("ids", ids)
    check_same_device(hidden=hidden, ids=ids)
    if ids.dim() not in (1, 2):
        raise ValueError(f"ids must have shape (T,) or (B, T), got {tuple(ids.shape)}")
    if hidden.dim() != ids.dim() + 1 or hidden.shape[:-1] != ids.shape:
        raise ValueError(f"hidden must have shape {tuple(ids.shape) + ('D',)} to match ids, got {tuple(hidden.shape)}")
    if vocab_size is None:
        vocab_size = weight.shape[0]
    elif isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    if not isinstance(return_per_token, bool):
        raise TypeError(f"return_per_token must be a bool, got {return_per_token!r}")

    unbatched = ids.dim() == 1
    ids2 = ids[None] if unbatched else ids
    hidden3 = hidden[None] if unbatched else hidden
    mask2 = attention_mask[None] if unbatched and isinstance(attention_mask, torch.Tensor) else attention_mask
    batch, seq_len = ids2.shape
    lengths = row_lengths(mask2, batch, seq_len, ids.device)
    real = None if mask2 is None else mask2.bool()
    check_token_range("ids", ids2 if real is None else ids2[real], weight.shape[0])
    layout = ResponseLayout.build(ids2, prompt_lengths(prompt_len, lengths), lengths)

    out_dtype = _out_dtype(hidden)
    chosen = new_empty(layout.num_positions, dtype=out_dtype, device=hidden.device)
    lse = new_empty(layout.num_positions, dtype=out_dtype, device=hidden.device)
    flat_hidden = hidden3.reshape(batch * seq_len, hidden.shape[-1])
    stats.chosen_and_lse(backend, flat_hidden, weight, layout.rows, layout.targets, transform, chosen, lse)
    rewards, per_token = finalize(
        chosen, lse, layout,
        terminal=transform.alpha * math.log(vocab_size),
        gamma=gamma, beta=beta, out_dtype=out_dtype, use_triton=backend == "triton",
    )
    if unbatched:
        rewards, per_token = rewards[0], per_token[0]
    return (rewards, per_token) if return_per_token else rewards
