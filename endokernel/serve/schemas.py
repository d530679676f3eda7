"""The request bodies, as pydantic models: OpenRLHF's (``/get_reward``), slime's (``/reward``) and the native one
(``/score``). The trainers' bodies accept fields they may add later; the native one rejects unknown fields, so
that a misspelt option is an error rather than ignored."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StrictBool, Tag


class Message(BaseModel):
    """One chat message; other keys (tool calls, names) are kept for the chat template."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: Union[str, list[Any], None] = None


def _form(value: object) -> str | None:
    return "text" if isinstance(value, str) else "messages" if isinstance(value, list) else None


# A prompt or a response: plain text or chat messages. Told apart by type, so that a wrong value gets one error,
# not one per form; an error inside a message is at e.g. prompt.messages[0].role.
Text = Annotated[Union[Annotated[str, Tag("text")], Annotated[list[Message], Tag("messages")]],
                 Discriminator(_form, custom_error_type="text_or_messages",
                               custom_error_message="must be a string or a list of chat messages")]


class OpenRLHFRequest(BaseModel):
    """``{"query": [...], "prompts": [...], "labels": [...]}``: each query is its prompt followed by the response,
    decoded with the chat template's special tokens kept. Empty lists are valid: OpenRLHF given several server
    URLs sends a one-sample request to the first and empty ones to the others."""

    query: list[str]
    prompts: list[str]
    labels: Union[list[Any], None] = None


class SlimeRequest(BaseModel):
    """``{"prompt", "response", "label"}``: one sample; the prompt as text or as chat messages."""

    prompt: Text
    response: str
    label: Any = None


class Pair(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: Text
    response: Text


class ScoreRequest(BaseModel):
    """``{"pairs": [{"prompt", "response"}, ...], "per_token": false}``, in the forms ``endokernel score`` takes."""

    model_config = ConfigDict(extra="forbid")

    pairs: list[Pair] = Field(min_length=1)
    per_token: StrictBool = False
