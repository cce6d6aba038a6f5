"""Durable jobs: dead letters kept in PostgreSQL, and reports remember when their job was last enqueued.

Both changes are cheap on a live database: a new table, and a nullable column without a default (a catalog-only
change, no table rewrite). The downgrade drops the dead-letter records, so take `alle dead-jobs list` first.
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE dead_jobs (
            message_id text PRIMARY KEY,
            actor text NOT NULL,
            args jsonb NOT NULL,
            kwargs jsonb NOT NULL,
            attempts integer NOT NULL,
            error text NOT NULL,
            failed_at timestamptz NOT NULL DEFAULT now(),
            retried_at timestamptz,
            retried_as text
        );
        -- The outbox sweep asks "is this task's or report's job dead?" by actor and first argument.
        CREATE INDEX dead_jobs_open_idx ON dead_jobs (actor, (args ->> 0)) WHERE retried_at IS NULL;

        ALTER TABLE reports ADD COLUMN enqueued_at timestamptz;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE reports DROP COLUMN enqueued_at;
        DROP TABLE dead_jobs;
        """
    )
