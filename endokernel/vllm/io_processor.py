"""vLLM's own server answering rewards: the IO processor (plugin ``endokernel``, ``--io-processor-plugin
endokernel``) behind ``POST /pooling`` of ``vllm serve MODEL --runner pooling --hf-overrides
'{"architectures": ["Qwen3ForEndogenousReward"]}'``:

    POST /pooling {"data": {"pairs": [{"prompt": "Name a fruit.", "response": "An apple."},
                                      {"prompt": [1, 52, 9], "response": [77, 2]}],
                            "alpha": 1.0, "gamma": 0.95, "beta": 0.0, "per_token": false, "chat_template": false}}
    200 {"request_id": ..., "created_at": ..., "data": {"rewards": [R1, R2], "response_tokens": [N1, N2]}}

Text pairs are tokenized as ``EndogenousRewardModel.encode`` tokenizes them (the prompt with special tokens, or
with ``chat_template`` as a user turn of the tokenizer's chat template); token-id pairs are taken as they are.
Each pair is one engine request; the rewards are finished here with the package's finalizer, equal to
``EndogenousRewardModel.score``. A bad pair is refused (vLLM answers 400) naming its index.

vLLM hands one ``PoolingParams`` to every prompt of a ``/pooling`` request, so each engine request carries the
request's smallest response start: the pooler computes from there and ``post_process`` drops the extra
positions of pairs whose prompt is longer. Prefix-cache reads stay off (vLLM's default for token pooling): a
hit could remove positions the reward needs, and an IO processor cannot score a pair again."""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from vllm.config import VllmConfig
from vllm.outputs import PoolingRequestOutput
from vllm.plugins.io_processors.interface import IOProcessor
from vllm.pooling_params import PoolingParams

from ..hf.scorer import encode_texts
from .finish import rewards_from_statistics
from .wire import request_options

MAX_PENDING = 4096  # requests between pre_process and post_process remembered (a failed one is never popped)


class Pair(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str | list[int]
    response: str | list[int]

    @model_validator(mode="after")
    def _same_form(self) -> Pair:
        if isinstance(self.prompt, str) != isinstance(self.response, str):
            raise ValueError("prompt and response must both be text or both be token ids")
        return self


class RewardRequest(BaseModel):
    """The ``data`` of a ``/pooling`` request."""

    model_config = ConfigDict(extra="forbid")

    pairs: list[Pair] = Field(min_length=1)
    alpha: float = Field(1.0, gt=0, allow_inf_nan=False)
    gamma: float = Field(0.95, gt=0, le=1, allow_inf_nan=False)
    beta: float = Field(0.0, ge=0, allow_inf_nan=False)
    per_token: bool = False
    chat_template: bool = False


class EndogenousRewardIOProcessor(IOProcessor[RewardRequest, dict]):
    """(prompt, response) pairs in, rewards out; see the module's docstring."""

    def __init__(self, vllm_config: VllmConfig, renderer: Any = None) -> None:
        from transformers import AutoTokenizer

        super().__init__(vllm_config, renderer)
        model_config = vllm_config.model_config
        self.tokenizer = AutoTokenizer.from_pretrained(model_config.tokenizer, revision=model_config.tokenizer_revision)
        text = model_config.hf_config.get_text_config()
        self.vocab_size = int(text.vocab_size)
        self.max_model_len = model_config.max_model_len
        self._lock = threading.Lock()
        self._pending: collections.OrderedDict[str | None, tuple[RewardRequest, list]] = collections.OrderedDict()
        self._last: tuple[int, float] | None = None  # (smallest start, alpha) of the request pre_process saw last

    def parse_data(self, data: object) -> RewardRequest:
        try:
            return RewardRequest.model_validate(data)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise ValueError(f"data: {problems}") from None

    def pre_process(self, prompt: RewardRequest, request_id: str | None = None, **kwargs) -> list[dict]:
        rows = self._rows(prompt)
        with self._lock:
            self._pending[request_id] = (prompt, rows)
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)
        self._last = (min(start for _, start in rows), prompt.alpha)
        return [{"prompt_token_ids": ids} for ids, _ in rows]

    def merge_pooling_params(self, params: PoolingParams | None = None) -> PoolingParams:
        start, alpha = self._last if self._last is not None else (1, 1.0)
        merged = params or PoolingParams()
        merged.task = "token_classify"  # vLLM's GPU model runner V2 refuses the "plugin" task
        merged.extra_kwargs = {**(merged.extra_kwargs or {}), **request_options(start, alpha)}
        merged.skip_reading_prefix_cache = True
        return merged

    def post_process(self, model_output: Sequence[PoolingRequestOutput], request_id: str | None = None,
                     **kwargs) -> dict:
        with self._lock:
            request, rows = self._pending.pop(request_id)
        todo = [i for i, (ids, start) in enumerate(rows) if len(ids) > start]
        stats = []
        for i in todo:
            data = model_output[i].outputs.data.to("cpu", torch.float32)
            stats.append(data[data.shape[0] - (len(rows[i][0]) - rows[i][1]):])  # drop positions before P - 1
        values, tokens = rewards_from_statistics([rows[i] for i in todo], stats, alpha=request.alpha,
                                                 vocab_size=self.vocab_size, gamma=request.gamma, beta=request.beta)
        rewards, per_token = [0.0] * len(rows), [[] for _ in rows]
        for i, value, row_tokens in zip(todo, values.tolist(), tokens):
            rewards[i], per_token[i] = value, row_tokens.tolist()
        if not all(math.isfinite(r) for r in rewards):
            raise ValueError("a reward is not finite (the model's statistics overflowed)")
        answer: dict = {"rewards": rewards, "response_tokens": [len(ids) - start for ids, start in rows]}
        if request.per_token:
            answer["per_token"] = per_token
        return answer

    def _rows(self, request: RewardRequest) -> list[tuple[list[int], int]]:
        if request.chat_template and not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("data.chat_template: the model's tokenizer has no chat template")
        rows = []
        for i, pair in enumerate(request.pairs):
            if isinstance(pair.prompt, str):
                try:
                    ((ids, start),) = encode_texts(self.tokenizer, [pair.prompt], [pair.response],
                                                   chat_template=request.chat_template)
                except ValueError as error:
                    raise ValueError(f"data.pairs[{i}].prompt {str(error).removeprefix('prompts[0] ')}") from None
            else:
                ids, start = [*pair.prompt, *pair.response], len(pair.prompt)
                if not pair.prompt:
                    raise ValueError(f"data.pairs[{i}].prompt is empty; the reward needs at least one prompt token")
                if bad := [t for t in ids if not 0 <= t < self.vocab_size]:
                    raise ValueError(f"data.pairs[{i}]: token ids must lie in [0, {self.vocab_size}), got {bad[0]}")
            if len(ids) > self.max_model_len:
                raise ValueError(f"data.pairs[{i}]: {len(ids)} tokens, more than the model's max_model_len "
                                 f"{self.max_model_len}")
            rows.append((ids, start))
        return rows
