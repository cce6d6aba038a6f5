"""PostgreSQL access through a psycopg 3 connection pool: an attached resource named by DATABASE_URL."""

from __future__ import annotations

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from alle.config import Settings


def create_pool(settings: Settings, *, max_size: int = 10, name: str = "alle") -> ConnectionPool:
    """Open lazily so a process starts fast even while the database is still coming up."""
    return ConnectionPool(
        settings.DATABASE_URL,
        min_size=1,
        max_size=max_size,
        kwargs={"row_factory": dict_row, "application_name": f"alle-{name}"},
        open=False,
        timeout=10,
        name=name,
    )
