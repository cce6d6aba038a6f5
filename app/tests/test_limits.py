"""The in-flight bound on its own, driven with plain ASGI calls: which request gets a slot, and when."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable

import pytest
from starlette.types import Message, Receive, Scope, Send

from alle.api import limits
from alle.api.limits import InFlightLimit, InstanceLoad


class Parked:
    """An ASGI app whose requests wait until the test lets them finish."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.entered += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def _request(app: InFlightLimit, path: str = "/v1/tasks") -> int:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    await app({"type": "http", "path": path}, receive, send)
    status: int = sent[0]["status"]
    return status


def test_a_request_over_the_bound_gets_the_next_free_slot_while_it_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "QUEUE_SECONDS", 60)

    async def scenario() -> list[int]:
        inner = Parked()
        app = InFlightLimit(inner, limit=1)
        first = asyncio.create_task(_request(app))
        second = asyncio.create_task(_request(app))
        while not (inner.entered == 1 and len(app._waiters) == 1):
            await asyncio.sleep(0)
        inner.release.set()
        statuses = [await first, await second]
        assert (app.in_flight, len(app._waiters)) == (0, 0)
        return statuses

    assert asyncio.run(scenario()) == [200, 200]


async def _serve_in_order() -> list[str]:
    """One request holds the only slot while an older and a newer one wait; the order in which the three finish."""
    order: list[str] = []
    inner = Parked()
    app = InFlightLimit(inner, limit=1)

    async def request(name: str) -> None:
        await _request(app)
        order.append(name)

    first = asyncio.create_task(request("first"))
    while inner.entered == 0:
        await asyncio.sleep(0)
    older = asyncio.create_task(request("older"))
    while len(app._waiters) < 1:
        await asyncio.sleep(0)
    newer = asyncio.create_task(request("newer"))
    while len(app._waiters) < 2:
        await asyncio.sleep(0)
    inner.release.set()
    await asyncio.gather(first, older, newer)
    assert (app.in_flight, len(app._waiters)) == (0, 0)
    return order


def test_while_the_queue_is_young_a_freed_slot_goes_to_the_oldest_waiter(monkeypatch: pytest.MonkeyPatch) -> None:
    """At or just below capacity, a short queue drains in arrival order: nobody is passed over into a 503."""
    monkeypatch.setattr(limits, "QUEUE_SECONDS", 60)
    monkeypatch.setattr(limits, "LIFO_AFTER_SECONDS", 60)
    assert asyncio.run(_serve_in_order()) == ["first", "older", "newer"]


def test_once_the_queue_is_building_a_freed_slot_goes_to_the_newest_waiter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under overload, newest first: the request that waited longest is the one left to get its 503."""
    monkeypatch.setattr(limits, "QUEUE_SECONDS", 60)
    monkeypatch.setattr(limits, "LIFO_AFTER_SECONDS", 0)
    assert asyncio.run(_serve_in_order()) == ["first", "newer", "older"]


def test_a_request_cancelled_just_after_it_was_handed_a_slot_passes_the_slot_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Otherwise the slot would stay taken for the life of the process, and enough of them would refuse everything."""
    monkeypatch.setattr(limits, "QUEUE_SECONDS", 60)

    async def scenario() -> tuple[int, int]:
        app = InFlightLimit(Parked(), limit=1)
        app.in_flight = 1  # a request elsewhere holds the only slot
        waiting = asyncio.create_task(_request(app))
        while not app._waiters:
            await asyncio.sleep(0)
        app._release()  # that request ends: the slot is handed to the waiter...
        waiting.cancel()  # ...which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return app.in_flight, len(app._waiters)

    assert asyncio.run(scenario()) == (0, 0)


def test_a_waiting_request_that_is_cancelled_leaves_the_queue_and_takes_no_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "QUEUE_SECONDS", 60)

    async def scenario() -> tuple[int, int]:
        inner = Parked()
        app = InFlightLimit(inner, limit=1)
        first = asyncio.create_task(_request(app))
        while inner.entered == 0:
            await asyncio.sleep(0)
        waiting = asyncio.create_task(_request(app))
        while not app._waiters:
            await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        inner.release.set()
        await first
        return app.in_flight, len(app._waiters)

    assert asyncio.run(scenario()) == (0, 0)


def test_a_request_over_the_bound_gets_503_with_retry_after_and_probes_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "QUEUE_SECONDS", 0)

    async def scenario() -> tuple[int, int, int]:
        inner = Parked()
        app = InFlightLimit(inner, limit=1)
        first = asyncio.create_task(_request(app))
        while inner.entered == 0:
            await asyncio.sleep(0)
        refused = await _request(app)
        probe = asyncio.create_task(_request(app, "/healthz"))
        while inner.entered < 2:
            await asyncio.sleep(0)
        inner.release.set()
        # The refused request's wait ended at its deadline and left nothing queued.
        assert not app._waiters
        return await first, refused, await probe

    assert asyncio.run(scenario()) == (200, 503, 200)
    headers: list[tuple[bytes, bytes]] = InFlightLimit(Parked(), limit=1)._start["headers"]
    assert (b"retry-after", b"1") in headers


async def _until(condition: Callable[[], object]) -> None:
    """Lets the other tasks run until `condition` holds; a second at most, so a broken bound fails, not hangs."""

    async def spin() -> None:
        while not condition():
            await asyncio.sleep(0)

    await asyncio.wait_for(spin(), 1)


def _processes(instance: InstanceLoad, inner: Parked, limit: int) -> list[InFlightLimit]:
    """One bound per process of `instance`. A forked process has its own copy of the object, with its own slot,
    over the one shared mapping: so has each bound here."""
    bounds = []
    for slot in range(instance.processes):
        own = copy.copy(instance)
        own.slot = slot
        bounds.append(InFlightLimit(inner, limit=limit, instance=own))
    return bounds


def test_a_process_at_its_bound_takes_requests_while_the_instance_has_room_and_refuses_once_it_has_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two processes of one instance, bound 2 each: Cloud Run sends the instance up to 4 at once, and the kernel
    may have put every connection in one process."""
    monkeypatch.setattr(limits, "QUEUE_SECONDS", 0)

    async def scenario() -> tuple[list[int], int, list[int]]:
        inner = Parked()
        crowded, idle = _processes(InstanceLoad(2), inner, limit=2)
        served = [asyncio.create_task(_request(crowded)) for _ in range(4)]
        await _until(lambda: inner.entered == 4)
        over = await asyncio.wait_for(_request(crowded), 1)
        inner.release.set()
        statuses = [await s for s in served]
        assert crowded.instance is not None
        return statuses, over, [crowded.in_flight, idle.in_flight, crowded.instance.total()]

    served, over, counts = asyncio.run(scenario())
    assert served == [200, 200, 200, 200]
    assert over == 503
    assert counts == [0, 0, 0]


def test_a_process_below_its_bound_is_never_refused_for_what_another_has_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process's count drops only once its response has gone: Cloud Run may already have sent the next request
    to another process, which must not wait for the count to catch up."""
    monkeypatch.setattr(limits, "QUEUE_SECONDS", 0)

    async def scenario() -> list[int]:
        inner = Parked()
        crowded, idle = _processes(InstanceLoad(2), inner, limit=2)
        served = [asyncio.create_task(_request(crowded)) for _ in range(4)]
        await _until(lambda: inner.entered == 4)
        late = asyncio.create_task(_request(idle))
        await _until(lambda: inner.entered == 5)
        inner.release.set()
        return [await s for s in [*served, late]]

    assert asyncio.run(scenario()) == [200] * 5


def test_a_request_waiting_in_a_full_instance_takes_the_slot_another_process_frees_by_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No wake-up crosses processes: the waiter looks again at its deadline (brought forward here)."""
    monkeypatch.setattr(limits, "QUEUE_SECONDS", 60)

    async def scenario() -> list[int]:
        crowded_inner, idle_inner = Parked(), Parked()
        instance = InstanceLoad(2)
        crowded, _ = _processes(instance, crowded_inner, limit=1)
        _, idle = _processes(instance, idle_inner, limit=1)
        held = asyncio.create_task(_request(crowded))
        elsewhere = asyncio.create_task(_request(idle))
        await _until(lambda: crowded_inner.entered == idle_inner.entered == 1)
        waiting = asyncio.create_task(_request(crowded))
        await _until(lambda: crowded._waiters)
        idle_inner.release.set()
        await elsewhere
        crowded._expire(crowded._waiters[0])
        # Admitted beside the request that still holds this process's own slot (or else refused, and done).
        await _until(lambda: crowded_inner.entered == 2 or waiting.done())
        crowded_inner.release.set()
        return [await held, await waiting]

    assert asyncio.run(scenario()) == [200, 200]
