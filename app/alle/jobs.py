"""Background jobs on Dramatiq's Redis broker: at-least-once delivery, retries with backoff, dead letters.

A worker that dies mid-job leaves the message unacknowledged; once its heartbeat is older than
QUEUE_HEARTBEAT_TIMEOUT_SECONDS another worker requeues it. Handlers are idempotent, so a redelivery
has no second effect. A job that exhausts its retries is kept in the dead-letter set, where
`alle dead-jobs list` shows it and `alle dead-jobs retry` enqueues it again.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any, cast

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.message import Message

from alle import cache, reports, repository
from alle.config import Settings
from alle.db import Pool, create_pool
from alle.logs import get_logger
from alle.mail import Mailer, create_mailer
from alle.storage import Storage

log = get_logger(__name__)

QUEUE = "default"
NAMESPACE = "alle"
#: Fraction (per million broker commands) that runs the requeue of dead workers' messages.
_MAINTENANCE_CHANCE = 50_000


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


def notify_task_completed(task_id: str) -> None:
    """Send the completion mail once: the notification row is locked, sent, then stamped in one transaction."""
    runtime = _rt()
    with runtime.pool.connection() as conn, conn.transaction():
        notification = repository.claim_notification(conn, task_id=uuid.UUID(task_id))
        if notification is None:
            log.info("notification already sent or task gone", task_id=task_id)
            return
        runtime.mailer.send(
            to=notification["email"],
            subject=f"Task completed: {notification['title']}",
            body=f"Your task “{notification['title']}” is done.",
        )
        repository.mark_notification_sent(conn, notification_id=notification["id"])
    log.info("notification sent", task_id=task_id)


def generate_report(report_id: str) -> None:
    runtime = _rt()
    rows = reports.write_report(runtime.pool, runtime.storage, report_id=uuid.UUID(report_id))
    log.info("report written", report_id=report_id, rows=rows)


@dataclass
class Queue:
    broker: RedisBroker
    notify_task_completed: dramatiq.Actor[[str], None]
    generate_report: dramatiq.Actor[[str], None]


def create_queue(settings: Settings) -> Queue:
    """Declare the actors on a broker built from the settings (never Dramatiq's global default)."""
    broker = RedisBroker(  # type: ignore[no-untyped-call]
        client=cache.create_client(settings, timeout=10),
        namespace=NAMESPACE,
        heartbeat_timeout=settings.QUEUE_HEARTBEAT_TIMEOUT_SECONDS * 1000,
        maintenance_chance=_MAINTENANCE_CHANCE,
    )
    options: dict[str, Any] = {
        "broker": broker,
        "queue_name": QUEUE,
        "max_retries": settings.QUEUE_MAX_RETRIES,
        "min_backoff": settings.QUEUE_MIN_BACKOFF_MS,
        "max_backoff": 15 * 60 * 1000,
        "time_limit": 5 * 60 * 1000,
    }
    return Queue(
        broker=broker,
        notify_task_completed=dramatiq.actor(notify_task_completed, **options),
        generate_report=dramatiq.actor(generate_report, **options),
    )


def build_runtime(settings: Settings) -> Runtime:
    pool = create_pool(settings, max_size=min(settings.WORKER_THREADS + 1, settings.DATABASE_POOL_SIZE), name="worker")
    pool.open()
    return Runtime(pool=pool, storage=Storage(settings), mailer=create_mailer(settings))


def _dead_keys() -> tuple[str, str]:
    xq = f"{NAMESPACE}:{QUEUE}.XQ"
    return xq, f"{xq}.msgs"


def dead_jobs(queue: Queue) -> list[Message[Any]]:
    """The dead-lettered jobs, oldest first."""
    ids_key, messages_key = _dead_keys()
    client = queue.broker.client
    ids = cast(list[bytes], client.zrange(ids_key, 0, -1))
    raw = cast(list[bytes | None], client.hmget(messages_key, ids)) if ids else []
    return [Message.decode(item) for item in raw if item is not None]


def retry_dead_jobs(queue: Queue, message_ids: list[str] | None = None) -> int:
    """Enqueue dead jobs again (all, or those named) with a fresh retry budget; returns how many."""
    ids_key, messages_key = _dead_keys()
    client = queue.broker.client
    retried = 0
    for message in dead_jobs(queue):
        if message_ids and message.message_id not in message_ids:
            continue
        redis_id = message.options["redis_message_id"]
        queue.broker.enqueue(dataclasses.replace(message, queue_name=QUEUE, options={}))
        client.zrem(ids_key, redis_id)
        client.hdel(messages_key, redis_id)
        retried += 1
    return retried
