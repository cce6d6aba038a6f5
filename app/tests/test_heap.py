"""The web process's heap: what start-up builds is kept out of the collector's way while requests are served."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys

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


def test_web_start_up_runs_no_collection_and_leaves_collection_enabled_with_its_heap_frozen() -> None:
    """The collections start-up would trigger free almost nothing and cost a tenth of a web process's start."""
    probe = """
import gc, sys
import uvicorn
from alle import cli

collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(info["generation"]))
# Stands in for serving: reports the collector's state at the moment the server would start listening.
uvicorn.Server.run = lambda self, sockets=None: print(len(collections), gc.isenabled(), gc.get_freeze_count())
cli.main(["web"])
"""
    env = {**os.environ, **OFFLINE_ENV}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    collections, enabled, frozen = done.stdout.split()
    assert (collections, enabled) == ("0", "True")
    assert int(frozen) > 50_000
