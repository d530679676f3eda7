"""Time and peak memory of one method on one case, never crashing the sweep: an out-of-memory becomes an
"oom" outcome and any other failure an "error" outcome with its message.

CPU: each method runs in its own fresh process (its peak resident set is its own) that maps the shared
inputs, warms up once on the first positions, then serves timed calls; the sweep interleaves those calls
across methods so that drift in machine speed hits every method alike. GPU: one process; the first call warms
up and measures peak memory, then ``triton.testing.do_bench`` times the call (it flushes the L2 before each
timed call, so repeated calls on one input set do not measure the cache).
"""

from __future__ import annotations

import signal
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .._core.memory import FreshProcess, ProcessDied, measure
from .inputs import Inputs, load_mapped
from .methods import METHODS, Method
from .shapes import Case

CPU = torch.device("cpu")


@dataclass
class Outcome:
    """``status`` is "ok", "oom" or "error" ("skipped" where the sweep ran nothing); ``reason`` says why."""

    status: str
    times_s: list[float] = field(default_factory=list)
    peak_extra_bytes: int | None = None
    reason: str | None = None


def failure(exc: BaseException) -> Outcome:
    """The outcome of a call that raised ``exc``."""
    message = (str(exc).strip().splitlines() or [""])[0][:200]
    if isinstance(exc, ProcessDied) and exc.exitcode == -signal.SIGKILL:  # the kernel's OOM killer's way
        return Outcome("oom", reason="its process was killed (SIGKILL: out of memory?)")
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in message.lower() \
            or "not enough memory" in message.lower():
        return Outcome("oom", reason=message)
    return Outcome("error", reason=f"{type(exc).__name__}: {message}")


def too_slow(predicted: float, from_tokens: int, limit: float) -> str:
    """The reason for skipping a call predicted, from a call on ``from_tokens`` positions, to take too long."""
    return f"~{predicted:.3g} s per call predicted from N={from_tokens} > --max-call-seconds {limit:g}"


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (Linux MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# --- CPU: one fresh process per method ---------------------------------------------------------------------

_worker: dict[str, Callable[[], Any]] = {}


def _set_up(method_name: str, inputs_path: str, case: Case) -> float:
    """In the worker: map the inputs, build the call, warm up on the first positions; return the seconds of a
    second call on them (a probe that predicts the full call)."""
    method = METHODS[method_name]
    inputs = load_mapped(Path(inputs_path), case)
    first = method.build(inputs.first(min(case.tokens, method.warmup_tokens)))
    measure(first, CPU)
    _worker["call"] = method.build(inputs)
    return measure(first, CPU)[1]


def _timed_call() -> tuple[float, int]:
    _, seconds, extra = measure(_worker["call"], CPU)
    return seconds, extra


def on_cpu(case: Case, methods: list[Method], inputs_path: Path, repeats: int, time_budget: float,
           call_limits: dict[str, float], log: Callable[[str], None]) -> dict[str, Outcome]:
    """Outcomes of ``methods`` on ``case``: up to ``repeats`` timed calls each, interleaved across methods; a
    method stops repeating once another call would take its total past ``time_budget`` seconds. A method in
    ``call_limits`` is skipped if its warm-up probe predicts a call longer than its limit (seconds)."""
    workers = {method.name: FreshProcess() for method in methods}  # they import in parallel
    outcomes: dict[str, Outcome] = {}
    try:
        for method in methods:  # one warm-up at a time: their memory peaks must not stack
            try:
                probe = workers[method.name].call(_set_up, method.name, str(inputs_path), case)
            except Exception as exc:  # any failure becomes this method's outcome, never the sweep's
                outcomes[method.name] = failure(exc)
                continue
            probe_tokens = min(case.tokens, method.warmup_tokens)
            predicted = probe * case.tokens / probe_tokens
            if predicted > call_limits.get(method.name, float("inf")):
                outcomes[method.name] = Outcome("skipped", reason=too_slow(predicted, probe_tokens,
                                                                           call_limits[method.name]))
                workers[method.name].close()
        times: dict[str, list[float]] = {name: [] for name in workers if name not in outcomes}
        peaks: dict[str, int] = {}
        active = list(times)
        for _ in range(repeats):
            for name in list(active):
                try:
                    seconds, extra = workers[name].call(_timed_call)
                except Exception as exc:
                    outcomes[name] = failure(exc)
                    active.remove(name)
                    continue
                times[name].append(seconds)
                peaks[name] = max(peaks.get(name, 0), extra)
                log(f"  {name}: {seconds:.3f} s, peak extra {extra / 2**20:.0f} MiB")
                if sum(times[name]) + statistics.median(times[name]) > time_budget:
                    active.remove(name)
        for name, ts in times.items():
            outcomes.setdefault(name, Outcome("ok", ts, peaks.get(name)))
    finally:
        for worker in workers.values():
            worker.close()
    return outcomes


# --- GPU: in this process ----------------------------------------------------------------------------------

def on_gpu(method: Method, inputs: Inputs, repeats: int, time_budget: float, log: Callable[[str], None]) -> Outcome:
    """One method on CUDA inputs: a first call (warm-up, compile, peak memory), then ``do_bench`` for about
    ``repeats`` timed calls, at most ``time_budget`` seconds of them."""
    import triton.testing

    device = inputs.hidden.device
    try:
        call = method.build(inputs)
        _, seconds, extra = measure(call, device)
        rep_ms = 1000 * min(time_budget, max(0.1, repeats * seconds))
        times_ms = triton.testing.do_bench(call, rep=rep_ms, return_mode="all")
    except Exception as exc:  # any failure becomes this method's outcome, never the sweep's
        outcome = failure(exc)
    else:
        outcome = Outcome("ok", [t / 1000 for t in times_ms], extra)
        log(f"  {method.name}: median {statistics.median(times_ms):.3f} ms of {len(times_ms)}, "
            f"peak extra {extra / 2**20:.0f} MiB")
    torch.cuda.empty_cache()  # here, not in the except block: a failed call keeps its tensors until then
    return outcome
