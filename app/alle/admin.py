"""One-off admin processes (twelve-factor XII): same image, same config, run as Cloud Run jobs.

Each works in committed batches, so a long run holds no long locks and an interrupted run loses nothing;
rerunning one finishes what the last run left.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from alle import cache, reports
from alle.config import Settings
from alle.db import Pool, create_pool
from alle.logs import get_logger
from alle.storage import Storage

log = get_logger(__name__)

BATCH = 500

#: The cleanup rule: a task is deleted when it is done, was completed before the cutoff, has not been changed
#: since (`updated_at`, which every edit stamps), and got no attachment since. A done task edited today stays.
_OLD_TASKS = """
    SELECT t.id, t.owner_id, t.completed_at, t.updated_at,
           (SELECT count(*) FROM attachments a WHERE a.task_id = t.id) AS attachments
    FROM tasks t
    WHERE t.status = 'done' AND t.completed_at < %(cutoff)s AND t.updated_at < %(cutoff)s
      AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.task_id = t.id AND a.created_at >= %(cutoff)s)
    ORDER BY t.completed_at, t.id
"""


def cleanup_old_tasks(settings: Settings, *, older_than_days: int, dry_run: bool = False) -> int:
    """Delete old completed tasks, their attachments' objects and their cache entries (see `_OLD_TASKS`).

    Each batch's cache entries are invalidated after its commit the way the web invalidates them
    (`cache.invalidate`): deleted, or, while Redis cannot be reached, retired by bumping the cache epoch in
    PostgreSQL. So a deleted task is never served from the cache, even by a Redis that comes back with its data.
    With `dry_run` it only prints what it would delete.
    """
    client = cache.create_client(settings)
    storage = Storage(settings)
    deleted_total = objects_total = failed_objects = 0
    with create_pool(settings, max_size=1, name="cleanup") as pool:
        with pool.connection() as conn:
            row = conn.execute("SELECT now() - make_interval(days => %s) AS cutoff", (older_than_days,)).fetchone()
        assert row is not None
        cutoff = row["cutoff"]
        summary: dict[str, Any] = {"cutoff": cutoff.isoformat(), "older_than_days": older_than_days}
        if dry_run:
            return _dry_run(pool, cutoff, summary)
        while True:
            with pool.connection() as conn, conn.transaction():
                doomed = conn.execute(
                    f"{_OLD_TASKS} LIMIT %(batch)s FOR UPDATE OF t SKIP LOCKED", {"cutoff": cutoff, "batch": BATCH}
                ).fetchall()
                ids = [r["id"] for r in doomed]
                objects = [
                    r["object_name"]
                    for r in conn.execute(
                        "SELECT object_name FROM attachments WHERE task_id = ANY(%s)", (ids,)
                    ).fetchall()
                ]
                conn.execute("DELETE FROM tasks WHERE id = ANY(%s)", (ids,))
            if ids:
                cache.invalidate(client, pool, [cache.task_key(i) for i in ids])
            for name in objects:
                try:
                    storage.delete(name)
                except Exception as error:  # noqa: BLE001 - the task is gone; report the orphan and go on
                    failed_objects += 1
                    log.error(
                        "could not delete attachment object; delete it by hand", object_name=name, error=str(error)
                    )
            deleted_total += len(ids)
            objects_total += len(objects)
            if len(ids) < BATCH:
                break
    log.info("cleanup finished", deleted_tasks=deleted_total, deleted_objects=objects_total - failed_objects, **summary)
    return 1 if failed_objects else 0


def _dry_run(pool: Pool, cutoff: datetime, summary: dict[str, Any]) -> int:
    tasks = attachments = 0
    with pool.connection() as conn, conn.transaction():
        cursor = conn.cursor(name="cleanup_dry_run")
        for row in cursor.execute(_OLD_TASKS, {"cutoff": cutoff}):
            tasks += 1
            attachments += row["attachments"]
            log.info(
                "would delete task",
                task_id=str(row["id"]),
                owner_id=str(row["owner_id"]),
                completed_at=row["completed_at"].isoformat(),
                updated_at=row["updated_at"].isoformat(),
                attachments=row["attachments"],
            )
    log.info(
        "cleanup dry run finished; nothing was deleted",
        would_delete_tasks=tasks,
        would_delete_objects=attachments,
        **summary,
    )
    return 0


def prune_sessions(settings: Settings) -> int:
    """Delete expired sessions from PostgreSQL and invalidate their cache entries as the web does (see
    `cleanup_old_tasks`): run nightly as a Cloud Run job."""
    client = cache.create_client(settings)
    deleted_total = 0
    with create_pool(settings, max_size=1, name="prune-sessions") as pool:
        while True:
            with pool.connection() as conn:
                hashes = [
                    r["token_hash"]
                    for r in conn.execute(
                        "DELETE FROM sessions WHERE token_hash IN (SELECT token_hash FROM sessions "
                        "WHERE expires_at <= now() ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED) "
                        "RETURNING token_hash",
                        (BATCH,),
                    ).fetchall()
                ]
            if hashes:
                cache.invalidate(client, pool, [cache.session_key(h) for h in hashes])
            deleted_total += len(hashes)
            if len(hashes) < BATCH:
                break
    log.info("expired sessions pruned", deleted_sessions=deleted_total)
    return 0


def generate_report(settings: Settings) -> int:
    with create_pool(settings, max_size=1, name="report") as pool:
        report_id = reports.create_report(pool, owner_id=None)
        written = reports.write_report(pool, Storage(settings), report_id=report_id)
    assert written is not None  # created just above
    log.info(
        "report written",
        report_id=str(report_id),
        object_name=written.object_name,
        bucket=settings.STORAGE_BUCKET,
        rows=written.rows,
    )
    return 0
