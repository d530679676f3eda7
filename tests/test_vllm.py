"""``VLLMRewardModel`` (the vllm engine) against ``EndogenousRewardModel`` (the hf engine) on the same saved tiny
models, in float32: rewards and per-token rewards within 1e-5 relative for Qwen3 (untied head), Llama (tied head)
and Gemma-2 (final softcap, no lm_head), heads padded past the vocabulary, every reward option (alpha, gamma,
beta, empty responses, overlong sequences, the chat template), log-probs, the async path, and bad input refused
with the engine still serving. Chunked prefill with 32-token chunks and prefix caching with cache hits that reach
past the prompt run on a second Qwen3 engine."""

import asyncio

import pytest
import torch

from endokernel.hf.scorer import encode_texts

import cases as fx
import vllm_cases as vx

SETTINGS = [(1.0, {}), (0.7, {"gamma": 0.9, "beta": 0.3})]  # (alpha, discount): the defaults, then all changed
LONG = ("Tell me a long story.", "Once upon a time " * 80)  # over the models' 256 positions


@pytest.fixture(scope="module", params=vx.ARCHS)
def engines(request, tmp_path_factory):
    """(hf scorer, vllm scorer) of one saved model; one vLLM engine at a time."""
    yield from vx.engines(vx.save_model(tmp_path_factory.mktemp(request.param), request.param))


def test_the_head_is_padded_past_the_vocabulary(engines):
    """So that a pooler reading vLLM's padded rows (zero logits inside the logsumexp) would fail the tests."""
    from vllm.model_executor.layers.vocab_parallel_embedding import DEFAULT_VOCAB_PADDING_SIZE, pad_vocab_size

    _, scorer = engines
    assert pad_vocab_size(scorer.vocab_size, DEFAULT_VOCAB_PADDING_SIZE) > scorer.vocab_size


@pytest.mark.parametrize("alpha, discount", SETTINGS, ids=["defaults", "alpha,gamma,beta"])
def test_rewards_equal_the_hf_engine(engines, alpha, discount):
    hf, scorer = engines
    prompts, responses = zip(*vx.pairs())
    expected = hf.__class__(hf.model, hf.tokenizer, alpha=alpha).score(prompts, responses, return_per_token=True,
                                                                       **discount)
    actual = scorer.with_options(alpha=alpha).score(prompts, responses, return_per_token=True, **discount)
    vx.assert_same_scores(actual, expected)
    assert actual[0][prompts.index("Say nothing.")] == 0.0  # the empty response


def test_overlong_sequences_are_minus_infinity(engines):
    hf, scorer = engines
    prompts, responses = ["Name a fruit.", LONG[0]], ["An apple.", LONG[1]]
    rewards, per_token = scorer.score(prompts, responses, return_per_token=True)
    assert rewards[1] == float("-inf") and torch.isnan(per_token[1]).all()
    vx.assert_same_scores((rewards, per_token), hf.score(prompts, responses, return_per_token=True))


def test_the_chat_template(engines):
    hf, scorer = engines
    prompts, responses = zip(*fx.PAIRS[:4])
    templated = scorer.with_options(chat_template=True)
    assert templated.encode(prompts, responses) != scorer.encode(prompts, responses)
    expected = hf.__class__(hf.model, hf.tokenizer, chat_template=True).score(prompts, responses,
                                                                             return_per_token=True)
    vx.assert_same_scores(templated.score(prompts, responses, return_per_token=True), expected)


def test_calculate_reward_and_scoring_token_ids(engines):
    hf, scorer = engines
    prompt, response = fx.PAIRS[3]
    assert scorer.calculate_reward(prompt, response) == pytest.approx(hf.calculate_reward(prompt, response),
                                                                     rel=1e-5)
    rows = [(ids, 1) for ids, _ in scorer.encode([prompt], [response])]  # a whole text from its second token
    assert scorer.score_encoded(rows).tolist() == pytest.approx(hf.score_encoded(rows).tolist(), rel=1e-5)


def test_token_logprobs_are_the_models_log_softmax(engines):
    hf, scorer = engines
    rows = scorer.encode(*zip(*fx.PAIRS))
    logprobs = scorer.token_logprobs(rows)
    for (ids, start), got in zip(rows, logprobs):
        if len(ids) == start:
            assert got.numel() == 0  # the empty response
            continue
        with torch.no_grad():
            logits = hf.model(torch.tensor([ids])).logits[0].double()  # softcap included
        want = torch.log_softmax(logits, -1)[torch.arange(start - 1, len(ids) - 1), torch.tensor(ids[start:])]
        assert got.tolist() == pytest.approx(want.tolist(), rel=1e-5, abs=1e-5)


def test_the_async_path_equals_the_blocking_one(engines):
    _, scorer = engines
    rows = scorer.encode(*zip(*vx.pairs()))

    async def concurrently():
        return await asyncio.gather(*(scorer.score_encoded_async(rows[i::3]) for i in range(3)))

    expected = scorer.score_encoded(rows, return_per_token=True)
    for i, (rewards, per_token) in enumerate(asyncio.run(concurrently())):
        vx.assert_same_scores((rewards, per_token), (expected[0][i::3], expected[1][i::3]), rel=1e-6)


def test_bad_input_is_refused_and_the_engine_keeps_serving(engines):
    _, scorer = engines
    rows = scorer.encode(["Name a fruit."], ["An apple."])
    before = scorer.score_encoded(rows)
    with pytest.raises(ValueError, match="prompts and responses must have the same length"):
        scorer.score(["a", "b"], ["c"])
    with pytest.raises(TypeError, match=r"responses\[0\] must be a str"):
        scorer.score(["a"], [3])
    with pytest.raises(ValueError, match=rf"rows\[1\]: ids must lie in \[0, {scorer.vocab_size}\)"):
        scorer.score_encoded([rows[0], ([1, 2, scorer.vocab_size], 1)])
    with pytest.raises(ValueError, match=r"rows\[0\]: response start 0"):
        scorer.score_encoded([([1, 2], 0)])
    with pytest.raises(ValueError, match="data_parallel is not supported by the vllm engine"):
        scorer.score_encoded(rows, data_parallel=True)
    with pytest.raises(ValueError, match="alpha must be"):
        scorer.with_options(alpha=0.0)
    assert torch.equal(scorer.score_encoded(rows), before)


# --- chunked prefill and prefix caching


@pytest.fixture(scope="module")
def chunked(tmp_path_factory):
    """(hf, vllm) scorers of one Qwen3 model: 32 tokens per engine step, cache blocks of 32 (the smallest the CPU
    attention takes), sequences up to 1024 tokens scored past the model's 256 positions (score_overlong)."""
    folder = vx.save_model(tmp_path_factory.mktemp("chunked"), "qwen3")
    scorer = vx.vllm_scorer(folder, max_num_batched_tokens=32, score_overlong=True, max_model_len=1024,
                            engine_options={"block_size": 32})
    try:
        yield vx.hf_scorer(folder, score_overlong=True), scorer
    finally:
        scorer.close()


def test_chunked_prefill_with_small_chunks(chunked):
    hf, scorer = chunked
    prompts, responses = zip(*(vx.pairs() + [LONG]))
    assert max(len(ids) for ids, _ in scorer.encode(prompts, responses)) > 8 * 32  # many chunks, and overlong
    vx.assert_same_scores(scorer.score(prompts, responses, return_per_token=True),
                          hf.score(prompts, responses, return_per_token=True))


def test_prefix_cache_hits_never_change_a_reward(chunked):
    """A GRPO-like group: responses to one long prompt, several beginning alike, so that cache hits reach past the
    prompt; a prompt that fills its last cache block exactly; and the same prompt with other responses later."""
    hf, scorer = chunked
    tokenizer = scorer.tokenizer
    prompt = " ".join(p for p, _ in fx.PAIRS) * 2  # ~160 tokens
    openings = ["The answer is", "The answer is clearly", "Well,", "Well, I think", "**Tips:**", "**Tips:**\n1."]
    responses = [f"{o} {r}" for o in openings for _, r in fx.PAIRS[:3]]
    exact = tokenizer.decode(tokenizer(prompt)["input_ids"][1:64])  # 1 (BOS) + 63 tokens: 64 = 2 blocks of 32
    assert len(tokenizer(exact)["input_ids"]) % scorer.block_size == 0
    group = [(prompt, r) for r in responses] + [(exact, r) for r in responses[:6]]
    prompts, answers = zip(*group)
    reading = scorer.with_options(prefix_caching=True)
    first = reading.score(prompts, answers, return_per_token=True)
    again = reading.score(prompts, answers, return_per_token=True)  # the whole group in the cache now
    expected = hf.score(prompts, answers, return_per_token=True)
    vx.assert_same_scores(first, expected)
    vx.assert_same_scores(again, expected)
    assert reading.rescored > 0  # hits past the prompt did happen, and were scored again
    unread = scorer.with_options(prefix_caching=False)
    vx.assert_same_scores(unread.score(prompts, answers, return_per_token=True), expected)
    assert unread.rescored == 0


def test_encode_texts_is_what_both_engines_tokenize(chunked):
    hf, scorer = chunked
    prompts, responses = zip(*fx.PAIRS)
    assert scorer.encode(prompts, responses) == hf.encode(prompts, responses)
    assert encode_texts(scorer.tokenizer, prompts, responses) == hf.encode(prompts, responses)
