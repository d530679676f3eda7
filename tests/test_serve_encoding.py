"""The server's tokenization on its own (no HTTP): one BOS whether or not the text was rendered by a chat
template, rows equal to ``EndogenousRewardModel.encode`` and ``encode_pairs``, and the errors that name the
field: a prompt without tokens, a conversation without a chat template, a pair over the model's positions."""

import pytest

from endokernel import EndogenousRewardModel
from endokernel.hf.conversation import encode_pairs

import cases as fx

pytest.importorskip("pydantic")

from endokernel.serve.encoding import BadRequest, PairEncoder  # noqa: E402

NAMES = dict(prompt_name=lambda i: f"prompts[{i}]", pair_name=lambda i: f"query[{i}]")


@pytest.fixture(scope="module")
def model():
    tokenizer = fx.make_chat_tokenizer()
    return EndogenousRewardModel(fx.make_model("llama", len(tokenizer), max_positions=128), tokenizer)


def test_plain_text_is_tokenized_as_the_class_does(model):
    prompts, responses = [p for p, _ in fx.PAIRS], [r for _, r in fx.PAIRS]
    assert PairEncoder(model).texts(prompts, responses, **NAMES) == model.encode(prompts, responses)


def test_rendered_text_gets_no_second_bos(model):
    templated = EndogenousRewardModel(model.model, model.tokenizer, chat_template=True)
    rendered = templated.tokenizer.apply_chat_template([{"role": "user", "content": "Name a fruit."}],
                                                       tokenize=False, add_generation_prompt=True)
    (ids, start), = PairEncoder(model).texts([rendered], ["A pear."], **NAMES)
    assert (ids, start) == templated.encode(["Name a fruit."], ["A pear."])[0]
    assert ids.count(model.tokenizer.bos_token_id) == 1


def test_pairs_in_either_form_match_encode_pairs(model):
    messages = [{"role": "user", "content": "Name a fruit."}]
    prompts = ["Name a fruit.", messages, messages]
    responses = ["A pear.", "A fig.", [{"role": "assistant", "content": "A plum."}]]
    rows = PairEncoder(model).pairs(prompts, responses, prompt_name=str, response_name=str, pair_name=str)
    assert rows == encode_pairs(model, prompts, responses)


def test_a_prompt_without_tokens_is_named(model):
    tokenizer = fx.make_tokenizer()
    tokenizer.backend_tokenizer.post_processor = None  # no BOS: an empty prompt gives no tokens
    bare = EndogenousRewardModel(model.model, tokenizer)
    with pytest.raises(BadRequest, match=r"^prompts\[1\] gives no tokens"):
        PairEncoder(bare).texts(["Hi", ""], ["Hello", "Hello"], **NAMES)


def test_a_conversation_without_a_chat_template_is_named(model):
    plain = EndogenousRewardModel(model.model, fx.make_tokenizer())
    with pytest.raises(BadRequest, match=r"^pairs\[1\]\.prompt is a conversation, but the model's tokenizer has no"):
        PairEncoder(plain).pairs(["Hi", [{"role": "user", "content": "Hi"}]], ["Hello", "Hello"],
                                 prompt_name=lambda i: f"pairs[{i}].prompt", response_name=str, pair_name=str)


def test_a_pair_over_the_positions_is_named(model):
    with pytest.raises(BadRequest, match=r"^query\[1\]: \d+ tokens, more than the model's 128 positions"):
        PairEncoder(model).texts(["Hi", "Hi"], ["Hello", "once upon a time " * 80], **NAMES)
