"""What a reward server is started with: the model, the reward's parameters, and the batching and load limits."""

from __future__ import annotations

import dataclasses
import os

from .._core.validate import check_gamma_beta, positive_float
from ..hf.engines import ENGINES

API_KEY_ENV = "ENDOKERNEL_API_KEY"  # read when no --api-key is given: a key on the command line shows in `ps`
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """Settings of one reward server (one model on one device).

    Args:
        model: a model name or local folder (``EndogenousRewardModel.from_pretrained``).
        dtype: 'auto' (the checkpoint's), 'float32', 'bfloat16' or 'float16'.
        device: e.g. 'cuda:1' or 'cpu'; None: cuda when available, else cpu.
        alpha, gamma, beta: the reward's temperature, discount and discount floor, for every request.
        chat_template: format plain-text prompts of /reward and /score that are not rendered yet (do not start
            with the tokenizer's BOS token) as a user turn with the tokenizer's chat template.
        max_batch_tokens: most padded tokens (rows x longest row) in one forward.
        max_wait_ms: longest a pair waits for more pairs to fill its batch.
        max_queue_tokens: most tokens accepted and not yet answered; a request over it gets 503.
        max_body_bytes: largest request body; a larger one gets 413 before it is read.
        api_key: required on the scoring endpoints when set (compared in constant time).
        batching: batch pairs across requests; False scores one request per forward call, as OpenRLHF's
            ``serve_rm.py`` does (the benchmark's baseline).
        engine: 'hf' (transformers in the server's process, batched by the server's batcher) or 'vllm' (a vLLM
            engine, which batches the requests itself: ``max_batch_tokens``, ``max_wait_ms`` and ``batching`` do
            not apply; ``device`` is vLLM's).
        tensor_parallel_size, max_model_len, enforce_eager, engine_options: the vllm engine's
            (``VLLMRewardModel``).
    """

    model: str
    dtype: str = "auto"
    device: str | None = None
    alpha: float = 1.0
    gamma: float = 0.95
    beta: float = 0.0
    chat_template: bool = False
    max_batch_tokens: int = 8192
    max_wait_ms: float = 10.0
    max_queue_tokens: int = 262144
    max_body_bytes: int = 16 * 2**20
    api_key: str | None = None
    batching: bool = True
    engine: str = "hf"
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    enforce_eager: bool = False
    engine_options: dict | None = dataclasses.field(default=None, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a non-empty name or path, got {self.model!r}")
        positive_float("alpha", self.alpha)
        check_gamma_beta(self.gamma, self.beta)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        for name in ("max_batch_tokens", "max_queue_tokens", "max_body_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.max_wait_ms, (int, float)) or not 0 <= self.max_wait_ms <= 60_000:
            raise ValueError(f"max_wait_ms must be a number of milliseconds in [0, 60000], got {self.max_wait_ms!r}")
        if self.max_queue_tokens < self.max_batch_tokens:
            raise ValueError(f"max_queue_tokens ({self.max_queue_tokens}) must be at least max_batch_tokens "
                             f"({self.max_batch_tokens}): the queue must hold a full batch")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        for name in ("tensor_parallel_size", "max_model_len"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.engine == "vllm" and not self.batching:
            raise ValueError("batching=False is the hf engine's baseline: the vllm engine batches requests itself")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must not be empty (leave it unset to serve without a key)")

    @classmethod
    def with_key_from_environment(cls, **settings) -> "ServerSettings":
        """Settings whose ``api_key``, when not given, comes from the ``ENDOKERNEL_API_KEY`` variable."""
        if settings.get("api_key") is None:
            settings["api_key"] = os.environ.get(API_KEY_ENV) or None
        return cls(**settings)
