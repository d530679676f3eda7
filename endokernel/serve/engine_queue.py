"""The batcher's interface (``submit``, ``arriving``, ``start``, ``close``) for an engine that batches requests
itself, as vLLM does (continuous batching): each request's pairs go to the engine as soon as it is accepted and
join the batch running there. What stays the server's: admission (``max_queue_tokens``: 413 for a request that
never fits, 503 past it), the metrics, and draining (``close`` waits until every accepted request is answered).
In the metrics a "batch" is one request's pairs handed to the engine."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from .batcher import Scored, admit

if TYPE_CHECKING:
    from ..hf.scorer import Rows
    from .metrics import Metrics

AsyncScoreFn = Callable[["Rows"], Awaitable[list[Scored]]]


class EngineQueue:
    """Hands each accepted request to ``score`` (an engine's async scoring) at once.

    Args:
        score: rows -> one (reward, per-token rewards) per row, in order, awaited on the server's loop.
        max_queue_tokens: most tokens accepted and not yet answered.
        metrics: where requests handed to the engine and the pending work are recorded.
    """

    def __init__(self, score: AsyncScoreFn, *, max_queue_tokens: int, metrics: Metrics | None = None) -> None:
        self._score_fn = score
        self.max_queue_tokens = max_queue_tokens
        self._metrics = metrics
        self.pending_tokens = 0
        self._pending_pairs = 0
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        """Nothing to start: the engine runs on its own."""

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Nothing waits for arriving requests: the engine takes each one into its running batch."""
        yield

    async def submit(self, rows: Rows) -> list[Scored]:
        """The scores of ``rows``, in order. Raises TooLarge or QueueFull at once when the request does not fit;
        a cancelled wait (client gone) aborts its pairs in the engine."""
        tokens = admit(rows, pending_tokens=self.pending_tokens, max_queue_tokens=self.max_queue_tokens,
                       closing=self._closing)
        if not rows:
            return []
        self._account(len(rows), tokens)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            scored = await self._score_fn(rows)
        finally:
            self._account(-len(rows), -tokens)
        if self._metrics is not None:
            self._metrics.record_batch(len(rows), tokens, loop.time() - start)
        return scored

    async def close(self) -> None:
        """Refuse new requests; return once every accepted one was answered."""
        self._closing = True
        await self._idle.wait()

    def _account(self, pairs: int, tokens: int) -> None:
        self._pending_pairs += pairs
        self.pending_tokens += tokens
        if self.pending_tokens:
            self._idle.clear()
        else:
            self._idle.set()
        if self._metrics is not None:
            self._metrics.record_queue(self._pending_pairs, self.pending_tokens)
