"""Every backend against the float64 reference, with poisoned outputs, on odd sizes and every option."""

import pytest
import torch

from endokernel import fused_endogenous_reward, fused_token_logprobs, token_statistics

from cases import BACKENDS, CASES, TOLERANCE, backends_for, dtype_backend_params, make_case, relative_error, score


def check_against_reference(case, backend, dtype):
    rewards, per_token = score(case, backend)
    ref_rewards, ref_per_token = score(case.cast(torch.float64), "reference")
    assert rewards.dtype == per_token.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    tol = TOLERANCE[dtype]
    assert relative_error(rewards, ref_rewards) <= tol, f"seed {case.seed}"
    assert relative_error(per_token, ref_per_token) <= tol, f"seed {case.seed}"
    assert torch.equal((per_token != 0), (ref_per_token != 0)), f"seed {case.seed}: nonzeros only on responses"
    again = score(case, backend)
    assert torch.equal(again[0], rewards) and torch.equal(again[1], per_token), "not bitwise reproducible"


# every backend, the C++ one on each code path this CPU executes (variants, tile engines, tile dtypes, threads)
@pytest.mark.parametrize("dtype,backend", dtype_backend_params((torch.float32, torch.bfloat16, torch.float16)))
@pytest.mark.parametrize("name", CASES)
def test_rewards_match_reference(name, backend, dtype):
    check_against_reference(make_case(**CASES[name], dtype=dtype), backend, dtype)


@pytest.mark.parametrize("backend", backends_for(torch.float64))
@pytest.mark.parametrize("name", ["V=1031,D=48", "bias,logit_scale,softcap", "empty response,vocab_size"])
def test_float64_rewards_match_reference(name, backend):
    check_against_reference(make_case(**CASES[name], dtype=torch.float64), backend, torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_token_statistics_and_entropy_match_reference(backend):
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
    logprobs, entropy = fused_token_logprobs(case.hidden, case.weight, case.ids, temperature=0.8, return_entropy=True,
                                             backend=backend)
    ref_logprobs, ref_entropy = fused_token_logprobs(case.hidden.double(), case.weight.double(), case.ids,
                                                     temperature=0.8, return_entropy=True, backend="reference")
    assert relative_error(logprobs, ref_logprobs) <= 1e-5, f"seed {case.seed}"
    assert relative_error(entropy, ref_entropy) <= 1e-5, f"seed {case.seed}"


def test_unbatched_matches_batched():
    case = make_case(batch=1, seq_len=9, vocab=1031, dim=48)
    batched = fused_endogenous_reward(case.hidden, case.weight, case.ids, prompt_len=3)
    single = fused_endogenous_reward(case.hidden[0], case.weight, case.ids[0], prompt_len=3)
    assert single.shape == () and torch.equal(single, batched[0])
