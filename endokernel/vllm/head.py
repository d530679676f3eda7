"""What the pooler reads from a vLLM causal LM: this rank's real rows of the LM head and the logit transforms of
the model's logits processor.

vLLM pads the head's vocabulary (to a multiple of 64, per tensor-parallel shard) with zero rows; a zero row is a
zero logit, which would enter the logsumexp. So only the shard's real rows ``[org_vocab_start_index,
org_vocab_end_index)`` are used. A softcap (Gemma-2) and a scale (Cohere's ``logit_scale``, Granite's
``1 / logits_scaling``) live in ``LogitsProcessor``, not in the head."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class HeadShard:
    """This rank's block of the vocabulary and the transforms every logit gets (endokernel's order: bias,
    scale, softcap)."""

    weight: torch.Tensor  # (hi - lo, D), the real rows only
    bias: torch.Tensor | None  # (hi - lo,)
    lo: int  # first global token id of the block
    hi: int  # one past the last
    logit_scale: float | None
    softcap: float | None


def head_module(model: torch.nn.Module) -> torch.nn.Module:
    """The module whose weight ``compute_logits`` multiplies: ``lm_head`` (itself the embedding when tied), or
    the input embedding for families that have no ``lm_head`` (Gemma)."""
    head = getattr(model, "lm_head", None)
    if head is None or not hasattr(head, "shard_indices"):
        head = getattr(getattr(model, "model", None), "embed_tokens", None)
    if head is None or not hasattr(head, "shard_indices"):
        raise TypeError(f"{type(model).__name__}: no vocab-parallel LM head (lm_head or model.embed_tokens) found")
    return head


def transforms(logits_processor: torch.nn.Module) -> tuple[float | None, float | None]:
    """(logit_scale, softcap) of a vLLM ``LogitsProcessor``. vLLM caps first and scales after; endokernel scales
    first and caps after: the same function when only one of them is set, as in every model that ships."""
    scale = float(getattr(logits_processor, "scale", 1.0))
    softcap = getattr(logits_processor, "soft_cap", None)
    if scale != 1.0 and softcap is not None:
        raise NotImplementedError("a logits processor with both a scale and a softcap (applied in vLLM's order, "
                                  "cap then scale) is not supported")
    return (None if scale == 1.0 else scale), (None if softcap is None else float(softcap))


def head_shard(model: torch.nn.Module) -> HeadShard:
    """This rank's real head rows and the model's transforms, read after the weights are loaded."""
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    head = head_module(model)
    if not isinstance(getattr(head, "quant_method", None), UnquantizedEmbeddingMethod):
        raise NotImplementedError(f"{type(model).__name__}: a quantized LM head "
                                  f"({type(head.quant_method).__name__}) is not supported")
    indices = head.shard_indices
    if indices.num_added_elements:
        raise NotImplementedError("LoRA's added vocabulary is not supported")
    real = indices.num_org_elements
    bias = getattr(head, "bias", None)
    scale, softcap = transforms(model.logits_processor)
    return HeadShard(weight=head.weight[:real], bias=None if bias is None else bias[:real],
                     lo=indices.org_vocab_start_index, hi=indices.org_vocab_end_index, logit_scale=scale,
                     softcap=softcap)
