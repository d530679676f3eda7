"""What the tests share: the backends to parametrize over, random inputs for parity tests (odd sizes, padded
batches, per-row prompt lengths, every transform), the parity cases and their tolerances, the table of bad
arguments, the comparison helpers, and for the Hugging Face tests a tokenizer, tiny models and RM-Bench
examples. Every test module imports from here, none from another test module."""

from __future__ import annotations

import functools
import json
import os
import pathlib
import random
import socket
from dataclasses import dataclass, field

import pytest
import torch

from endokernel import cpp_available, fused_endogenous_reward

NEEDS_CPP = pytest.mark.skipif(not cpp_available(),
                               reason="the C++ extension is not built (or ENDOKERNEL_DISABLE_CPP=1)")
CPP = pytest.param("cpp", marks=NEEDS_CPP)
# the logits-free backends: on CPU tensors the Triton kernels run under Triton's interpreter
BACKENDS = ["torch", "triton", CPP]
FLOAT64_BACKENDS = ["torch", CPP]  # logits-free backends with a float64 path (the Triton kernels are fp32-only)
THREADS = (1, 2, 3)


def cpp_path_params(dtype: torch.dtype = torch.float32) -> list:
    """backend='cpp' on every C++ code path this CPU executes for ``dtype`` inputs, forced (conftest's
    ``cpu_path`` fixture enters ``cpu_paths`` for the marker), on 1, 2 and 3 threads: each variant and tile engine,
    and for bf16 inputs bf16 and fp32 tiles (bf16 tiles emulated where the CPU has no bf16 units). The tile dtype
    matters for bf16 inputs only, the engine for fp32-accumulated ones only."""
    if not cpp_available():
        return [CPP]
    from endokernel.backends.cpu_paths import cpp_paths

    params = []
    for path in cpp_paths():
        if (dtype != torch.bfloat16 and path.tile_dtype == torch.bfloat16) or (
                dtype == torch.float64 and path.engine != "aten"):
            continue
        for threads in THREADS:
            forced = dict(isa=path.isa, engine=path.engine, tile_dtype=path.tile_dtype, threads=threads)
            params.append(pytest.param("cpp", id=f"cpp-{path.name}-{threads}t", marks=pytest.mark.cpu_path(forced)))
    return params


def backends_for(dtype: torch.dtype) -> list:
    """The logits-free backends for ``dtype`` inputs, the C++ one on every code path (``cpp_path_params``)."""
    if dtype == torch.float64:
        return ["torch", *cpp_path_params(dtype)]
    return ["torch", "triton", *cpp_path_params(dtype)]


def dtype_backend_params(dtypes: tuple[torch.dtype, ...]) -> list:
    """(dtype, backend) parameters for "dtype,backend": ``backends_for`` each dtype."""
    params = []
    for dtype in dtypes:
        for backend in backends_for(dtype):
            backend = backend if hasattr(backend, "values") else pytest.param(backend, id=backend)
            params.append(pytest.param(dtype, backend.values[0], marks=backend.marks,
                                       id=f"{str(dtype).removeprefix('torch.')}-{backend.id}"))
    return params


def fresh_seed() -> int:
    """A new seed per call (ENDOKERNEL_TEST_SEED pins it to reproduce a failure); tests print it on failure."""
    pinned = os.environ.get("ENDOKERNEL_TEST_SEED")
    return int(pinned) if pinned else int.from_bytes(os.urandom(4), "little")


@dataclass
class Case:
    hidden: torch.Tensor  # (B, T, D)
    weight: torch.Tensor  # (V, D)
    ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    prompt_len: list[int]
    kwargs: dict = field(default_factory=dict)  # alpha, gamma, beta, bias, logit_scale, softcap, vocab_size
    seed: int = 0

    def cast(self, dtype: torch.dtype) -> "Case":
        kwargs = dict(self.kwargs)
        return Case(self.hidden.to(dtype), self.weight.to(dtype), self.ids, self.attention_mask,
                    self.prompt_len, kwargs, self.seed)

    @property
    def lengths(self) -> list[int]:
        return self.attention_mask.sum(1).tolist()


def make_case(*, batch: int, seq_len: int, vocab: int, dim: int, dtype=torch.float32, seed: int | None = None,
              empty_row: bool = False, **kwargs) -> Case:
    """Rows of random real lengths in [1, seq_len] (one row full), random prompt lengths in [1, length];
    ``empty_row`` makes row 0's response empty. Logits come out with a standard deviation of about 3."""
    seed = fresh_seed() if seed is None else seed
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, seq_len, dim, generator=g)
    weight = torch.randn(vocab, dim, generator=g) * (3.0 / dim**0.5)
    ids = torch.randint(0, vocab, (batch, seq_len), generator=g)
    lengths = torch.randint(1, seq_len + 1, (batch,), generator=g)
    lengths[-1] = seq_len
    mask = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()
    ids = torch.where(mask.bool(), ids, 0)
    prompt_len = [int(torch.randint(1, n + 1, (1,), generator=g)) for n in lengths.tolist()]
    if empty_row:
        prompt_len[0] = int(lengths[0])
    if kwargs.pop("bias", False):
        kwargs["bias"] = torch.randn(vocab, generator=g)
    return Case(hidden.to(dtype), weight.to(dtype), ids, mask, prompt_len, kwargs, seed)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (normwise); NaN anywhere counts as infinite error."""
    actual, expected = actual.detach().double(), expected.detach().double()
    if not torch.isfinite(actual).all():
        return float("inf")
    scale = expected.abs().max().clamp_min(1e-30)
    return float((actual - expected).abs().max() / scale)


# parity cases: odd V and D, T = 1 and 2, padding, alpha != 1, beta > 0, every transform, an empty response
CASES = {
    "V=1031,D=48": dict(batch=3, seq_len=13, vocab=1031, dim=48),
    "V=4099,D=100,alpha=0.5,gamma=1": dict(batch=2, seq_len=9, vocab=4099, dim=100, alpha=0.5, gamma=1.0),
    "T=1": dict(batch=2, seq_len=1, vocab=1031, dim=48),
    "T=2": dict(batch=3, seq_len=2, vocab=1031, dim=48),
    "alpha=2,beta>0": dict(batch=2, seq_len=11, vocab=1031, dim=100, alpha=2.0, gamma=0.8, beta=0.3),
    "bias,logit_scale,softcap": dict(batch=2, seq_len=10, vocab=1031, dim=48, bias=True, logit_scale=0.7,
                                     softcap=4.0),
    "empty response,vocab_size": dict(batch=3, seq_len=8, vocab=1031, dim=48, empty_row=True, vocab_size=5000),
}
# normwise relative error allowed against the float64 reference
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3, torch.float64: 1e-12}


def score(case: Case, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(rewards, per-token rewards) of a case on a backend."""
    return fused_endogenous_reward(
        case.hidden, case.weight, case.ids, prompt_len=case.prompt_len, attention_mask=case.attention_mask,
        return_per_token=True, backend=backend, **case.kwargs)


def on_each_thread_count(fn, **forced) -> list:
    """[fn() on each of THREADS threads], under ``cpu_paths(**forced)``."""
    from endokernel.backends.cpu_paths import cpu_paths

    results = []
    for threads in THREADS:
        with cpu_paths(threads=threads, **forced):
            results.append(fn())
    return results


# bad arguments of fused_endogenous_reward: (overrides of bad_call's defaults, error type, message pattern)
V, D, T = 50, 16, 6


def bad_call(**over):
    """``fused_endogenous_reward`` on small valid arguments, with ``over`` replacing some of them."""
    args = dict(hidden=torch.randn(2, T, D), lm_head=torch.randn(V, D), ids=torch.randint(0, V, (2, T)))
    args.update(over)
    kwargs = {k: v for k, v in args.items() if k not in ("hidden", "lm_head", "ids")}
    return fused_endogenous_reward(args["hidden"], args["lm_head"], args["ids"], **kwargs)


BAD = [
    (dict(lm_head=torch.randn(V, D + 1)), ValueError, "lm_head has D"),
    (dict(lm_head=torch.randn(V, D, 1)), ValueError, "lm_head must be 2-D"),
    (dict(lm_head="weights"), TypeError, "lm_head must be"),
    (dict(ids=torch.full((2, T), V)), ValueError, "ids must lie in"),
    (dict(ids=torch.full((2, T), -1)), ValueError, "ids must lie in"),
    (dict(ids=torch.zeros(2, T)), TypeError, "ids must have an integer dtype"),
    (dict(ids=torch.zeros(2, T, dtype=torch.bool)), TypeError, "ids must have an integer dtype"),
    (dict(prompt_len=0), ValueError, r"prompt_len\[0\] = 0"),
    (dict(prompt_len=T + 1), ValueError, r"prompt_len\[0\] = 7"),
    (dict(prompt_len=[1, 2, 3]), ValueError, "prompt_len has 3 entries"),
    (dict(prompt_len=1.5), TypeError, "prompt_len must be"),
    (dict(prompt_len=torch.tensor([1.0, 2.0])), TypeError, "prompt_len must hold integers"),
    (dict(prompt_len=[2, 5], attention_mask=torch.tensor([[1] * T, [1, 1, 1, 0, 0, 0]])), ValueError,
     r"prompt_len\[1\] = 5 must lie in \[1, 3\]"),
    (dict(hidden=torch.randn(2, T + 1, D)), ValueError, "hidden must have shape"),
    (dict(ids=torch.randint(0, V, (2, T, 1))), ValueError, "ids must have shape"),
    (dict(attention_mask=torch.ones(2, T + 1)), ValueError, "attention_mask must have the shape"),
    (dict(attention_mask=torch.tensor([[1, 1, 0, 1, 1, 1]] * 2)), ValueError, "right-padded"),
    (dict(attention_mask=torch.full((2, T), 2)), ValueError, "only 0 and 1"),
    (dict(alpha=0.0), ValueError, "alpha must be"),
    (dict(alpha=float("nan")), ValueError, "alpha must be"),
    (dict(gamma=0.0), ValueError, "gamma must lie in"),
    (dict(gamma=1.5), ValueError, "gamma must lie in"),
    (dict(beta=-0.1), ValueError, "beta must be"),
    (dict(softcap=0.0), ValueError, "softcap must be"),
    (dict(logit_scale=-1.0), ValueError, "logit_scale must be"),
    (dict(vocab_size=0), ValueError, "vocab_size must be"),
    (dict(bias=torch.randn(V + 1)), ValueError, "bias must have shape"),
    (dict(bias=torch.arange(V)), TypeError, "bias must be a floating-point"),
    (dict(hidden=torch.randn(2, T, D, dtype=torch.float64)), TypeError, "lm_head dtype"),
    (dict(hidden=torch.randn(2, T, D).to(torch.bfloat16)), TypeError, "lm_head dtype"),
    (dict(hidden=torch.randint(0, 3, (2, T, D)), lm_head=torch.randint(0, 3, (V, D))), TypeError, "hidden: dtype"),
    (dict(hidden=torch.randn(2, T, D, device="meta")), ValueError, "one device"),
    (dict(return_per_token=1), TypeError, "return_per_token"),
]
# bad choices of the backend itself
BAD_BACKEND = [
    (dict(hidden=torch.randn(2, T, D, dtype=torch.float64), lm_head=torch.randn(V, D, dtype=torch.float64),
          backend="triton"), TypeError, "hidden: dtype"),
    (dict(backend="cuda"), ValueError, "backend must be one of"),
]


# --- Hugging Face: a tokenizer trained here, tiny random-weight models, RM-Bench examples when the data is there

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
def _tokenizer_json(vocab_size: int) -> str:
    from endokernel.hf.tiny import train_tokenizer

    return train_tokenizer(training_text(), vocab_size).backend_tokenizer.to_str()


def make_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer trained here on RM-Bench chat text (or CORPUS), with <pad>/<s>/</s> (trained
    once per size, a fresh copy per call)."""
    import transformers
    from tokenizers import Tokenizer

    return transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json(vocab_size)),
                                                bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def make_chat_tokenizer(vocab_size: int = 512):
    """``make_tokenizer`` with ``endokernel.hf.tiny.CHAT_TEMPLATE`` as its chat template."""
    from endokernel.hf.tiny import CHAT_TEMPLATE

    tokenizer = make_tokenizer(vocab_size)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_model(arch: str, vocab_size: int, *, seed: int = 0, **config_kwargs):
    """A seeded tiny random-weight causal LM (``endokernel.hf.tiny.tiny_model``)."""
    from endokernel.hf.tiny import tiny_model

    return tiny_model(arch, vocab_size, seed=seed, **config_kwargs)


def make_gemma3_model(vocab_size: int, *, sliding_window: int = 8, seed: int = 0):
    """A tiny random-weight Gemma-3-style LM: sliding-window layers (a window far shorter than the texts here) and a
    global one, one key/value head shared by four query heads, tied head."""
    import transformers

    from endokernel.hf.tiny import random_model

    config = transformers.Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, sliding_window=sliding_window, query_pre_attn_scalar=16,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"], max_position_embeddings=2048,
        bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return random_model(config, seed=seed)


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 free now, taken below the kernel's ephemeral range: a port the kernel hands out for
    port 0 can be handed again to the next process that asks (Ray starts dozens) before the server binds it."""
    try:
        low = int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for port in random.Random().sample(range(10000, max(low, 10001)), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port below the ephemeral range")
