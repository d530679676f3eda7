"""``endokernel bench``: sweep heads, N, dtypes and methods; print markdown tables, write JSON and plots.

Defaults on CPU: the three heads, N in {512, 2048, 8192}, bf16 and fp32, every method, up to 3 repeats.
Defaults on GPU: N from 1k to 128k. ``--quick``: a CPU smoke run of a few minutes (one head, small N, fp32).
``--preset NAME``: a named set of options (``PRESETS``); options given beside it override it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Callable, TypeVar

import torch

from ..backends.cpp.loader import ISA_VARIABLE
from . import plots, report, sweep
from .environment import describe, slug
from .methods import BACKWARD, FORWARD, METHODS
from .shapes import DTYPES, parse_head

T = TypeVar("T")

DEFAULTS = {  # device type -> defaults for options left unset
    "cpu": dict(shapes="qwen3-4b,llama3-8b,gemma2-2b", tokens="512,2048,8192", dtypes="bfloat16,float32",
                repeats=3, time_budget=30.0, max_call_seconds=60.0, loop_max_tokens=512),
    "cuda": dict(shapes="qwen3-4b,llama3-8b,gemma2-2b", tokens="1024,4096,16384,65536,131072",
                 dtypes="bfloat16,float32", repeats=10, time_budget=2.0, max_call_seconds=5.0, loop_max_tokens=1024),
}
QUICK = {
    "cpu": dict(shapes="qwen3-4b", tokens="128,256", dtypes="float32", repeats=2, loop_max_tokens=128),
    "cuda": dict(shapes="qwen3-4b", tokens="1024,8192", dtypes="bfloat16", repeats=10, loop_max_tokens=128),
}
# the speed checks of the project's issues, each one command: `endokernel bench --preset NAME`
_QWEN3_0_6B_HEAD = "1024:151936"  # D = 1024, V = 151936
PRESETS = {
    "cpp-forward": dict(  # the cpp backend against the torch backend and the floor: short and long batches
        device="cpu", shapes=_QWEN3_0_6B_HEAD, tokens="256,1024,2048", dtypes="bfloat16,float32",
        methods="floor,torch,cpp", repeats=3, time_budget=1e9),
    "cpp-backward": dict(  # forward + backward (gradients for hidden and the head) of both CPU backends
        device="cpu", shapes=_QWEN3_0_6B_HEAD, tokens="2048", dtypes="bfloat16,float32",
        methods="floor,torch+bwd,cpp+bwd", repeats=5, time_budget=1e9),
    "cpu-speed-target": dict(  # bf16 inputs against the floor and F.linear_cross_entropy
        device="cpu", shapes=_QWEN3_0_6B_HEAD, tokens="2048", dtypes="bfloat16",
        methods="floor,floor-input-dtype,torch,cpp,linear_ce,linear_ce-chunked", repeats=3, time_budget=1e9),
    "gpu-check": dict(  # bench/gpu_check.sh's sweep: bf16, a time budget per call, long contexts
        device="cuda", tokens="1024,8192,32768,131072", dtypes="bfloat16",
        methods="floor,triton,naive,loop,linear_ce,linear_ce-chunked,cce,liger", repeats=20, time_budget=0.5,
        max_call_seconds=2.0),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a short smoke run (one head, small N, fp32 on CPU)")
    parser.add_argument("--preset", choices=PRESETS, help="a named set of options; options given beside it win")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--shapes", help="comma-separated heads: qwen3-4b, llama3-8b, gemma2-2b, or D:V[:softcap]")
    parser.add_argument("--tokens", help="comma-separated N (CPU default 512,2048,8192; GPU 1024..131072)")
    parser.add_argument("--dtypes", help=f"comma-separated, from {', '.join(DTYPES)} (default bfloat16,float32)")
    parser.add_argument("--methods",
                        help=f"comma-separated, from {', '.join(METHODS)}; or all (the forward methods, the "
                             "default), or backward (forward + backward methods and the floor)")
    parser.add_argument("--repeats", type=int, help="timed calls per method and case, at most (CPU default 3)")
    parser.add_argument("--time-budget", type=float,
                        help="seconds of timed calls per method and case before repeats stop (CPU default 30)")
    parser.add_argument("--max-call-seconds", type=float,
                        help="skip alternatives whose call is predicted (from a smaller N) to take longer; "
                             "the floor and endokernel always run; 0: no limit (CPU default 60)")
    parser.add_argument("--loop-max-tokens", type=int, help="largest N for the per-token loop (CPU default 512)")
    parser.add_argument("--out-dir", default="bench/results", help="where JSON and plots go (default bench/results)")


def _items(option: str, text: str, parse: Callable[[str], T]) -> tuple[T, ...]:
    items = tuple(parse(part.strip()) for part in text.split(",") if part.strip())
    if not items:
        raise ValueError(f"{option}: give at least one value, got {text!r}")
    return items


def _choice(option: str, choices: dict) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"{option}: unknown {text!r}; choose from {', '.join(choices)}")
        return text

    return parse


def _positive_int(option: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{option}: {text!r} is not an integer") from None
        if value < 1:
            raise ValueError(f"{option}: must be >= 1, got {value}")
        return value

    return parse


def _device(text: str | None) -> torch.device:
    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValueError(f"--device: {text!r} is not a device") from None
    if device.type not in DEFAULTS:
        raise ValueError(f"--device: must be cpu or cuda, got {text!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device: cuda is not available on this machine")
    return device


def settings_from_args(args: argparse.Namespace) -> sweep.Settings:
    """Validated settings; a ``ValueError`` names the bad option."""
    preset = PRESETS[args.preset] if args.preset else {}
    device = _device(args.device or preset.get("device"))
    given = {name: getattr(args, name) for name in (*DEFAULTS["cpu"], "methods") if getattr(args, name) is not None}
    values = {**DEFAULTS[device.type], "methods": "all", **(QUICK[device.type] if args.quick else {}),
              **{name: value for name, value in preset.items() if name != "device"}, **given}
    groups = {"all": FORWARD, "backward": BACKWARD}
    methods = groups.get(values["methods"]) or _items("--methods", values["methods"], _choice("--methods", METHODS))
    if values["repeats"] < 1:
        raise ValueError(f"--repeats: must be >= 1, got {values['repeats']}")
    if not values["time_budget"] > 0:
        raise ValueError(f"--time-budget: must be > 0, got {values['time_budget']}")
    if not values["max_call_seconds"] >= 0:
        raise ValueError(f"--max-call-seconds: must be >= 0, got {values['max_call_seconds']}")
    if values["loop_max_tokens"] < 0:
        raise ValueError(f"--loop-max-tokens: must be >= 0, got {values['loop_max_tokens']}")
    return sweep.Settings(
        device=device,
        heads=_items("--shapes", values["shapes"], parse_head),
        dtypes=tuple(DTYPES[name] for name in _items("--dtypes", values["dtypes"], _choice("--dtypes", DTYPES))),
        tokens=tuple(sorted(set(_items("--tokens", values["tokens"], _positive_int("--tokens"))))),
        methods=tuple(dict.fromkeys(methods)),
        repeats=values["repeats"],
        time_budget=values["time_budget"],
        max_call_seconds=values["max_call_seconds"],
        loop_max_tokens=values["loop_max_tokens"],
    )


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> None:
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        raise SystemExit(f"endokernel bench: {exc}") from None
    # a kill (e.g. by `timeout`) unwinds like Ctrl-C, so the methods' worker processes are shut down too
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        suffix = "-quick" if args.quick else f"-{args.preset}" if args.preset else ""
        if os.environ.get(ISA_VARIABLE):  # a forced C++ variant: its results apart from the default's
            suffix += f"-cpp-{os.environ[ISA_VARIABLE].lower()}"
        _bench(settings, Path(args.out_dir), suffix=suffix)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _bench(settings: sweep.Settings, out_dir: Path, *, suffix: str) -> None:
    environment = describe(settings.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = slug(environment) + suffix
    json_path = out_dir / f"{stem}.json"

    def save(results: list[sweep.Result], **extra: object) -> None:
        report.write_json(json_path, environment, settings, results, **extra)

    results = sweep.run(settings, _log, after_case=lambda so_far: save(so_far, complete=False))
    print(report.markdown(environment, results))
    save(results, complete=True)
    print("wrote " + ", ".join(map(str, [json_path, *plots.write(results, out_dir, stem)])))
