"""The core issue's CPU speed target, measured in one run with repeats interleaved across methods.

Shape: N tokens, LM head V x D, bf16 inputs (default N=2048, D=1024, V=151936). Methods:
- floor: a bare tiled matmul H @ W.T into a reused buffer, in bf16 tiles and in fp32 tiles (bf16 tiles
  upcast); the fastest is the floor, since CPUs without bf16 units emulate bf16 matmuls ~5x slower.
- endokernel torch backend (logits-free, the default on CPU).
- torch.nn.functional.linear_cross_entropy(reduction="none"), default (materializing) and chunked options.
Prints a markdown table and writes JSON to bench/results/<device>-<date>-cpu-speed-target.json.

    python bench/cpu_speed_target.py [--tokens 2048 --dim 1024 --vocab 151936 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from environment import describe, slug  # noqa: E402

from endokernel import token_statistics  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results"


def tiled_matmul(hidden, weight, dtype, token_block=1024, vocab_block=1024):
    buffer = torch.empty(min(token_block, hidden.shape[0]) * vocab_block, dtype=dtype)
    for t0 in range(0, hidden.shape[0], token_block):
        h = hidden[t0 : t0 + token_block].to(dtype)
        for v0 in range(0, weight.shape[0], vocab_block):
            w_t = weight[v0 : v0 + vocab_block].to(dtype).T
            torch.mm(h, w_t, out=buffer[: h.shape[0] * w_t.shape[1]].view(h.shape[0], w_t.shape[1]))


def methods(hidden, weight, targets):
    yield "floor: tiled matmul, bf16 tiles", lambda: tiled_matmul(hidden, weight, torch.bfloat16)
    yield "floor: tiled matmul, fp32 tiles", lambda: tiled_matmul(hidden, weight, torch.float32)
    yield "endokernel torch backend", lambda: token_statistics(hidden, weight, targets, backend="torch")
    yield "F.linear_cross_entropy (default)", lambda: F.linear_cross_entropy(hidden, weight, targets, reduction="none")
    options = getattr(torch.nn, "LinearCrossEntropyOptions", None)
    if options is not None:
        yield "F.linear_cross_entropy (chunked)", lambda: F.linear_cross_entropy(
            hidden, weight, targets, reduction="none", options=options())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.tokens, args.dim, generator=g).to(torch.bfloat16)
    weight = (torch.randn(args.vocab, args.dim, generator=g) * (3 / args.dim**0.5)).to(torch.bfloat16)
    targets = torch.randint(0, args.vocab, (args.tokens,), generator=g)
    flops = 2 * args.tokens * args.dim * args.vocab
    named = dict(methods(hidden, weight, targets))

    times: dict[str, list[float]] = {name: [] for name in named}
    for name, fn in named.items():  # warm-up
        fn()
    for _ in range(args.repeats):  # interleaved, so drift in machine speed hits every method alike
        for name, fn in named.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
            print(f"  {name}: {times[name][-1]:.2f} s", file=sys.stderr, flush=True)

    medians = {name: statistics.median(ts) for name, ts in times.items()}
    floor = min(medians[name] for name in medians if name.startswith("floor"))
    info = describe(torch.device("cpu"))
    rows = [
        {"method": name, "median_s": medians[name], "times_s": times[name],
         "gflops": flops / medians[name] / 1e9, "ratio_to_floor": medians[name] / floor}
        for name in named
    ]
    print(f"\nCPU: {info['device_name']} ({info['cpu_threads']} threads, native bf16: {info['cpu_native_bf16']}), "
          f"torch {info['torch']}; bf16 inputs, N={args.tokens}, D={args.dim}, V={args.vocab}; "
          f"median of {args.repeats}\n")
    print("| method | median (s) | GFLOP/s | x floor |\n|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['method']} | {row['median_s']:.2f} | {row['gflops']:.1f} | {row['ratio_to_floor']:.2f} |")

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{slug(info)}-cpu-speed-target.json"
    shape = {"tokens": args.tokens, "dim": args.dim, "vocab": args.vocab, "dtype": "bfloat16", "repeats": args.repeats}
    out.write_text(json.dumps({"environment": info, "shape": shape, "results": rows}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
