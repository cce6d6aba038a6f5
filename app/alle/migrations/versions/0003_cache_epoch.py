"""The cache epoch: one row that retires every cached value at once when an invalidation cannot reach Redis.

A new one-row table: cheap on a live database. See alle/cache.py and app/README.md "Sessions and caches".
"""

from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE cache_epoch (
            one boolean PRIMARY KEY DEFAULT true CHECK (one),
            epoch bigint NOT NULL
        );
        INSERT INTO cache_epoch (epoch) VALUES (0);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE cache_epoch")
