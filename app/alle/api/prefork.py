"""WEB_CONCURRENCY > 1: gunicorn's arbiter forks that many uvicorn processes from the one that built the app.

The arbiter binds the port, restarts a process that dies, and on SIGTERM has each drain as a single process does,
then exits 0. A process that fails to start (its lifespan raised) stops the arbiter with a non-zero status
rather than being restarted over and over.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import uvicorn
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger
from uvicorn_worker import UvicornWorker

from alle.api.server import HOST, uvicorn_options

if TYPE_CHECKING:
    from fastapi import FastAPI

    from alle.config import Settings


def _not_a_double_close(record: logging.LogRecord) -> bool:
    """Each process's uvicorn closes the asyncio server that owns the listening socket, then gunicorn closes the
    socket again and logs the EBADF, on every stop: harmless and known (benoitc/gunicorn#3013), but it reads
    like a fault."""
    return not (record.msg == "Error while closing socket %s" and "Bad file descriptor" in str(record.args))


class JsonLog(Logger):
    """gunicorn's own lines (a process booted, exited, timed out) go through the app's JSON logging on stdout."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)  # with no error log or access log configured, it adds no handler of its own
        self.error_log.propagate = True
        self.error_log.addFilter(_not_a_double_close)


class WebProcess(UvicornWorker):  # type: ignore[misc]  # uvicorn-worker ships no type hints
    """One forked process: uvicorn with exactly the settings a single `alle web` process runs with."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # UvicornWorker gives uvicorn's logger gunicorn's handlers, none here, and cuts it off from the root's.
        logging.getLogger("uvicorn.error").propagate = True
        self.config = uvicorn.Config(
            self.app.application,
            timeout_notify=self.timeout,
            callback_notify=self.callback_notify,
            **self.app.uvicorn_options,
        )


class Prefork(BaseApplication):
    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.application = app
        self.settings = settings
        self.uvicorn_options = uvicorn_options(settings)
        super().__init__()

    def load_config(self) -> None:
        settings = self.settings
        options = {
            "bind": f"{HOST}:{settings.PORT}",
            "workers": settings.WEB_CONCURRENCY,
            "worker_class": WebProcess,
            "preload_app": True,
            # Each process drains for SHUTDOWN_GRACE_SECONDS (uvicorn's own limit); the arbiter kills what is
            # left a second later, within Cloud Run's 10 s.
            "graceful_timeout": settings.SHUTDOWN_GRACE_SECONDS + 1,
            "logger_class": JsonLog,
            "errorlog": None,
            "loglevel": settings.LOG_LEVEL.value,
            # Its admin socket (worker counts, reloads) would be one more way in, and nothing here uses it.
            "control_socket_disable": True,
            "proc_name": "alle-web",
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> FastAPI:
        return self.application

    def serve(self) -> int:
        """The arbiter ends the run with sys.exit: its status, 0 after a clean drain."""
        try:
            self.run()
        except SystemExit as done:
            return done.code if isinstance(done.code, int) else int(done.code is not None)
        return 0
