"""Gradients: gradcheck of the float64 reference, every backend's logits-free backward against it, and the
new log-prob / entropy op against plain autograd through materialized logits."""

import pytest
import torch

from endokernel import fused_endogenous_reward, fused_token_logprobs, token_statistics

from cases import BACKENDS, backends_for, make_case, relative_error


def leaves(case, dtype, with_bias):
    h = case.hidden.to(dtype).requires_grad_()
    w = case.weight.to(dtype).requires_grad_()
    b = case.kwargs["bias"].to(dtype).requires_grad_() if with_bias else None
    return h, w, b


def reward_loss(case, h, w, b, backend, coefficients):
    kwargs = {k: v for k, v in case.kwargs.items() if k != "bias"}
    rewards, per_token = fused_endogenous_reward(
        h, w, case.ids, prompt_len=case.prompt_len, attention_mask=case.attention_mask, bias=b,
        return_per_token=True, backend=backend, **kwargs)
    c_rewards, c_tokens = coefficients
    return (rewards * c_rewards.to(rewards.dtype)).sum() + (per_token * c_tokens.to(per_token.dtype)).sum()


def gradients(loss, tensors):
    present = [t for t in tensors if t is not None]
    return torch.autograd.grad(loss, present)


REWARD_CASES = {
    "odd sizes, padding": dict(batch=3, seq_len=9, vocab=1031, dim=48, bias=True),
    "alpha, softcap, logit_scale": dict(batch=2, seq_len=8, vocab=531, dim=100, alpha=0.5, softcap=5.0,
                                        logit_scale=1.3, bias=True),
    "gamma=1, beta>0, empty row": dict(batch=3, seq_len=7, vocab=531, dim=37, gamma=1.0, beta=0.4, empty_row=True,
                                       bias=True),
}


@pytest.mark.parametrize("backend", backends_for(torch.float32))
@pytest.mark.parametrize("name", REWARD_CASES)
def test_reward_gradients_match_reference(name, backend):
    case = make_case(**REWARD_CASES[name])
    g = torch.Generator().manual_seed(case.seed)
    coefficients = (torch.randn(case.ids.shape[0], generator=g), torch.randn(case.ids.shape, generator=g))
    ref = gradients(reward_loss(case, *(t := leaves(case, torch.float64, True)), "reference", coefficients), t)
    got_leaves = leaves(case, torch.float32, True)
    got = gradients(reward_loss(case, *got_leaves, backend, coefficients), got_leaves)
    for name_, a, b in zip(("hidden", "lm_head", "bias"), got, ref):
        assert a.dtype == torch.float32
        assert relative_error(a, b) <= 1e-4, f"seed {case.seed}: d{name_}"
    again = gradients(reward_loss(case, *got_leaves, backend, coefficients), got_leaves)
    assert all(torch.equal(a, b) for a, b in zip(got, again)), "backward not bitwise reproducible"


@pytest.mark.parametrize("backend", BACKENDS + ["reference"])
def test_prompt_and_padding_positions_get_zero_gradient(backend):
    case = make_case(batch=2, seq_len=10, vocab=301, dim=24)
    case.prompt_len = [4, 3]
    case.attention_mask = (torch.arange(10) < torch.tensor([[7], [10]])).long()
    h, w, _ = leaves(case, torch.float32, False)
    fused_endogenous_reward(h, w, case.ids, prompt_len=case.prompt_len, attention_mask=case.attention_mask,
                            backend=backend).sum().backward()
    # row 0 reads positions 3..5 (prompt 4, length 7); row 1 reads 2..8 (prompt 3, length 10)
    used = torch.zeros(2, 10, dtype=torch.bool)
    used[0, 3:6] = True
    used[1, 2:9] = True
    assert not h.grad[~used].any()
    assert h.grad[used].abs().sum(-1).gt(0).all()


def test_gradcheck_reference_float64():
    case = make_case(batch=2, seq_len=5, vocab=13, dim=6, alpha=0.7, softcap=3.0, logit_scale=1.2, bias=True,
                     beta=0.2).cast(torch.float64)
    kwargs = {k: v for k, v in case.kwargs.items() if k != "bias"}

    def reward(h, w, b):
        return fused_endogenous_reward(h, w, case.ids, prompt_len=case.prompt_len, attention_mask=case.attention_mask,
                                       bias=b, return_per_token=True, backend="reference", **kwargs)

    def logprobs(h, w, b):
        return fused_token_logprobs(h, w, case.ids, attention_mask=case.attention_mask, bias=b, temperature=0.8,
                                    softcap=3.0, return_entropy=True, backend="reference")

    inputs = (case.hidden.requires_grad_(), case.weight.requires_grad_(), case.kwargs["bias"].double().requires_grad_())
    assert torch.autograd.gradcheck(reward, inputs)
    assert torch.autograd.gradcheck(logprobs, inputs)


@pytest.mark.parametrize("backend", backends_for(torch.float64))
def test_gradcheck_float64_tiled_backends(backend):
    """The tiled backwards against finite differences (the Triton kernels compute in fp32 only)."""
    case = make_case(batch=1, seq_len=5, vocab=11, dim=4, softcap=2.0, bias=True).cast(torch.float64)
    ids, targets = case.ids, torch.roll(case.ids, -1, dims=1)

    def stats(h, w, b):
        out = token_statistics(h, w, targets, bias=b, softcap=2.0, alpha=0.6, backend=backend)
        return out.chosen_logit, out.lse

    def logprobs(h, w, b):
        return fused_token_logprobs(h, w, ids, bias=b, temperature=0.9, return_entropy=True, backend=backend)

    inputs = (case.hidden.requires_grad_(), case.weight.requires_grad_(), case.kwargs["bias"].double().requires_grad_())
    assert torch.autograd.gradcheck(stats, inputs)
    assert torch.autograd.gradcheck(logprobs, inputs)


def materialized_logprobs(h, w, b, ids, mask, temperature, softcap):
    """Plain autograd through the logits: log_softmax and entropy of softmax(z / T) predicting ids[t] from t - 1."""
    z = h @ w.T + b
    z = softcap * torch.tanh(z / softcap)
    log_p = torch.log_softmax(z / temperature, dim=-1)
    picked = log_p[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    entropy = -(log_p.exp() * log_p).sum(-1)[:, :-1]
    valid = mask[:, 1:].bool()
    zeros = torch.zeros(ids.shape[0], 1, dtype=z.dtype)
    return (torch.cat([zeros, torch.where(valid, picked, 0.0)], 1),
            torch.cat([zeros, torch.where(valid, entropy, 0.0)], 1))


@pytest.mark.parametrize("backend", backends_for(torch.float32) + ["reference"])
def test_logprobs_and_entropy_match_log_softmax(backend):
    case = make_case(batch=3, seq_len=9, vocab=1031, dim=48, bias=True)
    g = torch.Generator().manual_seed(case.seed)
    c_lp, c_ent = torch.randn(case.ids.shape, generator=g), torch.randn(case.ids.shape, generator=g)
    h64, w64, b64 = leaves(case, torch.float64, True)
    ref_lp, ref_ent = materialized_logprobs(h64, w64, b64, case.ids, case.attention_mask, 0.7, 6.0)
    ref_grads = gradients((ref_lp * c_lp).sum() + (ref_ent * c_ent).sum(), (h64, w64, b64))
    h, w, b = leaves(case, torch.float32, True)
    lp, ent = fused_token_logprobs(h, w, case.ids, attention_mask=case.attention_mask, bias=b, temperature=0.7,
                                   softcap=6.0, return_entropy=True, backend=backend)
    assert lp.shape == ent.shape == case.ids.shape and lp.dtype == torch.float32
    assert relative_error(lp, ref_lp) <= 1e-5, f"seed {case.seed}"
    assert relative_error(ent, ref_ent) <= 1e-5, f"seed {case.seed}"
    grads = gradients((lp * c_lp).sum() + (ent * c_ent).sum(), (h, w, b))
    for name, a, ref in zip(("hidden", "lm_head", "bias"), grads, ref_grads):
        assert relative_error(a, ref) <= 1e-4, f"seed {case.seed}: d{name}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_token_statistics_gradients(backend):
    case = make_case(batch=2, seq_len=6, vocab=531, dim=37, bias=True)
    targets = case.ids.clone()
    targets[0, :2] = -1
    g = torch.Generator().manual_seed(case.seed)
    c = torch.randn(2, *targets.shape, generator=g)

    def loss(h, w, b, be):
        out = token_statistics(h, w, targets, bias=b, alpha=1.7, logit_scale=0.8, backend=be)
        return (out.chosen_logit * c[0].to(h.dtype)).sum() + (out.lse * c[1].to(h.dtype)).sum()

    ref = gradients(loss(*(t := leaves(case, torch.float64, True)), "reference"), t)
    got = gradients(loss(*(t := leaves(case, torch.float32, True)), backend), t)
    for name, a, b in zip(("hidden", "lm_head", "bias"), got, ref):
        assert relative_error(a, b) <= 1e-4, f"seed {case.seed}: d{name}"


def test_frozen_head_gets_no_gradient_and_nn_linear_works():
    case = make_case(batch=1, seq_len=6, vocab=97, dim=16)
    head = torch.nn.Linear(16, 97)
    head.weight.requires_grad_(False)
    h = case.hidden.requires_grad_()
    fused_endogenous_reward(h, head, case.ids, prompt_len=2).sum().backward()
    assert head.weight.grad is None and head.bias.grad is not None and h.grad is not None


@pytest.mark.parametrize("backend", backends_for(torch.bfloat16))
def test_bf16_gradients_within_tolerance(backend):
    case = make_case(batch=2, seq_len=8, vocab=531, dim=48)
    coefficients = (torch.ones(2), torch.zeros(case.ids.shape))
    ref = gradients(reward_loss(case, *(t := leaves(case, torch.float64, False)), "reference", coefficients), t)
    got = gradients(reward_loss(case, *(t := leaves(case, torch.bfloat16, False)), backend, coefficients), t)
    for a, b in zip(got, ref):
        assert a.dtype == torch.bfloat16
        assert relative_error(a, b) <= 3e-2, f"seed {case.seed}"
