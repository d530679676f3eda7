"""The vLLM integration's parts that need no vLLM, run everywhere: the package imports without vLLM (and says what
to install when its class is used), the wire format's checks, the caller's finishing of per-position statistics
into the rewards and log-probs of ``fused_endogenous_reward`` / ``fused_token_logprobs``, and the transforms read
from a logits processor."""

import pathlib
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from endokernel import fused_endogenous_reward, fused_token_logprobs, token_statistics
from endokernel.hf.engines import load_scorer
from endokernel.vllm.finish import logprobs_from_statistics, rewards_from_statistics
from endokernel.vllm.head import transforms
from endokernel.vllm.models import pooling_architecture
from endokernel.vllm.wire import parse_options, request_options

import cases as fx

WITHOUT_VLLM = """
import sys
sys.modules["vllm"] = None  # as if not installed
import endokernel, endokernel.vllm, endokernel.vllm.wire, endokernel.vllm.finish, endokernel.vllm.plugin
try:
    endokernel.vllm.VLLMRewardModel
except ImportError as error:
    print("ImportError:", error)
"""


def test_the_package_imports_without_vllm():
    done = subprocess.run([sys.executable, "-c", WITHOUT_VLLM], capture_output=True, text=True, timeout=120,
                          cwd=pathlib.Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    assert "ImportError:" in done.stdout and "vllm" in done.stdout


def test_the_vllm_engine_without_vllm_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ValueError, match=r"needs vLLM: pip install 'endokernel\[vllm\]'"):
        load_scorer("vllm", "some/model")
    with pytest.raises(ValueError, match="engine must be one of"):
        load_scorer("sglang", "some/model")


@pytest.mark.parametrize("options, match", [
    ({"endokernel": {"start": 0}}, r"start must be an int in \[1, 5\]"),
    ({"endokernel": {"start": 6}}, r"start must be an int in \[1, 5\]"),
    ({"endokernel": {"start": True}}, "start must be an int"),
    ({"endokernel": {"start": 2, "alpha": 0.0}}, "alpha must be a finite number > 0"),
    ({"endokernel": {"start": 2, "alpha": float("inf")}}, "alpha must be a finite number > 0"),
])
def test_the_wire_format_refuses_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        parse_options(options, 5)


def test_the_wire_format_round_trips_and_defaults_to_log_probs():
    assert parse_options(request_options(3, 0.5), 5) == (3, 0.5)
    assert parse_options(None, 5) == (1, 1.0)  # a plain token_classify request: every position, alpha 1


@pytest.mark.parametrize("alpha, gamma, beta", [(1.0, 0.95, 0.0), (0.6, 0.8, 0.2)])
def test_finishing_statistics_equals_the_fused_reward(alpha, gamma, beta):
    """Statistics as the pooler answers them (positions P - 1 .. n - 2 of each row), finished on the caller's side,
    give ``fused_endogenous_reward``'s rewards and per-token rewards, and ``fused_token_logprobs``'s log-probs."""
    case = fx.make_case(batch=4, seq_len=12, vocab=301, dim=24, softcap=4.0)
    rows, stats = [], []
    for b, (length, start) in enumerate(zip(case.lengths, case.prompt_len)):
        if length == start:
            continue
        ids = case.ids[b, :length]
        chosen, lse = token_statistics(case.hidden[b, start - 1 : length - 1], case.weight, ids[start:length],
                                       alpha=alpha, softcap=4.0)
        rows.append((ids.tolist(), start))
        stats.append(torch.stack([chosen, lse], dim=1))
    assert rows, f"seed {case.seed}: every response empty"
    rewards, per_token = rewards_from_statistics(rows, stats, alpha=alpha, vocab_size=301, gamma=gamma, beta=beta)
    keep = [b for b, (n, p) in enumerate(zip(case.lengths, case.prompt_len)) if n > p]
    want, want_tokens = fused_endogenous_reward(
        case.hidden, case.weight, case.ids, prompt_len=case.prompt_len, attention_mask=case.attention_mask,
        alpha=alpha, gamma=gamma, beta=beta, softcap=4.0, return_per_token=True)
    assert rewards.tolist() == pytest.approx(want[keep].tolist(), rel=1e-5), case.seed
    for (ids, start), got, b in zip(rows, per_token, keep):
        assert got.tolist() == pytest.approx(want_tokens[b, start : len(ids)].tolist(), rel=1e-5, abs=1e-5)
    logprobs = logprobs_from_statistics(rows, stats, temperature=alpha)
    want_logprobs = fused_token_logprobs(case.hidden, case.weight, case.ids, attention_mask=case.attention_mask,
                                         temperature=alpha, softcap=4.0)
    for (ids, start), got, b in zip(rows, logprobs, keep):
        assert got.tolist() == pytest.approx(want_logprobs[b, start : len(ids)].tolist(), rel=1e-5, abs=1e-5)


def test_statistics_of_the_wrong_length_are_refused():
    with pytest.raises(ValueError, match=r"row 0: statistics of shape \(2, 2\), expected \(3, 2\)"):
        rewards_from_statistics([([1, 2, 3, 4], 1)], [torch.zeros(2, 2)], alpha=1.0, vocab_size=9, gamma=1.0,
                                beta=0.0)


def test_transforms_of_a_logits_processor():
    assert transforms(SimpleNamespace(scale=1.0, soft_cap=30.0)) == (None, 30.0)
    assert transforms(SimpleNamespace(scale=0.5, soft_cap=None)) == (0.5, None)
    assert transforms(SimpleNamespace(scale=1.0, soft_cap=None)) == (None, None)
    with pytest.raises(NotImplementedError, match="both a scale and a softcap"):
        transforms(SimpleNamespace(scale=0.5, soft_cap=30.0))


def test_pooling_architectures():
    assert pooling_architecture(["Qwen3ForCausalLM"]) == "Qwen3ForEndogenousReward"
    assert pooling_architecture(["Gemma2ForCausalLM"]) == "Gemma2ForEndogenousReward"
    with pytest.raises(ValueError, match="no endogenous-reward variant for architectures"):
        pooling_architecture(["MambaForCausalLM"])
