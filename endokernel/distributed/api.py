"""The public functions over process groups (``endokernel.api`` sends calls here, to the function of the same
name): check the arguments on each rank, agree across ranks (``agree.py``), lay out the positions
(``_core/layout.py``), compute this rank's statistics (``vocab_parallel.py``, on this rank's chunk:
``context_parallel.py``) and finalize them (``_core/finalize.py``). Eager only: these paths are not traceable
by ``torch.compile``.

Every rank returns the whole result, bitwise the same on every rank. Gradients assume every rank computes the
same loss from it (as in Megatron-LM): the hidden states' gradient is complete on every rank of a tp group;
the LM head's (and bias's) gradient is its block's, and with a cp group its chunk's share (sum it over the cp
group, as gradient reduction over data-parallel x context-parallel ranks does).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from .._core.finalize import finalize, finalize_logprobs
from .._core.layout import logprob_layout, reward_layout
from .._core.types import TokenStatistics
from .._core.validate import (
    Head,
    check_gamma_beta,
    check_integer_tensor,
    check_same_device,
    check_token_range,
    checked_bool,
    checked_head,
    checked_sequences,
    checked_vocab_size,
    positive_float,
    prompt_len_tensor,
    unpack_lm_head,
)
from . import context_parallel, groups, vocab_parallel
from .agree import Facts, agree


def _local_head(hidden: torch.Tensor, lm_head: torch.Tensor | torch.nn.Module, bias: torch.Tensor | None,
                logit_scale: float | None, softcap: float | None, backend: str) -> Head:
    weight, bias = unpack_lm_head(lm_head, bias)
    return checked_head(hidden, groups.local(weight), groups.local(bias), logit_scale, softcap, backend)


def _start(lm_head: object, tp_group: dist.ProcessGroup | None,
           cp_group: dist.ProcessGroup | None) -> dist.ProcessGroup | None:
    """The tp group (a DTensor head's own, or ``tp_group``) after checking the groups' types."""
    tp_group = groups.tp_group_of(lm_head, tp_group)
    groups.check_groups(tp_group, cp_group)
    return tp_group


def token_statistics(hidden: torch.Tensor, lm_head: torch.Tensor | torch.nn.Module, targets: torch.Tensor, *,
                     alpha: float, bias: torch.Tensor | None, logit_scale: float | None, softcap: float | None,
                     backend: str, tp_group: dist.ProcessGroup | None) -> TokenStatistics:
    """``endokernel.token_statistics`` over a vocab-parallel LM head; ``targets`` are global ids."""
    tp_group = _start(lm_head, tp_group, None)
    try:
        head = _local_head(hidden, lm_head, bias, logit_scale, softcap, backend)
        check_integer_tensor("targets", targets)
        check_same_device(hidden=hidden, targets=targets)
        if targets.shape != hidden.shape[:-1]:
            raise ValueError(f"targets must have hidden's leading shape {tuple(hidden.shape[:-1])}, "
                             f"got {tuple(targets.shape)}")
        alpha = positive_float("alpha", alpha)
        facts = Facts(block=head.weight.shape[0], chunk=targets.numel(), length=targets.numel(),
                      dim=hidden.shape[-1], inputs={"targets": targets},
                      settings=(alpha, head.logit_scale, head.softcap, head.bias is None, str(hidden.dtype),
                                head.backend))
    except (TypeError, ValueError) as error:
        facts = error
    plan = agree(tp_group, None, ("targets",), facts)
    check_token_range("targets", targets, plan.vocab_rows(head.weight.shape[0]), allow_negative=True)
    chosen, lse, _ = vocab_parallel.statistics(hidden.reshape(-1, hidden.shape[-1]), head,
                                               targets.reshape(-1).to(torch.int64), alpha, False, plan.tp)
    return TokenStatistics(chosen.view(targets.shape), lse.view(targets.shape))


def fused_endogenous_reward(hidden: torch.Tensor, lm_head: torch.Tensor | torch.nn.Module, ids: torch.Tensor, *,
                      prompt_len: int | list[int] | torch.Tensor, attention_mask: torch.Tensor | None, alpha: float,
                      gamma: float, beta: float, vocab_size: int | None, bias: torch.Tensor | None,
                      logit_scale: float | None, softcap: float | None, return_per_token: bool, backend: str,
                      tp_group: dist.ProcessGroup | None,
                      cp_group: dist.ProcessGroup | None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``endokernel.fused_endogenous_reward`` over a vocab-parallel LM head and / or position chunks."""
    tp_group = _start(lm_head, tp_group, cp_group)
    try:
        head = _local_head(hidden, lm_head, bias, logit_scale, softcap, backend)
        gamma, beta = check_gamma_beta(gamma, beta)
        hidden3, ids2, mask2, unbatched = checked_sequences(hidden, ids, attention_mask, chunked=cp_group is not None)
        vocab_size = checked_vocab_size(vocab_size)
        alpha = positive_float("alpha", alpha)
        prompt = prompt_len_tensor(prompt_len, ids2.shape[0], ids2.device)
        facts = Facts(block=head.weight.shape[0], chunk=hidden3.shape[1], length=ids2.shape[1], dim=hidden3.shape[2],
                      inputs={"ids": ids2, "attention_mask": mask2, "prompt_len": prompt},
                      settings=(alpha, gamma, beta, vocab_size, head.logit_scale, head.softcap, head.bias is None,
                                checked_bool("return_per_token", return_per_token), str(hidden.dtype), head.backend))
    except (TypeError, ValueError) as error:
        facts = error
    plan = agree(tp_group, cp_group, ("ids", "attention_mask", "prompt_len"), facts)
    rows = plan.vocab_rows(head.weight.shape[0])
    if plan.tp is not None and vocab_size not in (None, rows):
        raise ValueError(f"vocab_size = {vocab_size}, but the vocabulary blocks of tp_group {list(plan.tp.sizes)} "
                         f"add up to {rows}")
    entries = context_parallel.local_entries(reward_layout(ids2, prompt, mask2, rows), plan.cp)
    chosen, lse, _ = vocab_parallel.statistics(context_parallel.hidden_rows(hidden3, entries, plan.cp), head,
                                               entries.targets, alpha, False, plan.tp)
    terminal = context_parallel.next_values(lse, entries, plan.cp, alpha * math.log(vocab_size or rows))
    # float64 out: the chunks' partial sums are added before rounding to the output dtype (chosen's)
    rewards, per_token = finalize(chosen, lse, entries, terminal=terminal, gamma=gamma, beta=beta,
                                  out_dtype=torch.float64, use_triton=False)
    rewards = context_parallel.combine(rewards, plan.cp).to(chosen.dtype)
    if not return_per_token:
        return rewards[0] if unbatched else rewards
    per_token = context_parallel.combine(per_token, plan.cp).to(chosen.dtype)
    return (rewards[0], per_token[0]) if unbatched else (rewards, per_token)


def fused_token_logprobs(hidden: torch.Tensor, lm_head: torch.Tensor | torch.nn.Module, ids: torch.Tensor, *,
                   attention_mask: torch.Tensor | None, temperature: float, bias: torch.Tensor | None,
                   logit_scale: float | None, softcap: float | None, return_entropy: bool, backend: str,
                   tp_group: dist.ProcessGroup | None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``endokernel.fused_token_logprobs`` over a vocab-parallel LM head."""
    tp_group = _start(lm_head, tp_group, None)
    try:
        head = _local_head(hidden, lm_head, bias, logit_scale, softcap, backend)
        hidden3, ids2, mask2, unbatched = checked_sequences(hidden, ids, attention_mask)
        temperature = positive_float("temperature", temperature)
        facts = Facts(block=head.weight.shape[0], chunk=ids2.shape[1], length=ids2.shape[1], dim=hidden3.shape[2],
                      inputs={"ids": ids2, "attention_mask": mask2},
                      settings=(temperature, head.logit_scale, head.softcap, head.bias is None,
                                checked_bool("return_entropy", return_entropy), str(hidden.dtype), head.backend))
    except (TypeError, ValueError) as error:
        facts = error
    plan = agree(tp_group, None, ("ids", "attention_mask"), facts)
    layout = logprob_layout(ids2, mask2, plan.vocab_rows(head.weight.shape[0]))
    chosen, lse, entropy = vocab_parallel.statistics(hidden3.reshape(-1, hidden3.shape[-1])[layout.rows], head,
                                                     layout.targets, temperature, return_entropy, plan.tp)
    logprobs, entropy = finalize_logprobs(chosen, lse, entropy, layout, temperature)
    if unbatched:
        logprobs, entropy = logprobs[0], None if entropy is None else entropy[0]
    return (logprobs, entropy) if return_entropy else logprobs
