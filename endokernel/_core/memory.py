"""Time and peak extra memory of one call, measured the same way by the demo, the tests and the benchmarks.

CPU (Linux): the growth of the process's peak resident set (``VmHWM``) over its resident set before the
call. The kernel's high-water mark is reset first where it allows (``/proc/self/clear_refs``); run the call
through ``in_fresh_process`` (or a ``FreshProcess``) anyway, so that its inputs are the only other memory in
the process. (``getrusage``'s ``ru_maxrss`` would be wrong here: it survives ``exec``, so a spawned child
starts with its parent's peak.) CUDA: ``torch.cuda.max_memory_allocated`` over the allocation before the call.
"""

from __future__ import annotations

import multiprocessing
import time
from multiprocessing.connection import Connection
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


class ProcessDied(RuntimeError):
    """A ``FreshProcess`` ended during a call; ``exitcode`` is negative for a signal (-9: SIGKILL, e.g. the
    kernel's out-of-memory killer)."""

    def __init__(self, exitcode: int | None) -> None:
        super().__init__(f"the process died during the call (exit code {exitcode})")
        self.exitcode = exitcode


def _serve(connection: Connection) -> None:
    """A ``FreshProcess``'s loop: run each (fn, args, kwargs) received, send back (ok, result or exception)."""
    while True:
        try:
            fn, args, kwargs = connection.recv()
        except EOFError:  # the caller is gone
            return
        try:
            reply = (True, fn(*args, **kwargs))
        except Exception as exc:  # the caller gets the exception, the process serves on
            reply = (False, exc)
        try:
            connection.send(reply)
        except Exception as exc:  # an unpicklable result or exception still reaches the caller, as text
            connection.send((False, RuntimeError(f"{type(exc).__name__}: {exc} (sending {reply[1]!r})")))


class FreshProcess:
    """A new Python process (a clean memory high-water mark) that runs calls in turn and keeps its module state
    between them, so several measurements can share one set-up. It starts importing at once, so several
    start in parallel; it is a daemon, ended with this process. Functions must be importable."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), daemon=True)
        self._process.start()
        child.close()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` in the process; its exception is raised here, ``ProcessDied`` if it died."""
        try:
            self._connection.send((fn, args, kwargs))
            ok, value = self._connection.recv()
        except (EOFError, OSError):
            self._process.join()
            raise ProcessDied(self._process.exitcode) from None
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """Let the process finish its call and exit (it cleans up after itself); end it after 10 s."""
        self._connection.close()
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()

    def __enter__(self) -> FreshProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def in_fresh_process(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a new Python process (a clean memory high-water mark); ``fn`` must be importable."""
    with FreshProcess() as process:
        return process.call(fn, *args, **kwargs)
