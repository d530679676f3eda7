"""GPU timings of the fused kernel against the naive path and the bare cuBLAS matmul floor, one run.

For each token count N: median time (triton.testing.do_bench, ms), effective TFLOP/s (2*N*D*V / time),
ratio to the floor and peak extra memory. Out-of-memory is recorded as "OOM", never a crash.
Writes bench/results/<device>-<date>-gpu-speed.json (or into --out-dir) and prints a markdown table.

    python bench/gpu_speed.py [--dim 2560 --vocab 151936 --tokens 1024,8192,32768 --out-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from environment import describe, slug  # noqa: E402

from endokernel import token_statistics  # noqa: E402


def methods(hidden, weight, targets):
    yield "floor: cuBLAS matmul", lambda: hidden @ weight.T
    yield "endokernel triton", lambda: token_statistics(hidden, weight, targets, backend="triton")
    yield "endokernel torch", lambda: token_statistics(hidden, weight, targets, backend="torch")
    yield "naive (materialized logits)", lambda: token_statistics(hidden, weight, targets, backend="reference")


def measure(fn) -> tuple[float, int] | str:
    import triton.testing

    try:
        fn()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - before
        return triton.testing.do_bench(fn, warmup=100, rep=500, return_mode="median"), extra
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return "OOM"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=2560)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--tokens", default="1024,8192,32768")
    parser.add_argument("--out-dir", default=str(pathlib.Path(__file__).parent / "results"))
    args = parser.parse_args()

    device = torch.device("cuda")
    info = describe(device)
    g = torch.Generator(device=device).manual_seed(0)
    weight = torch.randn(args.vocab, args.dim, device=device, generator=g).mul_(3 / args.dim**0.5).to(torch.bfloat16)
    rows = []
    for tokens in map(int, args.tokens.split(",")):
        hidden = torch.randn(tokens, args.dim, device=device, generator=g).to(torch.bfloat16)
        targets = torch.randint(0, args.vocab, (tokens,), device=device, generator=g)
        flops = 2 * tokens * args.dim * args.vocab
        results = {name: measure(fn) for name, fn in methods(hidden, weight, targets)}
        floor = results["floor: cuBLAS matmul"]
        for name, res in results.items():
            row = {"method": name, "tokens": tokens, "dim": args.dim, "vocab": args.vocab, "dtype": "bfloat16"}
            if res == "OOM":
                row.update(median_ms="OOM")
            else:
                ms, extra = res
                row.update(median_ms=ms, tflops=flops / ms / 1e9, extra_mib=extra / 2**20,
                           ratio_to_floor=None if floor == "OOM" else ms / floor[0])
            rows.append(row)
            print(row, flush=True)
        del hidden, targets

    print(f"\n{info['device_name']}, torch {info['torch']}, triton {info['triton']}, bf16, D={args.dim}, V={args.vocab}\n")
    print("| N | method | median (ms) | TFLOP/s | x floor | extra MiB |\n|---:|---|---:|---:|---:|---:|")
    for r in rows:
        if r["median_ms"] == "OOM":
            print(f"| {r['tokens']} | {r['method']} | OOM | | | |")
        else:
            ratio = "" if r["ratio_to_floor"] is None else f"{r['ratio_to_floor']:.2f}"
            print(f"| {r['tokens']} | {r['method']} | {r['median_ms']:.2f} | {r['tflops']:.0f} | {ratio} | {r['extra_mib']:.0f} |")
    out_dir = pathlib.Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{slug(info)}-gpu-speed.json"
    out.write_text(json.dumps({"environment": info, "results": rows}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
