"""Time and peak extra memory of one call, measured the same way by the demo, the tests and the benchmarks.

CPU (Linux): the growth of the process's peak resident set (``VmHWM``) over its resident set before the
call. The kernel's high-water mark is reset first where it allows (``/proc/self/clear_refs``); run the call
through ``in_fresh_process`` anyway, so that its inputs are the only other memory in the process.
(``getrusage``'s ``ru_maxrss`` would be wrong here: it survives ``exec``, so a spawned child starts with its
parent's peak.) CUDA: ``torch.cuda.max_memory_allocated`` over the allocation before the call.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import time
from typing import Any, Callable

import torch


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
    except OSError:
        pass


def measure(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float, int]:
    """(result, seconds, peak extra bytes) of ``fn()``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        result = fn()
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        return result, seconds, torch.cuda.max_memory_allocated(device) - before
    _reset_peak()
    before = _status_bytes("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    return result, seconds, max(0, _status_bytes("VmHWM") - before)


def in_fresh_process(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a new Python process (a clean memory high-water mark); ``fn`` must be importable."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args, **kwargs).result()
