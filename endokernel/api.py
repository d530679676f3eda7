"""Public functions: validate what can be checked without looking at the data (shapes, dtypes, devices,
scalars), pick a backend, and call the custom op that does the rest (see ``ops.py``). Everything here is
traceable by ``torch.compile``; checks that need the data (ids in range, prompt lengths) run inside the ops."""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import ops, stats
from ._validate import (
    check_gamma_beta,
    check_head,
    check_integer_tensor,
    check_same_device,
    optional_positive_float,
    positive_float,
    prompt_len_tensor,
    unpack_lm_head,
)


class TokenStatistics(NamedTuple):
    """Per-position statistics, float32 (float64 for float64 inputs), shaped like the targets."""

    chosen_logit: torch.Tensor  # z[target] after bias / scale / softcap (0 where target < 0)
    lse: torch.Tensor  # alpha * logsumexp(z / alpha)


class _Head(NamedTuple):
    weight: torch.Tensor
    bias: torch.Tensor | None
    logit_scale: float | None
    softcap: float | None
    backend: str


def _head(hidden: torch.Tensor, lm_head: torch.Tensor | torch.nn.Module, bias: torch.Tensor | None,
          logit_scale: float | None, softcap: float | None, backend: str) -> _Head:
    if not isinstance(hidden, torch.Tensor):
        raise TypeError(f"hidden must be a tensor, got {type(hidden).__name__}")
    weight, bias = unpack_lm_head(lm_head, bias)
    check_same_device(hidden=hidden, lm_head=weight, bias=bias)
    backend = stats.resolve_backend(backend, hidden.device)
    check_head(weight, bias, hidden, backend)
    return _Head(weight, bias, optional_positive_float("logit_scale", logit_scale),
                 optional_positive_float("softcap", softcap), backend)


def _sequences(hidden: torch.Tensor, ids: torch.Tensor, attention_mask: torch.Tensor | None):
    """(hidden (B, T, D), ids (B, T), mask (B, T) or None, unbatched) after shape checks."""
    check_integer_tensor("ids", ids)
    check_same_device(hidden=hidden, ids=ids, attention_mask=attention_mask)
    if ids.dim() not in (1, 2):
        raise ValueError(f"ids must have shape (T,) or (B, T), got {tuple(ids.shape)}")
    if hidden.dim() != ids.dim() + 1 or hidden.shape[:-1] != ids.shape:
        raise ValueError(f"hidden must have shape {tuple(ids.shape) + ('D',)} to match ids, got {tuple(hidden.shape)}")
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor):
            raise TypeError(f"attention_mask must be a tensor, got {type(attention_mask).__name__}")
        if attention_mask.shape != ids.shape:
            raise ValueError(f"attention_mask must have the shape of ids {tuple(ids.shape)}, "
                             f"got {tuple(attention_mask.shape)}")
    unbatched = ids.dim() == 1
    if unbatched:
        hidden, ids = hidden[None], ids[None]
        attention_mask = None if attention_mask is None else attention_mask[None]
    return hidden, ids, attention_mask, unbatched


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
    tensor of hidden's leading shape; values in [0, V), or negative for "no target". Differentiable with
    respect to hidden, the LM head and bias.
    """
    head = _head(hidden, lm_head, bias, logit_scale, softcap, backend)
    check_integer_tensor("targets", targets)
    check_same_device(hidden=hidden, targets=targets)
    if targets.shape != hidden.shape[:-1]:
        raise ValueError(f"targets must have hidden's leading shape {tuple(hidden.shape[:-1])}, got {tuple(targets.shape)}")
    chosen, lse, _ = ops.token_statistics_op(hidden, head.weight, head.bias, targets, positive_float("alpha", alpha),
                                             head.logit_scale, head.softcap, False, head.backend)
    return TokenStatistics(chosen, lse)


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
        position ``P + k`` and 0 elsewhere. Differentiable with respect to hidden, the LM head and bias.
    """
    head = _head(hidden, lm_head, bias, logit_scale, softcap, backend)
    gamma, beta = check_gamma_beta(gamma, beta)
    hidden3, ids2, mask2, unbatched = _sequences(hidden, ids, attention_mask)
    if vocab_size is None:
        vocab_size = head.weight.shape[0]
    elif isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    if not isinstance(return_per_token, bool):
        raise TypeError(f"return_per_token must be a bool, got {return_per_token!r}")

    rewards, per_token, _ = ops.endogenous_reward_op(
        hidden3, head.weight, head.bias, ids2, prompt_len_tensor(prompt_len, ids2.shape[0], ids.device), mask2,
        positive_float("alpha", alpha), gamma, beta, vocab_size, head.logit_scale, head.softcap, head.backend)
    if unbatched:
        rewards, per_token = rewards[0], per_token[0]
    return (rewards, per_token) if return_per_token else rewards


def fused_token_logprobs(
    hidden: torch.Tensor,
    lm_head: torch.Tensor | torch.nn.Module,
    ids: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    bias: torch.Tensor | None = None,
    logit_scale: float | None = None,
    softcap: float | None = None,
    return_entropy: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of ``ids`` under the model, without building the logits.

    Position ``t >= 1`` holds ``log p(ids[t] | ids[:t])`` from ``hidden[..., t-1, :]`` with the transformed
    logits (bias, logit_scale, softcap as in ``fused_endogenous_reward``) divided by ``temperature``; position 0
    and padding hold 0. With ``return_entropy``, also the entropy of that same distribution at the same
    positions. Shapes: hidden (T, D) or (B, T, D), ids (T,) or (B, T), attention_mask like ids (right-padded);
    returns float32 tensors shaped like ``ids``. Differentiable with respect to hidden, the LM head and bias.
    """
    head = _head(hidden, lm_head, bias, logit_scale, softcap, backend)
    hidden3, ids2, mask2, unbatched = _sequences(hidden, ids, attention_mask)
    if not isinstance(return_entropy, bool):
        raise TypeError(f"return_entropy must be a bool, got {return_entropy!r}")
    logprobs, entropy, _ = ops.token_logprobs_op(
        hidden3, head.weight, head.bias, ids2, mask2, positive_float("temperature", temperature), head.logit_scale,
        head.softcap, return_entropy, head.backend)
    if unbatched:
        logprobs = logprobs[0]
        entropy = entropy[0] if return_entropy else entropy
    return (logprobs, entropy) if return_entropy else logprobs
