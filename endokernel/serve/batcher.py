"""The cross-request batcher: requests' pairs wait in one queue; one task takes them into batches of at most
``max_batch_tokens`` padded tokens (rows x longest row, one forward) and scores each batch in a worker thread, so
that the event loop never runs the model. A request is answered once all its pairs are scored. Each batch holds
the oldest waiting pair and, beside it, the waiting pairs closest to it in length: padding is work too (on a CPU
the forward costs what its padded tokens cost), and the oldest pair going first keeps the order fair.

While a batch is scored, new requests queue up, so that under load batches fill by themselves. When the model is
free, the waiting pairs go at once, unless requests announced by ``arriving`` (being tokenized) are on their
way: then the batch waits for them, at most ``max_wait_s`` after its oldest pair arrived. So a lone request is
not delayed, and a burst is not split at its first request. Work accepted and not yet answered is bounded by
``max_queue_tokens``: past it a request is refused (``QueueFull``) instead of waiting."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..hf.model import Rows
    from .metrics import Metrics

Scored = tuple[float, list[float]]  # a pair's reward and its response tokens' rewards
ScoreFn = Callable[["Rows"], list[Scored]]  # runs in the worker thread

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """Pending work is at ``max_queue_tokens``: the request may come back later (HTTP 503)."""


class TooLarge(ValueError):
    """A request holding more tokens than ``max_queue_tokens``: it can never be accepted (HTTP 413)."""


def admit(rows: Rows, *, pending_tokens: int, max_queue_tokens: int, closing: bool) -> int:
    """The tokens of a request that may be accepted now; TooLarge if it never fits ``max_queue_tokens``,
    QueueFull if it does not fit beside the ``pending_tokens`` or the server is closing (another server may
    take it)."""
    if closing:
        raise QueueFull("the server is shutting down")
    tokens = sum(len(ids) for ids, _ in rows)
    if tokens > max_queue_tokens:
        raise TooLarge(f"the request holds {tokens} tokens, more than the server's --max-queue-tokens "
                       f"{max_queue_tokens}; split it")
    if pending_tokens + tokens > max_queue_tokens:
        raise QueueFull(f"{pending_tokens} tokens pending; this request's {tokens} would pass "
                        f"--max-queue-tokens {max_queue_tokens}")
    return tokens


@dataclasses.dataclass(eq=False)
class _Request:
    rows: Rows
    future: asyncio.Future
    results: list
    left: int  # pairs not scored yet


@dataclasses.dataclass(eq=False)
class _Item:  # one pair of a request, waiting
    request: _Request
    index: int
    arrival: float

    @property
    def tokens(self) -> int:
        return len(self.request.rows[self.index][0])


class Batcher:
    """Scores the pairs of concurrent requests together. Create, ``start`` and use it on one event loop.

    Args:
        score: rows -> one (reward, per-token rewards) per row, in order; called from one worker thread.
        max_batch_tokens: most padded tokens in one batch (a longer pair gets a batch of its own).
        max_wait_s: longest the oldest waiting pair waits for arriving requests to fill its batch.
        max_queue_tokens: most tokens accepted and not yet answered.
        across_requests: False scores one request's pairs per call, in arrival order (no batching across
            requests: the baseline of OpenRLHF's ``serve_rm.py``).
        metrics: where batch sizes and queue depth are recorded.
    """

    def __init__(self, score: ScoreFn, *, max_batch_tokens: int, max_wait_s: float, max_queue_tokens: int,
                 across_requests: bool = True, metrics: Metrics | None = None) -> None:
        self._score_fn = score
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_s
        self.max_queue_tokens = max_queue_tokens
        self.across_requests = across_requests
        self._metrics = metrics
        self._waiting: collections.deque[_Item] = collections.deque()
        self.pending_tokens = 0  # accepted, not answered (waiting or being scored)
        self._arriving = 0  # requests on their way to submit
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="endokernel-score")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="endokernel-batcher")

    async def close(self) -> None:
        """Score what was accepted, then stop the task and the worker thread."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Around what precedes a ``submit`` (tokenizing the request): a batch about to go waits for it, up to
        ``max_wait_s``."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1
            self._wake.set()

    async def submit(self, rows: Rows) -> list[Scored]:
        """The scores of ``rows``, in order, once all are scored. Raises TooLarge or QueueFull at once when the
        request does not fit, or once closing (QueueFull too: another server may take it)."""
        tokens = admit(rows, pending_tokens=self.pending_tokens, max_queue_tokens=self.max_queue_tokens,
                       closing=self._closing)
        if not rows:
            return []
        loop = asyncio.get_running_loop()
        request = _Request(rows, loop.create_future(), [None] * len(rows), len(rows))
        now = loop.time()
        self._waiting.extend(_Item(request, i, now) for i in range(len(rows)))
        self.pending_tokens += tokens
        self._record_queue()
        self._wake.set()
        return await request.future  # a cancelled wait (client gone) cancels the future: its pairs are dropped

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_abandoned()
            if not self._waiting:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            deadline = self._waiting[0].arrival + self.max_wait_s
            while self._arriving and not self._closing and not self._full() and loop.time() < deadline:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
            batch = self._take()
            if batch:
                await self._score(batch)

    def _fits(self, count: int, longest: int, item: _Item, first: _Item) -> bool:
        """Whether ``item`` joins a batch of ``count`` pairs whose longest has ``longest`` tokens."""
        if not self.across_requests:
            return item.request is first.request
        return (count + 1) * max(longest, item.tokens) <= self.max_batch_tokens

    def _full(self) -> bool:
        """Whether the waiting pairs already fill a batch: some waiting pair would be left out of it."""
        if not self.across_requests:
            return True
        return len(self._plan()) < len(self._waiting)

    def _plan(self) -> list[_Item]:
        """The next batch: the oldest waiting pair, then the others nearest to it in length (ties: the older
        first) while they fit."""
        first = self._waiting[0]
        batch, longest = [first], first.tokens
        others = sorted(list(self._waiting)[1:], key=lambda item: abs(item.tokens - first.tokens))
        for item in others:
            if self._fits(len(batch), longest, item, first):
                batch.append(item)
                longest = max(longest, item.tokens)
        return batch

    def _take(self) -> list[_Item]:
        self._drop_abandoned()
        if not self._waiting:
            return []
        batch = self._plan()
        taken = set(map(id, batch))
        self._waiting = collections.deque(item for item in self._waiting if id(item) not in taken)
        self._record_queue()
        return batch

    def _drop_abandoned(self) -> None:
        """Forget the waiting pairs of requests whose clients are gone."""
        gone = [item for item in self._waiting if item.request.future.done()]
        if gone:
            self._waiting = collections.deque(item for item in self._waiting if not item.request.future.done())
            self._release(sum(item.tokens for item in gone))

    async def _score(self, batch: list[_Item]) -> None:
        rows = [item.request.rows[item.index] for item in batch]
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            scored = await loop.run_in_executor(self._executor, self._score_fn, rows)
        except Exception as error:  # a failed batch fails its requests, not the server
            log.exception("scoring a batch of %d pairs failed", len(rows))
            for item in batch:
                if not item.request.future.done():
                    item.request.future.set_exception(error)
        else:
            if self._metrics is not None:
                self._metrics.record_batch(len(rows), len(rows) * max(len(ids) for ids, _ in rows),
                                           loop.time() - start)
            for item, result in zip(batch, scored):
                request = item.request
                request.results[item.index] = result
                request.left -= 1
                if request.left == 0 and not request.future.done():
                    request.future.set_result(request.results)
        self._release(sum(item.tokens for item in batch))

    def _release(self, tokens: int) -> None:
        self.pending_tokens -= tokens
        self._record_queue()

    def _record_queue(self) -> None:
        if self._metrics is not None:
            self._metrics.record_queue(len(self._waiting), self.pending_tokens)
