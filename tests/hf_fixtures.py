"""Shared by the tests/test_hf_* files: a locally trained byte-level BPE tokenizer, tiny seeded random-weight
causal LMs built from configs, RM-Bench examples (when the data is there), and an independent restatement of
the original evaluation script's per-token loop (full forward with logits, ``.item()`` per token)."""

from __future__ import annotations

import functools
import json
import math
import pathlib

import torch
import transformers

RMBENCH = pathlib.Path(__file__).parents[1].parent / "shared" / "data" / "rm-bench"

# Used when the RM-Bench data is missing: enough text to train a few hundred merges.
CORPUS = [
    "What are different drawers I should have for clothes?",
    "Organize your wardrobe with drawers for socks, shirts, trousers, sweaters and accessories.",
    "Write a function that returns the sum of the squares of a list of numbers.",
    "def sum_of_squares(numbers):\n    return sum(n * n for n in numbers)\n",
    "How do I bake bread at home? Mix flour, water, salt and yeast, knead, let it rise, then bake it hot.",
    "I cannot help with that request, but here is some general safety information instead.",
    "The capital of France is Paris; the capital of Italy is Rome; the capital of Spain is Madrid.",
    "**Tips:**\n1. Sleep well.\n2. Drink water.\n3. Take short walks between long tasks.",
    "Explain recursion: a function that calls itself on a smaller input until it reaches a base case.",
    "Thank you! Let me know if you have any other questions about cooking, coding or travel.",
] * 20

# Hand-written (prompt, response) pairs of varied lengths, used when RM-Bench is missing and beside it.
PAIRS = [
    ("What is 2 + 2?", "2 + 2 is 4."),
    ("Name a fruit.", "An apple."),
    ("Write a haiku about rain.", "Soft rain on the roof,\nthe garden drinks it slowly,\nclouds drift to the sea."),
    ("How do I reverse a list in Python?", "Use `items[::-1]` for a reversed copy, or `items.reverse()` in place."),
    ("Say nothing.", ""),
    ("Give three tips for sleeping well.",
     "**Tips:**\n1. Keep a regular schedule.\n2. Avoid screens late.\n3. Keep the room cool and dark."),
]


def has_rmbench() -> bool:
    return (RMBENCH / "chat_filtered.json").is_file()


@functools.lru_cache(maxsize=None)
def rmbench_chat() -> tuple[dict, ...]:
    """The 129 RM-Bench chat examples (call only when ``has_rmbench()``)."""
    return tuple(json.loads((RMBENCH / "chat_filtered.json").read_text()))


def training_text() -> list[str]:
    if not has_rmbench():
        return CORPUS
    return [text for ex in rmbench_chat() for text in (ex["prompt"], *ex["chosen"], *ex["rejected"])]


@functools.lru_cache(maxsize=None)
def _trained_tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(training_text(), trainer)
    # prompts get a BOS (tokenized with special tokens), responses none (add_special_tokens=False)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok.to_str()


def make_tokenizer(vocab_size: int = 512) -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained here on RM-Bench chat text (or CORPUS), with <pad>/<s>/</s>."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(_trained_tokenizer_json(vocab_size))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                pad_token="<pad>")


# A small chat template in the style of ChatML; "<s>" and "</s>" are the tokenizer's special tokens.
CHAT_TEMPLATE = ("<s>{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def make_chat_tokenizer(vocab_size: int = 512) -> transformers.PreTrainedTokenizerFast:
    """``make_tokenizer`` with CHAT_TEMPLATE as its chat template."""
    tokenizer = make_tokenizer(vocab_size)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


ARCHS = ("llama", "qwen3", "gemma2", "cohere", "granite")


def make_config(arch: str, vocab_size: int, *, hidden: int = 64, layers: int = 2, max_positions: int = 2048):
    common = dict(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    if arch == "llama":
        return transformers.LlamaConfig(**common, tie_word_embeddings=True)
    if arch == "qwen3":
        return transformers.Qwen3Config(**common, head_dim=hidden // 4, tie_word_embeddings=False)
    if arch == "gemma2":  # a cap low enough that dropping it would change every reward
        return transformers.Gemma2Config(**common, head_dim=hidden // 4, final_logit_softcapping=4.0,
                                         query_pre_attn_scalar=hidden // 4, sliding_window=64)
    if arch == "cohere":  # logits * logit_scale
        return transformers.CohereConfig(**common, logit_scale=0.5)
    if arch == "granite":  # logits / logits_scaling
        return transformers.GraniteConfig(**common, logits_scaling=2.0)
    raise ValueError(f"unknown arch {arch!r}")


def make_model(arch: str, vocab_size: int, *, seed: int = 0, **config_kwargs) -> transformers.PreTrainedModel:
    """A seeded random-weight causal LM in eval mode, float32. The LM head is re-drawn so that logits have a
    standard deviation of about 3 (default initialisation gives ~0.1: rewards would hardly depend on them)."""
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(make_config(arch, vocab_size, **config_kwargs))
    head = model.get_output_embeddings().weight
    with torch.no_grad():
        head.normal_(0.0, 3.0 / head.shape[1] ** 0.5)
    return model.eval()


def original_reward(model, tokenizer, prompt: str, response: str, *, alpha: float = 1.0, gamma: float = 0.95,
                    beta: float = 0.0) -> float:
    """The original evaluation script's loop, restated: full forward with logits, one ``.item()`` per value."""
    prompt_ids = tokenizer(prompt).input_ids
    response_ids = tokenizer(response, add_special_tokens=False).input_ids
    return original_reward_ids(model, prompt_ids + response_ids, len(prompt_ids), alpha=alpha, gamma=gamma,
                               beta=beta)


def original_reward_ids(model, ids: list[int], start: int, *, alpha: float = 1.0, gamma: float = 0.95,
                        beta: float = 0.0) -> float:
    """The same loop on token ids whose response starts at ``start``."""
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


def sample_pairs(count: int, max_chars: int = 900) -> list[tuple[str, str]]:
    """``count`` (prompt, response) pairs: RM-Bench chat responses of at most ``max_chars`` characters with
    their prompt, in turn of each style (concise, detailed plain, detailed markdown), when the data is there;
    else PAIRS repeated."""
    if not has_rmbench():
        return [PAIRS[i % len(PAIRS)] for i in range(count)]
    by_style: list[list[tuple[str, str]]] = [[], [], []]
    for ex in rmbench_chat():
        for style, response in enumerate(ex["chosen"] + ex["rejected"]):
            if len(ex["prompt"]) + len(response) <= max_chars:
                by_style[style % 3].append((ex["prompt"], response))
    return [by_style[i % 3][(7 * (i // 3)) % len(by_style[i % 3])] for i in range(count)]


def handwritten_examples(count: int = 5) -> list[dict]:
    """RM-Bench-format records built from PAIRS (3 chosen and 3 rejected responses each)."""
    texts = [response for _, response in PAIRS if response]
    return [{"id": 100 + i, "prompt": PAIRS[i % len(PAIRS)][0],
             "chosen": [texts[(i + k) % len(texts)] for k in range(3)],
             "rejected": [texts[(i + k + 3) % len(texts)] + " Maybe." for k in range(3)]}
            for i in range(count)]
