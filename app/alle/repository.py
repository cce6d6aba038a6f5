"""Data access: every query the app runs, as keyword-only functions over a psycopg connection.

Two sections. The request path (async, `AsyncConn`) runs on the web process's event loop over its
autocommit pool: each statement is committed when it returns, and changes of more than one statement
open `conn.transaction()`. The jobs section (blocking, `Conn`) runs in the worker's threads and the
one-off admin processes.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from psycopg import AsyncClientCursor, AsyncConnection, Connection
from psycopg.errors import UniqueViolation
from psycopg.rows import dict_row

Row = dict[str, Any]
Conn = Connection[Row]
AsyncConn = AsyncConnection[Row]

TASK_COLUMNS = "id, title, notes, status, due_date, completed_at, created_at, updated_at"
#: The same, from `tasks t` in a join.
_OWNED_TASK_COLUMNS = ", ".join(f"t.{column}" for column in TASK_COLUMNS.split(", "))
#: A create whose key's task is deleted under it inserts again; this many times at most.
_CREATE_ATTEMPTS = 2
#: The user of the live session behind `%(token)s` (a token's digest): no row once it has expired or ended.
_LIVE_SESSION = "SELECT user_id FROM sessions WHERE token_hash = %(token)s AND expires_at > now()"


class EmailTakenError(Exception):
    pass


async def _one(conn: AsyncConn, query: str, params: Any = None) -> Row | None:
    cursor = await conn.execute(query, params)
    return await cursor.fetchone()


async def _all(conn: AsyncConn, query: str, params: Any = None) -> list[Row]:
    cursor = await conn.execute(query, params)
    return await cursor.fetchall()


# --- The request path -------------------------------------------------------------------------------------


async def create_user(conn: AsyncConn, *, email: str, password_hash: str) -> Row:
    try:
        row = await _one(
            conn,
            "INSERT INTO users (email, password_hash) VALUES (%s, %s) RETURNING id, email, created_at",
            (email, password_hash),
        )
    except UniqueViolation as error:
        raise EmailTakenError(email) from error
    assert row is not None
    return row


async def find_login(conn: AsyncConn, *, email: str) -> tuple[str, Row | None]:
    """The email as PostgreSQL compares it (lower()), whether or not an account has it, and the account if one
    does. Python's casefold() differs from lower() beyond ASCII (`İ`)."""
    row = await _one(
        conn,
        "SELECT lower(%(email)s) AS compared, u.id, u.password_hash FROM (VALUES (1)) AS one "
        "LEFT JOIN users u ON lower(u.email) = lower(%(email)s)",
        {"email": email},
    )
    assert row is not None
    return str(row["compared"]), row if row["id"] is not None else None


async def get_user(conn: AsyncConn, *, user_id: uuid.UUID) -> Row | None:
    return await _one(conn, "SELECT id, email, created_at FROM users WHERE id = %s", (user_id,))


async def create_session(conn: AsyncConn, *, token_hash: str, user_id: uuid.UUID, ttl_seconds: int) -> datetime:
    """Returns the session's expiry, which its cache entry carries."""
    row = await _one(
        conn,
        "INSERT INTO sessions (token_hash, user_id, expires_at) VALUES (%s, %s, now() + make_interval(secs => %s))"
        " RETURNING expires_at",
        (token_hash, user_id, ttl_seconds),
    )
    assert row is not None
    expires_at: datetime = row["expires_at"]
    return expires_at


async def get_session(conn: AsyncConn, *, token_hash: str) -> Row | None:
    """The live session's `user_id` and `expires_at`; None once it has expired or been deleted."""
    return await _one(
        conn, "SELECT user_id, expires_at FROM sessions WHERE token_hash = %s AND expires_at > now()", (token_hash,)
    )


async def get_cache_epoch(conn: AsyncConn) -> int:
    row = await _one(conn, "SELECT epoch FROM cache_epoch")
    assert row is not None
    return int(row["epoch"])


_BUMP_CACHE_EPOCH = "UPDATE cache_epoch SET epoch = epoch + 1 RETURNING epoch"


async def bump_cache_epoch(conn: AsyncConn) -> int:
    """Retire every cached value at once: called when an invalidation could not reach Redis."""
    row = await _one(conn, _BUMP_CACHE_EPOCH)
    assert row is not None
    return int(row["epoch"])


async def delete_session(conn: AsyncConn, *, token_hash: str) -> None:
    await conn.execute("DELETE FROM sessions WHERE token_hash = %s", (token_hash,))


class SessionGoneError(Exception):
    """The bearer token names no live session."""


async def create_task(
    conn: AsyncConn,
    *,
    token_hash: str,
    title: str,
    notes: str,
    due_date: date | None,
    idempotency_key: str | None,
    fingerprint: str | None,
) -> tuple[Row, bool]:
    """Insert for the session's user, once per (owner, Idempotency-Key): the unique constraint stops duplicates.

    The session is checked in the insert itself. Returns the task and whether this call created it. Raises
    SessionGoneError for a token with no live session, and ValueError for a replay with a different body.
    """
    params = {
        "token": token_hash,
        "title": title,
        "notes": notes,
        "due": due_date,
        "key": idempotency_key,
        "fingerprint": fingerprint,
    }
    for _ in range(_CREATE_ATTEMPTS):
        row = await _one(
            conn,
            f"""
            INSERT INTO tasks (owner_id, title, notes, due_date, idempotency_key, request_fingerprint)
            SELECT s.user_id, %(title)s, %(notes)s, %(due)s, %(key)s, %(fingerprint)s FROM ({_LIVE_SESSION}) s
            ON CONFLICT (owner_id, idempotency_key) DO NOTHING
            RETURNING {TASK_COLUMNS}
            """,
            params,
        )
        if row is not None:
            return row, True
        if idempotency_key is None:
            raise SessionGoneError
        # No row: no live session, or the key was used before. Both in one statement, so no race between them.
        existing = await _one(
            conn,
            f"""
            SELECT {_OWNED_TASK_COLUMNS}, t.request_fingerprint
            FROM ({_LIVE_SESSION}) s LEFT JOIN tasks t ON t.owner_id = s.user_id AND t.idempotency_key = %(key)s
            """,
            params,
        )
        if existing is None:
            raise SessionGoneError
        if existing["id"] is not None:
            if existing.pop("request_fingerprint") != fingerprint:
                raise ValueError("Idempotency-Key was already used with a different request body")
            return existing, False
        # The task that held the key was deleted between the two statements: the key is free again.
    raise ValueError("The task this Idempotency-Key names keeps being created and deleted")


async def get_task(conn: AsyncConn, *, owner_id: uuid.UUID, task_id: uuid.UUID) -> Row | None:
    return await _one(conn, f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = %s AND owner_id = %s", (task_id, owner_id))


async def list_tasks(
    conn: AsyncConn, *, token_hash: str, status: str | None, limit: int, offset: int
) -> tuple[list[Row], int]:
    """The session's user's page and total, sent together in one round trip; SessionGoneError without a session.

    Both statements go in one query string, which needs client-side binding (psycopg's ClientCursor quotes the
    values). Pipeline mode did the same with server-side binding, at about an eighth of a list's CPU in psycopg's
    pipeline machinery. A window count (`count(*) OVER ()`) would fetch every matching row in full for twenty.
    The page comes first: a session that ends between the statements (each reads its own snapshot) is then
    answered 401, never as an empty page.
    """
    matching = " AND status = %(status)s" if status else ""
    params = {"token": token_hash, "status": status, "limit": limit, "offset": offset}
    async with AsyncClientCursor(conn, row_factory=dict_row) as cursor:
        await cursor.execute(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE owner_id = ({_LIVE_SESSION}){matching} "
            "ORDER BY created_at DESC, id LIMIT %(limit)s OFFSET %(offset)s; "
            f"SELECT (SELECT count(*) FROM tasks WHERE owner_id = s.user_id{matching}) AS n FROM ({_LIVE_SESSION}) s",
            params,
        )
        rows = await cursor.fetchall()
        if not cursor.nextset():
            raise RuntimeError("PostgreSQL answered the list without the count's result")
        total = await cursor.fetchone()
    if total is None:
        raise SessionGoneError
    return rows, int(total["n"])


async def update_task(
    conn: AsyncConn, *, owner_id: uuid.UUID, task_id: uuid.UUID, changes: dict[str, Any]
) -> tuple[Row | None, bool]:
    """Apply a partial update; moving to `done` stamps completed_at and records the notification to send.

    One statement, so the task and its outbox row commit together. Returns the task and whether this update
    recorded its (one and only) completion notification.
    """
    allowed = {"title", "notes", "status", "due_date"}
    assignments = [f"{column} = %({column})s" for column in changes if column in allowed]
    assignments.append(
        "completed_at = CASE WHEN %(status_given)s AND %(status)s::text = 'done' THEN coalesce(completed_at, now()) "
        "WHEN %(status_given)s THEN NULL ELSE completed_at END"
    )
    params = {
        **dict.fromkeys(allowed),
        **changes,
        "status_given": "status" in changes,
        "owner_id": owner_id,
        "task_id": task_id,
    }
    row = await _one(
        conn,
        f"""
        WITH updated AS (
            UPDATE tasks SET {", ".join(assignments)}, updated_at = now()
            WHERE id = %(task_id)s AND owner_id = %(owner_id)s RETURNING {TASK_COLUMNS}
        ), recorded AS (
            INSERT INTO notifications (task_id, kind)
            SELECT id, 'task_completed' FROM updated WHERE status = 'done'
            ON CONFLICT DO NOTHING RETURNING id
        )
        SELECT updated.*, EXISTS (SELECT 1 FROM recorded) AS notify FROM updated
        """,
        params,
    )
    if row is None:
        return None, False
    notify = bool(row.pop("notify"))
    return row, notify


async def delete_task(conn: AsyncConn, *, owner_id: uuid.UUID, task_id: uuid.UUID) -> list[str] | None:
    """Delete the task and return its attachments' object names, or None when there is no such task."""
    row = await _one(
        conn,
        """
        WITH doomed AS (
            DELETE FROM tasks WHERE id = %(task_id)s AND owner_id = %(owner_id)s RETURNING id
        )
        SELECT array(
            SELECT a.object_name FROM attachments a JOIN doomed d ON d.id = a.task_id
        ) AS objects FROM doomed
        """,
        {"task_id": task_id, "owner_id": owner_id},
    )
    return None if row is None else list(row["objects"])


async def add_attachment(
    conn: AsyncConn, *, task_id: uuid.UUID, filename: str, content_type: str, size_bytes: int, object_name: str
) -> Row:
    row = await _one(
        conn,
        "INSERT INTO attachments (task_id, filename, content_type, size_bytes, object_name) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING id, filename, content_type, size_bytes, created_at",
        (task_id, filename, content_type, size_bytes, object_name),
    )
    assert row is not None
    return row


async def list_attachments(conn: AsyncConn, *, owner_id: uuid.UUID, task_id: uuid.UUID) -> list[Row] | None:
    """The task's attachments, or None when the user has no such task."""
    rows = await _all(
        conn,
        "SELECT a.id, a.filename, a.content_type, a.size_bytes, a.created_at FROM tasks t "
        "LEFT JOIN attachments a ON a.task_id = t.id WHERE t.id = %s AND t.owner_id = %s ORDER BY a.created_at",
        (task_id, owner_id),
    )
    if not rows:
        return None
    return [r for r in rows if r["id"] is not None]


async def get_attachment(
    conn: AsyncConn, *, owner_id: uuid.UUID, task_id: uuid.UUID, attachment_id: uuid.UUID
) -> Row | None:
    return await _one(
        conn,
        "SELECT a.filename, a.content_type, a.size_bytes, a.object_name FROM attachments a "
        "JOIN tasks t ON t.id = a.task_id WHERE a.id = %s AND t.id = %s AND t.owner_id = %s",
        (attachment_id, task_id, owner_id),
    )


async def record_notification_enqueued(conn: AsyncConn, *, task_id: uuid.UUID) -> None:
    """Stamp the completion notification as handed to the queue (the outbox sweep skips it until its deadline)."""
    await conn.execute(
        "UPDATE notifications SET enqueued_at = now() WHERE task_id = %s AND kind = 'task_completed'", (task_id,)
    )


async def request_report(conn: AsyncConn, *, owner_id: uuid.UUID) -> Row:
    """A pending report row; the worker fills it in."""
    row = await _one(conn, "INSERT INTO reports (owner_id) VALUES (%s) RETURNING id, status, created_at", (owner_id,))
    assert row is not None
    return row


async def record_report_enqueued(conn: AsyncConn, *, report_id: uuid.UUID) -> None:
    """Stamp the report's job as handed to the queue (the outbox sweep skips it until its deadline)."""
    await conn.execute("UPDATE reports SET enqueued_at = now() WHERE id = %s", (report_id,))


async def get_report(conn: AsyncConn, *, report_id: uuid.UUID, owner_id: uuid.UUID | None) -> Row | None:
    return await _one(
        conn,
        "SELECT id, owner_id, status, object_name, row_count, created_at, finished_at FROM reports "
        "WHERE id = %s AND owner_id IS NOT DISTINCT FROM %s",
        (report_id, owner_id),
    )


# --- Jobs and admin processes -----------------------------------------------------------------------------


def bump_cache_epoch_blocking(conn: Conn) -> int:
    """`bump_cache_epoch` for the blocking processes (admin jobs), with the same statement."""
    row = conn.execute(_BUMP_CACHE_EPOCH).fetchone()
    assert row is not None
    return int(row["epoch"])
