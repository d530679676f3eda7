"""Reward throughput of ``EndogenousRewardFunction`` (responses per second) for one RL batch: 64 completions of
about 256 tokens each, with tiny random-weight Qwen3-shaped models (float32), against the naive path: the same
length-bucketed batches through the full model's forward (logits built), then the same reward math on the
logits. Repeats alternate between the methods; medians. Checks that the rewards agree, prints a markdown table
and writes JSON to bench/results/<device>-<date>-rl-throughput.json with the environment and the load average
(the machine may be shared with other jobs: both methods are slowed alike, but the times are noisier).

    python bench/rl_throughput.py [--models 256x4x8192,64x2x1024 --completions 64 --tokens 256 --repeats 15]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import torch

from endokernel.bench import tables
from endokernel.bench.environment import describe, slug
from endokernel.hf.batching import DEFAULT_MAX_TOKENS, length_buckets, pad_right
from endokernel.hf.conversation import encode_pairs
from endokernel.hf.rmbench_data import load_examples
from endokernel.hf.tiny import tiny_model, train_tokenizer
from endokernel.rl import EndogenousRewardFunction

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
RMBENCH_CHAT = ROOT.parent / "shared" / "data" / "rm-bench" / "chat_filtered.json"
RTOL = 1e-4
FAST, NAIVE = "endokernel (score path)", "naive (full logits)"


def rl_batch(tokenizer, texts: list[str], prompts: list[str], count: int,
             tokens: int) -> tuple[list[str], list[str]]:
    """``count`` prompts (RM-Bench's, in turn) and completions cut from ``texts`` at ``tokens``-token boundaries."""
    ids = tokenizer(" ".join(texts), add_special_tokens=False).input_ids
    ids = ids * (count * tokens // len(ids) + 1)
    completions = [tokenizer.decode(ids[i * tokens : (i + 1) * tokens]) for i in range(count)]
    return [prompts[i % len(prompts)] for i in range(count)], completions


@torch.no_grad()
def naive_rewards(reward: EndogenousRewardFunction, prompts: list[str], completions: list[str]) -> list[float]:
    """What scoring looks like with the logits: the same rows and batches, ``model(...).logits``, then
    r_k = L[t-1, x_t] - alpha * logsumexp(L[t] / alpha) (alpha * log V at the last token), discounted sums."""
    reward_model = reward.reward_model
    model, alpha, vocab = reward_model.model, reward_model.alpha, reward_model.model.config.vocab_size
    rows = encode_pairs(reward_model, prompts, completions)
    out = [0.0] * len(rows)
    for batch in length_buckets([len(ids) for ids, _ in rows], max_tokens=DEFAULT_MAX_TOKENS):
        ids, mask = pad_right([rows[i][0] for i in batch])
        logits = model(input_ids=ids, attention_mask=mask).logits.float()  # (B, T, V): what endokernel never builds
        chosen = logits[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]  # position t-1 scores token t
        values = alpha * torch.logsumexp(logits[:, 1:] / alpha, dim=-1)
        for r, i in enumerate(batch):
            start, end = rows[i][1], len(rows[i][0])
            if start == end:
                continue
            value = values[r, start - 1 : end - 1].double()
            value[-1] = alpha * torch.log(torch.tensor(float(vocab), dtype=torch.float64))
            k = torch.arange(end - start, dtype=torch.float64)
            weights = torch.clamp(reward.gamma**k, min=reward.beta)
            out[i] = float((weights * (chosen[r, start - 1 : end - 1].double() - value)).sum())
    return out


def measure(hidden: int, layers: int, vocab: int, count: int, tokens: int, repeats: int) -> dict:
    examples = load_examples([str(RMBENCH_CHAT)])
    texts = [text for ex in examples for text in (ex.prompt, *ex.chosen, *ex.rejected)]
    tokenizer = train_tokenizer(texts, vocab)
    model = tiny_model("qwen3", len(tokenizer), hidden=hidden, layers=layers, max_positions=4096)
    reward = EndogenousRewardFunction(model, tokenizer)  # gamma 1, the RL default
    prompts, completions = rl_batch(tokenizer, texts, [ex.prompt for ex in examples], count, tokens)
    lengths = [len(ids) - start for ids, start in encode_pairs(reward.reward_model, prompts, completions)]
    label = f"Qwen3-shaped D={hidden}, {layers} layers, V={len(tokenizer)}"
    print(f"{label}: {count} completions of {min(lengths)}-{max(lengths)} tokens", file=sys.stderr, flush=True)

    methods = {FAST: lambda: reward(prompts, completions), NAIVE: lambda: naive_rewards(reward, prompts, completions)}
    results = {name: fn() for name, fn in methods.items()}  # warm-up, and the rewards to compare
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    load_before = os.getloadavg()
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    fast, naive = results.values()
    difference = max(abs(a - b) / max(abs(b), 1e-30) for a, b in zip(fast, naive))
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    fastest = {name: min(s) for name, s in seconds.items()}  # the least disturbed run, on a shared machine
    return {
        "model": {"name": label, "arch": "qwen3", "hidden": hidden, "layers": layers, "vocab": len(tokenizer),
                  "dtype": "float32", "weights": "random, seed 0"},
        "completions": count, "completion_tokens": {"target": tokens, "min": min(lengths), "max": max(lengths)},
        "repeats": repeats,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "seconds": seconds,
        "median_seconds": medians,
        "fastest_seconds": fastest,
        "responses_per_second": {name: count / s for name, s in medians.items()},
        "responses_per_second_fastest": {name: count / s for name, s in fastest.items()},
        "speedup": medians[NAIVE] / medians[FAST],
        "speedup_fastest": fastest[NAIVE] / fastest[FAST],
        "max_relative_difference": difference,
        "agree": difference <= RTOL,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="256x4x8192,64x2x1024",
                        help="comma-separated HIDDENxLAYERSxVOCAB (vocabulary of the BPE trained on the test text)")
    parser.add_argument("--completions", type=int, default=64, help="completions in the batch (default 64)")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per completion (default 256)")
    parser.add_argument("--repeats", type=int, default=15,
                        help="timed repeats per method (default 15: on a shared machine single times vary 3x)")
    args = parser.parse_args()
    shapes = [spec.split("x") for spec in args.models.split(",")]
    if not all(len(shape) == 3 and all(n.isdigit() and int(n) > 0 for n in shape) for shape in shapes):
        raise SystemExit(f"--models: expected HIDDENxLAYERSxVOCAB,..., got {args.models!r}")
    if min(args.completions, args.tokens, args.repeats) < 1:
        raise SystemExit("--completions, --tokens and --repeats must be >= 1")
    if not RMBENCH_CHAT.is_file():
        raise SystemExit(f"RM-Bench chat data not found at {RMBENCH_CHAT}")

    runs = [measure(*map(int, shape), args.completions, args.tokens, args.repeats) for shape in shapes]
    info = describe(torch.device("cpu"))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{slug(info)}-rl-throughput.json"
    document = {"kind": "rl-throughput", "environment": info, "runs": runs}
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(tables.markdown(document))
    print(f"\nwrote {path}")
    if not all(run["agree"] for run in runs):
        raise SystemExit("the reward function and the naive path disagree beyond a relative 1e-4")


if __name__ == "__main__":
    main()
