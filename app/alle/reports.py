"""CSV task reports, written to the bucket by the worker (per user) or by `alle generate-report` (all)."""

from __future__ import annotations

import csv
import io
import uuid

from alle import repository
from alle.db import Pool
from alle.storage import Storage

COLUMNS = ["id", "owner", "title", "status", "due_date", "created_at", "completed_at"]


def object_name(report_id: uuid.UUID) -> str:
    return f"reports/{report_id}.csv"


def write_report(pool: Pool, storage: Storage, *, report_id: uuid.UUID) -> int | None:
    """Idempotent: a report already done is left alone; a rerun overwrites the same object name."""
    with pool.connection() as conn:
        report = conn.execute("SELECT owner_id, status, row_count FROM reports WHERE id = %s", (report_id,)).fetchone()
        if report is None:
            return None
        if report["status"] == "done":
            return int(report["row_count"])
        rows = repository.report_rows(conn, owner_id=report["owner_id"])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    name = object_name(report_id)
    storage.upload_text(name, buffer.getvalue(), content_type="text/csv")
    with pool.connection() as conn:
        repository.finish_report(conn, report_id=report_id, object_name=name, row_count=len(rows))
    return len(rows)
