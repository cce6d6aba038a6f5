"""The web process's heap: what start-up builds is kept out of the collector's way while requests are served."""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import subprocess
import sys
from inspect import getsourcelines

import httpx
import pytest
from pydantic import TypeAdapter

import backing
from alle.api.app import create_app
from alle.config import Settings
from conftest import OFFLINE_ENV

#: CPython's default threshold for a young collection.
CPYTHON_GEN0 = 700


def test_start_up_freezes_the_heap_and_young_collections_run_less_often_than_cpythons_default() -> None:
    """A full collection that walks the start-up heap stalls every request for about 0.2 s; frozen, it does not."""
    app = create_app(Settings(**OFFLINE_ENV))  # type: ignore[arg-type]
    thresholds = gc.get_threshold()
    gc.unfreeze()

    async def serving() -> tuple[int, int, bool]:
        async with app.router.lifespan_context(app):
            services = app.state.services
            # Frozen objects are no longer in any generation the collector walks.
            walked = any(tracked is services for tracked in gc.get_objects())
            return gc.get_freeze_count(), gc.get_threshold()[0], walked

    try:
        frozen, young, services_walked = asyncio.run(serving())
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    # The modules, the app and its services (frozen once they were built): far more than a request allocates.
    assert frozen > 50_000
    assert not services_walked
    assert young > CPYTHON_GEN0


#: Reports the collector's state once the web is built; the marker line stands in for serving.
_PROBE = """
import gc, sys
import uvicorn
from gunicorn.arbiter import Arbiter
from alle import cli

collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(info["generation"]))
def report(*_, **__):
    # The app, and what uvicorn and anyio would otherwise import in each process as it starts serving.
    served_with = ("alle.api.app", "uvicorn.protocols.http.httptools_impl", "uvloop", "anyio._backends._asyncio")
    print("probe:", len(collections), gc.isenabled(), gc.get_freeze_count(), all(m in sys.modules for m in served_with))
uvicorn.Server.run = report
Arbiter.run = report
"""


def _probe(start: str, **env: str) -> tuple[str, str, int, str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE + start],
        env={**os.environ, **OFFLINE_ENV, "PORT": str(backing.free_port()), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.startswith("probe:")]
    collections, enabled, frozen, imported = line.split()[1:]
    return collections, enabled, int(frozen), imported


def test_web_start_up_runs_no_collection_and_leaves_collection_enabled_with_its_heap_frozen() -> None:
    """The collections start-up would trigger free almost nothing and cost 5% of a web process's start."""
    collections, enabled, frozen, _ = _probe('cli.main(["web"])', WEB_CONCURRENCY="1")
    assert (collections, enabled) == ("0", "True")
    assert frozen > 50_000


def test_with_several_processes_the_app_and_its_server_are_imported_built_and_frozen_before_gunicorn_forks() -> None:
    """What the processes share then stays shared: collections that touched it would copy its pages into each."""
    collections, enabled, frozen, imported = _probe('cli.main(["web"])', WEB_CONCURRENCY="2")
    assert (collections, enabled, imported) == ("0", "True", "True")
    assert frozen > 50_000


def test_start_up_builds_every_routes_validators_and_source_location_so_no_request_builds_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FastAPI builds them on the first request a router sees, in each forked process: 60 ms of CPU added to the
    startup probe's request, and to a user's in the second process. Built at start-up, it is done before the fork."""
    app = create_app(Settings(**OFFLINE_ENV))  # type: ignore[arg-type]
    built: list[str] = []
    adapter_init = TypeAdapter.__init__

    def counting_adapter(self: TypeAdapter[object], *args: object, **kwargs: object) -> None:
        built.append("validator")
        adapter_init(self, *args, **kwargs)  # type: ignore[arg-type]

    def counting_source(source: object) -> tuple[list[str], int]:
        built.append("source location")
        return getsourcelines(source)  # type: ignore[arg-type]

    monkeypatch.setattr(TypeAdapter, "__init__", counting_adapter)
    monkeypatch.setattr(inspect, "getsourcelines", counting_source)

    async def first_requests() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://alle") as client:
            # Routes match in order, router by router: /healthz is the last route, and a miss passes them all.
            return [(await client.get(path)).status_code for path in ("/healthz", "/no-such-path")]

    assert asyncio.run(first_requests()) == [200, 404]
    assert built == []
