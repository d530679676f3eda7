"""Time and peak extra memory of one call, measured the same way by the demo, the tests and the benchmarks.

CPU: the growth of the process's peak resident set over its resident set before the call. The peak is a
high-water mark, so this is only meaningful in a fresh process whose inputs were built without transient
copies: run the call through ``in_fresh_process``. CUDA: ``torch.cuda.max_memory_allocated`` over the
allocation before the call.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from typing import Any, Callable

import torch


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_resident_bytes() -> int:
    # VmHWM, the high-water mark of this process image: getrusage's ru_maxrss also keeps the resident set the
    # process had before exec, which for a spawned child is its parent's at fork (a large parent's ruins it)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError("no VmHWM in /proc/self/status")


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
    before = _resident_bytes()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    return result, seconds, max(0, _peak_resident_bytes() - before)


def in_fresh_process(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a new Python process (a clean memory high-water mark); ``fn`` must be importable."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args, **kwargs).result()
