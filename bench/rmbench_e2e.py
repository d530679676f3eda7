"""RM-Bench chat end to end on CPU: all 129 x 6 responses scored with a tiny random-weight Qwen3-shaped model,
by ``EndogenousRewardModel.score`` (length-bucketed batches, no logits) and by the original evaluation
script's one-at-a-time loop (full forward with logits, ``.item()`` per token; restated in
``endokernel.hf.original``), with a byte-level BPE tokenizer trained here on the same text. Checks that the
rewards agree, prints a markdown table and writes JSON to bench/results/<device>-<date>-rmbench-e2e.json.

    python bench/rmbench_e2e.py [--models 256x4x8192,64x2x1024 --max-tokens 8192 --chunk 16]

The body forward is the same work for both methods; what batching saves is the original's per-token Python
(.item() and a logsumexp per token), its logits at prompt positions, and the small-matmul overhead of one
sequence at a time. So the speedup grows as the model shrinks: both a 256-wide and a 64-wide model are run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import time

import torch

from endokernel import EndogenousRewardModel
from endokernel.bench import tables
from endokernel.bench.environment import describe, slug
from endokernel.hf.original import original_reward
from endokernel.hf.rmbench_data import load_examples
from endokernel.hf.tiny import tiny_model, train_tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
RMBENCH_CHAT = ROOT.parent / "shared" / "data" / "rm-bench" / "chat_filtered.json"
RTOL = 1e-4


def relative_difference(actual: list[float], expected: list[float]) -> float:
    """max |a - e| / |e| over pairs (equal infinities count as 0)."""
    return max(0.0 if a == e else abs(a - e) / max(abs(e), 1e-30) for a, e in zip(actual, expected))


def measure(hidden: int, layers: int, vocab: int, max_tokens: int, chunk: int) -> dict:
    """Both methods on all chat responses with one tiny model; seconds, speedup and agreement. The methods
    alternate every ``chunk`` examples, so that other jobs on a shared machine slow both alike."""
    examples = load_examples([str(RMBENCH_CHAT)])
    tokenizer = train_tokenizer([text for ex in examples for text in (ex.prompt, *ex.chosen, *ex.rejected)], vocab)
    model = tiny_model("qwen3", len(tokenizer), hidden=hidden, layers=layers, max_positions=4096)
    reward_model = EndogenousRewardModel(model, tokenizer)
    prompts = [ex.prompt for ex in examples for _ in range(6)]
    responses = [text for ex in examples for text in (*ex.chosen, *ex.rejected)]
    tokens = sum(len(ids) for ids, _ in reward_model.encode(prompts, responses))
    name = f"Qwen3-shaped D={hidden}, {layers} layers, V={len(tokenizer)}"
    print(f"{name}: {len(responses)} responses, {tokens} tokens", file=sys.stderr, flush=True)

    reward_model.score(prompts[:12], responses[:12])  # warm-up
    batched, original, batched_s, original_s = [], [], 0.0, 0.0
    load_before = os.getloadavg()[0]
    for first in range(0, len(responses), 6 * chunk):
        part = slice(first, first + 6 * chunk)
        start = time.perf_counter()
        batched += reward_model.score(prompts[part], responses[part], max_tokens=max_tokens).tolist()
        batched_s += time.perf_counter() - start
        start = time.perf_counter()
        original += [original_reward(model, tokenizer, p, r) for p, r in zip(prompts[part], responses[part])]
        original_s += time.perf_counter() - start
    print(f"  score: {batched_s:.1f} s, original loop: {original_s:.1f} s", file=sys.stderr, flush=True)
    difference = relative_difference(batched, original)
    return {
        "model": {"name": name, "arch": "qwen3", "hidden": hidden, "layers": layers, "vocab": len(tokenizer),
                  "dtype": "float32", "weights": "random, seed 0"},
        "responses": len(responses), "tokens": tokens, "max_tokens": max_tokens, "chunk_examples": chunk,
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "seconds": {"original_loop": original_s, "score": batched_s},
        "speedup": original_s / batched_s,
        "max_relative_difference": difference,
        "agree": difference <= RTOL and all(math.isfinite(x) for x in batched),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="256x4x8192,64x2x1024",
                        help="comma-separated HIDDENxLAYERSxVOCAB (vocabulary of the BPE trained on the chat text)")
    parser.add_argument("--max-tokens", type=int, default=8192, help="padded tokens per batch of score()")
    parser.add_argument("--chunk", type=int, default=16,
                        help="examples per score() call; the methods alternate chunk by chunk (default 16)")
    args = parser.parse_args()
    if not RMBENCH_CHAT.is_file():
        raise SystemExit(f"RM-Bench chat data not found at {RMBENCH_CHAT}")
    shapes = [spec.split("x") for spec in args.models.split(",")]
    if not all(len(shape) == 3 and all(n.isdigit() and int(n) > 0 for n in shape) for shape in shapes):
        raise SystemExit(f"--models: expected HIDDENxLAYERSxVOCAB,..., got {args.models!r}")

    if args.chunk < 1:
        raise SystemExit("--chunk must be >= 1")
    runs = [measure(*map(int, shape), args.max_tokens, args.chunk) for shape in shapes]
    info = describe(torch.device("cpu"))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{slug(info)}-rmbench-e2e.json"
    document = {"kind": "rmbench-e2e", "environment": info,
                "data": "rm-bench/chat_filtered.json (129 x 6 responses)", "runs": runs}
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(tables.markdown(document))
    print(f"\nwrote {path}")
    if not all(run["agree"] for run in runs):
        raise SystemExit("score and the original loop disagree beyond a relative 1e-4")


if __name__ == "__main__":
    main()
