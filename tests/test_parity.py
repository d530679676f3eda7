"""Every backend against the float64 reference, with poisoned outputs, on odd sizes and every option."""

import pytest
import torch

import endokernel._core.alloc
from cases import make_case, relative_error
from endokernel import fused_endogenous_reward, token_statistics

CASES = {
    "V=1031,D=48": dict(batch=3, seq_len=13, vocab=1031, dim=48),
    "V=4099,D=100,alpha=0.5,gamma=1": dict(batch=2, seq_len=9, vocab=4099, dim=100, alpha=0.5, gamma=1.0),
    "T=1": dict(batch=2, seq_len=1, vocab=1031, dim=48),
    "T=2": dict(batch=3, seq_len=2, vocab=1031, dim=48),
    "alpha=2,beta>0": dict(batch=2, seq_len=11, vocab=1031, dim=100, alpha=2.0, gamma=0.8, beta=0.3),
    "bias,logit_scale,softcap": dict(batch=2, seq_len=10, vocab=1031, dim=48, bias=True, logit_scale=0.7, softcap=4.0),
    "empty response,vocab_size": dict(batch=3, seq_len=8, vocab=1031, dim=48, empty_row=True, vocab_size=5000),
}
# normwise relative error allowed against the float64 reference
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    monkeypatch.setattr(endokernel._core.alloc, "POISON", True)


def score(case, backend):
    return fused_endogenous_reward(
        case.hidden, case.weight, case.ids, prompt_len=case.prompt_len, attention_mask=case.attention_mask,
        return_per_token=True, backend=backend, **case.kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("name", CASES)
def test_rewards_match_reference(name, backend, dtype):
    case = make_case(**CASES[name], dtype=dtype)
    rewards, per_token = score(case, backend)
    ref_rewards, ref_per_token = score(case.cast(torch.float64), "reference")
    assert rewards.dtype == per_token.dtype == torch.float32
    tol = TOLERANCE[dtype]
    assert relative_error(rewards, ref_rewards) <= tol, f"seed {case.seed}"
    assert relative_error(per_token, ref_per_token) <= tol, f"seed {case.seed}"
    assert torch.equal((per_token != 0), (ref_per_token != 0)), f"seed {case.seed}: nonzeros only on responses"
    again = score(case, backend)
    assert torch.equal(again[0], rewards) and torch.equal(again[1], per_token), "not bitwise reproducible"


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_token_statistics_match_reference(backend):
    case = make_case(batch=2, seq_len=7, vocab=1031, dim=100, alpha=0.5, bias=True, softcap=5.0)
    targets = case.ids.clone()
    targets[0, :3] = -1  # no target: chosen logit 0
    kwargs = {k: case.kwargs[k] for k in ("alpha", "bias", "softcap")}
    got = token_statistics(case.hidden, case.weight, targets, backend=backend, **kwargs)
    ref = token_statistics(case.hidden.double(), case.weight.double(), targets, backend="reference",
                           **{**kwargs, "bias": kwargs["bias"].double()})
    assert got.chosen_logit.shape == got.lse.shape == targets.shape
    assert relative_error(got.chosen_logit, ref.chosen_logit) <= 1e-5, f"seed {case.seed}"
    assert relative_error(got.lse, ref.lse) <= 1e-5, f"seed {case.seed}"
    assert not got.chosen_logit[0, :3].any()


def test_unbatched_matches_batched():
    case = make_case(batch=1, seq_len=9, vocab=1031, dim=48)
    batched = fused_endogenous_reward(case.hidden, case.weight, case.ids, prompt_len=3)
    single = fused_endogenous_reward(case.hidden[0], case.weight, case.ids[0], prompt_len=3)
    assert single.shape == () and torch.equal(single, batched[0])
