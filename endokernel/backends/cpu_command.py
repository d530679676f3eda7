"""``endokernel cpu``: the CPU code paths of the C++ kernels, and which this CPU runs natively, emulated or not
(``cpu_paths``; CI prints it, so a run says which paths it exercised natively)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace) -> None:
    from .cpu_paths import describe

    print(describe())
