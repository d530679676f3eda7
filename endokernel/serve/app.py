"""The reward server's FastAPI app: the endpoints, their errors, and the service they share (the model, one
encoding thread, the batcher). The event loop only parses, queues and answers: tokenizing runs in the encoding
thread and the model in the batcher's worker thread.

    POST /get_reward  OpenRLHF: {"query", "prompts", "labels"} -> {"rewards", "scores", "extra_logs"}
    POST /reward      slime: {"prompt", "response", "label"} -> {"reward"}
    POST /score       native: {"pairs": [{"prompt", "response"}], "per_token"} -> {"rewards"[, "per_token"]}
    GET  /health      200 once the model is loaded and a warm-up batch ran
    GET  /metrics     Prometheus

Errors: 400 for input that cannot be scored (lists of different lengths, a query that does not start with its
prompt, a pair longer than the model's positions, malformed JSON), 422 for missing or mistyped fields, 401 for
a missing or wrong API key, 413 for a body over ``max_body_bytes`` or a request over ``max_queue_tokens``, 503
with Retry-After when the pending work is at ``max_queue_tokens``. Messages name the field, never the text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.middleware.body_limit import RequestBodyLimitMiddleware

from . import protocols
from .batcher import Batcher, QueueFull, Scored, TooLarge
from .encoding import BadRequest, PairEncoder
from .engine_queue import EngineQueue
from .metrics import Metrics
from .middleware import ApiKey, Observe
from .schemas import OpenRLHFRequest, ScoreRequest, SlimeRequest
from .settings import ServerSettings

if TYPE_CHECKING:
    from ..hf.scorer import RewardScorer, Rows

SCORING = ("/get_reward", "/reward", "/score")  # the endpoints behind the API key
RETRY_AFTER_S = "1"
WARM_UP = ("Hello", " world")

log = logging.getLogger(__name__)


def load_model(settings: ServerSettings) -> RewardScorer:
    from ..hf.engines import load_scorer  # transformers (and vLLM) load only when a server starts

    return load_scorer(settings.engine, settings.model, dtype=settings.dtype, device=settings.device,
                       alpha=settings.alpha, chat_template=settings.chat_template,
                       tensor_parallel_size=settings.tensor_parallel_size, max_model_len=settings.max_model_len,
                       enforce_eager=settings.enforce_eager, engine_options=settings.engine_options)


def score_rows(model: RewardScorer, settings: ServerSettings, rows: Rows) -> list[Scored]:
    """One batch through ``score_encoded`` (in the batcher's worker thread), as plain floats."""
    rewards, per_token = model.score_encoded(rows, gamma=settings.gamma, beta=settings.beta,
                                             max_tokens=settings.max_batch_tokens, return_per_token=True,
                                             progress=False)
    return _plain(rewards, per_token)


async def score_rows_async(model: RewardScorer, settings: ServerSettings, rows: Rows) -> list[Scored]:
    """A request's rows through an engine that batches itself (``score_encoded_async``), as plain floats."""
    rewards, per_token = await model.score_encoded_async(rows, gamma=settings.gamma, beta=settings.beta)
    return _plain(rewards, per_token)


def _plain(rewards, per_token) -> list[Scored]:
    return [(reward, tokens.tolist()) for reward, tokens in zip(rewards.tolist(), per_token)]


class Service:
    """The model behind the endpoints: its encoder in a thread of its own (tokenizers are not thread-safe) and
    the batcher (or, for an engine that batches itself, the queue that hands it each request). Built, started
    and closed on the server's event loop."""

    def __init__(self, model: RewardScorer, settings: ServerSettings, metrics: Metrics) -> None:
        self.model = model
        self.encoder = PairEncoder(model)
        self._encoding = ThreadPoolExecutor(1, thread_name_prefix="endokernel-encode")
        self.batcher: Batcher | EngineQueue
        if model.batches_itself:
            self.batcher = EngineQueue(lambda rows: score_rows_async(model, settings, rows),
                                       max_queue_tokens=settings.max_queue_tokens, metrics=metrics)
        else:
            self.batcher = Batcher(lambda rows: score_rows(model, settings, rows),
                                   max_batch_tokens=settings.max_batch_tokens,
                                   max_wait_s=settings.max_wait_ms / 1000, max_queue_tokens=settings.max_queue_tokens,
                                   across_requests=settings.batching, metrics=metrics)

    async def start(self) -> None:
        """Start the batcher and run one pair through the whole path (the first forward is the slowest)."""
        self.batcher.start()
        prompt, response = WARM_UP
        await self.batcher.submit(self.encoder.texts([prompt], [response], prompt_name=lambda _: "warm-up prompt",
                                                     pair_name=lambda _: "warm-up pair"))

    async def close(self) -> None:
        await self.batcher.close()
        self._encoding.shutdown(wait=True)

    async def score(self, to_rows: Callable[[PairEncoder, Any], Rows], body: Any) -> list[Scored]:
        """The scores of a request's pairs: ``to_rows(encoder, body)`` in the encoding thread, then the batcher."""
        with self.batcher.arriving():
            rows = await asyncio.get_running_loop().run_in_executor(self._encoding, to_rows, self.encoder, body)
        return await self.batcher.submit(rows)


def create_app(settings: ServerSettings, model: RewardScorer | None = None) -> FastAPI:
    """The reward server's app. ``model``: already loaded (the CLI loads it first, to fail before binding a
    port); None loads it from ``settings`` when the app starts (a Ray Serve replica). The app closes the model
    (a vLLM engine shuts down) when it stops."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = model if model is not None else await asyncio.to_thread(load_model, settings)
        service = Service(loaded, settings, metrics)
        await service.start()
        app.state.service = service
        metrics.ready.set(1)
        log.info("ready: %s on %s, %s", settings.model, loaded.describe(),
                 "the engine batches" if loaded.batches_itself else
                 f"batching {'on' if settings.batching else 'off'}")
        try:
            yield
        finally:
            metrics.ready.set(0)
            await service.close()  # uvicorn gets here once every accepted request was answered
            await asyncio.to_thread(loaded.close)

    app = FastAPI(title="endokernel reward server", lifespan=lifespan)
    # Starlette's limit (413 before a declared-too-large body is read), as FastAPI's own max_body_size, which
    # the FastAPI versions vLLM pins do not have
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=settings.max_body_bytes)
    if settings.api_key is not None:
        app.add_middleware(ApiKey, api_key=settings.api_key, protected=SCORING)
    app.add_middleware(Observe, metrics=metrics)  # outermost: counts refused requests too
    _add_error_handlers(app)

    def service(request: Request) -> Service:
        return request.app.state.service

    @app.post("/get_reward")
    async def get_reward(body: OpenRLHFRequest, request: Request) -> dict:
        """OpenRLHF's protocol: each query is its prompt followed by the response."""
        return protocols.openrlhf_answer(await service(request).score(protocols.openrlhf_rows, body))

    @app.post("/reward")
    async def reward(body: SlimeRequest, request: Request) -> dict:
        """slime's protocol: one sample per request."""
        return protocols.slime_answer(await service(request).score(protocols.slime_rows, body))

    @app.post("/score")
    async def score(body: ScoreRequest, request: Request) -> dict:
        """(prompt, response) pairs, plain text or chat messages; rewards in order."""
        return protocols.native_answer(await service(request).score(protocols.native_rows, body), body.per_token)

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        ready = getattr(request.app.state, "service", None) is not None
        return JSONResponse({"status": "ready" if ready else "starting"}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app


def _add_error_handlers(app: FastAPI) -> None:
    def error(status: int, detail: str, **headers: str) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(TooLarge)
    async def too_large(_: Request, exc: TooLarge) -> JSONResponse:
        return error(413, str(exc))

    @app.exception_handler(QueueFull)
    async def queue_full(_: Request, exc: QueueFull) -> JSONResponse:
        return error(503, f"busy, retry later: {exc}", **{"Retry-After": RETRY_AFTER_S})

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        malformed = [p for p in problems if p.get("type") == "json_invalid"]
        if malformed:
            where = malformed[0]["loc"][-1]
            return error(400, f"malformed JSON body: {malformed[0].get('ctx', {}).get('error', 'invalid')} "
                              f"(at character {where})")
        return error(422, "; ".join(f"{_field(p['loc'])}: {p['msg']}" for p in problems))


def _field(loc: tuple) -> str:
    """('body', 'pairs', 0, 'prompt') -> 'pairs[0].prompt'; the body itself is 'body'."""
    name = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"
