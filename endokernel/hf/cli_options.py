"""Command-line options of the commands that score (``rmbench``, ``score``, ``serve``)."""

from __future__ import annotations

import argparse
import json

from .engines import ENGINES


def add_reward_options(parser: argparse.ArgumentParser) -> None:
    """--alpha, --gamma, --beta (the reward's), --dtype, --device (the model's), --batch-size, --max-tokens, and
    the engine's options."""
    parser.add_argument("--alpha", type=float, default=1.0, help="temperature (default 1.0)")
    parser.add_argument("--gamma", type=float, default=0.95,
                        help="discount (default 0.95, as the original script; the paper's derivation has 1)")
    parser.add_argument("--beta", type=float, default=0.0, help="floor of the discount weights (default 0.0)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="model dtype (default: the checkpoint's)")
    parser.add_argument("--device", default=None,
                        help="default: cuda when available (under torchrun: cuda:LOCAL_RANK), else cpu "
                             "(--engine hf only)")
    parser.add_argument("--batch-size", type=int, default=None, help="most responses per batch (--engine hf)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="most padded tokens per batch (default 8192; --engine hf)")
    add_engine_options(parser)


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """--engine and the vllm engine's options."""
    parser.add_argument("--engine", default="hf", choices=ENGINES,
                        help="hf: transformers in this process (default); vllm: a vLLM engine (the vllm extra), "
                             "which batches requests itself")
    parser.add_argument("--tensor-parallel-size", type=int, default=1,
                        help="ranks the model is split over (--engine vllm; default 1)")
    parser.add_argument("--max-model-len", type=int, default=None,
                        help="longest sequence the engine takes (--engine vllm; default max_position_embeddings, "
                             "raised with --score-overlong)")
    parser.add_argument("--enforce-eager", action="store_true",
                        help="no torch.compile: a faster start, slower steps (--engine vllm)")
    parser.add_argument("--engine-option", action="append", default=[], metavar="KEY=VALUE", type=_option,
                        help="a further vllm.EngineArgs field, VALUE as JSON or else text, e.g. block_size=32 "
                             "(--engine vllm; repeatable)")


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def engine_options(args: argparse.Namespace) -> dict:
    """The ``load_scorer`` keyword arguments of the engine options parsed by ``add_engine_options``."""
    return {"tensor_parallel_size": args.tensor_parallel_size, "max_model_len": args.max_model_len,
            "enforce_eager": args.enforce_eager, "engine_options": dict(args.engine_option) or None}
