"""ASGI middleware: a bound on requests in flight, so overload gets a fast 503 instead of a stall."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

#: Cloud Run's probes must see the truth about the process, not the overload answer.
PROBES = frozenset({"/healthz", "/readyz"})


class InFlightLimit:
    """At most `limit` requests in this process at once; the next gets 503 with Retry-After straight away.

    Sized with the pool (app/README.md): requests beyond what the connections can serve would only queue
    for the pool. Probes are not counted. The counter needs no lock: it lives on one event loop.
    """

    def __init__(self, app: ASGIApp, *, limit: int, retry_after_seconds: int = 1) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0
        body = json.dumps({"detail": "The server is at capacity; retry shortly."}).encode()
        self._start = {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after_seconds).encode()),
            ],
        }
        self._body = {"type": "http.response.body", "body": body}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            await send(self._start)
            await send(self._body)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
