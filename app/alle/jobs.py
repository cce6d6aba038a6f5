"""Background jobs on Dramatiq's Redis broker: at-least-once delivery, retries with backoff, dead letters.

A worker that dies mid-job leaves the message unacknowledged; once its heartbeat is older than
QUEUE_HEARTBEAT_TIMEOUT_SECONDS another worker requeues it. Handlers are idempotent, so a redelivery
has no second effect. Redis is not the record of what is owed: PostgreSQL is. The worker's outbox sweep
(`alle.worker`) enqueues again whatever is not done after a deadline, so a Redis that loses its data loses
no job. A job that exhausts its retries is dead-lettered into the `dead_jobs` table, where
`alle dead-jobs list` shows it and `alle dead-jobs retry` enqueues it again.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Middleware, TimeLimit, default_middleware
from psycopg.types.json import Jsonb

from alle import cache, reports
from alle.config import Settings
from alle.db import SILENT_SERVER, ConnectionBounds, Pool, create_pool
from alle.logs import get_logger
from alle.mail import Mailer, create_mailer
from alle.storage import Storage

log = get_logger(__name__)

QUEUE = "default"
NAMESPACE = "alle"
#: The longest an idle worker's consumer waits between fetches (Dramatiq's `worker_timeout`, ms), and so the
#: longest between its heartbeats. `alle.worker` passes it to the worker.
IDLE_POLL_MS = 500
#: How many times per heartbeat timeout, at least, an idle worker's consumer of a queue runs Dramatiq's
#: maintenance: the requeue of dead workers' unacknowledged messages.
_MAINTENANCE_RUNS_PER_HEARTBEAT_TIMEOUT = 8

#: PostgreSQL keeps the dead letters; Redis's own copy in its dead-letter set only ages out.
_REDIS_DEAD_MESSAGE_TTL_MS = 24 * 3600 * 1000
#: Namespace of the stable per-notification ids that mails carry (RFC 4122 name-based, version 5).
_NOTIFICATION_NAMESPACE = uuid.UUID("6f1d3a52-9a43-4c57-9b7e-0b8f4f1a6c21")


def maintenance_chance(heartbeat_timeout_ms: int) -> int:
    """Dramatiq's `maintenance_chance`: the share, per million broker commands, that also runs maintenance.

    Maintenance is what requeues a dead worker's jobs, once its heartbeat is older than the timeout; until it runs,
    those jobs wait. An idle consumer sends a command at least every IDLE_POLL_MS, so this chance runs maintenance
    at least _MAINTENANCE_RUNS_PER_HEARTBEAT_TIMEOUT times per timeout: a dead worker's jobs wait about 1.1
    timeouts (60 s: a 6.7 % chance), and with a timeout of 4 s or less every command runs it. The fixed 5 % chance
    before added a wait of its own after the timeout, about 7 s on average however short the timeout.
    """
    polls = heartbeat_timeout_ms / IDLE_POLL_MS
    return min(MAINTENANCE_SCALE, math.ceil(MAINTENANCE_SCALE * _MAINTENANCE_RUNS_PER_HEARTBEAT_TIMEOUT / polls))


@dataclass
class Runtime:
    """What handlers need; built once per worker process."""

    pool: Pool
    storage: Storage
    mailer: Mailer


_runtime: Runtime | None = None


def set_runtime(runtime: Runtime) -> None:
    global _runtime
    _runtime = runtime


def _rt() -> Runtime:
    if _runtime is None:
        raise RuntimeError("job handlers run only inside `alle worker`")
    return _runtime


def notification_id(task_id: uuid.UUID, kind: str = "task_completed") -> str:
    """The same id for every attempt at the same notification, so a repeated mail can be recognised."""
    return str(uuid.uuid5(_NOTIFICATION_NAMESPACE, f"{kind}/{task_id}"))


def notify_task_completed(task_id: str) -> None:
    """Send the completion mail at least once; a repeat carries the same notification id.

    The notification row stays locked from the claim through the send to the commit that stamps `sent_at`,
    so concurrent deliveries of the same job wait, then see it sent. A worker killed after the provider
    accepted the mail but before that commit leaves the row unsent, and the redelivered job sends it again.
    """
    runtime = _rt()
    with runtime.pool.connection() as conn, conn.transaction():
        notification = conn.execute(
            "SELECT n.id, t.title, u.email FROM notifications n "
            "JOIN tasks t ON t.id = n.task_id JOIN users u ON u.id = t.owner_id "
            "WHERE n.task_id = %s AND n.kind = 'task_completed' AND n.sent_at IS NULL FOR UPDATE OF n",
            (uuid.UUID(task_id),),
        ).fetchone()
        if notification is None:
            log.info("notification already sent or task gone", task_id=task_id)
            return
        runtime.mailer.send(
            to=notification["email"],
            subject=f"Task completed: {notification['title']}",
            body=f"Your task “{notification['title']}” is done.",
            notification_id=notification_id(uuid.UUID(task_id)),
        )
        conn.execute("UPDATE notifications SET sent_at = now() WHERE id = %s", (notification["id"],))
    log.info("notification sent", task_id=task_id)


def generate_report(report_id: str) -> None:
    runtime = _rt()
    written = reports.write_report(runtime.pool, runtime.storage, report_id=uuid.UUID(report_id))
    if written is None:
        log.warning("report not found; nothing to write", report_id=report_id)
        return
    log.info("report written", report_id=report_id, rows=written.rows, object_name=written.object_name)


#: Actor names are the handlers' names; the outbox sweep and the dead letters refer to jobs by them.
NOTIFY_ACTOR = notify_task_completed.__name__
REPORT_ACTOR = generate_report.__name__


class DeadLetters(Middleware):
    """Record a job that exhausted its retries in PostgreSQL, just before Redis moves it to its dead set.

    If PostgreSQL is unreachable at that moment the job is not recorded, and the outbox sweep enqueues it
    again after its deadline: it is never lost, at worst tried once more.
    """

    def before_nack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        error = message.options.get("traceback") or "(no traceback: the job failed without retrying)"
        # Dramatiq counts every failed attempt in `retries`: the first try plus each retry.
        attempts = message.options.get("retries", 0)
        try:
            with _rt().pool.connection() as conn:
                inserted = conn.execute(
                    "INSERT INTO dead_jobs (message_id, actor, args, kwargs, attempts, error) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
                    (
                        message.message_id,
                        message.actor_name,
                        Jsonb(list(message.args)),
                        Jsonb(message.kwargs),
                        attempts,
                        error,
                    ),
                ).fetchone()
        except Exception as db_error:  # noqa: BLE001 - the sweep enqueues the job again; say so, once
            recorded, detail = False, f"not recorded in PostgreSQL ({db_error}); the outbox sweep retries it"
        else:
            if inserted is None:
                return  # the nack is being retried after a Redis error; this job was recorded already
            recorded, detail = True, "see `alle dead-jobs list`"
        log.error(
            "job dead-lettered",
            actor=message.actor_name,
            job_id=message.message_id,
            args=list(message.args),
            attempts=attempts,
            error=_last_line(error),
            recorded=recorded,
            detail=detail,
        )


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


@dataclass
class Queue:
    broker: RedisBroker
    notify_task_completed: dramatiq.Actor[[str], None]
    generate_report: dramatiq.Actor[[str], None]


#: Socket timeout of the web process's enqueues: a Redis that hangs delays a request by about this (times the
#: client's retries), and the outbox sweep enqueues what did not get through. The worker keeps 10 s.
ENQUEUE_TIMEOUT_SECONDS = 0.5


def create_queue(settings: Settings, *, timeout: float = 10) -> Queue:
    """Declare the actors on a broker built from the settings (never Dramatiq's global default)."""
    broker = RedisBroker(  # type: ignore[no-untyped-call]
        middleware=[middleware() for middleware in default_middleware if middleware is not TimeLimit],
        client=cache.create_client(settings, timeout=timeout),
        namespace=NAMESPACE,
        heartbeat_timeout=settings.QUEUE_HEARTBEAT_TIMEOUT_SECONDS * 1000,
        maintenance_chance=maintenance_chance(settings.QUEUE_HEARTBEAT_TIMEOUT_SECONDS * 1000),
        dead_message_ttl=_REDIS_DEAD_MESSAGE_TTL_MS,
    )
    broker.add_middleware(DeadLetters())
    options: dict[str, Any] = {
        "broker": broker,
        "queue_name": QUEUE,
        "max_retries": settings.QUEUE_MAX_RETRIES,
        "min_backoff": settings.QUEUE_MIN_BACKOFF_MS,
        "max_backoff": 15 * 60 * 1000,
    }
    return Queue(
        broker=broker,
        notify_task_completed=dramatiq.actor(notify_task_completed, **options),
        generate_report=dramatiq.actor(generate_report, **options),
    )


#: What bounds an attempt, in place of Dramatiq's TimeLimit. TimeLimit raises an exception into the job's thread
#: from another: it cannot stop a job blocked in libpq (it lands when the query returns), and landing in psycopg
#: pool's wait for a connection it loses that connection for good. So each blocking step is bounded where it
#: blocks instead. PostgreSQL cancels a job's statement after 60 s and its wait for a row lock after 30 s (the job
#: fails and is retried), and a server that stops answering is given up after about 30 s (alle.db.SILENT_SERVER).
#: The mail API's connect, write and each read time out after 10 s (alle.mail), each bucket call after 4 s with 5 s
#: of retries (alle.storage), and the wait for a pooled connection after 10 s.
JOB_BOUNDS = ConnectionBounds(
    server_settings={"statement_timeout": "60s", "lock_timeout": "30s"}, connection=SILENT_SERVER
)


def build_runtime(settings: Settings) -> Runtime:
    pool = create_pool(
        settings,
        max_size=min(settings.WORKER_THREADS + 1, settings.DATABASE_POOL_SIZE),
        name="worker",
        bounds=JOB_BOUNDS,
    )
    pool.open()
    return Runtime(pool=pool, storage=Storage(settings), mailer=create_mailer(settings))


@dataclass(frozen=True)
class DeadJob:
    message_id: str
    actor: str
    args: list[Any]
    attempts: int
    error: str
    failed_at: str

    def as_json(self) -> str:
        return json.dumps(
            {
                "id": self.message_id,
                "actor": self.actor,
                "args": self.args,
                "attempts": self.attempts,
                "error": _last_line(self.error),
                "failed_at": self.failed_at,
            }
        )


def dead_jobs(pool: Pool) -> list[DeadJob]:
    """The dead-lettered jobs not retried yet, oldest first."""
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT message_id, actor, args, attempts, error, failed_at FROM dead_jobs "
            "WHERE retried_at IS NULL ORDER BY failed_at, message_id"
        ).fetchall()
    return [
        DeadJob(r["message_id"], r["actor"], r["args"], r["attempts"], r["error"], r["failed_at"].isoformat())
        for r in rows
    ]


def retry_dead_jobs(queue: Queue, pool: Pool, message_ids: list[str] | None = None) -> int:
    """Enqueue dead jobs again (all, or those named) as new messages with a fresh retry budget.

    Rows are locked while their jobs are enqueued, so two concurrent retries do not both send one job;
    a crash before the commit leaves them dead, and retrying them again is harmless (handlers are idempotent).
    """
    retried = 0
    with pool.connection() as conn, conn.transaction():
        rows = conn.execute(
            "SELECT message_id, actor, args, kwargs FROM dead_jobs WHERE retried_at IS NULL "
            "AND (%(ids)s::text[] IS NULL OR message_id = ANY(%(ids)s)) "
            "ORDER BY failed_at FOR UPDATE SKIP LOCKED",
            {"ids": message_ids or None},
        ).fetchall()
        for row in rows:
            try:
                actor = queue.broker.get_actor(row["actor"])
            except ActorNotFound:
                log.warning("dead job left alone: this release has no such actor", job_id=row["message_id"])
                continue
            sent = actor.send(*row["args"], **row["kwargs"])
            conn.execute(
                "UPDATE dead_jobs SET retried_at = now(), retried_as = %s WHERE message_id = %s",
                (sent.message_id, row["message_id"]),
            )
            retried += 1
    return retried
