"""Public functions: validate what can be checked without looking at the data (shapes, dtypes, devices,
scalars), pick a backend, and call the custom op that does the rest (see ``ops.py``). Everything here is
traceable by ``torch.compile``; checks that need the data (ids in range, prompt lengths) run inside the ops.
With a process group (``tp_group``, ``cp_group``) or a DTensor LM head, the call goes to the function of the
same name in ``distributed/api.py`` instead, which composes the same op across ranks (eager only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from . import ops
from ._core.types import TokenStatistics
from ._core.validate import (
    check_gamma_beta,
    check_integer_tensor,
    check_same_device,
    checked_bool,
    checked_head,
    checked_sequences,
    checked_vocab_size,
    positive_float,
    prompt_len_tensor,
)
from .distributed.groups import is_sharded

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["TokenStatistics", "fused_endogenous_reward", "fused_token_logprobs", "token_statistics"]


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
    tp_group: ProcessGroup | None = None,
) -> TokenStatistics:
    """Chosen-token logit and soft value at every position, without building the logits.

    For each position with hidden state ``h`` (``hidden[..., :]``, shape (..., D)) and logits
    ``z = softcap * tanh(((W h + bias) * logit_scale) / softcap)`` (steps skipped when their argument is None):
    ``chosen_logit = z[target]`` (0 where ``target < 0``) and ``lse = alpha * logsumexp(z / alpha)``.
    ``lm_head``: (V, D) tensor of hidden's dtype, or an ``nn.Linear`` (its bias is used). ``targets``: integer
    tensor of hidden's leading shape; values in [0, V), or negative for "no target". Differentiable with
    respect to hidden, the LM head and bias.

    ``tp_group``: vocab-parallel LM head, see ``fused_endogenous_reward``; ``targets`` are then global ids.
    """
    if tp_group is not None or is_sharded(lm_head):
        from .distributed import api as distributed

        return distributed.token_statistics(hidden, lm_head, targets, alpha=alpha, bias=bias,
                                            logit_scale=logit_scale, softcap=softcap, backend=backend,
                                            tp_group=tp_group)
    head = checked_head(hidden, lm_head, bias, logit_scale, softcap, backend)
    check_integer_tensor("targets", targets)
    check_same_device(hidden=hidden, targets=targets)
    if targets.shape != hidden.shape[:-1]:
        raise ValueError(f"targets must have hidden's leading shape {tuple(hidden.shape[:-1])}, "
                         f"got {tuple(targets.shape)}")
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
    tp_group: ProcessGroup | None = None,
    cp_group: ProcessGroup | None = None,
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
        vocab_size: for the terminal value; defaults to lm_head's row count (with ``tp_group``, the sum of
            the blocks, which a given vocab_size must equal).
        bias: optional (V,) logit bias (not with an ``nn.Linear`` that has one).
        logit_scale: optional multiplier applied after the bias.
        softcap: optional Gemma-2 style cap ``softcap * tanh(z / softcap)``, applied last.
        return_per_token: also return the per-token rewards.
        backend: 'auto' (triton on CUDA; on CPU cpp where built, else torch), 'torch' (logits-free tiles),
            'triton' (fused kernel; on CPU tensors it runs under Triton's interpreter), 'cpp' (compiled CPU
            tiles, where ``endokernel.cpp_available()``) or 'reference' (materializes the logits).
        tp_group: vocab-parallel LM head: ``lm_head`` (and ``bias``) is this rank's block of consecutive
            vocabulary rows, blocks in rank order, sizes free; ``ids`` are global. A DTensor ``lm_head``
            sharded ``Shard(0)`` on a 1-D mesh uses its mesh's group without this argument.
        cp_group: context parallelism: ``hidden`` (B, L, D) holds this rank's L consecutive positions of every
            row, chunks in rank order, lengths free; ids, attention_mask and prompt_len are global.

    Returns:
        float32 rewards of shape (B,) (0-d for unbatched input; float64 for float64 inputs). With
        ``return_per_token``, ``(rewards, per_token)``, ``per_token`` shaped like ``ids`` with ``r_k`` at
        position ``P + k`` and 0 elsewhere. Differentiable with respect to hidden, the LM head and bias.
        With process groups, every rank gets the whole result (see ``distributed/api.py`` for gradients).
    """
    if tp_group is not None or cp_group is not None or is_sharded(lm_head):
        from .distributed import api as distributed

        return distributed.fused_endogenous_reward(
            hidden, lm_head, ids, prompt_len=prompt_len, attention_mask=attention_mask, alpha=alpha, gamma=gamma,
            beta=beta, vocab_size=vocab_size, bias=bias, logit_scale=logit_scale, softcap=softcap,
            return_per_token=return_per_token, backend=backend, tp_group=tp_group, cp_group=cp_group)
    head = checked_head(hidden, lm_head, bias, logit_scale, softcap, backend)
    gamma, beta = check_gamma_beta(gamma, beta)
    hidden3, ids2, mask2, unbatched = checked_sequences(hidden, ids, attention_mask)
    vocab_size = checked_vocab_size(vocab_size) or head.weight.shape[0]
    checked_bool("return_per_token", return_per_token)

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
    tp_group: ProcessGroup | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of ``ids`` under the model, without building the logits.

    Position ``t >= 1`` holds ``log p(ids[t] | ids[:t])`` from ``hidden[..., t-1, :]`` with the transformed
    logits (bias, logit_scale, softcap as in ``fused_endogenous_reward``) divided by ``temperature``; position 0
    and padding hold 0. With ``return_entropy``, also the entropy of that same distribution at the same
    positions. Shapes: hidden (T, D) or (B, T, D), ids (T,) or (B, T), attention_mask like ids (right-padded);
    returns float32 tensors shaped like ``ids``. Differentiable with respect to hidden, the LM head and bias.
    ``tp_group``: vocab-parallel LM head, see ``fused_endogenous_reward``.
    """
    if tp_group is not None or is_sharded(lm_head):
        from .distributed import api as distributed

        return distributed.fused_token_logprobs(
            hidden, lm_head, ids, attention_mask=attention_mask, temperature=temperature, bias=bias,
            logit_scale=logit_scale, softcap=softcap, return_entropy=return_entropy, backend=backend,
            tp_group=tp_group)
    head = checked_head(hidden, lm_head, bias, logit_scale, softcap, backend)
    hidden3, ids2, mask2, unbatched = checked_sequences(hidden, ids, attention_mask)
    checked_bool("return_entropy", return_entropy)
    logprobs, entropy, _ = ops.token_logprobs_op(
        hidden3, head.weight, head.bias, ids2, mask2, positive_float("temperature", temperature), head.logit_scale,
        head.softcap, return_entropy, head.backend)
    if unbatched:
        logprobs = logprobs[0]
        entropy = entropy[0] if return_entropy else entropy
    return (logprobs, entropy) if return_entropy else logprobs
