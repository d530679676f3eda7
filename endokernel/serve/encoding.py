"""Request text to (token ids, response start) rows, with errors that name the request field at fault.

Plain-text prompts are tokenized as ``EndogenousRewardModel.encode`` tokenizes them (with special tokens, the
response without), except text that already begins with the tokenizer's BOS token: a chat template rendered
it (OpenRLHF's queries, slime's templated prompts), so it holds its special tokens and gets no second BOS.
Chat messages go through ``encode_pairs`` (rendered as TRL renders them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..hf.conversation import check_pair, encode_pairs

if TYPE_CHECKING:
    from ..hf.conversation import Text
    from ..hf.model import EndogenousRewardModel, Rows

Namer = Callable[[int], str]  # index of a pair in its request -> the request field that holds it


class BadRequest(ValueError):
    """An input that cannot be scored (HTTP 400); the message names the field and index, never the text."""


class PairEncoder:
    """Tokenizes the pairs of requests for one ``EndogenousRewardModel``. Not thread-safe (the tokenizer is
    not): the app calls it from one worker thread."""

    def __init__(self, model: EndogenousRewardModel) -> None:
        self.model = model
        self.tokenizer = model.tokenizer
        self.bos = self.tokenizer.bos_token

    def is_rendered(self, text: str) -> bool:
        """Whether ``text`` begins with the BOS token, i.e. a chat template rendered it."""
        return bool(self.bos) and text.startswith(self.bos)

    def texts(self, prompts: Sequence[str], responses: Sequence[str], *, prompt_name: Namer,
              pair_name: Namer) -> Rows:
        """Rows of plain-text pairs, never formatted with the chat template (text is sent as it is meant)."""
        rendered = [self.is_rendered(p) for p in prompts]
        prompt_ids: list[list[int]] = [[] for _ in prompts]
        for flag in (False, True):
            index = [i for i, r in enumerate(rendered) if r == flag]
            if index:
                ids = self.tokenizer([prompts[i] for i in index], add_special_tokens=not flag)["input_ids"]
                for i, row in zip(index, ids):
                    prompt_ids[i] = list(row)
        response_ids = self.tokenizer(list(responses), add_special_tokens=False)["input_ids"] if responses else []
        for i, ids in enumerate(prompt_ids):
            if not ids:  # the first response token would have no position to be predicted from
                raise BadRequest(f"{prompt_name(i)} gives no tokens; the reward needs at least one prompt token")
        return self.checked([(p + list(r), len(p)) for p, r in zip(prompt_ids, response_ids)], pair_name)

    def pairs(self, prompts: Sequence[Text], responses: Sequence[Text], *, prompt_name: Namer,
              response_name: Namer, pair_name: Namer) -> Rows:
        """Rows of pairs in either form: plain prompts formatted with the chat template when the model was built
        with ``chat_template=True`` and the text is not rendered yet; chat messages always rendered."""
        for i, (prompt, response) in enumerate(zip(prompts, responses)):
            try:
                check_pair(prompt, response, prompt_name(i), response_name(i))
            except TypeError as error:
                raise BadRequest(str(error)) from None
        as_is = [i for i, p in enumerate(prompts) if isinstance(p, str)
                 and (not self.model.chat_template or self.is_rendered(p))]
        rows: list = [None] * len(prompts)
        if as_is:
            direct = self.texts([prompts[i] for i in as_is], [responses[i] for i in as_is],
                                prompt_name=lambda j: prompt_name(as_is[j]), pair_name=lambda j: pair_name(as_is[j]))
            for i, row in zip(as_is, direct):
                rows[i] = row
        templated = [i for i in range(len(prompts)) if rows[i] is None]
        for i, row in zip(templated, self._encode_pairs([prompts[i] for i in templated],
                                                        [responses[i] for i in templated],
                                                        lambda j: prompt_name(templated[j]))):
            rows[i] = row
        return self.checked(rows, pair_name)

    def _encode_pairs(self, prompts: list[Text], responses: list[Text], prompt_name: Namer) -> Rows:
        if not prompts:
            return []
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str) and not getattr(self.tokenizer, "chat_template", None):
                raise BadRequest(f"{prompt_name(i)} is a conversation, but the model's tokenizer has no chat "
                                 "template to render it")
        try:
            return encode_pairs(self.model, prompts, responses)
        except ValueError as error:
            failure = error
        for i in range(len(prompts)):  # find the pair at fault, to name it
            try:
                encode_pairs(self.model, [prompts[i]], [responses[i]])
            except ValueError as error:
                raise BadRequest(f"{prompt_name(i)} {str(error).removeprefix('prompts[0] ')}") from None
        raise BadRequest(str(failure))

    def checked(self, rows: Rows, pair_name: Namer) -> Rows:
        """``rows``, or BadRequest for the first that does not fit the model's positions."""
        for i, (ids, _) in enumerate(rows):
            if reason := self.model.overlong(len(ids)):
                raise BadRequest(f"{pair_name(i)}: {reason}")
        return rows
