"""``endokernel kernels``: the Triton compile report (``endokernel.backends.triton.report``) from the command line.

Compiles every Triton kernel the package launches on a GPU for the given targets, no GPU needed, and prints
a table of registers, spills, shared memory, matrix instructions and TMA use; ``--json`` writes one row per
compile, ``--dump`` the PTX / AMDGCN of each. Exit status 1 when a default configuration has a problem the
CI test rejects (``report.problems``). Triton is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--targets", default="sm_80,sm_90a,sm_100,gfx942",
                        help="comma-separated: sm_80, sm_90a, sm_100, gfx942 style names, or device (this "
                             "machine's GPU); default: the first four")
    parser.add_argument("--dtypes", default="bf16,fp16,fp32", help="comma-separated, from bf16, fp16, fp32")
    parser.add_argument("--flags", default="plain,all",
                        help="comma-separated feature-flag sets: plain, bias, scale, softcap, entropy, all; "
                             "or every (all six)")
    parser.add_argument("--defaults-only", action="store_true", help="skip the autotuning candidates")
    parser.add_argument("--tokens", type=int, default=32768, help="N of the representative shape")
    parser.add_argument("--dim", type=int, default=4096, help="D of the representative shape")
    parser.add_argument("--vocab", type=int, default=151936, help="V of the representative shape")
    parser.add_argument("--json", type=Path, help="write the rows (one per compile) to this JSON file")
    parser.add_argument("--dump", type=Path, help="write each compile's PTX / AMDGCN into this folder")
    parser.add_argument("--jobs", type=int, help="parallel compiles (default: the CPU count)")


def _split(option: str, text: str, choices) -> tuple[str, ...]:
    items = tuple(part.strip() for part in text.split(",") if part.strip())
    bad = [item for item in items if item not in choices]
    if not items or bad:
        raise ValueError(f"{option}: choose from {', '.join(choices)}; got {text!r}")
    return items


def _device_target() -> str:
    """This machine's GPU as a target name (sm_90a, gfx942, ...)."""
    import torch

    from .triton.runtime import device_target

    if not torch.cuda.is_available():
        raise ValueError("--targets device: this machine has no GPU torch can see")
    target = device_target(torch.device("cuda"))
    if target.backend == "hip":
        return target.arch
    return f"sm_{target.arch}a" if target.arch >= 90 else f"sm_{target.arch}"


def run(args: argparse.Namespace) -> None:
    from .triton import report

    for option, value in (("--tokens", args.tokens), ("--dim", args.dim), ("--vocab", args.vocab),
                          ("--jobs", args.jobs or 1)):
        if value < 1:
            raise SystemExit(f"{option} must be >= 1, got {value}")
    try:
        targets = tuple(_device_target() if part.strip() == "device" else part.strip()
                        for part in args.targets.split(",") if part.strip())
        for target in targets:
            report.parse_target(target)
        dtypes = _split("--dtypes", args.dtypes, report.DTYPES)
        flags = tuple(report.FLAG_SETS) if args.flags.strip() == "every" else _split(
            "--flags", args.flags, report.FLAG_SETS)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    rows = report.compile_report(targets, dtypes, flags, candidates=not args.defaults_only, dump_dir=args.dump,
                                 processes=args.jobs,
                                 shape=dict(tokens=args.tokens, dim=args.dim, vocab=args.vocab))
    print(report.table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    found = report.problems(rows)
    for problem in found:
        print(f"problem: {problem}", file=sys.stderr)
    if found:
        raise SystemExit(1)
