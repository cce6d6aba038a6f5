"""ASGI middleware: a bound on requests in flight, so overload gets a fast 503 instead of a stall."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alle.logs import get_logger

log = get_logger(__name__)

#: Cloud Run's probes must see the truth about the process, not the overload answer.
PROBES = frozenset({"/healthz", "/readyz"})
#: How long a request above the bound waits for a slot before its 503: short enough that the answer stays
#: fast (well under 100 ms), long enough that a client retrying at once is not answered thousands of times a
#: second at the expense of the requests being served.
QUEUE_SECONDS = 0.05
#: Refusals are counted and logged at most this often; Cloud Run's request log has each one anyway.
LOG_EVERY_SECONDS = 1.0


class InFlightLimit:
    """At most `limit` requests in this process at once; the next waits up to QUEUE_SECONDS, then gets 503.

    Sized with the pool (app/README.md): requests beyond what the connections can serve would only queue
    for the pool. Slots pass to waiters first come, first served. Probes are not counted. No lock: the
    state lives on one event loop.
    """

    def __init__(self, app: ASGIApp, *, limit: int, retry_after_seconds: int = 1) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._refused = 0
        self._logged_at = 0.0
        body = json.dumps({"detail": "The server is at capacity; retry shortly."}).encode()
        self._start: Message = {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after_seconds).encode()),
            ],
        }
        self._body: Message = {"type": "http.response.body", "body": body}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        if not await self._admit():
            self._count_refusal()
            await send(self._start)
            await send(self._body)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._release()

    async def _admit(self) -> bool:
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(QUEUE_SECONDS):
                await waiter
        except TimeoutError:
            pass
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot just as this request was cancelled: pass it on
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
        # Granted, possibly in the same loop iteration as the timeout: the slot is ours either way.
        return waiter.done() and not waiter.cancelled()

    def _release(self) -> None:
        """Hand the slot to the oldest waiter still waiting, or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_flight -= 1

    def _count_refusal(self) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_SECONDS:
            log.warning("requests refused at capacity", refused=self._refused, limit=self.limit)
            self._refused = 0
            self._logged_at = now
