"""(prompt, completion) pairs in the two forms trainers hand over, as (token ids, response start) rows: plain text
(``EndogenousRewardModel.encode``), or conversational, lists of ``{"role", "content"}`` messages rendered with
the chat template the way TRL renders them: the prompt with the generation prompt (or continuing a final
assistant message), the prompt + completion in full, and the completion is what follows their common prefix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import takewhile
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from .model import EndogenousRewardModel, Rows

Messages = list[Mapping[str, Any]]
Text = Union[str, Messages]  # one prompt or completion, in either form


def is_messages(value: object) -> bool:
    """A list of chat messages (mappings with a 'role'); an empty list is an empty conversation."""
    return isinstance(value, list) and all(isinstance(m, Mapping) and "role" in m for m in value)


def check_pairs(prompts: object, completions: object) -> tuple[list[Text], list[Text]]:
    """The pairs as lists, or a TypeError / ValueError naming the argument and index."""
    lists = []
    for name, values in (("prompts", prompts), ("completions", completions)):
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise TypeError(f"{name} must be a list of strings or of message lists, got {type(values).__name__}")
        lists.append(list(values))
    prompts, completions = lists
    if len(prompts) != len(completions):
        raise ValueError(f"prompts and completions must have the same length, got {len(prompts)} and "
                         f"{len(completions)}")
    for i, pair in enumerate(zip(prompts, completions)):
        check_pair(*pair, f"prompts[{i}]", f"completions[{i}]")
    return prompts, completions


def check_pair(prompt: object, completion: object, prompt_name: str, completion_name: str) -> None:
    """TypeError naming the value unless both are a str or a list of messages. A conversational prompt takes
    a completion of messages or a plain string (the assistant's reply); a plain prompt a plain string."""
    for name, value in ((prompt_name, prompt), (completion_name, completion)):
        if not (isinstance(value, str) or is_messages(value)):
            raise TypeError(f"{name} must be a str or a list of messages (dicts with a 'role'), "
                            f"got {type(value).__name__}")
    if isinstance(prompt, str) and not isinstance(completion, str):
        raise TypeError(f"{completion_name} is a list of messages, but {prompt_name} is plain text")


def encode_pairs(reward_model: EndogenousRewardModel, prompts: Sequence[Text], completions: Sequence[Text], *,
                 chat_template: str | None = None, chat_template_kwargs: Mapping[str, Any] | None = None) -> Rows:
    """One (ids, response start) row per pair of ``check_pairs``'s forms; plain pairs exactly as ``encode``.

    ``chat_template``: a Jinja template in place of the tokenizer's; ``chat_template_kwargs``: extra variables
    for it (e.g. ``enable_thinking``). A conversational completion without content is an empty response."""
    rows: list = [None] * len(prompts)
    plain = [i for i, prompt in enumerate(prompts) if isinstance(prompt, str)]
    for i, row in zip(plain, reward_model.encode([prompts[i] for i in plain], [completions[i] for i in plain])):
        rows[i] = row
    chat = [i for i, prompt in enumerate(prompts) if not isinstance(prompt, str)]
    if not chat:
        return rows
    tokenizer = reward_model.tokenizer
    options = dict(chat_template_kwargs or {}, tokenize=False)
    if chat_template is not None:
        options["chat_template"] = chat_template
    elif not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"prompts[{chat[0]}] is a conversation, but the tokenizer has no chat template; "
                         "pass chat_template")
    heads, tails = [], []
    for i in chat:
        completion = completions[i]
        if isinstance(completion, str):
            completion = [{"role": "assistant", "content": completion}]
        head, tail = _render(tokenizer, prompts[i], completion, options)
        heads.append(head)
        tails.append(tail if any(message.get("content") for message in completion) else "")
    head_ids = tokenizer(heads, add_special_tokens=False)["input_ids"]  # the template holds the special tokens
    tail_ids = tokenizer(tails, add_special_tokens=False)["input_ids"]
    for i, head, tail in zip(chat, head_ids, tail_ids):
        if not head:
            raise ValueError(f"prompts[{i}] renders to no tokens; the reward needs at least one prompt token")
        rows[i] = (list(head) + list(tail), len(head))
    return rows


def _render(tokenizer, prompt: Messages, completion: Messages, options: dict) -> tuple[str, str]:
    """(prompt text, completion text) of one conversation, split where TRL splits it."""
    continues = bool(prompt) and prompt[-1]["role"] == "assistant"  # a prefilled reply goes on
    head = tokenizer.apply_chat_template(prompt, add_generation_prompt=not continues,
                                         continue_final_message=continues, **options)
    whole = tokenizer.apply_chat_template(list(prompt) + list(completion), **options)
    # some templates render the generation prompt unlike the start of the reply that follows it (DeepSeek-R1):
    # the prompt is the common prefix, as in TRL
    common = sum(1 for _ in takewhile(lambda pair: pair[0] == pair[1], zip(head, whole)))
    return whole[:common], whole[common:]
