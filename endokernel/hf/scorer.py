"""The interface every engine's scorer shares: ``EndogenousRewardModel`` (transformers, in this process) and
``endokernel.vllm.VLLMRewardModel`` (a vLLM engine). Pairs are tokenized as the original evaluation script
tokenizes them (``encode``), an empty response scores 0.0 and a sequence longer than the model's positions
``-inf`` (unless ``score_overlong``), and ``calculate_reward`` / ``score`` / ``score_encoded`` sit on one method
each engine provides: the rewards of the sequences it can score (``_score_todo``). The commands (``score``,
``rmbench``, ``serve``) use only what is defined here, so they run on either engine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import torch

from .._core.validate import check_gamma_beta, positive_float

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup
    from transformers import PreTrainedTokenizerBase

Rows = list[tuple[list[int], int]]  # (prompt + response token ids, response start P) per pair


class RewardScorer:
    """The endogenous reward (arXiv 2506.23235) of (prompt, response) pairs; see ``EndogenousRewardModel`` for
    the arguments. Subclasses provide ``_score_todo``, ``_out_dtype`` and ``describe``.

    ``batches_itself``: the engine batches requests as they come (vLLM's continuous batching), so a server hands
    it each request at once instead of forming batches first."""

    engine: ClassVar[str]
    batches_itself: ClassVar[bool] = False

    def __init__(self, tokenizer: PreTrainedTokenizerBase, alpha: float, *, chat_template: bool,
                 score_overlong: bool, max_positions: int | None) -> None:
        if chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat_template=True, but the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.alpha = positive_float("alpha", alpha)
        self.chat_template = bool(chat_template)
        self.score_overlong = bool(score_overlong)
        self.max_positions = max_positions

    def describe(self) -> str:
        """The engine, device and dtype, for logs."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the engine (a no-op where there is nothing to release)."""

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def calculate_reward(self, prompt: str, response: str, gamma: float = 0.95, beta: float = 0.0) -> float:
        """The reward of one response, as the original script computes it: 0.0 for an empty response,
        ``float("-inf")`` for a sequence longer than ``max_position_embeddings`` (unless ``score_overlong``)."""
        for name, value in (("prompt", prompt), ("response", response)):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, got {type(value).__name__}")
        rewards = self._score_all(self.encode([prompt], [response]), *check_gamma_beta(gamma, beta))[0]
        return float(rewards[0])

    def score(self, prompts: Sequence[str], responses: Sequence[str], *, gamma: float = 0.95, beta: float = 0.0,
              batch_size: int | None = None, max_tokens: int | None = None, return_per_token: bool = False,
              progress: bool | None = None,
              data_parallel: bool | ProcessGroup = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Rewards of N (prompt, response) pairs, each equal to ``calculate_reward`` of the pair, in input order.

        Returns:
            (N,) float32 rewards on the CPU (float64 for a float64 model). With ``return_per_token``, also a
            list of N 1-D tensors, one reward per response token (empty for an empty response, NaN for a
            sequence left unscored as too long).
        """
        return self.score_encoded(self.encode(prompts, responses), gamma=gamma, beta=beta, batch_size=batch_size,
                                  max_tokens=max_tokens, return_per_token=return_per_token, progress=progress,
                                  data_parallel=data_parallel)

    def score_encoded(self, rows: Sequence[tuple[Sequence[int], int]], *, gamma: float = 0.95, beta: float = 0.0,
                      batch_size: int | None = None, max_tokens: int | None = None, return_per_token: bool = False,
                      progress: bool | None = None, data_parallel: bool | ProcessGroup = False,
                      ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """``score`` of sequences already tokenized: (token ids, response start P) per sequence, as ``encode``
        returns them, or built otherwise (a chat-template rendering, a whole text scored from its second token).
        Each start must lie in [1, len(ids)]; ``len(ids) == P`` is an empty response (0.0)."""
        if not isinstance(return_per_token, bool):
            raise TypeError(f"return_per_token must be a bool, got {return_per_token!r}")
        rows, (gamma, beta) = checked_rows(rows), check_gamma_beta(gamma, beta)
        if data_parallel is False:
            rewards, per_token = self._score_all(rows, gamma, beta, batch_size=batch_size, max_tokens=max_tokens,
                                                 progress=progress)
        else:
            rewards, per_token = self._score_data_parallel(rows, gamma, beta, batch_size=batch_size,
                                                           max_tokens=max_tokens, progress=progress,
                                                           data_parallel=data_parallel)
        return (rewards, per_token) if return_per_token else rewards

    def overlong(self, length: int) -> str | None:
        """Why a sequence of ``length`` tokens does not fit the model's positions, or None where it does."""
        if self.max_positions is None or length <= self.max_positions:
            return None
        return f"{length} tokens, more than the model's {self.max_positions} positions (max_position_embeddings)"

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> Rows:
        """Each pair's token ids (prompt with special tokens, then response without) and response start."""
        return encode_texts(self.tokenizer, prompts, responses, chat_template=self.chat_template)

    def _score_all(self, rows: Rows, gamma: float, beta: float, *, batch_size: int | None = None,
                   max_tokens: int | None = None,
                   progress: bool | None = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(N,) rewards and N per-token tensors of checked rows: empty responses 0.0, overlong ones -inf (and
        NaN per token) unless ``score_overlong``, the others from the engine (``_score_todo``)."""
        rewards, per_token, todo = self._unscored(rows)
        if todo:
            self._score_todo(rows, todo, rewards, per_token, gamma, beta, batch_size=batch_size,
                             max_tokens=max_tokens, progress=progress)
        return rewards, per_token

    def _unscored(self, rows: Rows) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
        """Results of ``rows`` before the engine runs: zeros, with -inf (NaN per token) for overlong sequences
        (unless ``score_overlong``), and the indices of the rows the engine must score (non-empty, fitting)."""
        out_dtype = self._out_dtype()
        rewards = torch.zeros(len(rows), dtype=out_dtype)
        per_token = [torch.zeros(len(ids) - start, dtype=out_dtype) for ids, start in rows]
        todo = []
        for i, (ids, start) in enumerate(rows):
            if len(ids) == start:
                continue  # empty response: 0.0, as in the original script
            if not self.score_overlong and self.overlong(len(ids)):
                rewards[i] = float("-inf")
                per_token[i].fill_(float("nan"))
                continue
            todo.append(i)
        return rewards, per_token, todo

    def _score_todo(self, rows: Rows, todo: list[int], rewards: torch.Tensor, per_token: list[torch.Tensor],
                    gamma: float, beta: float, *, batch_size: int | None, max_tokens: int | None,
                    progress: bool | None) -> None:
        """Fill ``rewards[i]`` and ``per_token[i]`` (``out_dtype``) for each ``i`` in ``todo`` (non-empty
        responses to score)."""
        raise NotImplementedError

    def _out_dtype(self) -> torch.dtype:
        raise NotImplementedError

    def _score_data_parallel(self, rows: Rows, gamma: float, beta: float, *, batch_size: int | None,
                             max_tokens: int | None, progress: bool | None,
                             data_parallel: bool | ProcessGroup) -> tuple[torch.Tensor, list[torch.Tensor]]:
        raise ValueError(f"data_parallel is not supported by the {self.engine} engine")


def encode_texts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], responses: Sequence[str], *,
                 chat_template: bool = False) -> Rows:
    """(ids, response start) of each plain-text pair, as the original script tokenizes it: the prompt with
    special tokens (or, with ``chat_template``, as a user turn of the tokenizer's chat template with the
    generation prompt, then without added special tokens: the template holds them), the response without."""
    prompts, responses = _strings("prompts", prompts), _strings("responses", responses)
    if len(prompts) != len(responses):
        raise ValueError(f"prompts and responses must have the same length, got {len(prompts)} and {len(responses)}")
    if not prompts:
        return []
    if chat_template:
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) for p in prompts]
        prompt_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    else:
        prompt_ids = tokenizer(prompts)["input_ids"]
    response_ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
    for i, ids in enumerate(prompt_ids):
        if not ids:  # the first response token would have no position to be predicted from
            raise ValueError(f"prompts[{i}] gives no tokens; the reward needs at least one prompt token")
    return [(list(p) + list(r), len(p)) for p, r in zip(prompt_ids, response_ids)]


def _strings(name: str, values: object) -> list[str]:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {type(values).__name__}")
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(value).__name__}")
    return list(values)


def checked_rows(rows: object) -> Rows:
    """Checked (ids, start) rows: the kernel checks them too, but empty responses never reach it."""
    if not isinstance(rows, Sequence):
        raise TypeError(f"rows must be a list of (token ids, response start) pairs, got {type(rows).__name__}")
    checked = []
    for i, row in enumerate(rows):
        if not (isinstance(row, Sequence) and len(row) == 2 and isinstance(row[0], Sequence)
                and isinstance(row[1], int) and not isinstance(row[1], bool)):
            raise TypeError(f"rows[{i}] must be a (token ids, response start) pair, got {row!r:.80}")
        ids, start = row
        if not 1 <= start <= len(ids):
            raise ValueError(f"rows[{i}]: response start {start} must lie in [1, {len(ids)}] (the number of ids)")
        checked.append((list(ids), start))
    return checked
