"""One-off admin processes (twelve-factor XII): same image, same config, run as Cloud Run jobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alle import reports, repository
from alle.config import Settings
from alle.db import create_pool
from alle.logs import get_logger
from alle.storage import Storage

log = get_logger(__name__)

BATCH = 500


def cleanup_old_tasks(settings: Settings, *, older_than_days: int) -> int:
    """Delete in committed batches so a long run holds no long locks and an interrupted run loses nothing."""
    cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
    storage = Storage(settings)
    deleted_total = objects_total = 0
    with create_pool(settings, max_size=1, name="cleanup") as pool:
        while True:
            with pool.connection() as conn:
                deleted, objects = repository.delete_completed_before(conn, cutoff=cutoff, batch=BATCH)
            for name in objects:
                storage.delete(name)
            deleted_total += deleted
            objects_total += len(objects)
            if deleted < BATCH:
                break
    log.info(
        "cleanup finished",
        deleted_tasks=deleted_total,
        deleted_objects=objects_total,
        cutoff=cutoff.isoformat(),
        older_than_days=older_than_days,
    )
    return 0


def generate_report(settings: Settings) -> int:
    with create_pool(settings, max_size=1, name="report") as pool:
        with pool.connection() as conn:
            report = repository.create_report(conn, owner_id=None)
        rows = reports.write_report(pool, Storage(settings), report_id=report["id"])
    log.info(
        "report written",
        report_id=str(report["id"]),
        object_name=reports.object_name(report["id"]),
        bucket=settings.STORAGE_BUCKET,
        rows=rows,
    )
    return 0
