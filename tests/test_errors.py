"""Bad input raises a clear error that names the argument at fault, on every backend."""

import os
import subprocess
import sys

import pytest
import torch

from endokernel import token_statistics

from cases import BACKENDS, BAD, BAD_BACKEND, D, V, bad_call, make_case, relative_error, score


@pytest.mark.parametrize("backend", ["auto", *BACKENDS, "reference"])
@pytest.mark.parametrize("over,error,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_raises(over, error, message, backend):
    with pytest.raises(error, match=message):
        bad_call(**over, backend=backend)


@pytest.mark.parametrize("over,error,message", BAD_BACKEND, ids=[str(i) for i in range(len(BAD_BACKEND))])
def test_bad_backend_raises(over, error, message):
    with pytest.raises(error, match=message):
        bad_call(**over)


def test_nn_linear_bias_given_twice():
    head = torch.nn.Linear(D, V)
    with pytest.raises(ValueError, match="bias: lm_head already has a bias"):
        bad_call(lm_head=head, bias=torch.randn(V))


@pytest.mark.parametrize("backend", BACKENDS)
def test_padding_ids_are_not_checked_and_change_nothing(backend):
    case = make_case(batch=3, seq_len=9, vocab=101, dim=16)
    case.attention_mask[0, 4:] = 0
    case.prompt_len[0] = min(case.prompt_len[0], 4)
    clean = score(case, backend)
    case.ids = torch.where(case.attention_mask.bool(), case.ids, -100)  # padding may hold anything
    rewards, per_token = score(case, backend)
    assert torch.equal(rewards, clean[0]) and torch.equal(per_token, clean[1])
    reference = score(case.cast(torch.float64), "reference")
    assert relative_error(rewards, reference[0]) <= 1e-5, f"seed {case.seed}"


def test_token_statistics_errors():
    hidden, head = torch.randn(4, D), torch.randn(V, D)
    with pytest.raises(ValueError, match="targets must lie in"):
        token_statistics(hidden, head, torch.full((4,), V))
    with pytest.raises(ValueError, match="targets must have hidden's leading shape"):
        token_statistics(hidden, head, torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="targets must have an integer dtype"):
        token_statistics(hidden, head, torch.zeros(4))


def test_triton_on_cpu_without_the_interpreter_says_what_to_set():
    pytest.importorskip("triton")
    code = ("import torch, endokernel; endokernel.fused_endogenous_reward("
            "torch.randn(4, 8), torch.randn(16, 8), torch.zeros(4, dtype=torch.long), backend='triton')")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "TRITON_INTERPRET=1" in done.stderr, done.stderr[-2000:]
