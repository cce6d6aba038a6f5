"""ASGI middleware: a bound on requests in flight, so overload gets a fast 503 instead of a stall."""

from __future__ import annotations

import asyncio
import contextlib
import json
import mmap
import time
from collections import deque

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alle.logs import get_logger

log = get_logger(__name__)

#: Cloud Run's probes must see the truth about the process, not the overload answer.
PROBES = frozenset({"/healthz", "/readyz"})
#: How long a request above the bound waits for a slot before its 503: within the 100 ms a refusal must take, and
#: long enough that clients retrying at once (as load generators and naive clients do) are not answered thousands
#: of times a second at the expense of the requests being served: each refusal still costs a request's parsing
#: and a write.
QUEUE_SECONDS = 0.075
#: A queue whose oldest request has waited this long is building faster than it drains: slots then go newest first.
LIFO_AFTER_SECONDS = QUEUE_SECONDS / 3
#: Refusals are counted and logged at most this often; Cloud Run's request log has each one anyway.
LOG_EVERY_SECONDS = 1.0


class InstanceLoad:
    """The requests in flight in each web process of an instance, in memory the processes share.

    Made before gunicorn forks the processes, so every one of them maps the same page. The arbiter gives each
    process a slot as it forks it, and frees it, zeroed, once the process has exited (alle.api.prefork). Each
    process writes its own count only, and reads the others' without a lock: a count read as a request starts or
    ends is off by that request, and two processes that look at once may both take the last place. No bound here
    needs it exact.
    """

    def __init__(self, processes: int) -> None:
        self.processes = processes
        #: Twice as many slots as processes: a reload (SIGHUP) forks the new processes before the old ones exit.
        self.slots = 2 * processes
        #: Anonymous and shared (mmap's default on Linux): the forked processes see each other's writes.
        self._memory = mmap.mmap(-1, 8 * self.slots)
        self._counts = memoryview(self._memory).cast("q")
        #: This process's slot, set by the arbiter before each fork; None in one it had no slot left for, which
        #: then keeps to its own bound and is not counted.
        self.slot: int | None = None

    def publish(self, in_flight: int) -> None:
        if self.slot is not None:
            self._counts[self.slot] = in_flight

    def clear(self, slot: int) -> None:
        self._counts[slot] = 0

    def total(self) -> int:
        return sum(self._counts)


class InFlightLimit:
    """At most `limit` requests in this process at once, or more while its instance has room (below); the next
    waits up to QUEUE_SECONDS, then gets 503.

    With `instance`, the process is one of several on an instance, which Cloud Run sends up to processes × `limit`
    requests at once. They share the listening socket, the kernel hands each connection to one of them, unevenly
    (41 of 64 to one, even 50 of 64, in the runs in app/README.md), and a keep-alive connection stays with its
    process: a bound per process alone refused up to a fifth of the requests Cloud Run may send. So a process at
    `limit` takes a request all the same while the instance as a whole has fewer than processes × `limit` in
    flight. Below `limit` it takes one whatever the others hold: a process's count drops only once its response
    has gone, so Cloud Run may send the next request before it does.

    Sized so that `limit` requests are served within the latency the service promises (app/README.md). A slot
    that comes free goes to the oldest waiter while the queue is young. Once the oldest has waited
    LIFO_AFTER_SECONDS, the queue is building faster than it drains, and slots go to the newest waiter: first
    come, first served would then hand every slot to a request that has already spent most of its wait
    queueing, so each answer would take a queue wait plus a service time. Newest first keeps the served requests
    fast, and the ones left waiting get their 503 at the deadline (adaptive LIFO, "Fail at Scale", ACM Queue
    2015). Probes are not counted. No lock: the state lives on one event loop.
    """

    def __init__(
        self, app: ASGIApp, *, limit: int, instance: InstanceLoad | None = None, retry_after_seconds: int = 1
    ) -> None:
        self.app = app
        self.limit = limit
        self.instance = instance
        #: What the instance may have in flight: what Cloud Run sends it at most (components/services.py).
        self.instance_limit = limit * instance.processes if instance else limit
        self.in_flight = 0
        #: Waiting requests with the time each began to wait, oldest on the left. A waiter's result is whether it
        #: was given a slot.
        self._waiters: deque[tuple[float, asyncio.Future[bool]]] = deque()
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

    def _has_room(self) -> bool:
        if self.in_flight < self.limit:
            return True
        instance = self.instance
        return instance is not None and instance.slot is not None and instance.total() < self.instance_limit

    def _take(self) -> None:
        self.in_flight += 1
        if self.instance is not None:
            self.instance.publish(self.in_flight)

    async def _admit(self) -> bool:
        if not self._waiters and self._has_room():
            self._take()
            return True
        # A bare future and one timer: the cheapest wait asyncio offers, as refusals come when CPU is scarce.
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        entry = (loop.time(), waiter)
        self._waiters.append(entry)
        deadline = loop.call_later(QUEUE_SECONDS, self._expire, entry)
        try:
            return await waiter
        except BaseException:
            if waiter.cancelled():
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
            elif waiter.result():
                self._release()  # handed a slot just as this request was cancelled: pass it on
            raise
        finally:
            deadline.cancel()

    def _expire(self, entry: tuple[float, asyncio.Future[bool]]) -> None:
        """At the deadline: a slot, if another process has freed one meanwhile (no wake-up comes from there),
        or else the refusal."""
        waiter = entry[1]
        if not waiter.done():
            self._waiters.remove(entry)  # the oldest expire first, and they sit at the left: a short scan
            room = self._has_room()
            if room:
                self._take()
            waiter.set_result(room)

    def _release(self) -> None:
        """Hand the slot to a waiter (see the class docstring for which), or free it."""
        while self._waiters:
            waited = asyncio.get_running_loop().time() - self._waiters[0][0]
            _, waiter = self._waiters.popleft() if waited < LIFO_AFTER_SECONDS else self._waiters.pop()
            if not waiter.done():
                waiter.set_result(True)
                return
        self.in_flight -= 1
        if self.instance is not None:
            self.instance.publish(self.in_flight)

    def _count_refusal(self) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_SECONDS:
            log.warning(
                "requests refused at capacity",
                refused=self._refused,
                limit=self.limit,
                instance_limit=self.instance_limit,
            )
            self._refused = 0
            self._logged_at = now
