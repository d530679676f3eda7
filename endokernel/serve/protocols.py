"""The protocol adapters: each endpoint's request to rows for the batcher, and the scored rows to its answer.
The ``*_rows`` functions tokenize, so the app runs them in its encoding thread."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .encoding import BadRequest, PairEncoder

if TYPE_CHECKING:
    from ..hf.model import Rows
    from .batcher import Scored
    from .schemas import Message, OpenRLHFRequest, ScoreRequest, SlimeRequest


def openrlhf_rows(encoder: PairEncoder, request: OpenRLHFRequest) -> Rows:
    """Each query split at its prompt (a character prefix): the rest is the response."""
    queries, prompts = request.query, request.prompts
    lengths = {"query": len(queries), "prompts": len(prompts)}
    if request.labels is not None:
        lengths["labels"] = len(request.labels)
    if len(set(lengths.values())) > 1:
        raise BadRequest("query, prompts and labels must have the same length, got "
                         + ", ".join(f"{name} {n}" for name, n in lengths.items()))
    for i, (query, prompt) in enumerate(zip(queries, prompts)):
        if not query.startswith(prompt):
            raise BadRequest(f"query[{i}] does not start with prompts[{i}]: each query must be its prompt "
                             "followed by the response")
    return encoder.texts(prompts, [q[len(p):] for q, p in zip(queries, prompts)],
                         prompt_name=lambda i: f"prompts[{i}]", pair_name=lambda i: f"query[{i}]")


def openrlhf_answer(scored: list[Scored]) -> dict:
    """OpenRLHF's answer: rewards, the same numbers as scores (as its own reward server gives), and the number
    of response tokens scored per query in extra_logs (logged by the trainer: a wrong split shows there)."""
    rewards = [reward for reward, _ in scored]
    return {"rewards": rewards, "scores": rewards,
            "extra_logs": {"response_tokens": [len(tokens) for _, tokens in scored]}}


def slime_rows(encoder: PairEncoder, request: SlimeRequest) -> Rows:
    return encoder.pairs([_text(request.prompt)], [request.response], prompt_name=lambda _: "prompt",
                         response_name=lambda _: "response", pair_name=lambda _: "prompt + response")


def slime_answer(scored: list[Scored]) -> dict:
    """``{"reward": x}``: slime reads it with ``--reward-key reward``."""
    return {"reward": scored[0][0]}


def native_rows(encoder: PairEncoder, request: ScoreRequest) -> Rows:
    return encoder.pairs([_text(p.prompt) for p in request.pairs], [_text(p.response) for p in request.pairs],
                         prompt_name=lambda i: f"pairs[{i}].prompt", response_name=lambda i: f"pairs[{i}].response",
                         pair_name=lambda i: f"pairs[{i}]")


def native_answer(scored: list[Scored], per_token: bool) -> dict:
    """Rewards in request order, and with ``per_token`` each response token's reward."""
    answer: dict = {"rewards": [reward for reward, _ in scored]}
    if per_token:
        answer["per_token"] = [tokens for _, tokens in scored]
    return answer


def _text(value: str | list[Message]) -> str | list[dict]:
    """Plain text as it is; messages as the dicts that chat templates read."""
    return value if isinstance(value, str) else [m.model_dump(exclude_none=True) for m in value]
