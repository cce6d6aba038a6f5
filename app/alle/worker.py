"""`alle worker`: Dramatiq worker threads in this process, plus the outbox sweep that makes Redis disposable."""

from __future__ import annotations

import signal
import threading

import dramatiq

from alle import jobs
from alle.config import Settings
from alle.logs import get_logger

log = get_logger(__name__)

SWEEP_INTERVAL_SECONDS = 30
#: What Cloud Run (SIGTERM) and a terminal (SIGINT) send to stop the worker.
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
#: A completion or report the web could not enqueue (Redis was down) is enqueued by the sweep after this long.
UNENQUEUED_AFTER_SECONDS = 60
#: A job enqueued this long ago and still not done is enqueued again: Redis may have lost it. Each step of an
#: attempt is bounded (alle.jobs.JOB_BOUNDS), so a copy seldom meets a running attempt; when it does (a late
#: retry), nothing happens twice: handlers are idempotent, and a notification's row stays locked from its claim to
#: the commit of its send, which the sweep skips and the copy waits for (or, after 30 s, is retried).
REDELIVER_AFTER_SECONDS = 10 * 60
SWEEP_BATCH = 100

_DUE_NOTIFICATIONS = f"""
    SELECT n.id, n.task_id FROM notifications n
    WHERE n.sent_at IS NULL
      AND (n.enqueued_at IS NULL AND n.created_at < now() - make_interval(secs => %(unenqueued)s)
           OR n.enqueued_at < now() - make_interval(secs => %(redeliver)s))
      AND NOT EXISTS (SELECT 1 FROM dead_jobs d WHERE d.retried_at IS NULL
                      AND d.actor = '{jobs.NOTIFY_ACTOR}' AND d.args ->> 0 = n.task_id::text)
    ORDER BY n.created_at LIMIT %(limit)s
    FOR UPDATE OF n SKIP LOCKED
"""

_DUE_REPORTS = f"""
    SELECT r.id FROM reports r
    WHERE r.status = 'pending' AND r.owner_id IS NOT NULL
      AND (r.enqueued_at IS NULL AND r.created_at < now() - make_interval(secs => %(unenqueued)s)
           OR r.enqueued_at < now() - make_interval(secs => %(redeliver)s))
      AND NOT EXISTS (SELECT 1 FROM dead_jobs d WHERE d.retried_at IS NULL
                      AND d.actor = '{jobs.REPORT_ACTOR}' AND d.args ->> 0 = r.id::text)
    ORDER BY r.created_at LIMIT %(limit)s
    FOR UPDATE OF r SKIP LOCKED
"""


def sweep_outbox(
    queue: jobs.Queue,
    runtime: jobs.Runtime,
    *,
    unenqueued_after: int = UNENQUEUED_AFTER_SECONDS,
    redeliver_after: int = REDELIVER_AFTER_SECONDS,
) -> int:
    """Enqueue every notification and report that is owed and overdue; returns how many.

    PostgreSQL, not Redis, knows what is owed: an unsent notification or a pending report. Rows are locked
    with SKIP LOCKED, so two sweeping workers do not both enqueue a job, and a notification whose mail is
    being sent right now (its handler holds the row) is left alone. Dead-lettered jobs wait for
    `alle dead-jobs retry`.
    """
    params = {"unenqueued": unenqueued_after, "redeliver": redeliver_after, "limit": SWEEP_BATCH}
    with runtime.pool.connection() as conn, conn.transaction():
        notifications = conn.execute(_DUE_NOTIFICATIONS, params).fetchall()
        for row in notifications:
            queue.notify_task_completed.send(str(row["task_id"]))
            conn.execute("UPDATE notifications SET enqueued_at = now() WHERE id = %s", (row["id"],))
        due_reports = conn.execute(_DUE_REPORTS, params).fetchall()
        for row in due_reports:
            queue.generate_report.send(str(row["id"]))
            conn.execute("UPDATE reports SET enqueued_at = now() WHERE id = %s", (row["id"],))
    if notifications or due_reports:
        log.info("outbox sweep enqueued jobs", notifications=len(notifications), reports=len(due_reports))
    return len(notifications) + len(due_reports)


def _sweep_every_interval(queue: jobs.Queue, runtime: jobs.Runtime, stopping: threading.Event) -> None:
    """From the worker's start, then every SWEEP_INTERVAL_SECONDS until the worker stops."""
    while not stopping.is_set():
        try:
            sweep_outbox(queue, runtime)
        except Exception as error:  # noqa: BLE001 - the next sweep tries again
            log.warning("outbox sweep failed", error=str(error))
        stopping.wait(SWEEP_INTERVAL_SECONDS)


def run(settings: Settings) -> int:
    # Blocked before any thread starts, so every thread inherits the mask, and taken by the main thread's sigwait
    # below: a stop can neither wait on another thread nor hang in a handler. With a handler that set a
    # threading.Event, a SIGTERM that came while the main thread held the Event's lock (entering or leaving its
    # wait) deadlocked it, and one the kernel handed to another thread left it asleep until the next sweep, 30 s
    # on, past Cloud Run's 10 s before SIGKILL (one stop in 40 ran into the kill, here). A child process would
    # inherit the mask: one started from here must clear it (os.posix_spawn's setsigmask).
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    queue = jobs.create_queue(settings)
    runtime = jobs.build_runtime(settings)
    jobs.set_runtime(runtime)
    worker = dramatiq.Worker(queue.broker, worker_threads=settings.WORKER_THREADS, worker_timeout=jobs.IDLE_POLL_MS)
    worker.start()
    # The sweep has a thread of its own, so that a stop never waits for it: one blocked behind a lock (a migration's
    # ALTER TABLE) held the stop for up to 30 s when it ran here, past Cloud Run's SIGKILL. Stopped mid-sweep, its
    # transaction is rolled back with its connection, and a job it had sent already is one more redelivery.
    stopping = threading.Event()
    sweeper = threading.Thread(
        target=_sweep_every_interval, args=(queue, runtime, stopping), name="outbox-sweep", daemon=True
    )
    sweeper.start()
    log.info("worker started", release=settings.RELEASE, threads=settings.WORKER_THREADS)
    received = signal.sigwait(STOP_SIGNALS)
    log.info("worker stopping", signal=signal.Signals(received).name)
    stopping.set()
    # Jobs still running after the grace period stay unacknowledged and are redelivered elsewhere.
    worker.stop(timeout=settings.SHUTDOWN_GRACE_SECONDS * 1000)
    queue.broker.close()
    runtime.pool.close()
    # A sweep that is not blocked ends here, rather than logging while the interpreter shuts down (which aborts a
    # process whose daemon thread holds stdout's lock); one blocked in the database is left behind.
    sweeper.join(timeout=1)
    log.info("worker stopped")
    return 0
