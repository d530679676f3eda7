"""Tiny offline models: a byte-level BPE tokenizer trained on the spot and seeded random-weight causal LMs built
from ``transformers`` configs. For tests, benchmarks and examples on machines without network access: nothing
is downloaded. A model from a real model's config (``transformers.AutoConfig.for_model`` or the config class)
gets that model's shapes with random weights, for benchmarks at real sizes."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import transformers

# A small chat template in the style of ChatML; "<s>" and "</s>" are the tokenizer's special tokens.
CHAT_TEMPLATE = ("<s>{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]  # ids 0, 1, 2
ARCHS = ("llama", "qwen3", "gemma2", "cohere", "granite")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, *,
                    chat_template: str | None = None) -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of at most ``vocab_size`` tokens trained on ``texts``, with ``<pad>``, ``<s>``
    (BOS, added to text tokenized with special tokens) and ``</s>`` (EOS), and optionally a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(list(texts), trainer)
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                                     pad_token="<pad>")
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def tiny_config(arch: str, vocab_size: int, *, hidden: int = 64, layers: int = 2,
                max_positions: int = 2048) -> transformers.PretrainedConfig:
    """A small config of a model family in ``ARCHS``, each with its logit transform: Gemma-2's final softcap (4,
    low enough that dropping it would change every reward), Cohere's ``logit_scale``, Granite's
    ``logits_scaling``; Llama's head is tied to its embeddings."""
    common = dict(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    if arch == "llama":
        return transformers.LlamaConfig(**common, tie_word_embeddings=True)
    if arch == "qwen3":
        return transformers.Qwen3Config(**common, head_dim=hidden // 4, tie_word_embeddings=False)
    if arch == "gemma2":
        return transformers.Gemma2Config(**common, head_dim=hidden // 4, final_logit_softcapping=4.0,
                                         query_pre_attn_scalar=hidden // 4, sliding_window=64)
    if arch == "cohere":
        return transformers.CohereConfig(**common, logit_scale=0.5)
    if arch == "granite":
        return transformers.GraniteConfig(**common, logits_scaling=2.0)
    raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")


def random_model(config: transformers.PretrainedConfig, *, seed: int = 0,
                 dtype: torch.dtype = torch.float32) -> transformers.PreTrainedModel:
    """A seeded random-weight causal LM of ``config`` in eval mode. The LM head is re-drawn so that logits have
    a standard deviation of about 3 (default initialisation gives ~0.1: rewards would hardly depend on them)."""
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).to(dtype)
    head = model.get_output_embeddings().weight
    with torch.no_grad():
        head.normal_(0.0, 3.0 / head.shape[1] ** 0.5)
    return model.eval()


def tiny_model(arch: str, vocab_size: int, *, seed: int = 0, **config_kwargs) -> transformers.PreTrainedModel:
    """``random_model(tiny_config(arch, vocab_size, **config_kwargs))``, float32."""
    return random_model(tiny_config(arch, vocab_size, **config_kwargs), seed=seed)
