"""PNG plots of the results: time and peak memory against N, log axes, one file per (head, dtype)."""

from __future__ import annotations

from itertools import groupby
from pathlib import Path

from .sweep import Result


def write(results: list[Result], out_dir: Path, stem: str) -> list[Path]:
    """``<stem>-<head>-<dtype>.png`` for each (head, dtype) with measured rows; none without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("plots skipped: matplotlib is not installed (pip install 'endokernel[bench]')")
        return []
    paths = []
    for (head, dtype), group in groupby(results, key=lambda r: (r.head, r.dtype)):
        measured = [r for r in group if r.status == "ok"]
        if not measured:
            continue
        fig, (time_ax, memory_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
        for label in dict.fromkeys(r.label for r in measured):
            rows = sorted((r for r in measured if r.label == label), key=lambda r: r.tokens)
            time_ax.plot([r.tokens for r in rows], [r.median_s for r in rows], marker="o", label=label)
            grew = [r for r in rows if r.peak_extra_bytes]  # a log axis has no zero: no growth is no point
            memory_ax.plot([r.tokens for r in grew], [r.peak_extra_bytes / 2**20 for r in grew], marker="o",
                           label=label)
        time_ax.set_yscale("log")
        if any(r.peak_extra_bytes for r in measured):  # a log axis without a positive value cannot be drawn
            memory_ax.set_yscale("log")
        tokens = sorted({r.tokens for r in measured})
        for ax, ylabel in ((time_ax, "median time (s)"), (memory_ax, "peak extra memory (MiB)")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(tokens, [str(n) for n in tokens])
            ax.set_xlabel("tokens N")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
        time_ax.legend(fontsize=7)
        fig.suptitle(f"{head}, {dtype}")
        fig.tight_layout()
        path = out_dir / f"{stem}-{head}-{dtype}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
