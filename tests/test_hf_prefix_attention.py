"""Attention of responses on a cached prompt (endokernel/hf/prefix_attention.py): the split into prompt keys and causal
response keys, merged by log-sum-exp, equals transformers' masked SDPA on fresh random inputs (grouped-query heads,
odd head widths, float32 and bfloat16); calls it does not cover (one query, padding, a short sliding window, no
cache) are transformers' own, bit for bit; ``score`` takes the fast path for shared prompts and leaves the model's
attention implementation as it found it."""

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import endokernel.hf.prefix_attention as prefix
from endokernel import EndogenousRewardModel

import cases as fx

pytestmark = fx.NEEDS_CPP

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


class Heads(torch.nn.Module):
    """What the attention functions read from their module: the query heads per key/value head."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


def inputs(batch, heads, groups, queries, prefix_len, width, dtype):
    generator = torch.Generator().manual_seed(fx.fresh_seed())
    keys = prefix_len + queries
    draw = lambda *shape: torch.randn(*shape, generator=generator).to(dtype)  # noqa: E731
    # queries in the (B, L, H, Dh) -> (B, H, L, Dh) layout the modules make
    query = draw(batch, queries, heads, width).transpose(1, 2)
    key, value = draw(batch, heads // groups, keys, width), draw(batch, heads // groups, keys, width)
    causal = torch.arange(keys)[None, :] <= torch.arange(queries)[:, None] + prefix_len
    return query, key, value, causal.expand(batch, 1, queries, keys)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch,heads,groups,queries,prefix_len,width", [
    (2, 4, 2, 5, 3, 24), (1, 3, 1, 2, 1, 17), (3, 8, 4, 33, 40, 64)])
def test_split_equals_masked_sdpa(dtype, batch, heads, groups, queries, prefix_len, width):
    query, key, value, mask = inputs(batch, heads, groups, queries, prefix_len, width, dtype)
    module = Heads(groups)
    calls = []
    original_flash = prefix._flash
    prefix._flash = lambda *a: calls.append(1) or original_flash(*a)
    try:
        fast, _ = prefix.prefix_sdpa_forward(module, query, key, value, mask, scaling=0.3)
    finally:
        prefix._flash = original_flash
    own, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.3)
    assert len(calls) == 2  # the fast path ran
    assert fast.shape == own.shape == (batch, queries, heads, width) and fast.is_contiguous()
    assert fx.relative_error(fast, own) < TOLERANCE[dtype]


@pytest.mark.parametrize("case", ["one query", "padding", "short window", "no cache", "dropout"])
def test_uncovered_calls_are_transformers_own(case):
    query, key, value, mask = inputs(2, 4, 2, 1 if case == "one query" else 6, 0 if case == "no cache" else 4, 16,
                                     torch.float32)
    if case == "padding":
        mask = mask.clone()
        mask[1, :, :, 2] = False
    if case == "short window":
        mask = mask & (torch.arange(key.shape[2])[None, :] > torch.arange(6)[:, None] + 4 - 3)
    dropout = 0.5 if case == "dropout" else 0.0
    torch.manual_seed(0)
    fast, _ = prefix.prefix_sdpa_forward(Heads(2), query, key, value, mask, dropout=dropout)
    torch.manual_seed(0)
    own, _ = sdpa_attention_forward(Heads(2), query, key, value, mask, dropout=dropout)
    assert torch.equal(fast, own)


@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_score_takes_the_fast_path_and_restores_the_model(arch, monkeypatch):
    tokenizer = fx.make_tokenizer()
    model = fx.make_model(arch, len(tokenizer))
    assert model.config._attn_implementation == "sdpa"
    texts = [r for _, r in fx.sample_pairs(4)]
    prompts, responses = ["Explain recursion to a beginner."] * 4, texts
    plain = EndogenousRewardModel(model, tokenizer, fused_body=False).score(prompts, responses)
    calls = []
    original_flash = prefix._flash
    monkeypatch.setattr(prefix, "_flash", lambda *a: calls.append(1) or original_flash(*a))
    fast = EndogenousRewardModel(model, tokenizer).score(prompts, responses)
    assert len(calls) >= 2 * model.config.num_hidden_layers
    assert fx.relative_error(fast, plain) < 1e-5
    assert model.config._attn_implementation == "sdpa"  # switched for the call only
    with pytest.raises(RuntimeError), prefix.prefix_attention(model.get_decoder()) as switched:
        assert switched and model.config._attn_implementation == prefix.NAME
        raise RuntimeError
    assert model.config._attn_implementation == "sdpa"
