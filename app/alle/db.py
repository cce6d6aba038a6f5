"""PostgreSQL access through psycopg 3 connection pools: an attached resource named by DATABASE_URL.

Two kinds of pool: the web process uses an async pool on its event loop, the worker and the one-off jobs a
threaded one. Both are capped by DATABASE_POOL_SIZE, which the connection budget in the Pulumi program counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection, Connection
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from alle.config import Settings

Pool = ConnectionPool[Connection[DictRow]]
AsyncPool = AsyncConnectionPool[AsyncConnection[DictRow]]

#: How long a request waits for a free connection before it gets a 503. Short on purpose: requests in flight
#: are bounded (MAX_REQUESTS_IN_FLIGHT) so a healthy pool hands out a connection in milliseconds; a long wait
#: means the database is in trouble, and a quick answer lets the client or Cloud Run retry elsewhere.
WEB_POOL_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class ConnectionBounds:
    """How long a pool's sessions may block: PostgreSQL settings for each session (libpq's `options`), which the
    server enforces, and libpq connection parameters, which the client does when the server stops answering."""

    server_settings: dict[str, str]
    connection: dict[str, object]

    def kwargs(self, settings: Settings) -> dict[str, object]:
        """As connection keywords, added to what DATABASE_URL's own `options` set, which a keyword would
        otherwise replace."""
        given = conninfo_to_dict(settings.DATABASE_URL).get("options")
        ours = " ".join(f"-c {key}={value}" for key, value in self.server_settings.items())
        return self.connection | {"options": f"{given} {ours}" if given else ours}


#: A server that stops answering (a failover, a dropped route) is given up after about 30 s: TCP keepalives and
#: tcp_user_timeout. They apply to TCP, as on Cloud SQL's private IP, not to a local socket. Without them a
#: connection to a vanished server waits on the kernel's retransmissions, about 15 minutes.
SILENT_SERVER: dict[str, object] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}

#: The web's statements are single-row reads and writes and one page of a list: one that runs for 20 s (a lock
#: held by a long transaction, a plan gone wrong) is cancelled and its request answered 503, instead of holding a
#: pooled connection and an in-flight slot past Cloud Run's request timeout, which does not stop the container's
#: work.
WEB_BOUNDS = ConnectionBounds(server_settings={"statement_timeout": "20s"}, connection=SILENT_SERVER)


def create_pool(
    settings: Settings, *, max_size: int = 10, name: str = "alle", bounds: ConnectionBounds | None = None
) -> Pool:
    """Open lazily so a process starts fast even while the database is still coming up."""
    kwargs: dict[str, object] = {"row_factory": dict_row, "application_name": f"alle-{name}"}
    if bounds is not None:
        kwargs |= bounds.kwargs(settings)
    return ConnectionPool(
        settings.DATABASE_URL,
        connection_class=Connection[DictRow],
        min_size=1,
        max_size=max_size,
        kwargs=kwargs,
        open=False,
        timeout=10,
        name=name,
    )


def create_async_pool(settings: Settings, *, name: str = "web") -> AsyncPool:
    """The web process's pool: fixed size, autocommit, opened by the lifespan without waiting.

    Fixed size because the connection budget counts the maximum anyway, and a burst should not wait for
    connects. Autocommit because each statement is then durable when it returns, before any response is
    sent; the few multi-statement changes open a transaction explicitly (`conn.transaction()`).
    """
    return AsyncConnectionPool(
        settings.DATABASE_URL,
        connection_class=AsyncConnection[DictRow],
        min_size=settings.DATABASE_POOL_SIZE,
        max_size=settings.DATABASE_POOL_SIZE,
        kwargs={
            "row_factory": dict_row,
            "application_name": f"alle-{name}",
            "autocommit": True,
            **WEB_BOUNDS.kwargs(settings),
        },
        open=False,
        timeout=WEB_POOL_TIMEOUT_SECONDS,
        name=name,
    )
