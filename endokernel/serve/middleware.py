"""ASGI middleware: the request metrics around everything (so that refused requests count too), and the API key
check, made before a request's body is read."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import Metrics


class Observe:
    """Counts each HTTP request by endpoint and status code and times it; an exception counts as 500."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, code = time.perf_counter(), 500

        async def observed_send(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, observed_send)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.record_request(scope["path"], code, time.perf_counter() - start)


def supplied_key(headers: Headers) -> str | None:
    """The key of ``Authorization: Bearer KEY``, ``X-API-Key: KEY`` or HTTP basic auth (the password: clients
    that send no headers of their own, such as OpenRLHF's and slime's, put it in the URL, http://any:KEY@host)."""
    if key := headers.get("x-api-key"):
        return key
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


def key_matches(supplied: str | None, expected: str) -> bool:
    """Constant-time comparison (of digests, so that not even the key's length leaks)."""
    digest = hashlib.sha256((supplied or "").encode()).digest()
    return supplied is not None and hmac.compare_digest(digest, hashlib.sha256(expected.encode()).digest())


class ApiKey:
    """Refuses a request to a ``protected`` path without the API key (401), before its body is read."""

    def __init__(self, app: ASGIApp, *, api_key: str, protected: Collection[str]) -> None:
        self.app, self.api_key, self.protected = app, api_key, protected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.protected and not key_matches(
                supplied_key(Headers(scope=scope)), self.api_key):
            response = JSONResponse({"detail": "missing or wrong API key"}, status_code=401,
                                    headers={"WWW-Authenticate": 'Bearer, Basic realm="endokernel"'})
            return await response(scope, receive, send)
        await self.app(scope, receive, send)
