"""The reference backend (float64) against the per-token restatement of the definition."""

import pytest
import torch

from endokernel import fused_endogenous_reward

from cases import make_case
from definition import row_reward

CASES = {
    "defaults": dict(batch=3, seq_len=11, vocab=1031, dim=48),
    "T=1": dict(batch=2, seq_len=1, vocab=97, dim=20),
    "T=2": dict(batch=3, seq_len=2, vocab=97, dim=20),
    "alpha=0.5,gamma=1": dict(batch=2, seq_len=9, vocab=301, dim=36, alpha=0.5, gamma=1.0),
    "alpha=2,beta>0": dict(batch=2, seq_len=12, vocab=301, dim=36, alpha=2.0, gamma=0.7, beta=0.3),
    "transforms": dict(batch=2, seq_len=8, vocab=301, dim=36, bias=True, logit_scale=0.7, softcap=4.0),
    "empty response, vocab_size": dict(batch=3, seq_len=7, vocab=301, dim=36, empty_row=True, vocab_size=4000),
}


@pytest.mark.parametrize("name", CASES)
def test_reference_matches_definition(name):
    case = make_case(**CASES[name]).cast(torch.float64)
    rewards, per_token = fused_endogenous_reward(
        case.hidden, case.weight, case.ids, prompt_len=case.prompt_len, attention_mask=case.attention_mask,
        return_per_token=True, backend="reference", **case.kwargs)
    assert rewards.dtype == torch.float64 and per_token.shape == case.ids.shape
    for b, (n, p) in enumerate(zip(case.lengths, case.prompt_len)):
        expected, expected_tokens = row_reward(case.hidden[b, :n], case.weight, case.ids[b, :n], p, **case.kwargs)
        assert rewards[b].item() == pytest.approx(expected, rel=1e-12, abs=1e-12), f"seed {case.seed} row {b}"
        assert per_token[b, :n].tolist() == pytest.approx(expected_tokens, rel=1e-12, abs=1e-12), f"seed {case.seed}"
        assert not per_token[b, n:].any()
        if p == n:
            assert rewards[b].item() == 0.0


def test_unbatched_input_gives_0d_reward():
    case = make_case(batch=1, seq_len=10, vocab=211, dim=24).cast(torch.float64)
    reward, per_token = fused_endogenous_reward(case.hidden[0], case.weight, case.ids[0], prompt_len=4,
                                                return_per_token=True, backend="reference")
    assert reward.shape == () and per_token.shape == (10,)
    expected, tokens = row_reward(case.hidden[0], case.weight, case.ids[0], 4)
    assert reward.item() == pytest.approx(expected, rel=1e-12)
    assert per_token.tolist() == pytest.approx(tokens, rel=1e-12, abs=1e-12)


def test_nn_linear_bias_is_used():
    case = make_case(batch=1, seq_len=6, vocab=50, dim=16).cast(torch.float64)
    head = torch.nn.Linear(16, 50, dtype=torch.float64)
    reward = fused_endogenous_reward(case.hidden, head, case.ids, prompt_len=2, backend="reference")
    expected, _ = row_reward(case.hidden[0], head.weight.detach(), case.ids[0], 2, bias=head.bias.detach())
    assert reward.item() == pytest.approx(expected, rel=1e-12)
