"""``VLLMRewardModel``: ``EndogenousRewardModel``'s interface (``score``, ``score_encoded``, ``calculate_reward``,
``encode``) on a vLLM engine. Each (prompt, response) pair is one engine request carrying its response start;
the pooling variant of the model (``models.py``) answers per-position statistics (``wire.py``), and this process
finishes them into rewards with the package's finalizer (``finish.py``). vLLM batches the requests (continuous
batching, chunked prefill) and may split the model over ranks (``tensor_parallel_size``)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, as_completed
from typing import Any

import torch
from tqdm import tqdm
from vllm import EngineArgs, PoolingParams  # vLLM loads with this module: ImportError where it is missing

from .._core.validate import check_gamma_beta, positive_float
from ..hf.scorer import RewardScorer, Rows, checked_rows
from .engine import EngineThread
from .finish import logprobs_from_statistics, rewards_from_statistics
from .models import pooling_architecture
from .wire import request_options

DTYPES = ("auto", "float32", "bfloat16", "float16")
CPU_KV_CACHE_BYTES = 2 * 2**30  # on a CPU, where vLLM needs a KV cache size (VLLM_CPU_KVCACHE_SPACE) to be given


class VLLMRewardModel(RewardScorer):
    """The endogenous reward of responses under a causal LM served by a vLLM engine (the ``vllm`` engine).

    Args:
        model: a model name or local folder whose architecture has a pooling variant (``models.FAMILIES``:
            Qwen2/3, Llama, Mistral, Gemma-2/3, Cohere, Granite); its tokenizer is loaded from it too.
        alpha: temperature of the soft value, > 0.
        chat_template: format each prompt as a user turn with the tokenizer's chat template.
        score_overlong: score sequences longer than ``max_position_embeddings`` (default ``-inf``, as the hf
            engine), within ``max_model_len``.
        dtype: 'auto' (the checkpoint's, as the hf engine loads it), 'float32', 'bfloat16' or 'float16'.
        tensor_parallel_size: ranks the model is split over; each computes its block of the vocabulary.
        prefix_caching: let requests read vLLM's prefix cache, so that a prompt shared by several pairs (a GRPO
            group, RM-Bench's six responses) is computed once. A pair whose cache hit reached past its prompt
            (a response beginning like an earlier one) is detected by the pooler and scored again without
            reading the cache: the rewards never depend on it.
        max_num_batched_tokens: most tokens per engine step; longer sequences are prefilled in chunks.
        max_model_len: the longest sequence; default ``max_position_embeddings``. With ``score_overlong`` a
            larger value lets the engine take longer sequences (the model's positions are raised to it).
        enforce_eager: run the model without ``torch.compile`` (faster start, slower steps).
        engine_options: further ``vllm.EngineArgs`` fields (e.g. ``block_size``, ``gpu_memory_utilization``,
            ``kv_cache_memory_bytes``: on a CPU 2 GiB unless given or set by ``VLLM_CPU_KVCACHE_SPACE``).

    On a CPU, ``VLLM_CPU_OMP_THREADS_BIND`` defaults to this process's cores, split evenly over the ranks (vLLM's
    own default keeps one core apart).
    ``close()`` (or a ``with`` block) shuts the engine down.
    """

    engine = "vllm"
    batches_itself = True

    def __init__(self, model: str | os.PathLike, *, alpha: float = 1.0, chat_template: bool = False,
                 score_overlong: bool = False, dtype: str = "auto", tensor_parallel_size: int = 1,
                 prefix_caching: bool = True, max_num_batched_tokens: int | None = None,
                 max_model_len: int | None = None, enforce_eager: bool = False,
                 engine_options: dict[str, Any] | None = None) -> None:
        from transformers import AutoConfig, AutoTokenizer

        model = os.fspath(model)
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        for name, value in (("tensor_parallel_size", tensor_parallel_size),
                            ("max_num_batched_tokens", max_num_batched_tokens), ("max_model_len", max_model_len)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name, value in (("prefix_caching", prefix_caching), ("enforce_eager", enforce_eager)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {value!r}")
        config = AutoConfig.from_pretrained(model)
        text = config.get_text_config()
        architecture = pooling_architecture(getattr(config, "architectures", None))
        super().__init__(AutoTokenizer.from_pretrained(model), alpha, chat_template=chat_template,
                         score_overlong=score_overlong, max_positions=getattr(text, "max_position_embeddings", None))
        self.vocab_size = int(text.vocab_size)  # the terminal value's, as the hf engine reads it
        self.prefix_caching = prefix_caching
        self.dtype = _checkpoint_dtype(text) if dtype == "auto" else dtype
        self.tensor_parallel_size = tensor_parallel_size
        overrides: dict[str, Any] = {"architectures": [architecture]}
        if max_model_len is None:
            self.max_model_len = self.max_positions
        else:
            self.max_model_len = max_model_len
            if score_overlong and self.max_positions is not None and max_model_len > self.max_positions:
                overrides["max_position_embeddings"] = max_model_len  # RoPE tables long enough
        args = self._engine_args(model, overrides, max_num_batched_tokens, enforce_eager, dict(engine_options or {}))
        with _cpu_threads(tensor_parallel_size):  # read by the workers as they start
            self._engine = EngineThread(args)
        self.block_size = self._engine.engine.vllm_config.cache_config.block_size
        self.rescored = 0  # pairs scored again because a cache hit reached past their prompt

    def with_options(self, *, alpha: float | None = None, chat_template: bool | None = None,
                     score_overlong: bool | None = None, prefix_caching: bool | None = None) -> VLLMRewardModel:
        """A scorer with other reward options on the same engine (no second model load): alpha, the chat
        template and the prefix-cache reads are per request. Closing either closes the engine."""
        other = copy.copy(self)
        if chat_template and not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("chat_template=True, but the tokenizer has no chat template")
        if prefix_caching is not None and not isinstance(prefix_caching, bool):
            raise TypeError(f"prefix_caching must be a bool, got {prefix_caching!r}")
        for name, value in (("alpha", None if alpha is None else positive_float("alpha", alpha)),
                            ("chat_template", chat_template), ("score_overlong", score_overlong),
                            ("prefix_caching", prefix_caching)):
            if value is not None:
                setattr(other, name, value if name == "alpha" else bool(value))
        other.rescored = 0
        return other

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, dtype: str = "auto", alpha: float = 1.0,
                        **options) -> VLLMRewardModel:
        """The constructor, named as ``EndogenousRewardModel.from_pretrained``."""
        return cls(name_or_path, dtype=dtype, alpha=alpha, **options)

    def _engine_args(self, model: str, overrides: dict, max_num_batched_tokens: int | None, enforce_eager: bool,
                     options: dict[str, Any]) -> Any:
        from vllm.platforms import current_platform

        if current_platform.is_cpu() and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            options.setdefault("kv_cache_memory_bytes", CPU_KV_CACHE_BYTES)
        if max_num_batched_tokens is not None:
            options["max_num_batched_tokens"] = max_num_batched_tokens
        return EngineArgs(model=model, runner="pooling", hf_overrides=overrides, dtype=self.dtype,
                          tensor_parallel_size=self.tensor_parallel_size, max_model_len=self.max_model_len,
                          enforce_eager=enforce_eager, enable_prefix_caching=True, enable_chunked_prefill=True,
                          **options)

    def describe(self) -> str:
        return f"vLLM, tensor parallel {self.tensor_parallel_size} ({self.dtype})"

    def close(self) -> None:
        self._engine.close()

    def _out_dtype(self) -> torch.dtype:
        return torch.float32

    def _score_todo(self, rows: Rows, todo: list[int], rewards: torch.Tensor, per_token: list[torch.Tensor],
                    gamma: float, beta: float, *, batch_size: int | None, max_tokens: int | None,
                    progress: bool | None) -> None:
        """``batch_size`` and ``max_tokens`` are not used: vLLM's scheduler batches (``max_num_batched_tokens``)."""
        scored = [rows[i] for i in todo]
        self._fill(todo, scored, self._statistics(scored, progress), rewards, per_token, gamma, beta)

    async def score_encoded_async(self, rows: Sequence[tuple[Sequence[int], int]], *, gamma: float = 0.95,
                                  beta: float = 0.0) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``score_encoded(rows, return_per_token=True)`` awaited on any event loop: the requests join the
        engine's running batch at once (the reward server's path). Cancelling the wait aborts them."""
        rows, (gamma, beta) = checked_rows(rows), check_gamma_beta(gamma, beta)
        rewards, per_token, todo = self._unscored(rows)
        scored = [rows[i] for i in todo]
        self._fill(todo, scored, await self._statistics_async(scored), rewards, per_token, gamma, beta)
        return rewards, per_token

    def _fill(self, todo: list[int], scored: Rows, stats: list[torch.Tensor], rewards: torch.Tensor,
              per_token: list[torch.Tensor], gamma: float, beta: float) -> None:
        values, tokens = rewards_from_statistics(scored, stats, alpha=self.alpha, vocab_size=self.vocab_size,
                                                 gamma=gamma, beta=beta)
        if todo:
            rewards[todo] = values
        for i, row_tokens in zip(todo, tokens):
            per_token[i] = row_tokens

    def token_logprobs(self, rows: Sequence[tuple[Sequence[int], int]]) -> list[torch.Tensor]:
        """Each response token's log-probability under the model at temperature ``alpha`` (1 for the model's
        own), one float32 tensor per (ids, start) row: ``log p(x_t | x_<t)`` for ``t = start .. len(ids) - 1``."""
        rows = checked_rows(rows)
        todo = [i for i, (ids, start) in enumerate(rows) if len(ids) > start]
        out = [torch.zeros(0) for _ in rows]
        scored = [rows[i] for i in todo]
        for i, values in zip(todo, logprobs_from_statistics(scored, self._statistics(scored, False),
                                                            temperature=self.alpha)):
            out[i] = values
        return out

    def _statistics(self, rows: Rows, progress: bool | None) -> list[torch.Tensor]:
        """(n - P, 2) statistics of each row, in order, from the engine (blocking)."""
        self._check_fits(rows)
        futures = [self._submit(row, read_cache=self.prefix_caching) for row in rows]
        disable = (len(rows) < 2 or None) if progress is None else not progress
        with tqdm(total=len(rows), disable=disable, unit="response", desc="endogenous reward") as bar:
            for _ in as_completed(futures):
                bar.update(1)
        stats = [_data(future.result()) for future in futures]
        lost = [j for j, s in enumerate(stats) if s.shape[0] == 0]  # cache hits past the prompt
        self.rescored += len(lost)
        for j, future in zip(lost, [self._submit(rows[j], read_cache=False) for j in lost]):
            stats[j] = _data(future.result())
        return stats

    async def _statistics_async(self, rows: Rows) -> list[torch.Tensor]:
        self._check_fits(rows)
        futures = [self._submit(row, read_cache=self.prefix_caching) for row in rows]
        stats = [_data(out) for out in await self._gather(futures)]
        lost = [j for j, s in enumerate(stats) if s.shape[0] == 0]
        self.rescored += len(lost)
        for j, out in zip(lost, await self._gather([self._submit(rows[j], read_cache=False) for j in lost])):
            stats[j] = _data(out)
        return stats

    async def _gather(self, futures: list[Future]) -> list[Any]:
        try:
            return await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        except asyncio.CancelledError:
            self._engine.abort([f.request_id for f in futures])  # type: ignore[attr-defined]
            raise

    def _submit(self, row: tuple[list[int], int], *, read_cache: bool) -> Future:
        ids, start = row
        # a prompt that fills its last cache block exactly is always hit through position start - 1, the
        # position that scores the first response token: such a pair never reads the cache
        skip = not read_cache or start % self.block_size == 0
        params = PoolingParams(task="token_classify", extra_kwargs=request_options(start, self.alpha),
                               skip_reading_prefix_cache=skip)
        return self._engine.submit(ids, params)

    def _check_fits(self, rows: Rows) -> None:
        for i, (ids, _) in enumerate(rows):
            if self.max_model_len is not None and len(ids) > self.max_model_len:
                raise ValueError(f"rows[{i}]: {len(ids)} tokens, more than the engine's max_model_len "
                                 f"{self.max_model_len}; pass a larger max_model_len to score it")
            low, high = min(ids), max(ids)
            if low < 0 or high >= self.vocab_size:
                raise ValueError(f"rows[{i}]: ids must lie in [0, {self.vocab_size}), got {low if low < 0 else high}")


def _data(output: Any) -> torch.Tensor:
    return output.outputs.data.to("cpu", torch.float32)


def _checkpoint_dtype(config: Any) -> str:
    """The dtype ``from_pretrained(dtype="auto")`` loads: the config's, float32 where it has none."""
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    name = str(dtype).removeprefix("torch.")
    return name if name in DTYPES else "float32"


@contextlib.contextmanager
def _cpu_threads(ranks: int) -> Iterator[None]:
    """On a CPU without ``VLLM_CPU_OMP_THREADS_BIND`` set, this process's cores split evenly over the ranks while an
    engine starts ('0,1' for one rank on two cores, '0|1' for two): vLLM's default keeps a core apart."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu() or os.environ.get("VLLM_CPU_OMP_THREADS_BIND"):
        yield
        return
    cores = sorted(os.sched_getaffinity(0))
    per = max(len(cores) // ranks, 1)
    groups = [cores[r * per : (r + 1) * per] or cores[-1:] for r in range(ranks)]
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(",".join(map(str, group)) for group in groups)
    try:
        yield
    finally:
        del os.environ["VLLM_CPU_OMP_THREADS_BIND"]
