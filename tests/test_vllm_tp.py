"""Tensor parallelism on the CPU: a Gemma-2 model (softcap, head tied to the embedding) split over two ranks, each
holding half of a vocabulary padded per shard; the pooler's rank-ordered merge gives the rewards of the hf
engine within 1e-5 relative (float32), and the same bits on every call."""

import pytest
import torch

import vllm_cases as vx


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    yield from vx.engines(vx.save_model(tmp_path_factory.mktemp("gemma2"), "gemma2"), tensor_parallel_size=2)


def test_two_ranks_equal_the_hf_engine(engines):
    hf, scorer = engines
    assert scorer.tensor_parallel_size == 2
    assert scorer.vocab_size % 2 == 1  # the ranks' blocks differ in size, and each is padded
    prompts, responses = zip(*vx.pairs())
    for alpha, discount in [(1.0, {}), (0.7, {"gamma": 0.9, "beta": 0.3})]:
        expected = hf.__class__(hf.model, hf.tokenizer, alpha=alpha).score(prompts, responses,
                                                                           return_per_token=True, **discount)
        first = scorer.with_options(alpha=alpha).score(prompts, responses, return_per_token=True, **discount)
        vx.assert_same_scores(first, expected)
        again = scorer.with_options(alpha=alpha).score(prompts, responses, **discount)
        assert torch.equal(again, first[0])  # the merge's fixed order: the same bits


def test_log_probs_over_two_ranks(engines):
    hf, scorer = engines
    rows = scorer.encode(["Name a fruit.", "How do I reverse a list in Python?"], ["An apple.", "Use reversed()."])
    for (ids, start), got in zip(rows, scorer.token_logprobs(rows)):
        with torch.no_grad():
            logits = hf.model(torch.tensor([ids])).logits[0].double()
        want = torch.log_softmax(logits, -1)[torch.arange(start - 1, len(ids) - 1), torch.tensor(ids[start:])]
        assert got.tolist() == pytest.approx(want.tolist(), rel=1e-5, abs=1e-5)
