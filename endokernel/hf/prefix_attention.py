"""Attention of responses continuing a cached prompt, on a CPU: the causal fast path instead of a masked one.

A chunk of responses scored on its prompt's cache has L queries and P + L keys: transformers then builds an
explicit mask (causal, aligned to the bottom right) and SDPA takes its masked path, which computes every query
against every key. Split at the prompt, the same attention is two unmasked calls of torch's CPU flash kernel:
all queries against the P prompt keys, and the queries against the L response keys with ``is_causal`` (half the
work, grouped-query heads without copies); the two outputs merge exactly by their log-sum-exps (one C++ pass,
csrc/decoder_ops.cpp, written in the layout the module takes).

``prefix_attention(decoder)`` switches a model that runs ``sdpa`` to this function for the block, under its own
name in transformers' attention registry (its masks built by ``sdpa_mask`` as before). Any call it does not
cover (no cache, one query, a mask that is not the plain causal one: padding, a sliding window shorter than the
keys; dropout, softcapping, sinks, a GPU) goes to transformers' own ``sdpa_attention_forward`` unchanged."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface

from ..backends.cpp.loader import cpp_available, extension
from .fused_body import FUSED_DTYPES

NAME = "endokernel_prefix_sdpa"
# keyword arguments that change what attention computes: with any of them set, the call is transformers'
_OTHER_TERMS = ("softcap", "position_bias", "s_aux", "sinks")


def _flash(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, causal: bool,
           scale: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    output, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, is_causal=causal, scale=scale)[:2]
    return output, lse


def _plain_causal(mask: torch.Tensor | None, queries: int, keys: int) -> bool:
    """Whether ``mask`` (B or 1, 1, L, P + L) is exactly "query i sees keys 0 .. P + i" for every row."""
    if mask is None or mask.dtype != torch.bool or mask.dim() != 4 or tuple(mask.shape[-2:]) != (queries, keys):
        return False
    expected = torch.arange(keys)[None, :] <= torch.arange(queries)[:, None] + (keys - queries)
    return bool((mask == expected.to(mask.device)).all())


def prefix_sdpa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                        is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract: query (B, H, L, Dh), key and value (B, G, P + L, Dh) ->
    ((B, L, H, Dh), None)."""
    queries, keys = query.shape[2], key.shape[2]
    covered = (
        cpp_available() and query.device.type == "cpu" and query.dtype in FUSED_DTYPES and key.dtype == query.dtype
        and value.dtype == query.dtype and 1 < queries < keys and dropout == 0.0
        and query.shape[1] % key.shape[1] == 0 and query.shape[-1] == value.shape[-1]
        and not kwargs.get("output_attentions") and all(kwargs.get(name) is None for name in _OTHER_TERMS)
        and _plain_causal(attention_mask, queries, keys)
    )
    if not covered:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    prefix = keys - queries
    prompt_out, prompt_lse = _flash(query, key[:, :, :prefix], value[:, :, :prefix], False, scaling)
    own_out, own_lse = _flash(query, key[:, :, prefix:], value[:, :, prefix:], True, scaling)
    batch, heads, _, width = query.shape
    out = torch.empty((batch, queries, heads, width), dtype=query.dtype)
    extension().merge_attention(prompt_out, prompt_lse, own_out, own_lse, out)
    return out, None


AttentionInterface.register(NAME, prefix_sdpa_forward)
AttentionMaskInterface.register(NAME, sdpa_mask)


@contextlib.contextmanager
def prefix_attention(decoder: torch.nn.Module, enabled: bool = True) -> Iterator[bool]:
    """Within the block, a decoder whose config runs ``sdpa`` on a CPU runs ``prefix_sdpa_forward`` instead
    (where the C++ kernels are built); yields whether it does."""
    config = getattr(decoder, "config", None)
    first = next(decoder.parameters(), None)
    switch = (enabled and cpp_available() and config is not None and first is not None
              and first.device.type == "cpu" and getattr(config, "_attn_implementation", None) == "sdpa")
    if switch:
        config._attn_implementation = NAME
    try:
        yield switch
    finally:
        if switch:
            config._attn_implementation = "sdpa"
