"""``score``: length-bucketed batches give each pair's ``calculate_reward``, in input order, without building
logits; per-token rewards; bf16 within tolerance; ``from_pretrained`` from a saved folder; bad input."""

import pytest
import torch

from endokernel import EndogenousRewardModel
from endokernel.hf.batching import length_buckets
from endokernel.hf.original import original_reward

import cases as fx

LONG = ("Tell me a long story.", "Once upon a time " * 80)  # over the models' 256 positions here


@pytest.fixture(scope="module")
def tokenizer():
    return fx.make_tokenizer()


def build(arch, tokenizer, **kwargs):
    return EndogenousRewardModel(fx.make_model(arch, len(tokenizer), max_positions=256), tokenizer, **kwargs)


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_score_equals_calculate_reward_one_by_one(arch, tokenizer):
    reward_model = build(arch, tokenizer, alpha=0.8)
    pairs = fx.sample_pairs(6) + fx.PAIRS + [LONG]
    prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
    lengths = [len(ids) for ids, _ in reward_model.encode(prompts, responses)]
    assert len(length_buckets(lengths, max_tokens=600)) >= 3  # several padded batches, reordered by length

    rewards, per_token = reward_model.score(prompts, responses, gamma=0.9, beta=0.2, max_tokens=600,
                                            return_per_token=True)
    expected = [reward_model.calculate_reward(p, r, gamma=0.9, beta=0.2) for p, r in pairs]
    assert rewards.dtype == torch.float32 and rewards.shape == (len(pairs),)
    assert rewards.tolist() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert expected[-1] == float("-inf") and 0.0 in expected  # the overlong and the empty response

    for (_, response), reward, tokens in zip(pairs, rewards.tolist(), per_token):
        assert len(tokens) == len(tokenizer(response, add_special_tokens=False).input_ids)
        if reward == float("-inf"):
            assert torch.isnan(tokens).all()
        else:
            weights = torch.tensor([max(0.9**k, 0.2) for k in range(len(tokens))])
            assert float((weights * tokens).sum()) == pytest.approx(reward, rel=1e-5, abs=1e-6)


def test_score_never_builds_logits(tokenizer, monkeypatch):
    reward_model = build("qwen3", tokenizer)

    def no_logits(*args, **kwargs):
        raise AssertionError("the LM head or the full model's forward ran")

    reward_model.model.get_output_embeddings().register_forward_pre_hook(no_logits)
    monkeypatch.setattr(reward_model.model, "forward", no_logits)
    pairs = fx.PAIRS[:4]
    rewards = reward_model.score([p for p, _ in pairs], [r for _, r in pairs])
    assert torch.isfinite(rewards).all()
    with pytest.raises(AssertionError, match="LM head"):  # the guard itself works
        reward_model.model(torch.tensor([[1, 2]]))


def test_bfloat16_model_within_tolerance_of_float32_original(tokenizer):
    pairs = fx.sample_pairs(4)
    model = fx.make_model("gemma2", len(tokenizer))
    expected = [original_reward(model, tokenizer, p, r) for p, r in pairs]
    reward_model = EndogenousRewardModel(model, tokenizer)
    model.to(torch.bfloat16)  # after wrapping: the wrapper must follow the model
    rewards = reward_model.score([p for p, _ in pairs], [r for _, r in pairs])
    assert rewards.dtype == torch.float32
    assert rewards.tolist() == pytest.approx(expected, rel=5e-3)
    fresh = EndogenousRewardModel(model, tokenizer).score([p for p, _ in pairs], [r for _, r in pairs])
    assert torch.equal(rewards, fresh)


def test_from_pretrained_reads_a_saved_folder(tokenizer, tmp_path):
    model = fx.make_model("llama", len(tokenizer))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    pairs = fx.PAIRS[:4]
    prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
    expected = EndogenousRewardModel(model, tokenizer).score(prompts, responses)

    loaded = EndogenousRewardModel.from_pretrained(tmp_path, dtype="float32", device="cpu", alpha=1.0)
    assert loaded.model.dtype == torch.float32 and loaded.device == torch.device("cpu")
    assert loaded.score(prompts, responses).tolist() == pytest.approx(expected.tolist(), rel=1e-6)
    assert EndogenousRewardModel.from_pretrained(tmp_path, dtype="bfloat16", device="cpu").model.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        EndogenousRewardModel.from_pretrained(tmp_path, dtype="float8")
    with pytest.raises(TypeError, match="dtype"):
        EndogenousRewardModel.from_pretrained(tmp_path, dtype=16)


def test_empty_list_gives_empty_rewards(tokenizer):
    assert build("qwen3", tokenizer).score([], []).shape == (0,)


@pytest.mark.parametrize("call, error, match", [
    (lambda m: m.score(["a"], ["b", "c"]), ValueError, "same length"),
    (lambda m: m.score("a prompt", ["b"]), TypeError, "prompts must be a list"),
    (lambda m: m.score(["a", 3], ["b", "c"]), TypeError, r"prompts\[1\]"),
    (lambda m: m.score(["a"], [None]), TypeError, r"responses\[0\]"),
    (lambda m: m.calculate_reward(["a"], "b"), TypeError, "prompt must be a str"),
    (lambda m: m.calculate_reward("a", b"b"), TypeError, "response must be a str"),
    (lambda m: m.calculate_reward("a", "", gamma=0.0), ValueError, "gamma"),
    (lambda m: m.score(["a"], [""], beta=-1.0), ValueError, "beta"),
    (lambda m: m.score(["a"], ["b"], batch_size=0), ValueError, "batch_size"),
    (lambda m: m.score(["a"], ["b"], return_per_token="yes"), TypeError, "return_per_token"),
])
def test_bad_input_names_the_argument(tokenizer, call, error, match):
    with pytest.raises(error, match=match):
        call(build("qwen3", tokenizer))


def test_bad_alpha_and_a_prompt_without_tokens(tokenizer):
    model = fx.make_model("qwen3", len(tokenizer))
    with pytest.raises(ValueError, match="alpha"):
        EndogenousRewardModel(model, tokenizer, alpha=0.0)
    from tokenizers import processors

    bare = fx.make_tokenizer()
    bare.backend_tokenizer.post_processor = processors.Sequence([])  # no BOS: an empty prompt has no tokens
    with pytest.raises(ValueError, match=r"prompts\[1\] gives no tokens"):
        EndogenousRewardModel(model, bare).score(["a", ""], ["b", "c"])
