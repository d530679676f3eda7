"""The sweep: every (head, dtype, N) case, every selected method, one result row each, in the same order
on CPU and GPU. Methods that cannot run, or would run too long or out of RAM, are recorded as skipped with
the reason, never run."""

from __future__ import annotations

import contextlib
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from . import inputs as bench_inputs
from . import measure
from .methods import METHODS, Method
from .shapes import Case, Head


@dataclass(frozen=True)
class Settings:
    """What to sweep. ``time_budget``: seconds of timed calls per (case, method) before repeats stop (one call
    always runs). ``max_call_seconds``: skip a call predicted, from the same method at a smaller N, to take
    longer, or on CPU from its warm-up probe where there is no smaller N (0: no limit); core methods (the floor,
    endokernel) always run, and the per-token loop is capped by N instead. ``loop_max_tokens``: the per-token loop
    (and any ``small_n_only`` method) runs only up to this N."""

    device: torch.device
    heads: tuple[Head, ...]
    dtypes: tuple[torch.dtype, ...]
    tokens: tuple[int, ...]  # ascending
    methods: tuple[str, ...]
    repeats: int
    time_budget: float
    max_call_seconds: float
    loop_max_tokens: int


@dataclass
class Result:
    """One row: a method on a case. ``status``: ok, oom, error or skipped (``reason`` says why)."""

    head: str
    dim: int
    vocab: int
    softcap: float | None
    dtype: str
    tokens: int
    method: str
    label: str
    status: str
    reason: str | None = None
    note: str | None = None
    times_s: list[float] | None = None
    median_s: float | None = None
    tflops: float | None = None
    ratio_to_floor: float | None = None
    peak_extra_bytes: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _row(case: Case, method: Method, outcome: measure.Outcome) -> Result:
    note = "softcap not applied" if case.head.softcap is not None and not method.softcap else None
    row = Result(case.head.name, case.head.dim, case.head.vocab, case.head.softcap, case.dtype_name, case.tokens,
                 method.name, method.label, outcome.status, outcome.reason, note)
    if outcome.status == "ok":
        row.times_s = outcome.times_s
        row.median_s = statistics.median(outcome.times_s)
        row.tflops = case.flops / row.median_s / 1e12
        row.peak_extra_bytes = outcome.peak_extra_bytes
    return row


History = dict[tuple[str, str, str], tuple[int, float]]  # (head, dtype, method) -> (N, median s) last measured


def _time_capped(method: Method, settings: Settings) -> bool:
    """Whether --max-call-seconds applies: not to the core methods, nor to those capped by N instead."""
    return bool(settings.max_call_seconds) and not (method.core or method.small_n_only)


def _skip_reason(method: Method, case: Case, settings: Settings, history: History) -> str | None:
    reason = method.unavailable(settings.device, case.dtype)
    if reason:
        return reason
    if method.small_n_only and case.tokens > settings.loop_max_tokens:
        return f"N > --loop-max-tokens {settings.loop_max_tokens}"
    seen = history.get((case.head.name, case.dtype_name, method.name))
    if seen and _time_capped(method, settings):
        predicted = seen[1] * case.tokens / seen[0]
        if predicted > settings.max_call_seconds:
            return measure.too_slow(predicted, seen[0], settings.max_call_seconds)
    if settings.device.type == "cpu":  # a CPU out-of-memory is the OOM killer, possibly of another process
        need, free = method.memory(case), measure.available_memory()
        if free is not None and need > free:
            return f"needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB available"
    return None


@contextlib.contextmanager
def _case_inputs(settings: Settings, head: Head, dtype: torch.dtype) -> Iterator[Path | bench_inputs.Inputs]:
    """Inputs for the largest N of (head, dtype), each case using its first N positions. CPU: a file that the
    methods' processes map; GPU: tensors on the device."""
    inputs = bench_inputs.build(head, dtype, max(settings.tokens), settings.device)
    if settings.device.type != "cpu":
        yield inputs
        return
    with tempfile.TemporaryDirectory(prefix="endokernel-bench-") as tmp:
        path = Path(tmp) / "inputs.pt"
        bench_inputs.save(inputs, path)
        del inputs  # the processes map the file; this process keeps no copy
        yield path


def run_case(case: Case, source: Path | bench_inputs.Inputs, settings: Settings, history: History,
             log: Callable[[str], None]) -> list[Result]:
    """Rows for every selected method on ``case``, ratios to the fastest floor measured on it."""
    methods = [METHODS[name] for name in settings.methods]
    skipped = {m.name: _skip_reason(m, case, settings, history) for m in methods}
    to_run = [m for m in methods if not skipped[m.name]]
    log(f"{case.head.name} {case.dtype_name} N={case.tokens}: {', '.join(m.name for m in to_run) or 'nothing to run'}")
    if settings.device.type == "cpu":
        # without a smaller N to predict from, a capped method's warm-up probe predicts its call
        unpredicted = {m.name: settings.max_call_seconds for m in to_run if _time_capped(m, settings)
                       and (case.head.name, case.dtype_name, m.name) not in history}
        outcomes = measure.on_cpu(case, to_run, source, settings.repeats, settings.time_budget, unpredicted, log)
    else:
        outcomes = {m.name: measure.on_gpu(m, source.first(case.tokens), settings.repeats, settings.time_budget, log)
                    for m in to_run}
    rows = [_row(case, m, outcomes[m.name]) if m.name in outcomes
            else _row(case, m, measure.Outcome("skipped", reason=skipped[m.name])) for m in methods]
    floors = [r.median_s for r, m in zip(rows, methods) if m.floor and r.status == "ok"]
    for row in rows:
        if row.status == "ok":
            if floors:
                row.ratio_to_floor = row.median_s / min(floors)
            history[(case.head.name, case.dtype_name, row.method)] = (case.tokens, row.median_s)
    return rows


def run(settings: Settings, log: Callable[[str], None],
        after_case: Callable[[list[Result]], None] = lambda results: None) -> list[Result]:
    """All cases, N ascending within each (head, dtype) so that smaller runs predict larger ones;
    ``after_case(results so far)`` after each case, so an interrupted sweep still leaves its results."""
    history: History = {}
    results: list[Result] = []
    for head in settings.heads:
        for dtype in settings.dtypes:
            with _case_inputs(settings, head, dtype) as source:
                for tokens in settings.tokens:
                    results += run_case(Case(head, dtype, tokens), source, settings, history, log)
                    after_case(results)
    return results
