"""``EndogenousRewardModel``: the endogenous reward of (prompt, response) pairs under a ``transformers`` causal LM,
one pair at a time with the original evaluation script's names and results, or in length-bucketed batches.
Logits are never built: the decoder body gives the final hidden states, ``fused_endogenous_reward`` the rest.
Pairs that share a prompt (RM-Bench's six responses, a GRPO group) run it through the decoder once."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch.distributed import ProcessGroup
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, Cache, PreTrainedModel, PreTrainedTokenizerBase

from .._core.types import accumulation_dtype
from ..api import fused_endogenous_reward
from ..distributed import data_parallel as dp
from .batching import length_buckets, pad_right, prompt_groups
from .fused_body import fused_decoder_ops
from .modeling import (
    OutputHead,
    can_share_prompts,
    decoder_body,
    final_hidden_states,
    max_positions,
    output_head,
    prompt_cache,
    repeated,
)
from .prefix_attention import prefix_attention
from .scorer import RewardScorer, Rows

DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# the responses to one prompt are batched in chunks of similar lengths: at most this share of a chunk is padding
MAX_GROUP_PADDING = 0.25
# padded tokens per forward on a CPU when no limit is given: forwards smaller than a GPU wants keep a layer's
# activations in cache, measured faster than 8192 on real-model shapes (docs/backends/cpu.md)
CPU_MAX_TOKENS = 1536


class EndogenousRewardModel(RewardScorer):
    """The endogenous reward (arXiv 2506.23235) of responses under a causal LM, in this process (the ``hf``
    engine; ``endokernel.vllm.VLLMRewardModel`` is the same interface on a vLLM engine).

    Args:
        model: a ``transformers`` causal LM (put in eval mode here); its config gives ``vocab_size`` (terminal
            value), ``max_position_embeddings`` and any logit transform (softcap, logit scale).
        tokenizer: its tokenizer. Prompts are tokenized with special tokens, responses without.
        alpha: temperature of the soft value, > 0.
        chat_template: format each prompt as a user turn with the tokenizer's chat template (and generation
            prompt) before tokenizing it, then without added special tokens: the template holds them. Off by
            default, as in the original script.
        score_overlong: score sequences longer than ``max_position_embeddings`` anyway; by default they get
            ``float("-inf")``, as in the original script.
        backend: the kernel backend, see ``fused_endogenous_reward``.
        share_prompts: run a prompt shared by several pairs through the decoder once, and its responses on its
            cached keys and values (same rewards up to rounding: within 1e-5 relative in float32). On by default
            where the model supports a ``DynamicCache``; False scores every pair from its first token.
        fused_body: on a CPU, run the decoder's RMSNorms and gated-MLP activations as fused C++ kernels while
            scoring, for the module classes they reproduce (checked once per class on a probe), and the attention
            of responses on a shared prompt's cache on the causal fast path (see ``prefix_attention``): the same
            values up to rounding. False keeps every module's own forward.
    """

    engine = "hf"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, alpha: float = 1.0, *,
                 chat_template: bool = False, score_overlong: bool = False, backend: str = "auto",
                 share_prompts: bool = True, fused_body: bool = True) -> None:
        super().__init__(tokenizer, alpha, chat_template=chat_template, score_overlong=score_overlong,
                         max_positions=max_positions(model))
        for name, value in (("share_prompts", share_prompts), ("fused_body", fused_body)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {value!r}")
        self.model = model.eval()
        self.backend = backend
        self.share_prompts = share_prompts and can_share_prompts(model)
        self.fused_body = fused_body
        self._decoder = decoder_body(model)
        output_head(model)  # fail here for a model without an LM head; it is read again per call (model.to)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, dtype: str | torch.dtype = "auto",
                        device: str | torch.device | None = None, alpha: float = 1.0,
                        **options) -> "EndogenousRewardModel":
        """Load with ``AutoModelForCausalLM`` / ``AutoTokenizer`` (a local folder works offline).

        ``dtype``: 'auto' (the checkpoint's), 'float32', 'bfloat16', 'float16' or a ``torch.dtype``;
        ``device``: default cuda when available, else cpu; ``options``: keyword arguments of the constructor.
        """
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise ValueError(f"dtype must be one of {list(DTYPES)} or a torch.dtype, got {dtype!r}")
            dtype = DTYPES[dtype]
        elif not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a str or a torch.dtype, got {type(dtype).__name__}")
        device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype).to(device)
        return cls(model, AutoTokenizer.from_pretrained(name_or_path), alpha, **options)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def describe(self) -> str:
        return f"{self.device} ({str(self.model.dtype).removeprefix('torch.')})"

    def score(self, prompts: Sequence[str], responses: Sequence[str], *, gamma: float = 0.95, beta: float = 0.0,
              batch_size: int | None = None, max_tokens: int | None = None, return_per_token: bool = False,
              progress: bool | None = None,
              data_parallel: bool | ProcessGroup = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Rewards of N (prompt, response) pairs, each equal to ``calculate_reward`` of the pair.

        Pairs are sorted by length into right-padded batches of at most ``batch_size`` rows and ``max_tokens``
        padded tokens (see ``length_buckets``; with neither given, 8192 tokens, or ``CPU_MAX_TOKENS`` on a CPU);
        pairs that share a prompt run it once (``share_prompts``); results come back in input order.
        ``progress``: a tqdm bar (default: on a terminal, when there is more than one batch).

        ``data_parallel``: True (the default process group) or a ProcessGroup, to share the work: every rank of
        the group passes the same pairs, scores a share of them balanced by token count, and gets all results
        (the progress bar shows the first rank's share). Off by default, so that ranks scoring their own pairs
        (a trainer's reward function, an evaluation on one rank) need no collective.

        Returns:
            (N,) float32 rewards on the CPU (float64 for a float64 model). With ``return_per_token``, also a
            list of N 1-D tensors, one reward per response token (empty for an empty response, NaN for a
            sequence left unscored as too long).
        """
        return super().score(prompts, responses, gamma=gamma, beta=beta, batch_size=batch_size,
                             max_tokens=max_tokens, return_per_token=return_per_token, progress=progress,
                             data_parallel=data_parallel)

    def _score_data_parallel(self, rows: Rows, gamma: float, beta: float, *, batch_size: int | None,
                             max_tokens: int | None, progress: bool | None,
                             data_parallel: bool | ProcessGroup) -> tuple[torch.Tensor, list[torch.Tensor]]:
        group = dp.process_group(data_parallel)
        first = dist.get_rank(group) == 0

        def score_share(index: list[int]) -> list[tuple[float, torch.Tensor]]:
            share = self._score_all([rows[i] for i in index], gamma, beta, batch_size=batch_size,
                                    max_tokens=max_tokens, progress=progress if first else False)
            return list(zip(share[0].tolist(), share[1]))

        inputs = hashlib.sha256(repr((rows, gamma, beta, batch_size, max_tokens)).encode()).hexdigest()
        results = dp.map_sharded(score_share, [len(ids) for ids, _ in rows], inputs, group)
        rewards = torch.tensor([reward for reward, _ in results], dtype=self._out_dtype())
        return rewards, [tokens for _, tokens in results]

    def _out_dtype(self) -> torch.dtype:
        return accumulation_dtype(output_head(self.model).weight.dtype)

    def _score_todo(self, rows: Rows, todo: list[int], rewards: torch.Tensor, per_token: list[torch.Tensor],
                    gamma: float, beta: float, *, batch_size: int | None, max_tokens: int | None,
                    progress: bool | None) -> None:
        head = output_head(self.model)
        out_dtype = rewards.dtype
        if batch_size is None and max_tokens is None and self.device.type == "cpu":
            max_tokens = CPU_MAX_TOKENS
        groups, alone = prompt_groups(rows, todo) if self.share_prompts else ([], todo)
        batches = [[alone[j] for j in batch] for batch in
                   length_buckets([len(rows[i][0]) for i in alone], batch_size=batch_size, max_tokens=max_tokens)]
        # a group's responses, in chunks of similar lengths (the prompt's cache is copied per chunk, cheaply)
        chunks = [[[group[j] for j in chunk] for chunk in
                   length_buckets([len(rows[i][0]) - rows[i][1] for i in group], batch_size=batch_size,
                                  max_tokens=max_tokens, max_padding=MAX_GROUP_PADDING)] for group in groups]
        calls = len(batches) + sum(len(c) for c in chunks)
        disable = (calls < 2 or None) if progress is None else not progress

        def keep(index: list[int], batch_rewards: torch.Tensor, batch_tokens: torch.Tensor, offset: list[int]) -> None:
            rewards[index] = batch_rewards.cpu().to(out_dtype)
            for r, i in enumerate(index):
                count = len(rows[i][0]) - rows[i][1]
                per_token[i] = batch_tokens[r, offset[r] : offset[r] + count].cpu().to(out_dtype)
            bar.update(len(index))

        with (tqdm(total=len(todo), disable=disable, unit="response", desc="endogenous reward") as bar,
              fused_decoder_ops(self._decoder, self.fused_body),
              prefix_attention(self._decoder, self.fused_body)):
            for index in batches:
                keep(index, *self._score_batch([rows[i] for i in index], head, gamma, beta),
                     [rows[i][1] for i in index])
            for group, group_chunks in zip(groups, chunks):
                ids, start = rows[group[0]]
                cache, last = prompt_cache(self._decoder, ids[:start], self.device)
                for index in group_chunks:
                    keep(index, *self._score_responses(cache, last, ids[start - 1],
                                                       [rows[i][0][start:] for i in index], head, gamma, beta),
                         [1] * len(index))

    @torch.no_grad()  # scoring only: no autograd graph through the (differentiable) kernel
    def _score_batch(self, rows: Rows, head: OutputHead, gamma: float,
                     beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) rewards and (B, T) per-token rewards of rows padded into one batch."""
        ids, mask = (t.to(self.device) for t in pad_right([ids for ids, _ in rows]))
        hidden = final_hidden_states(self._decoder, ids)
        return self._statistics(hidden, ids, mask, [start for _, start in rows], head, gamma, beta)


    @torch.no_grad()
    def _score_responses(self, cache: Cache, last: torch.Tensor, last_id: int, responses: list[list[int]],
                         head: OutputHead, gamma: float, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) rewards and (B, 1 + L) per-token rewards of responses continuing one prompt, from its ``cache``
        and its last token's hidden state ``last`` and id: each row is scored as the sequence [last prompt
        token, response] with response start 1, which needs exactly what the whole sequence would."""
        ids, mask = (t.to(self.device) for t in pad_right(responses))
        hidden = final_hidden_states(self._decoder, ids, repeated(cache, len(responses)))
        rows = len(responses)
        hidden = torch.cat([last.expand(rows, 1, -1), hidden], dim=1)
        ids = torch.cat([torch.full((rows, 1), last_id, dtype=ids.dtype, device=ids.device), ids], dim=1)
        mask = torch.cat([torch.ones((rows, 1), dtype=mask.dtype, device=mask.device), mask], dim=1)
        return self._statistics(hidden, ids, mask, [1] * rows, head, gamma, beta)

    def _statistics(self, hidden: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, starts: list[int],
                    head: OutputHead, gamma: float, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        where = head.weight.device  # the last layer's device, for a model split across devices
        return fused_endogenous_reward(
            hidden.to(where, head.weight.dtype), head.weight, ids.to(where), prompt_len=starts,
            attention_mask=mask.to(where), alpha=self.alpha, gamma=gamma, beta=beta, vocab_size=head.vocab_size,
            bias=head.bias, logit_scale=head.logit_scale, softcap=head.softcap, return_per_token=True,
            backend=self.backend,
        )

