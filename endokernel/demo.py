"""The built-in default job: score one long sequence with a Qwen3-4B-shaped LM head (random weights), once
logits-free with ``fused_endogenous_reward`` and once the naive way (materialized logits), and print time and
peak extra memory side by side. Each method runs in a fresh process so its memory peak is its own."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from ._core.memory import in_fresh_process, measure
from .api import fused_endogenous_reward
from .backends.cpu_features import cpu_model, has_native_bf16
from .bench.inputs import random_inputs

METHODS = {"endokernel": "auto", "naive": "reference"}  # method -> backend


@dataclass
class JobResult:
    method: str
    backend: str
    seconds: float
    extra_bytes: int
    reward: float


def run_job(method: str, tokens: int, dim: int, vocab: int, dtype: torch.dtype, device: str,
            seed: int = 0) -> JobResult:
    """Build the inputs, then time one scoring call with ``method`` ('endokernel' or 'naive')."""
    dev = torch.device(device)
    hidden, weight, ids = random_inputs(tokens, dim, vocab, dtype, dev, seed)
    backend = METHODS[method]

    def score():
        return fused_endogenous_reward(hidden, weight, ids, prompt_len=max(1, tokens // 4), backend=backend)

    # one tiny call first, so one-time costs (op registration, lazy imports) stay out of the numbers
    fused_endogenous_reward(hidden[:2], weight, ids[:2], prompt_len=1, backend=backend)
    reward, seconds, extra = measure(score, dev)
    return JobResult(method, backend, seconds, extra, float(reward))


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" or has_native_bf16() else torch.float32


def main(tokens: int, dim: int, vocab: int, dtype: torch.dtype | None, device: str | None,
         methods: list[str]) -> list[JobResult]:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or default_dtype(dev)
    if dev.type == "cuda":
        where = torch.cuda.get_device_name(dev)
    else:
        where = f"CPU ({cpu_model()}, {torch.get_num_threads()} threads)"
    print(f"endogenous reward of one {tokens}-token sequence, LM head V={vocab} x D={dim} (random weights), "
          f"{str(dtype).removeprefix('torch.')} on {where}")
    print(f"the logits would take {tokens * vocab * 4 / 2**30:.2f} GiB in float32\n")
    print(f"{'method':<12} {'backend':<10} {'time (s)':>9} {'peak extra memory (MiB)':>24} {'reward':>14}")
    results = []
    for method in methods:
        result = in_fresh_process(run_job, method, tokens, dim, vocab, dtype, str(dev))
        results.append(result)
        print(f"{result.method:<12} {result.backend:<10} {result.seconds:>9.2f} "
              f"{result.extra_bytes / 2**20:>24.1f} {result.reward:>14.4f}", flush=True)
    if len(results) > 1:
        base = results[0]
        for other in results[1:]:
            print(f"\n{other.method} / {base.method}: {other.seconds / base.seconds:.2f}x time, "
                  f"{other.extra_bytes / max(base.extra_bytes, 1):.0f}x memory; "
                  f"rewards differ by {abs(other.reward - base.reward) / max(abs(other.reward), 1e-30):.1e} (relative)")
    return results


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokens", type=int, default=2048, help="sequence length (default 2048)")
    parser.add_argument("--dim", type=int, default=2560, help="hidden size D (default 2560, Qwen3-4B)")
    parser.add_argument("--vocab", type=int, default=151936, help="vocabulary V (default 151936, Qwen3)")
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help="default: bfloat16 on GPUs and CPUs with bf16 units, else float32")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--methods", default="endokernel,naive", help="comma-separated: endokernel, naive")


def run(args: argparse.Namespace) -> None:
    methods = args.methods.split(",")
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"endokernel demo: --methods: unknown {sorted(unknown)}; choose from {sorted(METHODS)}")
    for name in ("tokens", "dim", "vocab"):
        if getattr(args, name) < 1:
            raise SystemExit(f"endokernel demo: --{name} must be >= 1")
    main(args.tokens, args.dim, args.vocab, DTYPES.get(args.dtype), args.device, methods)
