"""The web process's heap: what start-up builds is kept out of the collector's way while requests are served."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys

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
    print("probe:", len(collections), gc.isenabled(), gc.get_freeze_count(), "alle.api.app" in sys.modules)
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
    collections, enabled, frozen, app_imported = line.split()[1:]
    return collections, enabled, int(frozen), app_imported


def test_web_start_up_runs_no_collection_and_leaves_collection_enabled_with_its_heap_frozen() -> None:
    """The collections start-up would trigger free almost nothing and cost 5% of a web process's start."""
    collections, enabled, frozen, _ = _probe('cli.main(["web"])', WEB_CONCURRENCY="1")
    assert (collections, enabled) == ("0", "True")
    assert frozen > 50_000


def test_with_several_processes_the_app_is_built_frozen_and_without_collection_before_gunicorn_forks() -> None:
    """What the processes share then stays shared: collections that touched it would copy its pages into each."""
    collections, enabled, frozen, app_imported = _probe('cli.main(["web"])', WEB_CONCURRENCY="2")
    assert (collections, enabled, app_imported) == ("0", "True", "True")
    assert frozen > 50_000
