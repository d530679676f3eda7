"""The custom ops under torch.compile(fullgraph=True) and torch.library.opcheck."""

import pytest
import torch

from endokernel import fused_endogenous_reward, fused_token_logprobs, ops, token_statistics

from cases import make_case


def training_step(hidden, weight, bias, ids, mask, prompt_len):
    rewards = fused_endogenous_reward(hidden, weight, ids, prompt_len=prompt_len, attention_mask=mask, bias=bias,
                                      alpha=0.8, softcap=5.0)
    logprobs = fused_token_logprobs(hidden, weight, ids, attention_mask=mask, bias=bias, softcap=5.0)
    stats = token_statistics(hidden, weight, ids, bias=bias, softcap=5.0)
    return rewards * 2 + logprobs.sum(-1) + stats.lse.mean(-1)


def test_compiled_matches_eager_forward_and_gradient():
    case = make_case(batch=3, seq_len=9, vocab=211, dim=24, bias=True)
    inputs = [case.hidden, case.weight, case.kwargs["bias"]]
    eager_leaves = [t.clone().requires_grad_() for t in inputs]
    compiled_leaves = [t.clone().requires_grad_() for t in inputs]
    rest = (case.ids, case.attention_mask, case.prompt_len)

    eager = training_step(*eager_leaves, *rest)
    eager.sum().backward()
    torch._dynamo.reset()
    compiled = torch.compile(training_step, fullgraph=True, backend="aot_eager")(*compiled_leaves, *rest)
    compiled.sum().backward()
    assert torch.allclose(compiled, eager, rtol=1e-6, atol=1e-6), f"seed {case.seed}"
    for a, b in zip(compiled_leaves, eager_leaves):
        assert torch.allclose(a.grad, b.grad, rtol=1e-6, atol=1e-6), f"seed {case.seed}"


def test_compiled_with_inductor_runs():
    case = make_case(batch=2, seq_len=6, vocab=97, dim=16)
    h = case.hidden.clone().requires_grad_()
    torch._dynamo.reset()
    step = torch.compile(lambda h: fused_endogenous_reward(h, case.weight, case.ids, prompt_len=2).sum(),
                         fullgraph=True)
    step(h).backward()
    eager = case.hidden.clone().requires_grad_()
    fused_endogenous_reward(eager, case.weight, case.ids, prompt_len=2).sum().backward()
    assert torch.allclose(h.grad, eager.grad, rtol=1e-5, atol=1e-6)


def op_samples():
    case = make_case(batch=2, seq_len=6, vocab=97, dim=16, bias=True)
    h, w, b = (t.clone().requires_grad_() for t in (case.hidden, case.weight, case.kwargs["bias"]))
    prompt = torch.tensor(case.prompt_len)
    mask = case.attention_mask
    yield "token_statistics", ops.token_statistics_op, (h, w, b, case.ids, 0.7, 1.1, 4.0, True, "torch")
    yield "endogenous_reward", ops.endogenous_reward_op, (h, w, b, case.ids, prompt, mask, 0.9, 0.95, 0.1, 120, None,
                                                           4.0, "torch")
    yield "token_logprobs", ops.token_logprobs_op, (h, w, None, case.ids, mask, 1.3, None, None, True, "torch")
    n = case.ids.numel()
    plain = [t.detach() for t in (h, w, b)]
    lse = torch.randn(case.ids.shape)
    yield "token_statistics_backward", ops.token_statistics_backward_op, (
        torch.randn(case.ids.shape), torch.randn(case.ids.shape), None, *plain, case.ids, lse, None, 1.0, None, None,
        "torch", [True, True, True])
    yield "endogenous_reward_backward", ops.endogenous_reward_backward_op, (
        torch.randn(2), torch.randn(case.ids.shape), *plain, case.ids, prompt, mask, lse, 1.0, 0.9, 0.0, None, None,
        "torch", [True, False, True])
    yield "token_logprobs_backward", ops.token_logprobs_backward_op, (
        torch.randn(case.ids.shape), torch.randn(case.ids.shape), *plain, case.ids, mask, lse, torch.rand(n).view(2, 6),
        1.0, None, None, "torch", [True, True, False])


@pytest.mark.parametrize("name,op,args", list(op_samples()), ids=lambda x: x if isinstance(x, str) else "")
def test_opcheck(name, op, args):
    torch.library.opcheck(op, args)
