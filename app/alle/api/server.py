"""How `alle web` serves the app: one uvicorn process, or WEB_CONCURRENCY of them forked by gunicorn.

Several processes are forked from one that has imported and built the app (gunicorn's preload), not spawned
afresh to import it again each: an instance with two starts in about the time of one, and its processes share
the start-up heap, frozen before the fork, instead of holding a copy each.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from fastapi import FastAPI

    from alle.api.app import Bounded
    from alle.config import Settings


def uvicorn_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """Every web process's uvicorn settings, whichever way it was started, loaded.

    Loading imports the HTTP protocol, the event loop and the lifespan's support, which uvicorn otherwise
    imports as it starts serving, with anyio's asyncio backend, which the lifespan's first anyio call would
    import: about 40 ms. Here they count as start-up (alle.cli._starting), and with several processes they are
    imported once, before the fork, instead of in each.
    """
    config = uvicorn.Config(
        app,
        host=str(settings.WEB_HOST),
        port=settings.PORT,
        log_config=None,
        access_log=False,  # the app writes its own access line (alle.api.access_log)
        # The API serves no WebSockets: neither their library (about 25 ms of start-up) nor the upgrade path.
        ws="none",
        # The client address and scheme come from alle.api.forwarded, by hops from the right; uvicorn's own
        # handling with "*" trusts the leftmost X-Forwarded-For entry, which the client writes.
        proxy_headers=False,
        # Shorter than Cloud Run's 10 s between SIGTERM and SIGKILL, so in-flight requests finish.
        timeout_graceful_shutdown=settings.SHUTDOWN_GRACE_SECONDS,
    )
    config.load()
    config.get_loop_factory()
    # Private to anyio: if a release moves it, the lifespan's first anyio call imports its backend, as it did.
    with contextlib.suppress(ImportError):
        import anyio._backends._asyncio  # noqa: F401
    return config


def server(app: Bounded, settings: Settings) -> Callable[[], int]:
    """What serves on WEB_HOST:PORT until SIGTERM or SIGINT has drained the requests in flight, returning 0 after a
    clean drain. Built apart from running it, so that its imports count as start-up (alle.cli._starting)."""
    config = uvicorn_config(app, settings)
    if settings.WEB_CONCURRENCY > 1:
        from alle.api.prefork import Prefork

        assert app.instance is not None, "Bounded makes one for WEB_CONCURRENCY > 1"
        return Prefork(config, settings, app.instance).serve
    return lambda: _serve_alone(config)


def _serve_alone(config: uvicorn.Config) -> int:
    # uvicorn re-raises the stop signal after its graceful shutdown; a clean drain should end with status 0, and
    # after SIGINT not with a KeyboardInterrupt's traceback.
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, lambda *_: sys.exit(0))
    uvicorn.Server(config).run()
    return 0
