"""Real-model-shaped scoring on CPU, end to end: the paper's one-at-a-time loop (``endokernel.hf.original``) against
``EndogenousRewardModel.score`` on RM-Bench chat, with random-weight models built from the configs of real models
(no weights are downloaded) and a byte-level BPE tokenizer trained on the same text.

    python -m endokernel.bench.score_e2e [--examples 24] [--shapes gemma3-270m,qwen3-0.6b] [--dtypes float32,bfloat16]
    python -m endokernel.bench.score_e2e --table bench/results/<file>.json   # the markdown table of a result

Both sides score the same pairs in the same dtype in one process; the methods alternate chunk by chunk (a chunk is
``--chunk`` examples, 6 responses each; the first method of each chunk rotates), so that other work on a shared
machine slows them alike. Per method: seconds (sum over chunks), the largest peak extra resident memory of a chunk,
and the largest reward difference from the original loop (relative), and the matmul work it did: the tokens its
decoder forwards ran (padding included, counted by a hook on the decoder), times two multiply-adds per weight of the
decoder's linear layers, plus the LM head's 2 V D per scored position (the original's every position, its logits;
``score``'s response tokens, its statistics); attention's score and value products are left out. The ratio of the
original's work to a method's is the speedup a method at the matmul floor would have. ``score-unshared`` is
``score`` with ``share_prompts=False`` (every pair from its first token), to tell what prefix sharing adds;
``score-unfused`` is ``score`` with ``fused_body=False`` (the decoder's own norms, MLP activations and masked
attention), to tell what fusing adds. A warm-up on the first example runs first (its seconds are reported apart).
JSON goes to bench/results/<device>-<date>-score-e2e.json (``"kind": "score-e2e"``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from .._core.memory import measure
from .environment import describe, slug
from .tables import markdown

if TYPE_CHECKING:
    import transformers

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "rm-bench" / "chat_filtered.json"
METHODS = ("original", "score", "score-unshared", "score-unfused")
TOKENIZER_VOCAB = 32000  # BPE merges learnt from RM-Bench chat text; below either model's vocabulary


def gemma3_270m() -> transformers.PretrainedConfig:
    """Gemma-3-270m's shape: V = 262144, D = 640, 18 layers (5 sliding-window of 512 : 1 global), 4 heads of 256
    sharing one key/value head, tied head, no final softcap."""
    import transformers

    return transformers.Gemma3TextConfig(
        vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
        num_key_value_heads=1, head_dim=256, sliding_window=512, max_position_embeddings=32768,
        query_pre_attn_scalar=256, rope_theta=1_000_000.0, tie_word_embeddings=True,
        layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(18)],
        bos_token_id=1, eos_token_id=2, pad_token_id=0)


def qwen3_0_6b() -> transformers.PretrainedConfig:
    """Qwen3-0.6B's shape: V = 151936, D = 1024, 28 layers, 16 query heads of 128 on 8 key/value heads, tied head."""
    import transformers

    return transformers.Qwen3Config(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rope_theta=1_000_000.0,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)


SHAPES: dict[str, Callable[[], transformers.PretrainedConfig]] = {"gemma3-270m": gemma3_270m, "qwen3-0.6b": qwen3_0_6b}


def relative_difference(actual: list[float], expected: list[float]) -> float:
    """max |a - e| / |e| over pairs (equal values, infinities included, count as 0)."""
    return max(0.0 if a == e else abs(a - e) / max(abs(e), 1e-30) for a, e in zip(actual, expected))


def alternate(methods: list[str], pairs: list[tuple[str, str]], chunk: int,
              call: Callable[[str, list[tuple[str, str]]], tuple[list[float], float, int]], label: str
              ) -> tuple[dict[str, list[float]], dict[str, float], dict[str, int]]:
    """Each method's (rewards, seconds summed, largest peak extra bytes) on ``pairs``, ``call(method, part)``
    scoring ``chunk`` examples (6 pairs each) at a time; the methods alternate chunk by chunk, the first of each
    chunk rotating, so that other work on a shared machine slows them alike. Progress goes to stderr."""
    seconds = dict.fromkeys(methods, 0.0)
    peak = dict.fromkeys(methods, 0)
    rewards: dict[str, list[float]] = {m: [] for m in methods}
    for i, first in enumerate(range(0, len(pairs), 6 * chunk)):
        part = pairs[first : first + 6 * chunk]
        for k in range(len(methods)):
            method = methods[(i + k) % len(methods)]
            result, took, extra = call(method, part)
            rewards[method] += result
            seconds[method] += took
            peak[method] = max(peak[method], extra)
        print(f"  {label}: {first + len(part)}/{len(pairs)} pairs, "
              + ", ".join(f"{m} {seconds[m]:.1f} s" for m in methods), file=sys.stderr, flush=True)
    return rewards, seconds, peak


def run_shape(shape: str, dtype: torch.dtype, examples: list[dict], tokenizer, methods: list[str],
              chunk: int) -> dict:
    """Every method on every example's six responses, alternating chunk by chunk; seconds, memory, agreement."""
    from ..hf.model import EndogenousRewardModel
    from ..hf.original import original_reward
    from ..hf.tiny import random_model

    config = SHAPES[shape]()
    model = random_model(config, dtype=dtype)
    scorers: dict[str, Callable[[list[str], list[str]], list[float]]] = {
        "original": lambda ps, rs: [original_reward(model, tokenizer, p, r) for p, r in zip(ps, rs)],
    }
    variants = {"score": {}, "score-unshared": {"share_prompts": False}, "score-unfused": {"fused_body": False}}
    for name, options in variants.items():
        if name in methods:
            scorers[name] = EndogenousRewardModel(model, tokenizer, **options).score

    decoder = model.get_decoder()
    linear_weights = sum(m.weight.numel() for m in decoder.modules() if isinstance(m, torch.nn.Linear))
    counted = {"tokens": 0}

    def count_tokens(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        ids = kwargs.get("inputs_embeds") if ids is None else ids
        counted["tokens"] += ids.shape[0] * ids.shape[1]

    decoder.register_forward_pre_hook(count_tokens, with_kwargs=True)

    pairs = [(ex["prompt"], response) for ex in examples for response in ex["chosen"] + ex["rejected"]]
    encoded = EndogenousRewardModel(model, tokenizer).encode([p for p, _ in pairs], [r for _, r in pairs])

    def call(name: str, part: list[tuple[str, str]]) -> tuple[list[float], float, int]:
        """(rewards, seconds, peak extra bytes) of one method on some pairs."""
        score = scorers[name]
        return measure(lambda: [float(x) for x in score([p for p, _ in part], [r for _, r in part])],
                       torch.device("cpu"))

    def counted_call(name: str, part: list[tuple[str, str]]) -> tuple[list[float], float, int]:
        counted["tokens"] = 0
        outcome = call(name, part)
        decoder_tokens[name] += counted["tokens"]
        return outcome

    warmup = {name: call(name, pairs[:6])[1] for name in methods}  # one-time costs out of the timed chunks
    decoder_tokens = dict.fromkeys(methods, 0)
    load_before = os.getloadavg()
    rewards, seconds, peak = alternate(methods, pairs, chunk, counted_call, f"{shape} {dtype}")
    response_tokens = sum(len(ids) - p for ids, p in encoded)
    head = 2 * model.config.vocab_size * model.config.hidden_size
    tflop = {name: (2 * linear_weights * decoder_tokens[name]
                    + head * (decoder_tokens[name] if name == "original" else response_tokens)) / 1e12
             for name in methods}
    return {
        "shape": shape, "config": {k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str))},
        "dtype": str(dtype).removeprefix("torch."), "examples": len(examples), "pairs": len(pairs),
        "tokens": sum(len(ids) for ids, _ in encoded), "response_tokens": response_tokens,
        "decoder_tokens": decoder_tokens, "matmul_tflop": tflop,
        "matmul_floor_speedup": {name: tflop["original"] / tflop[name] for name in methods if name != "original"},
        "chunk_examples": chunk, "load_average": {"before": load_before, "after": os.getloadavg()},
        "warmup_seconds": warmup, "seconds": seconds, "peak_extra_bytes": peak,
        "speedup": {name: seconds["original"] / seconds[name] for name in methods if name != "original"},
        "max_relative_difference": {name: relative_difference(rewards[name], rewards["original"])
                                    for name in methods if name != "original"},
        "finite": all(math.isfinite(x) for name in methods for x in rewards[name]),
    }


def rmbench_parser(doc: str, examples: int, methods: tuple[str, ...], chunk: int) -> argparse.ArgumentParser:
    """The options the RM-Bench end-to-end benches share (``engine_e2e`` adds its own)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=examples, help="RM-Bench chat examples, 6 responses each")
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, from {', '.join(SHAPES)}")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated: float32, bfloat16")
    parser.add_argument("--methods", default=",".join(methods), help=f"comma-separated, from {', '.join(methods)}")
    parser.add_argument("--chunk", type=int, default=chunk, help=f"examples per alternation (default {chunk})")
    parser.add_argument("--data", default=str(DATA), help="RM-Bench chat_filtered.json")
    parser.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--table", metavar="JSON", help="print the markdown table of a result file and exit")
    return parser


def rmbench_choices(args: argparse.Namespace, methods: tuple[str, ...]) -> tuple[list[str], list[str], list[str]]:
    """(shapes, dtypes, methods) asked for, the baseline (``methods[0]``) first among the methods; SystemExit
    naming the option where one is unknown or a count is below 1."""
    shapes, dtypes = args.shapes.split(","), args.dtypes.split(",")
    chosen = [methods[0], *[m for m in args.methods.split(",") if m != methods[0]]]
    for option, values, known in (("--shapes", shapes, SHAPES), ("--methods", chosen, methods),
                                  ("--dtypes", dtypes, ("float32", "bfloat16"))):
        if unknown := [v for v in values if v not in known]:
            raise SystemExit(f"{option}: unknown {unknown}; choose from {', '.join(known)}")
    if args.examples < 1 or args.chunk < 1:
        raise SystemExit("--examples and --chunk must be >= 1")
    if not pathlib.Path(args.data).is_file():
        raise SystemExit(f"RM-Bench chat data not found at {args.data}")
    return shapes, dtypes, chosen


def rmbench_text(path: str) -> tuple[list[dict], transformers.PreTrainedTokenizerBase]:
    """RM-Bench chat's examples, and a byte-level BPE tokenizer trained on their text."""
    from ..hf.tiny import train_tokenizer

    data = json.loads(pathlib.Path(path).read_text())
    return data, train_tokenizer([t for ex in data for t in (ex["prompt"], *ex["chosen"], *ex["rejected"])],
                                 TOKENIZER_VOCAB)


def result_path(out_dir: str, info: dict, kind: str) -> pathlib.Path:
    """bench/results/<device>-<date>-<kind>.json (its folder made)."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out / f"{slug(info)}-{kind}.json"


def main(argv: list[str] | None = None) -> None:
    parser = rmbench_parser(__doc__, 24, METHODS, 2)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown(json.loads(pathlib.Path(args.table).read_text())))
        return
    shapes, dtypes, methods = rmbench_choices(args, METHODS)
    if args.threads is not None and args.threads < 1:
        raise SystemExit("--threads must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    data, tokenizer = rmbench_text(args.data)
    examples = data[: args.examples]
    runs = [run_shape(shape, getattr(torch, dtype), examples, tokenizer, methods, args.chunk)
            for shape in shapes for dtype in dtypes]
    info = describe(torch.device("cpu"))
    result = {"kind": "score-e2e", "environment": info,
              "data": f"rm-bench/chat_filtered.json, first {args.examples} examples x 6 responses",
              "tokenizer": f"byte-level BPE trained on RM-Bench chat, {len(tokenizer)} tokens",
              "settings": {"methods": methods, "chunk_examples": args.chunk, "threads": torch.get_num_threads()},
              "runs": runs}
    path = result_path(args.out_dir, info, "score-e2e")
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"\nwrote {path}")

if __name__ == "__main__":
    main()
