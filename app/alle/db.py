"""PostgreSQL access through a psycopg 3 connection pool: an attached resource named by DATABASE_URL."""

from __future__ import annotations

from psycopg import Connection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

from alle.config import Settings

Pool = ConnectionPool[Connection[DictRow]]


def create_pool(settings: Settings, *, max_size: int = 10, name: str = "alle") -> Pool:
    """Open lazily so a process starts fast even while the database is still coming up."""
    return ConnectionPool(
        settings.DATABASE_URL,
        connection_class=Connection[DictRow],
        min_size=1,
        max_size=max_size,
        kwargs={"row_factory": dict_row, "application_name": f"alle-{name}"},
        open=False,
        timeout=10,
        name=name,
    )
