"""The package's computations as ``torch.library`` custom ops (namespace ``endokernel``), each with a fake
(meta) implementation and a registered autograd formula, so ``torch.compile(fullgraph=True)`` traces through
them without a graph break.

Every op has static output shapes; work whose size depends on the data (which positions a reward needs, the
checks of ids and prompt lengths) happens inside the ops, where host synchronization is allowed. Each forward
op also returns the logsumexp it computed, laid out like ``ids``, for its backward op to reuse.
"""

import math
from typing import Optional

import torch
from torch import Tensor

from . import backends
from ._core.alloc import new_empty
from ._core.finalize import discount_weights, finalize, finalize_logprobs, scatter
from ._core.layout import logprob_layout, reward_layout
from ._core.transform import LogitTransform
from ._core.types import accumulation_dtype
from ._core.validate import check_token_range


def _transform(temperature: float, bias: Optional[Tensor], logit_scale: Optional[float], softcap: Optional[float]):
    return LogitTransform(temperature=temperature, bias=bias, logit_scale=logit_scale, softcap=softcap)


def _forward_stats(backend: str, hidden2d: Tensor, weight: Tensor, rows: Tensor, targets: Tensor,
                   transform: LogitTransform, with_entropy: bool) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Packed (chosen, lse, entropy or None), each (N,), for ``rows`` of ``hidden2d`` (M, D)."""
    n = rows.numel()
    dtype = accumulation_dtype(hidden2d.dtype)
    chosen = new_empty(n, dtype=dtype, device=hidden2d.device)
    lse = new_empty(n, dtype=dtype, device=hidden2d.device)
    entropy = new_empty(n, dtype=dtype, device=hidden2d.device) if with_entropy else None
    with _inputs_dtypes(hidden2d):
        backends.get(backend).chosen_and_lse(hidden2d, weight, rows, targets, transform, chosen, lse, entropy)
    return chosen, lse, entropy


def _inputs_dtypes(hidden: Tensor):
    """Autocast off: every backend multiplies in the dtypes its inputs have (and the statistics accumulate in
    fp32), whatever autocast region the call is made from, as autocast itself runs log_softmax in fp32."""
    return torch.autocast(hidden.device.type, enabled=False)


def _backward_stats(backend: str, hidden: Tensor, weight: Tensor, bias: Optional[Tensor], rows: Tensor,
                    targets: Tensor, transform: LogitTransform, lse: Tensor, entropy: Optional[Tensor],
                    grad_chosen: Tensor, grad_lse: Tensor, grad_entropy: Optional[Tensor],
                    needs: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients for hidden (..., D), weight and bias from packed per-position upstream gradients (``rows``
    index hidden's flattened positions); positions whose upstream gradients are all zero are skipped.
    Unneeded gradients come back as empty tensors."""
    hidden2d = _hidden2d(hidden)
    live = (grad_chosen != 0) | (grad_lse != 0)
    if grad_entropy is not None:
        live |= grad_entropy != 0
    if not bool(live.all()):
        keep = live.nonzero()[:, 0]
        rows, targets, lse, grad_chosen, grad_lse = (t[keep] for t in (rows, targets, lse, grad_chosen, grad_lse))
        if grad_entropy is not None:
            entropy, grad_entropy = entropy[keep], grad_entropy[keep]
    needs = (needs[0], needs[1], needs[2] and bias is not None)
    with _inputs_dtypes(hidden2d):
        grad_h, grad_w, grad_b = backends.get(backend).backward(
            hidden2d, weight, rows, targets, transform, lse, entropy, grad_chosen, grad_lse, grad_entropy, needs)
    d_hidden = hidden.new_empty(0)
    if needs[0]:
        d_hidden = torch.zeros_like(hidden, memory_format=torch.contiguous_format)
        d_hidden.view(-1, hidden.shape[-1])[rows] = grad_h.to(hidden.dtype)  # distinct rows: a deterministic scatter
    d_weight = grad_w.to(weight.dtype) if needs[1] else weight.new_empty(0)
    d_bias = grad_b.to(bias.dtype) if needs[2] else weight.new_empty(0)
    return d_hidden, d_weight, d_bias


def _hidden2d(hidden: Tensor) -> Tensor:
    return hidden.reshape(-1, hidden.shape[-1])


def _needs(ctx) -> list[bool]:
    return [bool(ctx.needs_input_grad[i]) for i in range(3)]  # hidden, weight, bias


def _grads_for_inputs(grads: tuple[Tensor, Tensor, Tensor], needs: list[bool], num_inputs: int) -> tuple:
    """Autograd's answer: the (hidden, weight, bias) gradients where needed, None for the other inputs."""
    return tuple(g if need else None for g, need in zip(grads, needs)) + (None,) * (num_inputs - 3)


# ---------------------------------------------------------------- token_statistics


@torch.library.custom_op("endokernel::token_statistics", mutates_args=())
def token_statistics_op(hidden: Tensor, weight: Tensor, bias: Optional[Tensor], targets: Tensor, temperature: float,
                        logit_scale: Optional[float], softcap: Optional[float], with_entropy: bool,
                        backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """(chosen, lse, entropy) shaped like ``targets`` (entropy empty unless ``with_entropy``)."""
    check_token_range("targets", targets, weight.shape[0], allow_negative=True)
    hidden2d = _hidden2d(hidden)
    rows = torch.arange(hidden2d.shape[0], device=hidden.device)
    chosen, lse, entropy = _forward_stats(backend, hidden2d, weight, rows, targets.reshape(-1).to(torch.int64),
                                          _transform(temperature, bias, logit_scale, softcap), with_entropy)
    entropy = entropy.view(targets.shape) if entropy is not None else hidden.new_empty(0, dtype=chosen.dtype)
    return chosen.view(targets.shape), lse.view(targets.shape), entropy


@token_statistics_op.register_fake
def _(hidden, weight, bias, targets, temperature, logit_scale, softcap, with_entropy, backend):
    dtype = accumulation_dtype(hidden.dtype)
    entropy = targets.new_empty(targets.shape if with_entropy else (0,), dtype=dtype)
    return targets.new_empty(targets.shape, dtype=dtype), targets.new_empty(targets.shape, dtype=dtype), entropy


@torch.library.custom_op("endokernel::token_statistics_backward", mutates_args=())
def token_statistics_backward_op(grad_chosen: Tensor, grad_lse: Tensor, grad_entropy: Optional[Tensor],
                                 hidden: Tensor, weight: Tensor, bias: Optional[Tensor], targets: Tensor, lse: Tensor,
                                 entropy: Optional[Tensor], temperature: float, logit_scale: Optional[float],
                                 softcap: Optional[float], backend: str,
                                 needs: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    rows = torch.arange(_hidden2d(hidden).shape[0], device=hidden.device)
    return _backward_stats(
        backend, hidden, weight, bias, rows, targets.reshape(-1).to(torch.int64),
        _transform(temperature, bias, logit_scale, softcap), lse.reshape(-1),
        None if entropy is None else entropy.reshape(-1), grad_chosen.reshape(-1), grad_lse.reshape(-1),
        None if grad_entropy is None else grad_entropy.reshape(-1), needs)


def _fake_grads(hidden: Tensor, weight: Tensor, bias: Optional[Tensor],
                needs: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    return (hidden.new_empty(hidden.shape if needs[0] else (0,)), weight.new_empty(weight.shape if needs[1] else (0,)),
            weight.new_empty(bias.shape if needs[2] and bias is not None else (0,)))


@token_statistics_backward_op.register_fake
def _(grad_chosen, grad_lse, grad_entropy, hidden, weight, bias, targets, lse, entropy, temperature, logit_scale,
      softcap, backend, needs):
    return _fake_grads(hidden, weight, bias, needs)


def _token_statistics_setup(ctx, inputs, output):
    hidden, weight, bias, targets, temperature, logit_scale, softcap, with_entropy, backend = inputs
    ctx.save_for_backward(hidden, weight, bias, targets, output[1], output[2] if with_entropy else None)
    ctx.scalars = (temperature, logit_scale, softcap, backend)
    ctx.with_entropy = with_entropy


def _token_statistics_backward(ctx, grad_chosen, grad_lse, grad_entropy):
    hidden, weight, bias, targets, lse, entropy = ctx.saved_tensors
    temperature, logit_scale, softcap, backend = ctx.scalars
    needs = _needs(ctx)
    grads = token_statistics_backward_op(
        _zeros_if_none(grad_chosen, lse), _zeros_if_none(grad_lse, lse),
        _zeros_if_none(grad_entropy, lse) if ctx.with_entropy else None,
        hidden, weight, bias, targets, lse, entropy, temperature, logit_scale, softcap, backend, needs)
    return _grads_for_inputs(grads, needs, 9)


def _zeros_if_none(grad: Optional[Tensor], like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad


token_statistics_op.register_autograd(_token_statistics_backward, setup_context=_token_statistics_setup)


# ---------------------------------------------------------------- endogenous_reward


@torch.library.custom_op("endokernel::endogenous_reward", mutates_args=())
def endogenous_reward_op(hidden: Tensor, weight: Tensor, bias: Optional[Tensor], ids: Tensor, prompt_len: Tensor,
                         attention_mask: Optional[Tensor], alpha: float, gamma: float, beta: float, vocab_size: int,
                         logit_scale: Optional[float], softcap: Optional[float],
                         backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """(rewards (B,), per-token rewards (B, T), lse (B, T) at the computed positions) for (B, T, D) hidden."""
    layout = reward_layout(ids, prompt_len, attention_mask, weight.shape[0])
    transform = _transform(alpha, bias, logit_scale, softcap)
    chosen, lse, _ = _forward_stats(backend, _hidden2d(hidden), weight, layout.rows, layout.targets, transform, False)
    rewards, per_token = finalize(chosen, lse, layout, terminal=alpha * math.log(vocab_size), gamma=gamma, beta=beta,
                                  out_dtype=accumulation_dtype(hidden.dtype), use_triton=backend == "triton")
    return rewards, per_token, scatter(lse, layout.rows, tuple(ids.shape))


@endogenous_reward_op.register_fake
def _(hidden, weight, bias, ids, prompt_len, attention_mask, alpha, gamma, beta, vocab_size, logit_scale, softcap,
      backend):
    dtype = accumulation_dtype(hidden.dtype)
    return (ids.new_empty(ids.shape[:1], dtype=dtype), ids.new_empty(ids.shape, dtype=dtype),
            ids.new_empty(ids.shape, dtype=dtype))


@torch.library.custom_op("endokernel::endogenous_reward_backward", mutates_args=())
def endogenous_reward_backward_op(grad_rewards: Tensor, grad_per_token: Tensor, hidden: Tensor, weight: Tensor,
                                  bias: Optional[Tensor], ids: Tensor, prompt_len: Tensor,
                                  attention_mask: Optional[Tensor], lse: Tensor, alpha: float, gamma: float,
                                  beta: float, logit_scale: Optional[float], softcap: Optional[float], backend: str,
                                  needs: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    layout = reward_layout(ids, prompt_len, attention_mask, weight.shape[0])
    # r_k = chosen[j] - lse[j + 1] within a row (j = starts[b] + k); the last token's value is a constant
    k = layout.response_pos
    upstream = (grad_rewards.to(torch.float64)[layout.rows // layout.seq_len]
                * discount_weights(layout.seq_len, gamma, beta, ids.device)[k]
                + grad_per_token.reshape(-1)[layout.rows + 1].to(torch.float64)).to(lse.dtype)
    grad_lse = torch.zeros_like(upstream)
    grad_lse[1:] = -upstream[:-1]
    grad_lse[k == 0] = 0  # a row's first entry: its lse (position P - 1) is not used
    return _backward_stats(backend, hidden, weight, bias, layout.rows, layout.targets,
                           _transform(alpha, bias, logit_scale, softcap), lse.reshape(-1)[layout.rows], None,
                           upstream, grad_lse, None, needs)


@endogenous_reward_backward_op.register_fake
def _(grad_rewards, grad_per_token, hidden, weight, bias, ids, prompt_len, attention_mask, lse, alpha, gamma, beta,
      logit_scale, softcap, backend, needs):
    return _fake_grads(hidden, weight, bias, needs)


def _endogenous_reward_setup(ctx, inputs, output):
    hidden, weight, bias, ids, prompt_len, attention_mask, alpha, gamma, beta, _, logit_scale, softcap, backend = inputs
    ctx.save_for_backward(hidden, weight, bias, ids, prompt_len, attention_mask, output[2])
    ctx.scalars = (alpha, gamma, beta, logit_scale, softcap, backend)
    ctx.mark_non_differentiable(output[2])


def _endogenous_reward_backward(ctx, grad_rewards, grad_per_token, _grad_lse):
    hidden, weight, bias, ids, prompt_len, attention_mask, lse = ctx.saved_tensors
    alpha, gamma, beta, logit_scale, softcap, backend = ctx.scalars
    needs = _needs(ctx)
    grads = endogenous_reward_backward_op(
        _zeros_if_none(grad_rewards, lse[:, 0]), _zeros_if_none(grad_per_token, lse), hidden, weight, bias, ids,
        prompt_len, attention_mask, lse, alpha, gamma, beta, logit_scale, softcap, backend, needs)
    return _grads_for_inputs(grads, needs, 13)


endogenous_reward_op.register_autograd(_endogenous_reward_backward, setup_context=_endogenous_reward_setup)


# ---------------------------------------------------------------- token_logprobs


@torch.library.custom_op("endokernel::token_logprobs", mutates_args=())
def token_logprobs_op(hidden: Tensor, weight: Tensor, bias: Optional[Tensor], ids: Tensor,
                      attention_mask: Optional[Tensor], temperature: float, logit_scale: Optional[float],
                      softcap: Optional[float], with_entropy: bool, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """(log-probs (B, T), entropy (B, T) or empty, lse (B, T)); position t holds the prediction of ids[t]."""
    layout = logprob_layout(ids, attention_mask, weight.shape[0])
    chosen, lse, entropy = _forward_stats(backend, _hidden2d(hidden), weight, layout.rows, layout.targets,
                                          _transform(temperature, bias, logit_scale, softcap), with_entropy)
    logprobs, entropy = finalize_logprobs(chosen, lse, entropy, layout, temperature)
    entropy = entropy if with_entropy else hidden.new_empty(0, dtype=logprobs.dtype)
    return logprobs, entropy, scatter(lse, layout.rows + 1, tuple(ids.shape))


@token_logprobs_op.register_fake
def _(hidden, weight, bias, ids, attention_mask, temperature, logit_scale, softcap, with_entropy, backend):
    dtype = accumulation_dtype(hidden.dtype)
    entropy = ids.new_empty(ids.shape if with_entropy else (0,), dtype=dtype)
    return ids.new_empty(ids.shape, dtype=dtype), entropy, ids.new_empty(ids.shape, dtype=dtype)


@torch.library.custom_op("endokernel::token_logprobs_backward", mutates_args=())
def token_logprobs_backward_op(grad_logprobs: Tensor, grad_entropy: Optional[Tensor], hidden: Tensor, weight: Tensor,
                               bias: Optional[Tensor], ids: Tensor, attention_mask: Optional[Tensor], lse: Tensor,
                               entropy: Optional[Tensor], temperature: float, logit_scale: Optional[float],
                               softcap: Optional[float], backend: str,
                               needs: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    layout = logprob_layout(ids, attention_mask, weight.shape[0])
    positions = layout.rows + 1
    upstream = grad_logprobs.reshape(-1)[positions] / temperature  # log p = (chosen - lse) / T
    return _backward_stats(
        backend, hidden, weight, bias, layout.rows, layout.targets,
        _transform(temperature, bias, logit_scale, softcap), lse.reshape(-1)[positions],
        None if entropy is None else entropy.reshape(-1)[positions], upstream, -upstream,
        None if grad_entropy is None else grad_entropy.reshape(-1)[positions], needs)


@token_logprobs_backward_op.register_fake
def _(grad_logprobs, grad_entropy, hidden, weight, bias, ids, attention_mask, lse, entropy, temperature, logit_scale,
      softcap, backend, needs):
    return _fake_grads(hidden, weight, bias, needs)


def _token_logprobs_setup(ctx, inputs, output):
    hidden, weight, bias, ids, attention_mask, temperature, logit_scale, softcap, with_entropy, backend = inputs
    ctx.save_for_backward(hidden, weight, bias, ids, attention_mask, output[2], output[1] if with_entropy else None)
    ctx.scalars = (temperature, logit_scale, softcap, backend)
    ctx.with_entropy = with_entropy
    ctx.mark_non_differentiable(output[2])


def _token_logprobs_backward(ctx, grad_logprobs, grad_entropy, _grad_lse):
    hidden, weight, bias, ids, attention_mask, lse, entropy = ctx.saved_tensors
    temperature, logit_scale, softcap, backend = ctx.scalars
    needs = _needs(ctx)
    grads = token_logprobs_backward_op(
        _zeros_if_none(grad_logprobs, lse), _zeros_if_none(grad_entropy, lse) if ctx.with_entropy else None,
        hidden, weight, bias, ids, attention_mask, lse, entropy, temperature, logit_scale, softcap, backend, needs)
    return _grads_for_inputs(grads, needs, 10)


token_logprobs_op.register_autograd(_token_logprobs_backward, setup_context=_token_logprobs_setup)
