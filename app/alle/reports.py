"""CSV task reports, written to the bucket by the worker (per user) or by `alle generate-report` (all).

The queries live here, on the worker's synchronous pool, so the jobs do not depend on the web's data access.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from dataclasses import dataclass
from typing import Any

from alle.db import Pool
from alle.storage import Storage

COLUMNS = ["id", "owner", "title", "status", "due_date", "created_at", "completed_at"]
#: What a spreadsheet reads as the start of a formula (OWASP, "CSV Injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: A `;`, tab or line break before one, or before a `"`: a spreadsheet in a locale whose list separator is `;` (or
#: an import that splits at tabs) splits this comma-separated file there, and the rest of the title starts a cell of
#: its own; where that starts with a `"`, the reader opens a quoted field and the formula follows it.
_FORMULA_AFTER_BREAK = re.compile(f'(?<=[;\t\r\n])(?=[{re.escape("".join(_FORMULA_START))}"])')


def _as_text(value: object) -> object:
    """A user's text opened in a spreadsheet must stay text: `=HYPERLINK(...)` in a title would run as a formula
    for whoever opens the report, and `alle generate-report` puts every user's titles in front of an operator.
    An apostrophe makes the cell text: one goes before a formula character at the start and after each `;`, tab or
    line break; it shows in other readers."""
    if not isinstance(value, str):
        return value
    value = _FORMULA_AFTER_BREAK.sub("'", value)
    return f"'{value}" if value.startswith(_FORMULA_START) else value


def object_name(report_id: uuid.UUID, attempt: str) -> str:
    """One object per run: two runs of a report never write the same object."""
    return f"reports/{report_id}/{attempt}.csv"


@dataclass(frozen=True)
class Written:
    rows: int
    object_name: str


def create_report(pool: Pool, *, owner_id: uuid.UUID | None) -> uuid.UUID:
    with pool.connection() as conn:
        row = conn.execute("INSERT INTO reports (owner_id) VALUES (%s) RETURNING id", (owner_id,)).fetchone()
    assert row is not None
    return uuid.UUID(str(row["id"]))


def _rows(pool: Pool, owner_id: uuid.UUID | None) -> list[dict[str, Any]]:
    with pool.connection() as conn:
        return conn.execute(
            "SELECT t.id, u.email AS owner, t.title, t.status, t.due_date, t.created_at, t.completed_at "
            "FROM tasks t JOIN users u ON u.id = t.owner_id "
            "WHERE %(owner)s::uuid IS NULL OR t.owner_id = %(owner)s ORDER BY t.created_at, t.id",
            {"owner": owner_id},
        ).fetchall()


def write_report(pool: Pool, storage: Storage, *, report_id: uuid.UUID) -> Written | None:
    """Idempotent: a report already done is left alone.

    Two runs may overlap (a redelivered job and the outbox sweep's). Each writes an object of its own, and only the
    first to finish records it; the other deletes its object. So the CSV served and the row count recorded always
    come from the same run, never one run's file under another's count.
    """
    select = "SELECT owner_id, status, row_count, object_name FROM reports WHERE id = %s"
    with pool.connection() as conn:
        report = conn.execute(select, (report_id,)).fetchone()
    if report is None:
        return None
    if report["status"] == "done":
        return Written(int(report["row_count"]), str(report["object_name"]))
    rows = _rows(pool, report["owner_id"])
    buffer = io.StringIO()
    # RFC 4180's CRLF: the writer then quotes a field holding either, so a title's own line break cannot start a
    # row (a spreadsheet breaks rows at a bare CR too, and "x\r=1+1" would run as a formula there).
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows({**row, "owner": _as_text(row["owner"]), "title": _as_text(row["title"])} for row in rows)
    name = object_name(report_id, uuid.uuid4().hex)
    storage.upload_text(name, buffer.getvalue(), content_type="text/csv")
    with pool.connection() as conn:
        won = conn.execute(
            "UPDATE reports SET status = 'done', object_name = %s, row_count = %s, finished_at = now() "
            "WHERE id = %s AND status <> 'done'",
            (name, len(rows), report_id),
        ).rowcount
        if not won:
            report = conn.execute(select, (report_id,)).fetchone()
    if won:
        return Written(len(rows), name)
    storage.delete(name)
    assert report is not None
    return Written(int(report["row_count"]), str(report["object_name"]))
