"""`alle worker`: Dramatiq worker threads in this process, plus the notification outbox sweep."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import dramatiq

from alle import jobs, repository
from alle.config import Settings
from alle.logs import get_logger

log = get_logger(__name__)

SWEEP_INTERVAL_SECONDS = 30
SWEEP_AGE_SECONDS = 60


def sweep_outbox(queue: jobs.Queue, runtime: jobs.Runtime) -> int:
    """Enqueue completions whose job the web process could not enqueue; returns how many."""
    with runtime.pool.connection() as conn:
        task_ids = repository.unenqueued_notifications(conn, older_than_seconds=SWEEP_AGE_SECONDS, limit=100)
        for task_id in task_ids:
            queue.notify_task_completed.send(str(task_id))
            repository.mark_notification_enqueued(conn, task_id=task_id)
    if task_ids:
        log.info("outbox sweep enqueued notifications", count=len(task_ids))
    return len(task_ids)


def run(settings: Settings) -> int:
    queue = jobs.create_queue(settings)
    runtime = jobs.build_runtime(settings)
    jobs.set_runtime(runtime)
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        log.info("worker stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker = dramatiq.Worker(queue.broker, worker_threads=settings.WORKER_THREADS, worker_timeout=500)
    worker.start()
    log.info("worker started", release=settings.RELEASE, threads=settings.WORKER_THREADS)
    while not stop.wait(SWEEP_INTERVAL_SECONDS):
        try:
            sweep_outbox(queue, runtime)
        except Exception as error:  # noqa: BLE001 - the next sweep tries again
            log.warning("outbox sweep failed", error=str(error))
    # Jobs still running after the grace period stay unacknowledged and are redelivered elsewhere.
    worker.stop(timeout=settings.SHUTDOWN_GRACE_SECONDS * 1000)
    queue.broker.close()
    runtime.pool.close()
    log.info("worker stopped")
    return 0
