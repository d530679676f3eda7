"""What the vLLM tests share (they run in a virtual environment of their own with vLLM's CPU build, see
.ci/vllm; where vLLM is missing, every module that imports this one is skipped): tiny random-weight models saved
to folders, built so that vLLM's CPU build runs them, and the engine settings that make an engine start in
seconds."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (the vllm extra; .ci/vllm runs these tests)")

import cases as fx  # noqa: E402

# the engine core in the test process (no second process to start and import vLLM in), a small KV cache
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

HIDDEN = 128  # 4 heads of 32: vLLM's CPU attention takes head sizes 32, 64, 80, ... (not the 16 of cases.py)
# the model's vocabulary runs past the tokenizer's so that it is no multiple of 64: vLLM pads the head with zero
# rows (per tensor-parallel shard), which the pooler must leave out of the logsumexp
EXTRA_VOCAB = 3
MAX_POSITIONS = 256
ARCHS = ("qwen3", "llama", "gemma2")  # untied head; tied head; Gemma-2's final softcap (and no lm_head)


def save_model(folder, arch: str, *, max_positions: int = MAX_POSITIONS) -> str:
    """A tiny ``arch`` model (``cases.make_model``) and the chat tokenizer, saved to ``folder``."""
    tokenizer = fx.make_chat_tokenizer()
    model = fx.make_model(arch, len(tokenizer) + EXTRA_VOCAB, max_positions=max_positions, hidden=HIDDEN)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def vllm_scorer(folder: str, **options):
    """A float32 ``VLLMRewardModel`` without torch.compile (the tests' engines start in seconds)."""
    from endokernel.vllm import VLLMRewardModel

    return VLLMRewardModel(folder, dtype="float32", enforce_eager=True, **options)


def hf_scorer(folder: str, **options):
    from endokernel import EndogenousRewardModel

    return EndogenousRewardModel.from_pretrained(folder, dtype="float32", device="cpu", **options)


def engines(folder: str, **options):
    """(hf scorer, vllm scorer) of one saved model, the vLLM engine closed after the caller's last use (a
    generator for module fixtures: one vLLM engine at a time)."""
    scorer = vllm_scorer(folder, **options)
    try:
        yield hf_scorer(folder), scorer
    finally:
        scorer.close()


def pairs(count: int = 12) -> list[tuple[str, str]]:
    """The handwritten pairs (an empty response among them) and RM-Bench chat pairs where the data is there."""
    return list(fx.PAIRS) + (fx.sample_pairs(count, max_chars=700) if fx.has_rmbench() else [])


def assert_same_scores(actual, expected, rel: float = 1e-5) -> None:
    """(rewards, per-token list) pairs equal within ``rel`` (per token also within 1e-5 absolute); infinities and
    NaN where the other has them."""
    rewards, per_token = actual
    want_rewards, want_tokens = expected
    assert rewards.tolist() == pytest.approx(want_rewards.tolist(), rel=rel)
    for got, want in zip(per_token, want_tokens, strict=True):
        assert got.tolist() == pytest.approx(want.tolist(), rel=rel, abs=1e-5, nan_ok=True)
