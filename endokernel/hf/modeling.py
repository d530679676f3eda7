"""What the integration reads from a ``transformers`` causal LM: the decoder body's final hidden states, the LM
head, and the logit transforms and sizes its config declares. The full model's forward is never called, so
no logits are built."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel


@dataclass(frozen=True)
class OutputHead:
    """The LM head and what the model's own forward applies to its logits, as the kernel's arguments."""

    weight: torch.Tensor  # (V, D)
    bias: torch.Tensor | None  # (V,)
    logit_scale: float | None
    softcap: float | None
    vocab_size: int  # config.vocab_size: the terminal value alpha * log(vocab_size)


def text_config(model: PreTrainedModel):
    """The language model's config (itself for text-only models; the text part of a multimodal one)."""
    return model.config.get_text_config()


def output_head(model: PreTrainedModel) -> OutputHead:
    """Read the LM head (tied or not) and the config's logit transforms: Gemma-2/3's
    ``final_logit_softcapping``, Cohere's ``logit_scale`` (logits * scale) and Granite's ``logits_scaling``
    (logits / scaling)."""
    head = model.get_output_embeddings()
    if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor):
        raise TypeError(f"{type(model).__name__} has no output embeddings (LM head) to score with")
    config = text_config(model)
    scale = getattr(config, "logit_scale", None)
    scaling = getattr(config, "logits_scaling", None)
    if scaling is not None:
        scale = (1.0 if scale is None else scale) / scaling
    softcap = getattr(config, "final_logit_softcapping", None)
    return OutputHead(
        weight=head.weight.detach(),
        bias=head.bias.detach() if getattr(head, "bias", None) is not None else None,
        logit_scale=None if scale is None else float(scale),
        softcap=None if softcap is None else float(softcap),
        vocab_size=int(config.vocab_size),
    )


def max_positions(model: PreTrainedModel) -> int | None:
    """``max_position_embeddings`` of the config, or None where the model family has no such limit."""
    return getattr(text_config(model), "max_position_embeddings", None)


def decoder_body(model: PreTrainedModel) -> torch.nn.Module:
    """The decoder without the LM head, whose ``last_hidden_state`` is taken after the final norm."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    if decoder is model:
        raise TypeError(f"{type(model).__name__} exposes no decoder body apart from its LM head "
                        "(get_decoder() returned the model itself)")
    return decoder


@torch.no_grad()
def final_hidden_states(decoder: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """(B, T, D) final hidden states for right-padded ``ids`` (B, T).

    No attention mask is passed, on purpose: with right padding each row's real tokens sit at positions
    0 .. n-1 (the default position ids) and causal attention keeps them from seeing the padding after them,
    so their states match the unpadded forward without one. A padding mask would only cost time: it turns
    the causal fast path of SDPA into a masked one (RM-Bench scoring on a CPU took 1.4x as long)."""
    out = decoder(input_ids=ids, use_cache=False)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
