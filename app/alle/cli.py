"""`alle`: the one entrypoint of the image. Each process type is a subcommand (twelve-factor VI, XII)."""

from __future__ import annotations

import argparse
import gc
import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alle.config import Settings


@contextmanager
def _starting() -> Iterator[None]:
    """No garbage collection while a process imports its libraries and builds what it runs.

    A web process's start allocates about 100,000 tracked objects that live as long as the process: modules,
    classes, the app. The 130 or so collections their allocation triggers free under a thousand objects between
    them and cost about 50 ms of CPU, 5% of the start (bench/startup.py). Collection resumes afterwards, with
    that heap frozen out of it.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _web(settings: Settings, _: argparse.Namespace) -> int:
    with _starting():
        from alle.api.app import create_app
        from alle.api.server import server

        serve = server(create_app(settings), settings)
    return serve()


def _worker(settings: Settings, _: argparse.Namespace) -> int:
    # Held from here: a stop signal during the imports waits for the worker's sigwait (alle.worker.run).
    # Otherwise SIGTERM's default action kills a half-started worker, or, as PID 1 in the container, drops the
    # signal, and SIGINT raises KeyboardInterrupt wherever the import is.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    with _starting():
        from alle.worker import run

    return run(settings)


def _migrate(settings: Settings, _: argparse.Namespace) -> int:
    from alle.migrate import run

    return run(settings)


def _cleanup(settings: Settings, args: argparse.Namespace) -> int:
    from alle.admin import cleanup_old_tasks

    return cleanup_old_tasks(settings, older_than_days=args.older_than_days, dry_run=args.dry_run)


def _prune_sessions(settings: Settings, _: argparse.Namespace) -> int:
    from alle.admin import prune_sessions

    return prune_sessions(settings)


def _report(settings: Settings, _: argparse.Namespace) -> int:
    from alle.admin import generate_report

    return generate_report(settings)


def _dead_jobs(settings: Settings, args: argparse.Namespace) -> int:
    from alle import jobs
    from alle.db import create_pool

    with create_pool(settings, max_size=1, name="dead-jobs") as pool:
        if args.action == "list":
            for job in jobs.dead_jobs(pool):
                print(job.as_json())
            return 0
        queue = jobs.create_queue(settings)
        try:
            count = jobs.retry_dead_jobs(queue, pool, args.ids or None)
        finally:
            queue.broker.close()
    print(json.dumps({"retried": count}))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alle", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "web", help="serve HTTP on $WEB_HOST:$PORT (WEB_HOST: every IPv4 address unless set)"
    ).set_defaults(run=_web)
    commands.add_parser("worker", help="consume background jobs until SIGTERM").set_defaults(run=_worker)
    commands.add_parser("migrate", help="apply database migrations (idempotent)").set_defaults(run=_migrate)
    cleanup = commands.add_parser(
        "cleanup-old-tasks",
        help="delete tasks done, and neither changed nor given an attachment, for DAYS days",
    )
    cleanup.add_argument("--older-than-days", type=int, default=30, choices=range(1, 3651), metavar="DAYS")
    cleanup.add_argument("--dry-run", action="store_true", help="print what would be deleted; delete nothing")
    cleanup.set_defaults(run=_cleanup)
    commands.add_parser("prune-sessions", help="delete expired sessions").set_defaults(run=_prune_sessions)
    commands.add_parser("generate-report", help="write a CSV of all tasks to the bucket").set_defaults(run=_report)
    dead = commands.add_parser("dead-jobs", help="inspect or retry jobs that exhausted their retries")
    dead.add_argument("action", choices=["list", "retry"])
    dead.add_argument("ids", nargs="*", help="message ids to retry (default: all)")
    dead.set_defaults(run=_dead_jobs)
    return parser


def main(argv: list[str] | None = None) -> None:
    with _starting():
        args = _parser().parse_args(argv)
        from alle.config import get_settings
        from alle.logs import configure

        settings = get_settings()
        configure(settings.LOG_LEVEL.value)
    run: Callable[[Settings, argparse.Namespace], int] = args.run
    try:
        code = run(settings, args)
    finally:
        # The process is exiting (also by SystemExit, as web does on SIGTERM): the interpreter's last garbage
        # collections would walk the whole heap, about 120,000 objects and 0.5 s of CPU, for memory the OS
        # reclaims anyway. Frozen objects are left out of them.
        gc.freeze()
    sys.exit(code)
