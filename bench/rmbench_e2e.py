"""RM-Bench chat end to end on CPU: all 129 x 6 responses scored with a tiny random-weight Qwen3-shaped model,
by ``EndogenousRewardModel.score`` (length-bucketed batches, no logits) and by the original evaluation
script's one-at-a-time loop (full forward with logits, ``.item()`` per token; restated in
tests/hf_fixtures.py, as is the byte-level BPE tokenizer trained here on the same text). Checks that the
rewards agree, prints a markdown table and writes JSON to bench/results/<device>-<date>-rmbench-e2e.json.

    python bench/rmbench_e2e.py [--hidden 256 --layers 4 --vocab 8192 --max-tokens 8192]
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
import hf_fixtures as fx  # noqa: E402
from environment import describe, slug  # noqa: E402

from endokernel import EndogenousRewardModel  # noqa: E402

RESULTS = ROOT / "bench" / "results"
RTOL = 1e-4


def relative_difference(actual: list[float], expected: list[float]) -> float:
    """max |a - e| / |e| over pairs (equal infinities count as 0)."""
    return max(0.0 if a == e else abs(a - e) / max(abs(e), 1e-30) for a, e in zip(actual, expected))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192, help="BPE vocabulary trained on the chat text")
    parser.add_argument("--max-tokens", type=int, default=8192, help="padded tokens per batch of score()")
    args = parser.parse_args()
    if not fx.has_rmbench():
        raise SystemExit(f"RM-Bench chat data not found in {fx.RMBENCH}")

    tokenizer = fx.make_tokenizer(args.vocab)
    model = fx.make_model("qwen3", len(tokenizer), hidden=args.hidden, layers=args.layers, max_positions=4096)
    reward_model = EndogenousRewardModel(model, tokenizer)
    examples = fx.rmbench_chat()
    prompts = [ex["prompt"] for ex in examples for _ in range(6)]
    responses = [text for ex in examples for text in (*ex["chosen"], *ex["rejected"])]
    tokens = sum(len(ids) for ids, _ in reward_model.encode(prompts, responses))
    print(f"{len(responses)} responses, {tokens} tokens; Qwen3-shaped model D={args.hidden}, {args.layers} layers, "
          f"V={len(tokenizer)}; {torch.get_num_threads()} threads", file=sys.stderr)

    reward_model.score(prompts[:12], responses[:12])  # warm-up
    start = time.perf_counter()
    batched = reward_model.score(prompts, responses, max_tokens=args.max_tokens).tolist()
    batched_s = time.perf_counter() - start
    print(f"  score: {batched_s:.1f} s", file=sys.stderr, flush=True)
    start = time.perf_counter()
    original = [fx.original_reward(model, tokenizer, p, r) for p, r in zip(prompts, responses)]
    original_s = time.perf_counter() - start
    print(f"  original loop: {original_s:.1f} s", file=sys.stderr, flush=True)

    difference = relative_difference(batched, original)
    info = describe(torch.device("cpu"))
    result = {
        "environment": info,
        "model": {"arch": "qwen3", "hidden": args.hidden, "layers": args.layers, "vocab": len(tokenizer),
                  "dtype": "float32", "weights": "random, seed 0"},
        "data": {"file": "rm-bench/chat_filtered.json", "examples": len(examples), "responses": len(responses),
                 "tokens": tokens},
        "max_tokens": args.max_tokens,
        "seconds": {"original_loop": original_s, "score": batched_s},
        "speedup": original_s / batched_s,
        "max_relative_difference": difference,
        "agree": difference <= RTOL and all(math.isfinite(x) for x in batched),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{slug(info)}-rmbench-e2e.json"
    path.write_text(json.dumps(result, indent=2) + "\n")

    print(f"CPU: {info['device_name']} ({info['cpu_threads']} threads), torch {info['torch']}; "
          f"{len(responses)} responses, {tokens} tokens; Qwen3-shaped D={args.hidden}, {args.layers} layers, "
          f"V={len(tokenizer)}, float32\n")
    print("| method | time (s) | responses/s | speedup |")
    print("|---|---:|---:|---:|")
    print(f"| original loop (full forward with logits, .item() per token) | {original_s:.1f} | "
          f"{len(responses) / original_s:.1f} | 1.0 |")
    print(f"| EndogenousRewardModel.score (batched, no logits) | {batched_s:.1f} | "
          f"{len(responses) / batched_s:.1f} | {original_s / batched_s:.1f} |")
    print(f"\nmax relative difference: {difference:.1e} ({'agree' if result['agree'] else 'DISAGREE'}); wrote {path}")
    if not result["agree"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
