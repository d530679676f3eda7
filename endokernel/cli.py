"""Command line: ``endokernel demo`` (the built-in default job)."""

from __future__ import annotations

import argparse

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="endokernel", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="score one long sequence logits-free and naively; print time and memory")
    demo.add_argument("--tokens", type=int, default=2048, help="sequence length (default 2048)")
    demo.add_argument("--dim", type=int, default=2560, help="hidden size D (default 2560, Qwen3-4B)")
    demo.add_argument("--vocab", type=int, default=151936, help="vocabulary V (default 151936, Qwen3)")
    demo.add_argument("--dtype", choices=DTYPES, default=None,
                      help="default: bfloat16 on GPUs and CPUs with bf16 units, else float32")
    demo.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    demo.add_argument("--methods", default="endokernel,naive", help="comma-separated: endokernel, naive")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import METHODS, main as demo_main

        methods = args.methods.split(",")
        unknown = set(methods) - set(METHODS)
        if unknown:
            parser.error(f"--methods: unknown {sorted(unknown)}; choose from {sorted(METHODS)}")
        for name in ("tokens", "dim", "vocab"):
            if getattr(args, name) < 1:
                parser.error(f"--{name} must be >= 1")
        demo_main(args.tokens, args.dim, args.vocab, DTYPES.get(args.dtype), args.device, methods)


if __name__ == "__main__":
    main()
