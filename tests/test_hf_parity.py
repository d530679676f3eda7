"""``calculate_reward`` equals the original script's per-token loop (full forward with logits, one ``.item()``
per value, restated in endokernel.hf.original) within 1e-4 relative in float32, for every architecture:
tied embeddings (Llama), Qwen3, Gemma-2's final logit softcapping, Cohere's logit_scale, Granite's
logits_scaling."""

import pytest

from endokernel import EndogenousRewardModel
from endokernel.hf.modeling import output_head
from endokernel.hf.original import original_reward
from endokernel.hf.tiny import ARCHS

import cases as fx

RTOL = 1e-4
SETTINGS = [(1.0, {}), (0.7, {"gamma": 0.9, "beta": 0.3})]  # (alpha, discount): defaults, then all changed


def assert_parity(arch, pairs, settings):
    tokenizer = fx.make_tokenizer()
    model = fx.make_model(arch, len(tokenizer))
    for alpha, discount in settings:
        reward_model = EndogenousRewardModel(model, tokenizer, alpha=alpha)
        for prompt, response in pairs:
            expected = original_reward(model, tokenizer, prompt, response, alpha=alpha, **discount)
            actual = reward_model.calculate_reward(prompt, response, **discount)
            assert isinstance(actual, float)
            assert actual == pytest.approx(expected, rel=RTOL, abs=1e-6), (arch, alpha, discount, prompt[:40])


@pytest.mark.skipif(not fx.has_rmbench(), reason="RM-Bench data not in ../shared/data/rm-bench")
@pytest.mark.parametrize("arch", ARCHS)
def test_parity_on_rmbench_chat(arch):
    assert_parity(arch, fx.sample_pairs(3), SETTINGS)


@pytest.mark.parametrize("arch", ARCHS)
def test_parity_on_handwritten_pairs(arch):
    assert_parity(arch, fx.PAIRS, SETTINGS[1:])


def test_the_architectures_cover_tied_heads_and_every_logit_transform():
    # so that the parity tests above would catch a lost transform or a mishandled tied head
    tokenizer = fx.make_tokenizer()
    llama = fx.make_model("llama", len(tokenizer))
    assert llama.get_output_embeddings().weight is llama.get_input_embeddings().weight
    heads = {arch: output_head(fx.make_model(arch, len(tokenizer))) for arch in ARCHS}
    assert heads["gemma2"].softcap == 4.0 and heads["gemma2"].logit_scale is None
    assert heads["cohere"].logit_scale == 0.5 and heads["granite"].logit_scale == 0.5
    assert heads["qwen3"].softcap is None and heads["qwen3"].logit_scale is None


def test_empty_response_is_zero():
    tokenizer = fx.make_tokenizer()
    reward_model = EndogenousRewardModel(fx.make_model("qwen3", len(tokenizer)), tokenizer)
    assert reward_model.calculate_reward("Say nothing.", "") == 0.0


def test_overlong_sequence_is_minus_infinity_unless_asked():
    tokenizer = fx.make_tokenizer()
    model = fx.make_model("llama", len(tokenizer), max_positions=24)
    prompt, response = fx.PAIRS[5]
    assert len(tokenizer(prompt + response).input_ids) > 24
    assert original_reward(model, tokenizer, prompt, response) == float("-inf")
    assert EndogenousRewardModel(model, tokenizer).calculate_reward(prompt, response) == float("-inf")

    anyway = EndogenousRewardModel(model, tokenizer, score_overlong=True).calculate_reward(prompt, response)
    model.config.max_position_embeddings = 10**6  # the restatement's own check off; RoPE does not read it
    assert anyway == pytest.approx(original_reward(model, tokenizer, prompt, response), rel=RTOL)


def test_chat_template_formats_the_prompt_as_a_user_turn():
    tokenizer = fx.make_tokenizer()
    tokenizer.chat_template = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n"
                               "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    model = fx.make_model("qwen3", len(tokenizer))
    prompt, response = fx.PAIRS[3]
    plain = EndogenousRewardModel(model, tokenizer)
    templated = EndogenousRewardModel(model, tokenizer, chat_template=True)
    ids, start = templated.encode([prompt], [response])[0]
    text = f"<s><|user|>{prompt}\n<|assistant|>"
    assert ids[:start] == tokenizer(text, add_special_tokens=False).input_ids  # one BOS: the template's
    assert ids[start:] == tokenizer(response, add_special_tokens=False).input_ids
    assert templated.calculate_reward(prompt, response) != plain.calculate_reward(prompt, response)
    with pytest.raises(ValueError, match="chat template"):
        EndogenousRewardModel(model, fx.make_tokenizer(), chat_template=True)
