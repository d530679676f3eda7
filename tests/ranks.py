"""Run a function on the ranks of a gloo process group, each rank a process forked from the test (no fresh
interpreter to start: a rank costs milliseconds). Collectives time out, the whole run has a deadline, and ranks
still alive past it are killed, so a bug fails a test instead of hanging it."""

from __future__ import annotations

import datetime
import multiprocessing
import pathlib
import tempfile
import time
import traceback
from collections.abc import Callable

import torch
import torch.distributed as dist

COLLECTIVE_TIMEOUT = 30  # seconds, passed to the process group
DEADLINE = 120  # seconds for a whole run


class RankFailed:
    def __init__(self, text: str) -> None:
        self.text = text


def run(world_size: int, fn: Callable, *args, deadline: float = DEADLINE) -> list:
    """``fn(rank, world_size, *args)`` on each rank of a fresh gloo group; returns their results in rank order
    (each must pickle with ``torch.save``). Any rank's exception fails the run with every rank's traceback."""
    context = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        ranks = [context.Process(target=_rank, args=(rank, world_size, folder, fn, args), daemon=True)
                 for rank in range(world_size)]
        for process in ranks:
            process.start()
        end = time.monotonic() + deadline
        for process in ranks:
            process.join(max(0.0, end - time.monotonic()))
        stuck = [rank for rank, process in enumerate(ranks) if process.is_alive()]
        for rank in stuck:
            ranks[rank].kill()
            ranks[rank].join()
        if stuck:
            raise AssertionError(f"ranks {stuck} of {world_size} still running after {deadline} s; killed")
        results = [_load(folder / f"{rank}.pt", ranks[rank].exitcode) for rank in range(world_size)]
    failed = [f"rank {rank}:\n{r.text}" for rank, r in enumerate(results) if isinstance(r, RankFailed)]
    if failed:
        raise AssertionError("\n".join(failed))
    return results


def error_of(call: Callable[[], object]) -> tuple[str, str] | None:
    """(type name, message) of the ValueError or TypeError ``call()`` raises; None if it raises nothing."""
    try:
        call()
    except (TypeError, ValueError) as error:
        return type(error).__name__, str(error)
    return None


def _rank(rank: int, world_size: int, folder: pathlib.Path, fn: Callable, args: tuple) -> None:
    torch.set_num_threads(1)  # the ranks share the machine's cores; one thread each also keeps OpenMP out
    try:
        dist.init_process_group("gloo", init_method=f"file://{folder / 'store'}", rank=rank,
                                world_size=world_size, timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT))
        result = fn(rank, world_size, *args)
    except BaseException:  # noqa: BLE001 - every failure goes back to the test
        result = RankFailed(traceback.format_exc())
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    torch.save(result, folder / f"{rank}.pt")


def _load(path: pathlib.Path, exitcode: int | None):
    if not path.exists():
        return RankFailed(f"exited with code {exitcode} and no result")
    return torch.load(path, weights_only=False)
