"""Results as data and as text: the JSON file and the markdown tables, both from the result rows."""

from __future__ import annotations

import dataclasses
import json
from itertools import groupby
from pathlib import Path

from .sweep import Result, Settings


def settings_dict(settings: Settings) -> dict:
    """``settings`` as plain JSON values."""
    return {
        "device": str(settings.device),
        "heads": [dataclasses.asdict(head) for head in settings.heads],
        "dtypes": [str(dtype).removeprefix("torch.") for dtype in settings.dtypes],
        "tokens": list(settings.tokens),
        "methods": list(settings.methods),
        "repeats": settings.repeats,
        "time_budget_s": settings.time_budget,
        "max_call_seconds": settings.max_call_seconds,
        "loop_max_tokens": settings.loop_max_tokens,
    }


def write_json(path: Path, environment: dict, settings: Settings, results: list[Result], **extra: object) -> None:
    document = {"kind": "sweep", "environment": environment, "settings": settings_dict(settings),
                "results": [row.as_dict() for row in results], **extra}
    path.write_text(json.dumps(document, indent=2) + "\n")


def environment_line(env: dict) -> str:
    """Device, threads, versions, commit and date of a results JSON, on one line."""
    if env["device"] == "cpu":
        where = (f"CPU: {env['device_name']} ({env['cpu_threads']} threads, "
                 f"native bf16: {'yes' if env['cpu_native_bf16'] else 'no'}"
                 + (f", C++ kernels: {env['cpp_variant']}" if env.get("cpp_variant") else "") + ")")
    else:
        where = f"GPU: {env['device_name']}"
    return f"{where}; torch {env['torch']}, triton {env['triton']}; commit {env['git_commit'][:12]}; {env['date']}"


def _cell(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def markdown(environment: dict, results: list[Result]) -> str:
    """One table per (head, dtype); skipped methods, failures and notes listed under each table."""
    on_cpu = environment["device"] == "cpu"
    unit, scale = ("s", 1.0) if on_cpu else ("ms", 1e3)
    lines = [environment_line(environment), ""]
    for (head, dtype), group in groupby(results, key=lambda r: (r.head, r.dtype)):
        rows = list(group)
        first = rows[0]
        softcap = f", softcap {first.softcap:g}" if first.softcap is not None else ""
        lines += [f"**{head}** (D={first.dim}, V={first.vocab}{softcap}), {dtype}:", "",
                  f"| N | method | median ({unit}) | repeats | TFLOP/s | x floor | peak extra (MiB) |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            if r.status == "skipped":
                continue
            if r.status == "ok":
                median = format(r.median_s * scale, ".4g")
            else:
                median = "OOM" if r.status == "oom" else "error"
            mib = None if r.peak_extra_bytes is None else r.peak_extra_bytes / 2**20
            lines.append(f"| {r.tokens} | {r.label} | {median} | {len(r.times_s or [])} | {_cell(r.tflops, '.3g')} | "
                         f"{_cell(r.ratio_to_floor, '.2f')} | {_cell(mib, '.0f')} |")
        lines += [""] + _footnotes(rows) + [""]
    return "\n".join(lines)


def _footnotes(rows: list[Result]) -> list[str]:
    """'skipped: ...', 'oom: ...', 'error: ...' and 'note: ...' lines, each method and reason once with its Ns."""
    lines = []
    for kind, pick in (("skipped", lambda r: r.status == "skipped" and r.reason),
                       ("oom", lambda r: r.status == "oom" and r.reason),
                       ("error", lambda r: r.status == "error" and r.reason),
                       ("note", lambda r: r.status == "ok" and r.note)):
        by_reason: dict[tuple[str, str], list[int]] = {}
        for r in rows:
            text = pick(r)
            if text:
                by_reason.setdefault((r.method, text), []).append(r.tokens)
        if by_reason:
            items = [f"{method} at N={','.join(map(str, ns))} ({text})" for (method, text), ns in by_reason.items()]
            lines.append(f"{kind}: " + "; ".join(items))
    return lines
