"""The paper's evaluation loop (arXiv 2506.23235), restated: one pair at a time, the full model's forward with its
logits, one ``.item()`` per value. The baseline the benchmarks time ``EndogenousRewardModel.score`` against, and an
independent oracle for the tests (it shares no code with the scoring path)."""

from __future__ import annotations

import math

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def original_reward(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, response: str, *,
                    alpha: float = 1.0, gamma: float = 0.95, beta: float = 0.0) -> float:
    """The reward of one response: the prompt tokenized with special tokens, the response without."""
    prompt_ids = tokenizer(prompt).input_ids
    response_ids = tokenizer(response, add_special_tokens=False).input_ids
    return original_reward_ids(model, prompt_ids + response_ids, len(prompt_ids), alpha=alpha, gamma=gamma,
                               beta=beta)


def original_reward_ids(model: PreTrainedModel, ids: list[int], start: int, *, alpha: float = 1.0,
                        gamma: float = 0.95, beta: float = 0.0) -> float:
    """The same loop on token ids whose response starts at ``start``: 0.0 for an empty response, ``-inf`` for a
    sequence longer than ``max_position_embeddings``, as in the original script."""
    if start == len(ids):
        return 0.0
    if len(ids) > model.config.max_position_embeddings:
        return float("-inf")
    input_ids = torch.tensor([ids], device=model.device)
    with torch.no_grad():
        logits = model(input_ids).logits[0]
    end = len(ids)
    total = 0.0
    for k, t in enumerate(range(start, end)):
        q = logits[t - 1][input_ids[0, t]].item()
        if t == end - 1:
            v = alpha * math.log(model.config.vocab_size)
        else:
            v = (alpha * torch.logsumexp(logits[t] / alpha, dim=-1)).item()
        total += max(gamma**k, beta) * (q - v)
    return total
