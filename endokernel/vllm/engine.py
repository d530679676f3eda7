"""One vLLM engine driven by one thread of ours: requests go in from any thread (``submit``) or event loop
(``submit_async``) and are added between engine steps, so requests that arrive while others run join the
running batch (vLLM's continuous batching); each request's answer resolves its future.

vLLM's own ``LLM`` runs its engine only inside a call, and ``AsyncLLM`` is bound to one event loop; the command
line and the reward server need both a blocking call and an async one on the same engine, hence this thread."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)


class EngineDead(RuntimeError):
    """The engine failed or was closed; nothing more can be scored with it."""


class EngineThread:
    """A ``vllm.v1.engine.llm_engine.LLMEngine`` and the thread that steps it.

    Args:
        engine_args: ``vllm.EngineArgs`` of the engine, built in the calling thread (vLLM's startup, including
            its worker processes, runs there; errors surface there).
    """

    def __init__(self, engine_args: Any) -> None:
        from vllm.v1.engine.llm_engine import LLMEngine

        self.engine = LLMEngine.from_engine_args(engine_args)
        self._lock = threading.Condition()
        self._incoming: collections.deque[tuple[str, dict, Any, Future]] = collections.deque()
        self._aborted: list[str] = []
        self._futures: dict[str, Future] = {}
        self._ids = itertools.count()
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="endokernel-vllm-engine", daemon=True)
        self._thread.start()

    def submit(self, token_ids: list[int], params: Any) -> Future:
        """A future of the engine's ``PoolingRequestOutput`` for one sequence of ``token_ids``."""
        future: Future = Future()
        with self._lock:
            if self._error is not None or self._closing:
                raise EngineDead(f"the vLLM engine is not running ({self._error or 'closed'})")
            request_id = f"endokernel-{next(self._ids)}"
            self._incoming.append((request_id, {"prompt_token_ids": list(token_ids)}, params, future))
            self._lock.notify()
        future.request_id = request_id  # type: ignore[attr-defined]
        return future

    async def submit_async(self, token_ids: list[int], params: Any) -> Any:
        """``submit``, awaited; cancelling the wait aborts the request in the engine."""
        future = self.submit(token_ids, params)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self.abort([future.request_id])  # type: ignore[attr-defined]
            raise

    def abort(self, request_ids: list[str]) -> None:
        with self._lock:
            self._aborted.extend(request_ids)
            self._lock.notify()

    def close(self) -> None:
        """Finish the requests already submitted, then stop the thread and shut the engine down."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        self._thread.join()
        shutdown = getattr(self.engine.engine_core, "shutdown", None)
        if shutdown is not None:
            shutdown()

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    while not (self._incoming or self._aborted or self._futures or self._closing):
                        self._lock.wait()
                    if self._closing and not (self._incoming or self._futures):
                        return
                    incoming, self._incoming = list(self._incoming), collections.deque()
                    aborted, self._aborted = self._aborted, []
                self._add(incoming)
                self._abort(aborted)
                if self._futures:
                    for output in self.engine.step():
                        future = self._futures.pop(output.request_id, None) if output.finished else None
                        if future is not None and not future.done():  # not cancelled meanwhile
                            future.set_result(output)
        except BaseException as error:  # the engine is dead: fail every waiting request, refuse new ones
            log.exception("the vLLM engine failed")
            with self._lock:
                self._error = error
                waiting = [f for *_, f in self._incoming] + list(self._futures.values())
                self._incoming.clear()
                self._futures.clear()
            for future in waiting:
                if not future.done():
                    future.set_exception(EngineDead(f"the vLLM engine failed: {error!r}"))

    def _add(self, incoming: list[tuple[str, dict, Any, Future]]) -> None:
        for request_id, prompt, params, future in incoming:
            if future.cancelled():
                continue
            try:
                self.engine.add_request(request_id, prompt, params)
            except (ValueError, TypeError) as error:  # refused by vLLM's input checks: this request only
                if not future.done():
                    future.set_exception(error)
            else:
                self._futures[request_id] = future

    def _abort(self, request_ids: list[str]) -> None:
        live = [r for r in request_ids if self._futures.pop(r, None) is not None]
        if live:
            self.engine.abort_request(live)
