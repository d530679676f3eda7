"""Prefix sharing in ``score``: pairs with one prompt run it through the decoder once and their responses on its
cached keys and values, in chunks of similar lengths; the rewards and per-token rewards equal scoring every pair
from its first token (within 1e-5 relative in float32) and the original loop, for Gemma-3-style sliding-window +
global attention (prompts longer than the window), Qwen3's grouped-query attention, Llama's tied head and
Gemma-2's softcapped logits; fewer tokens go through the decoder."""

import pytest

from endokernel import EndogenousRewardModel
from endokernel.hf.original import original_reward

import cases as fx

MODELS = {
    "gemma3": lambda vocab: fx.make_gemma3_model(vocab, sliding_window=8),
    "qwen3": lambda vocab: fx.make_model("qwen3", vocab),
    "llama": lambda vocab: fx.make_model("llama", vocab),
    "gemma2": lambda vocab: fx.make_model("gemma2", vocab),  # softcapped logits, a 64-token window
}


@pytest.fixture(scope="module")
def tokenizer():
    return fx.make_tokenizer()


def groups_of_pairs():
    """Three prompts with 4, 3 and 2 responses of different lengths (one empty), and a prompt alone."""
    texts = [r for _, r in fx.sample_pairs(9)]
    prompts = ["What is a good way to organize a small kitchen with very little storage space?",
               "Explain recursion to a beginner.", "Name a fruit."]
    pairs = [(prompts[0], t) for t in texts[:3]] + [(prompts[0], "")]
    pairs += [(prompts[1], t) for t in texts[3:6]] + [(prompts[2], t) for t in texts[6:8]]
    pairs.insert(5, ("A prompt of its own.", texts[8]))  # interleaved: results must come back in input order
    return pairs


def decoder_tokens(reward_model, call) -> int:
    """Tokens the decoder body embeds during ``call()``."""
    seen = []
    hook = reward_model.model.get_input_embeddings().register_forward_pre_hook(
        lambda module, args: seen.append(args[0].numel()))
    try:
        call()
    finally:
        hook.remove()
    return sum(seen)


@pytest.mark.parametrize("arch", MODELS)
def test_shared_prompts_score_as_unshared(arch, tokenizer):
    model = MODELS[arch](len(tokenizer))
    pairs = groups_of_pairs()
    prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
    shared, unshared = EndogenousRewardModel(model, tokenizer), EndogenousRewardModel(model, tokenizer,
                                                                                      share_prompts=False)
    assert len(tokenizer(prompts[0]).input_ids) > 8  # longer than the sliding window
    # a small token budget: the groups' responses split into several chunks
    results = {}
    tokens = {}
    for name, reward_model in (("shared", shared), ("unshared", unshared)):
        tokens[name] = decoder_tokens(reward_model, lambda m=reward_model, n=name: results.__setitem__(
            n, m.score(prompts, responses, gamma=0.9, beta=0.1, max_tokens=400, return_per_token=True)))
    (rewards, per_token), (expected, expected_tokens) = results["shared"], results["unshared"]
    assert rewards.tolist() == pytest.approx(expected.tolist(), rel=1e-5, abs=1e-6)
    assert rewards[3] == 0.0  # the empty response
    for got, want in zip(per_token, expected_tokens):
        assert got.shape == want.shape
        assert got.tolist() == pytest.approx(want.tolist(), rel=1e-5, abs=1e-5)
    assert tokens["shared"] < tokens["unshared"]
    originals = [original_reward(model, tokenizer, p, r, gamma=0.9, beta=0.1) for p, r in pairs[:3]]
    assert rewards[:3].tolist() == pytest.approx(originals, rel=1e-4)


def test_sharing_off_where_asked_and_bad_option(tokenizer):
    model = fx.make_model("qwen3", len(tokenizer))
    assert EndogenousRewardModel(model, tokenizer).share_prompts
    assert not EndogenousRewardModel(model, tokenizer, share_prompts=False).share_prompts
    with pytest.raises(TypeError, match="share_prompts"):
        EndogenousRewardModel(model, tokenizer, share_prompts=1)
