"""Command line: ``endokernel <command>``. Each command lives in its own module, which provides
``add_arguments(parser)`` and ``run(args)``; this table is the only place that lists them."""

from __future__ import annotations

import argparse
import importlib

COMMANDS = {  # name -> (module, one-line help)
    "demo": ("endokernel.demo", "score one long sequence logits-free and naively; print time and memory"),
    "rmbench": ("endokernel.hf.rmbench", "RM-Bench accuracy of a Hugging Face causal LM's endogenous reward"),
    "bench": ("endokernel.bench.command", "time and peak memory of every method against the matmul floor"),
    "score": ("endokernel.hf.score_cli", "endogenous reward of each (prompt, response) record of a file, as JSONL"),
    "serve": ("endokernel.serve.command", "HTTP reward server (OpenRLHF, slime, TRL, verl) batching across requests"),
    "kernels": ("endokernel.backends.kernels_command",
                "compile every Triton kernel for GPU targets (no GPU needed): registers, spills, shared memory"),
    "cpu": ("endokernel.backends.cpu_command",
            "the C++ CPU code paths (ISA variants, tile engines, tile dtypes): which run natively here, emulated, not"),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="endokernel", description="The endogenous reward, without logits.")
    commands = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        modules[name] = importlib.import_module(module_name)
        modules[name].add_arguments(commands.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    modules[args.command].run(args)


if __name__ == "__main__":
    main()
