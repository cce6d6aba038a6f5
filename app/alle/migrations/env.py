"""Alembic runs only through `alle migrate`; the URL comes from the settings, never from alembic.ini."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from alle.migrate import LOCK_TIMEOUT

url = context.config.get_main_option("sqlalchemy.url")
assert url, "alle.migrate sets sqlalchemy.url"
engine = create_engine(url, poolclass=pool.NullPool, connect_args={"application_name": "alle-migrate"})
with engine.connect() as connection:
    # For the session; committed so that the migrations' own transactions start afresh.
    connection.exec_driver_sql(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    connection.commit()
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
