"""``EndogenousRewardFunction``: rewards equal ``EndogenousRewardModel.score`` and the original loop (gamma 1 by
default), conversational pairs equal their chat-template rendering scored directly, empty completions give 0.0,
normalization and clipping, the model shared (never copied, no logits, no autograd graph), bad input."""

import pytest
import torch

from endokernel import EndogenousRewardModel
from endokernel.hf.original import original_reward, original_reward_ids
from endokernel.hf.tiny import CHAT_TEMPLATE
from endokernel.rl import EndogenousRewardFunction

import cases as fx

LONG = ("Tell me a long story.", "Once upon a time " * 300)  # over the model's 1024 positions


@pytest.fixture(scope="module")
def tokenizer():
    return fx.make_chat_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return fx.make_model("qwen3", len(tokenizer), max_positions=1024)


def split(pairs):
    return [p for p, _ in pairs], [c for _, c in pairs]


def test_plain_text_equals_score_and_the_original_loop(model, tokenizer):
    prompts, completions = split(fx.sample_pairs(5) + fx.PAIRS)
    reward = EndogenousRewardFunction(model, tokenizer, alpha=0.7, beta=0.3, max_tokens=400)
    values = reward(prompts, completions)
    assert isinstance(values, list) and all(type(v) is float for v in values)
    expected = EndogenousRewardModel(model, tokenizer, alpha=0.7).score(prompts, completions, gamma=1.0, beta=0.3)
    assert values == pytest.approx(expected.tolist(), rel=1e-6, abs=1e-7)
    original = [original_reward(model, tokenizer, p, c, alpha=0.7, gamma=1.0, beta=0.3)
                for p, c in zip(prompts, completions)]
    assert values == pytest.approx(original, rel=1e-4, abs=1e-6)
    # gamma defaults to 1 here, 0.95 in EndogenousRewardModel: the discount must change nonempty rewards
    discounted = EndogenousRewardModel(model, tokenizer, alpha=0.7).score(prompts, completions, beta=0.3)
    assert all(abs(v - d) > 1e-3 for v, d, c in zip(values, discounted.tolist(), completions) if len(c) > 20)


def conversation(prompt, completion):
    return [{"role": "user", "content": prompt}], [{"role": "assistant", "content": completion}]


def test_conversational_pairs_equal_their_rendering_scored_directly(model, tokenizer):
    pairs = [conversation(p, c) for p, c in fx.PAIRS if c]
    pairs.append(([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."},
                   {"role": "assistant", "content": "A pear."}, {"role": "user", "content": "Another?"}],
                  [{"role": "assistant", "content": "A plum."}]))
    prompts, completions = split(pairs)
    values = EndogenousRewardFunction(model, tokenizer)(prompts, completions)

    expected = []
    for prompt, completion in pairs:
        head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        whole = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
        assert whole.startswith(head) and head.startswith("<s><|")
        head_ids = tokenizer(head, add_special_tokens=False).input_ids
        tail_ids = tokenizer(whole[len(head):], add_special_tokens=False).input_ids
        expected.append(original_reward_ids(model, head_ids + tail_ids, len(head_ids), gamma=1.0))
    assert head_ids.count(tokenizer.bos_token_id) == 1  # the template's BOS, none added on top
    assert values == pytest.approx(expected, rel=1e-4, abs=1e-6)

    # a single user turn: the same as EndogenousRewardModel's chat_template=True on the rendered completion
    prompt, completion = pairs[0]
    tail = tokenizer.apply_chat_template(prompt + completion, tokenize=False)[
        len(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)):]
    direct = EndogenousRewardModel(model, tokenizer, chat_template=True).score(
        [prompt[0]["content"]], [tail], gamma=1.0)
    assert values[0] == pytest.approx(direct.item(), rel=1e-6)


def test_plain_string_completion_of_a_conversation_is_the_assistant_reply(model, tokenizer):
    reward = EndogenousRewardFunction(model, tokenizer)
    prompt, completion = conversation("Name a fruit.", "An apple.")
    assert reward([prompt], ["An apple."]) == reward([prompt], [completion])


def test_a_given_chat_template_replaces_the_tokenizers(model):
    bare = fx.make_tokenizer()  # no chat template, as many base models
    prompt, completion = conversation("Name a fruit.", "An apple.")
    with pytest.raises(ValueError, match="no chat template; pass chat_template"):
        EndogenousRewardFunction(model, bare)([prompt], [completion])
    with_template = EndogenousRewardFunction(model, bare, chat_template=CHAT_TEMPLATE)([prompt], [completion])
    assert with_template == EndogenousRewardFunction(model, fx.make_chat_tokenizer())([prompt], [completion])


def test_empty_completions_give_zero(model, tokenizer):
    prompt, _ = conversation("Say nothing.", "")
    for normalize in (None, "mean"):
        reward = EndogenousRewardFunction(model, tokenizer, normalize=normalize)
        values = reward(["Say nothing.", prompt, prompt, "Name a fruit."],
                        ["", [{"role": "assistant", "content": ""}], [], "An apple."])
        assert values[:3] == [0.0, 0.0, 0.0] and values[3] != 0.0


def test_mean_normalization_and_clipping(model, tokenizer):
    prompts, completions = split(fx.PAIRS)
    rewards, per_token = EndogenousRewardModel(model, tokenizer).score(
        prompts, completions, gamma=0.9, beta=0.5, return_per_token=True)
    mean = EndogenousRewardFunction(model, tokenizer, gamma=0.9, beta=0.5, normalize="mean")(prompts, completions)
    for value, reward, tokens in zip(mean, rewards.tolist(), per_token):
        weights = [max(0.9**k, 0.5) for k in range(len(tokens))]
        assert value == pytest.approx(reward / sum(weights) if weights else 0.0, rel=1e-5)
    at_gamma_1 = EndogenousRewardFunction(model, tokenizer, normalize="mean")(prompts, completions)
    plain = EndogenousRewardModel(model, tokenizer).score(prompts, completions, gamma=1.0, return_per_token=True)
    assert at_gamma_1 == pytest.approx([float(t.mean()) if len(t) else 0.0 for t in plain[1]], rel=1e-5)

    summed = EndogenousRewardFunction(model, tokenizer, normalize="sum")(prompts, completions)
    low, high = sorted(summed)[1], sorted(summed)[-2]  # clip some, but not all
    clipped = EndogenousRewardFunction(model, tokenizer, clip=(low, high))(prompts, completions)
    assert clipped == pytest.approx([min(max(v, low), high) for v in summed]) and clipped != summed
    symmetric = EndogenousRewardFunction(model, tokenizer, clip=1.0)(prompts, completions)
    assert symmetric == pytest.approx([min(max(v, -1.0), 1.0) for v in summed])


def test_shares_the_model_builds_no_logits_and_no_graph(tokenizer):
    model = fx.make_model("llama", len(tokenizer))  # tied LM head
    assert all(p.requires_grad for p in model.parameters())

    def no_logits(*args, **kwargs):
        raise AssertionError("the LM head or the full model's forward ran")

    grad_modes = []
    model.get_output_embeddings().register_forward_pre_hook(no_logits)
    model.get_decoder().register_forward_hook(lambda *args: grad_modes.append(torch.is_grad_enabled()))
    reward = EndogenousRewardFunction(model, tokenizer)
    assert reward.reward_model.model is model and reward.__name__ == "endogenous_reward"
    prompts, completions = split(fx.PAIRS)
    values = reward(prompts, completions, completion_ids=[[1]] * len(prompts), trainer_state=None)
    assert len(values) == len(prompts) and grad_modes and not any(grad_modes)
    assert all(p.grad is None for p in model.parameters())


def test_a_model_given_as_a_function_is_made_on_the_first_call(model, tokenizer):
    calls = []

    def frozen_policy():
        calls.append(1)
        return model

    reward = EndogenousRewardFunction(frozen_policy, tokenizer, name="self_reward")
    assert calls == [] and reward.__name__ == "self_reward"
    values = reward(*split(fx.PAIRS))
    assert calls == [1] and reward.reward_model.model is model
    assert values == EndogenousRewardFunction(model, tokenizer)(*split(fx.PAIRS)) and calls == [1]
    with pytest.raises(TypeError, match=r"returned NoneType, not a causal LM \(TRL's trainer.ref_model"):
        EndogenousRewardFunction(lambda: None, tokenizer)(["a"], ["b"])


def test_loads_a_saved_folder(model, tokenizer, tmp_path):
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    prompts, completions = split(fx.PAIRS)
    loaded = EndogenousRewardFunction(str(tmp_path), dtype="float32", device="cpu")
    assert loaded(prompts, completions) == pytest.approx(
        EndogenousRewardFunction(model, tokenizer)(prompts, completions), rel=1e-6)


def test_overlong_pairs_raise(model, tokenizer):
    with pytest.raises(ValueError, match=r"prompts\[1\] \+ completions\[1\] is \d+ tokens, more than the model's 1024"):
        EndogenousRewardFunction(model, tokenizer)(["Hi", LONG[0]], ["Hello", LONG[1]])


@pytest.mark.parametrize("prompts, completions, error, match", [
    (["a", "b"], ["c"], ValueError, "prompts and completions must have the same length, got 2 and 1"),
    (["a", "b"], ["c", None], TypeError, r"completions\[1\] must be a str or a list of messages"),
    (["a"], [7], TypeError, r"completions\[0\] must be a str"),
    ([b"a"], ["b"], TypeError, r"prompts\[0\] must be a str"),
    ("a prompt", ["b"], TypeError, "prompts must be a list"),
    (["a"], "b", TypeError, "completions must be a list"),
    (["a"], [[{"role": "assistant", "content": "b"}]], TypeError, r"completions\[0\] is a list of messages, but "
                                                                  r"prompts\[0\] is plain text"),
    ([[{"content": "no role"}]], ["b"], TypeError, r"prompts\[0\] must be a str or a list of messages"),
])
def test_bad_pairs_name_the_argument(model, tokenizer, prompts, completions, error, match):
    with pytest.raises(error, match=match):
        EndogenousRewardFunction(model, tokenizer)(prompts, completions)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"gamma": 0.0}, ValueError, "gamma"),
    ({"beta": -1.0}, ValueError, "beta"),
    ({"alpha": 0.0}, ValueError, "alpha"),
    ({"normalize": "max"}, ValueError, "normalize must be one of"),
    ({"clip": (1.0, -1.0)}, ValueError, "clip must give low < high"),
    ({"clip": "1"}, TypeError, "clip must be None, a number or a"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"max_tokens": 2.5}, ValueError, "max_tokens"),
    ({"chat_template": True}, TypeError, "chat_template must be a str"),
    ({"chat_template_kwargs": ["x"]}, TypeError, "chat_template_kwargs"),
    ({"name": ""}, TypeError, "name must be a non-empty str"),
    ({"tokenizer": None}, TypeError, "tokenizer is required"),
    ({"model_or_path": 3}, TypeError, "model_or_path must be a model name or folder"),
])
def test_bad_options_name_the_argument(model, tokenizer, kwargs, error, match):
    arguments = {"model_or_path": model, "tokenizer": tokenizer, **kwargs}
    with pytest.raises(error, match=match):
        EndogenousRewardFunction(arguments.pop("model_or_path"), arguments.pop("tokenizer"), **arguments)
