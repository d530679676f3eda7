"""Bad input raises a clear error that names the argument at fault."""

import os
import subprocess
import sys

import pytest
import torch

from endokernel import fused_endogenous_reward, token_statistics

V, D, T = 50, 16, 6


def args(**over):
    base = dict(hidden=torch.randn(2, T, D), lm_head=torch.randn(V, D), ids=torch.randint(0, V, (2, T)))
    base.update(over)
    return base


def call(**over):
    a = args(**over)
    kwargs = {k: v for k, v in a.items() if k not in ("hidden", "lm_head", "ids")}
    return fused_endogenous_reward(a["hidden"], a["lm_head"], a["ids"], **kwargs)


BAD = [
    (dict(lm_head=torch.randn(V, D + 1)), ValueError, "lm_head has D"),
    (dict(lm_head=torch.randn(V, D, 1)), ValueError, "lm_head must be 2-D"),
    (dict(lm_head="weights"), TypeError, "lm_head must be"),
    (dict(ids=torch.full((2, T), V)), ValueError, "ids must lie in"),
    (dict(ids=torch.full((2, T), -1)), ValueError, "ids must lie in"),
    (dict(ids=torch.zeros(2, T)), TypeError, "ids must have an integer dtype"),
    (dict(ids=torch.zeros(2, T, dtype=torch.bool)), TypeError, "ids must have an integer dtype"),
    (dict(prompt_len=0), ValueError, r"prompt_len\[0\] = 0"),
    (dict(prompt_len=T + 1), ValueError, r"prompt_len\[0\] = 7"),
    (dict(prompt_len=[1, 2, 3]), ValueError, "prompt_len has 3 entries"),
    (dict(prompt_len=1.5), TypeError, "prompt_len must be"),
    (dict(prompt_len=torch.tensor([1.0, 2.0])), TypeError, "prompt_len must hold integers"),
    (dict(prompt_len=[2, 5], attention_mask=torch.tensor([[1] * T, [1, 1, 1, 0, 0, 0]])), ValueError,
     r"prompt_len\[1\] = 5 must lie in \[1, 3\]"),
    (dict(hidden=torch.randn(2, T + 1, D)), ValueError, "hidden must have shape"),
    (dict(ids=torch.randint(0, V, (2, T, 1))), ValueError, "ids must have shape"),
    (dict(attention_mask=torch.ones(2, T + 1)), ValueError, "attention_mask must have the shape"),
    (dict(attention_mask=torch.tensor([[1, 1, 0, 1, 1, 1]] * 2)), ValueError, "right-padded"),
    (dict(attention_mask=torch.full((2, T), 2)), ValueError, "only 0 and 1"),
    (dict(alpha=0.0), ValueError, "alpha must be"),
    (dict(alpha=float("nan")), ValueError, "alpha must be"),
    (dict(gamma=0.0), ValueError, "gamma must lie in"),
    (dict(gamma=1.5), ValueError, "gamma must lie in"),
    (dict(beta=-0.1), ValueError, "beta must be"),
    (dict(softcap=0.0), ValueError, "softcap must be"),
    (dict(logit_scale=-1.0), ValueError, "logit_scale must be"),
    (dict(vocab_size=0), ValueError, "vocab_size must be"),
    (dict(bias=torch.randn(V + 1)), ValueError, "bias must have shape"),
    (dict(bias=torch.arange(V)), TypeError, "bias must be a floating-point"),
    (dict(hidden=torch.randn(2, T, D, dtype=torch.float64)), TypeError, "lm_head dtype"),
    (dict(hidden=torch.randn(2, T, D).to(torch.bfloat16)), TypeError, "lm_head dtype"),
    (dict(hidden=torch.randint(0, 3, (2, T, D)), lm_head=torch.randint(0, 3, (V, D))), TypeError, "hidden: dtype"),
    (dict(hidden=torch.randn(2, T, D, dtype=torch.float64), lm_head=torch.randn(V, D, dtype=torch.float64),
          backend="triton"), TypeError, "hidden: dtype"),
    (dict(hidden=torch.randn(2, T, D, device="meta")), ValueError, "one device"),
    (dict(backend="cuda"), ValueError, "backend must be one of"),
    (dict(return_per_token=1), TypeError, "return_per_token"),
]


@pytest.mark.parametrize("over,error,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_raises(over, error, message):
    with pytest.raises(error, match=message):
        call(**over)


def test_nn_linear_bias_given_twice():
    head = torch.nn.Linear(D, V)
    with pytest.raises(ValueError, match="bias: lm_head already has a bias"):
        call(lm_head=head, bias=torch.randn(V))


def test_padding_ids_are_not_checked():
    mask = torch.tensor([[1] * T, [1, 1, 1, 0, 0, 0]])
    ids = torch.randint(0, V, (2, T))
    ids[1, 3:] = -100  # padding may hold anything
    assert torch.isfinite(call(ids=ids, attention_mask=mask)).all()


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
