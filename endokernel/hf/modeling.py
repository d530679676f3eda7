"""What the integration reads from a ``transformers`` causal LM: the decoder body's final hidden states, the LM
head, and the logit transforms and sizes its config declares. The full model's forward is never called, so
no logits are built."""

from __future__ import annotations

import inspect
from copy import deepcopy
from dataclasses import dataclass

import torch
from transformers import Cache, DynamicCache, PreTrainedModel


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
def final_hidden_states(decoder: torch.nn.Module, ids: torch.Tensor, past: Cache | None = None) -> torch.Tensor:
    """(B, T, D) final hidden states for right-padded ``ids`` (B, T), after the tokens cached in ``past`` if given
    (which then holds them too).

    No attention mask is passed, on purpose: with right padding each row's real tokens sit at positions
    0 .. n-1 (the default position ids; after a cache of P tokens, P .. P + n - 1) and causal attention keeps them
    from seeing the padding after them, so their states match the unpadded forward without one. A padding mask
    would only cost time: it turns the causal fast path of SDPA into a masked one (RM-Bench scoring on a CPU
    took 1.4x as long)."""
    cache = {} if past is None else {_cache_argument(decoder): past}
    out = decoder(input_ids=ids, use_cache=past is not None, **cache)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def _cache_argument(decoder: torch.nn.Module) -> str:
    """The decoder's name for a cache to continue: ``cache`` in recent transformers, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


@torch.no_grad()
def prompt_cache(decoder: torch.nn.Module, prompt: list[int], device: torch.device) -> tuple[Cache, torch.Tensor]:
    """A prompt run through the decoder once: its key/value cache and the (D,) final hidden state of its last
    token (the one that scores the first response token)."""
    cache = DynamicCache(config=decoder.config)
    hidden = final_hidden_states(decoder, torch.tensor([prompt], device=device), cache)
    return cache, hidden[0, -1]


def repeated(cache: Cache, rows: int) -> Cache:
    """A copy of ``cache`` for a batch of ``rows`` sequences that all continue it."""
    copy = deepcopy(cache)
    copy.batch_repeat_interleave(rows)
    return copy


def can_share_prompts(model: PreTrainedModel) -> bool:
    """Whether the model's decoder continues from a ``DynamicCache`` (every decoder-only LM of transformers
    does; state-space and other cacheless families do not)."""
    supports = getattr(model, "_supports_default_dynamic_cache", None)
    return bool(supports()) if callable(supports) else False
