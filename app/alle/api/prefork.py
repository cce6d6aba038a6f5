"""WEB_CONCURRENCY > 1: gunicorn's arbiter forks that many uvicorn processes from the one that built the app.

The arbiter binds the port, restarts a process that dies, and on SIGTERM or SIGINT has each drain as a single
process does, then exits 0. A process that fails to start (its lifespan raised) stops the arbiter with a non-zero
status rather than being restarted over and over.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import TYPE_CHECKING, Any

import uvicorn
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.glogging import Logger
from uvicorn_worker import UvicornWorker

from alle.logs import get_logger

if TYPE_CHECKING:
    from alle.api.limits import InstanceLoad
    from alle.config import Settings


log = get_logger(__name__)

#: The signals by which the arbiter stops its processes: SIGTERM and SIGINT to drain, SIGQUIT at once.
STOPS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}


def _not_a_double_close(record: logging.LogRecord) -> bool:
    """Each process's uvicorn closes the asyncio server that owns the listening socket, then gunicorn closes the
    socket again and logs the EBADF, on every stop: harmless and known (benoitc/gunicorn#3013), but it reads
    like a fault."""
    return not (record.msg == "Error while closing socket %s" and "Bad file descriptor" in str(record.args))


def _quit_before_serving(signum: int, frame: object) -> None:
    os._exit(0)


class JsonLog(Logger):
    """gunicorn's own lines (a process booted, exited, timed out) go through the app's JSON logging on stdout."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)  # with no error log or access log configured, it adds no handler of its own
        self.error_log.propagate = True
        self.error_log.addFilter(_not_a_double_close)


class WebProcess(UvicornWorker):  # type: ignore[misc]  # uvicorn-worker ships no type hints
    """One forked process: uvicorn with exactly the settings a single `alle web` process runs with.

    It sends the arbiter no heartbeat: the arbiter checks none (its timeout is 0, see Prefork).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # UvicornWorker gives uvicorn's loggers gunicorn's handlers, none here, and cuts them off from the root's.
        # The error log goes to the root's; the access log stays without any, as a single process has it: the app
        # writes its own access line (alle.api.access_log), and uvicorn writes one only to a logger with handlers.
        logging.getLogger("uvicorn.error").propagate = True
        logging.getLogger("uvicorn.access").handlers = []
        self.config = self.app.config

    def init_signals(self) -> None:
        super().init_signals()
        # A terminal's Ctrl-C reaches every process of the group, and the arbiter turns it into a SIGTERM for each
        # (Drainer). Acting on it too could only end a drain early, or the process by SIGINT, which the arbiter logs
        # as a fault. uvicorn still takes it while serving, then re-raises it when done: here, to no effect.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # Held since the fork (Drainer.spawn_worker). A SIGTERM or SIGQUIT that came since ends the process here,
        # before it has served anything, so nothing is cut; left to their default actions, SIGQUIT's would also
        # dump core. A held SIGINT is dropped by SIG_IGN.
        if {signal.SIGTERM, signal.SIGQUIT} & signal.sigpending():
            self.log.info("Worker (pid:%s) stopped before serving: a stop came as it started", self.pid)
            os._exit(0)
        # Until uvicorn-worker sets its own (in _serve), a SIGQUIT also ends the process at once, not by its
        # default action; a SIGTERM does by its default action, as uvicorn-worker set it.
        signal.signal(signal.SIGQUIT, _quit_before_serving)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)


class Drainer(Arbiter):
    """SIGINT stops the processes as SIGTERM does, each draining first; gunicorn's own SIGINT sends them a SIGQUIT,
    which uvicorn-worker hands to gunicorn's worker loop, unused here, so nothing drained and the arbiter killed
    them after its graceful timeout (uvicorn-worker#2). `podman run -it … web` and a Ctrl-C send SIGINT."""

    handle_int = Arbiter.handle_term

    def __init__(self, app: Prefork) -> None:
        super().__init__(app)
        self.instance = app.instance
        #: The slot in `instance` of each process, by pid, until it has exited.
        self.slots: dict[int, int] = {}

    def spawn_worker(self) -> int:
        """Forks with the stop signals held until the new process has its own handlers (WebProcess.init_signals).

        Until then it runs the arbiter's, which only queue the signal for the arbiter's loop, and the process
        never runs that loop. A stop sent in those few milliseconds, as when SIGTERM comes as an instance starts,
        was lost: the process went on to serve, and the arbiter killed it at its 9 s limit.

        The new process gets the lowest free slot in `instance`: a replacement, the one of the process it replaces.
        """
        self.free_slots()
        free = sorted(set(range(self.instance.slots)) - set(self.slots.values()))
        self.instance.slot = free[0] if free else None
        if not free:
            log.warning(
                "no in-flight slot left for a new web process; it keeps to its own bound", slots=self.instance.slots
            )
        signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
        try:
            pid = int(super().spawn_worker())
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
        if free:
            self.slots[pid] = free[0]
        return pid

    def free_slots(self) -> None:
        """Zeroes and frees the slot of each process that has exited: it may have died with requests in flight."""
        for pid in [pid for pid in self.slots if pid not in self.WORKERS]:
            self.instance.clear(self.slots.pop(pid))


def _free_slots(arbiter: Drainer, worker: object) -> None:
    """gunicorn's child_exit hook, run in the arbiter once it has reaped a process."""
    arbiter.free_slots()


class Prefork(BaseApplication):
    def __init__(self, config: uvicorn.Config, settings: Settings, instance: InstanceLoad) -> None:
        self.config = config  # loaded (alle.api.server.uvicorn_config): each process serves with a copy
        self.settings = settings
        self.instance = instance  # the app's in-flight bound reads it (alle.api.limits)
        super().__init__()

    def load_config(self) -> None:
        settings = self.settings
        options = {
            "bind": f"{settings.WEB_HOST}:{settings.PORT}",
            "workers": settings.WEB_CONCURRENCY,
            "worker_class": WebProcess,
            "preload_app": True,
            # Each process drains for SHUTDOWN_GRACE_SECONDS (uvicorn's own limit, at most 8 s) and closes its pools;
            # the arbiter kills what is left at 9 s, before Cloud Run kills the instance at 10 s.
            "graceful_timeout": 9,
            # No heartbeat: by default the arbiter kills a process whose event loop has not reported for 30 s. Cloud
            # Run all but stops an instance's CPU between requests (cpu_idle, components/services.py), so every
            # idle spell past 30 s would end in killing both processes, and with them the request that woke the
            # instance. Google's Cloud Run samples run gunicorn with --timeout 0 for this reason.
            "timeout": 0,
            "logger_class": JsonLog,
            "errorlog": None,
            "loglevel": settings.LOG_LEVEL.value,
            # Its admin socket (worker counts, reloads) would be one more way in, and nothing here uses it.
            "control_socket_disable": True,
            "child_exit": _free_slots,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.config.app

    def serve(self) -> int:
        """The arbiter ends the run with sys.exit: its status, 0 after a clean drain."""
        try:
            Drainer(self).run()
        except SystemExit as done:
            return done.code if isinstance(done.code, int) else int(done.code is not None)
        return 0
