"""Command-line options of the commands that score with ``EndogenousRewardModel`` (``rmbench``, ``score``)."""

from __future__ import annotations

import argparse


def add_reward_options(parser: argparse.ArgumentParser) -> None:
    """--alpha, --gamma, --beta (the reward's), --dtype, --device (the model's), --batch-size, --max-tokens."""
    parser.add_argument("--alpha", type=float, default=1.0, help="temperature (default 1.0)")
    parser.add_argument("--gamma", type=float, default=0.95,
                        help="discount (default 0.95, as the original script; the paper's derivation has 1)")
    parser.add_argument("--beta", type=float, default=0.0, help="floor of the discount weights (default 0.0)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="model dtype (default: the checkpoint's)")
    parser.add_argument("--device", default=None,
                        help="default: cuda when available (under torchrun: cuda:LOCAL_RANK), else cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="most responses per batch")
    parser.add_argument("--max-tokens", type=int, default=None, help="most padded tokens per batch (default 8192)")
