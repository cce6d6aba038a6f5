"""Initial schema: users, sessions, tasks (idempotent create), attachments, notifications, reports."""

from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE users (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            email text NOT NULL,
            password_hash text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE UNIQUE INDEX users_email_key ON users (lower(email));

        CREATE TABLE sessions (
            token_hash text PRIMARY KEY,
            user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            expires_at timestamptz NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

        CREATE TABLE tasks (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            owner_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            title text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
            notes text NOT NULL DEFAULT '',
            status text NOT NULL DEFAULT 'todo' CHECK (status IN ('todo', 'in_progress', 'done')),
            due_date date,
            completed_at timestamptz,
            idempotency_key text,
            request_fingerprint text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT tasks_owner_idempotency_key UNIQUE (owner_id, idempotency_key)
        );
        CREATE INDEX tasks_owner_status_idx ON tasks (owner_id, status, created_at DESC, id);
        CREATE INDEX tasks_completed_at_idx ON tasks (completed_at) WHERE status = 'done';

        CREATE TABLE attachments (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            task_id uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
            filename text NOT NULL,
            content_type text NOT NULL,
            size_bytes bigint NOT NULL,
            object_name text NOT NULL UNIQUE,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX attachments_task_idx ON attachments (task_id);

        CREATE TABLE notifications (
            id bigserial PRIMARY KEY,
            task_id uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
            kind text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            enqueued_at timestamptz,
            sent_at timestamptz,
            CONSTRAINT notifications_task_kind UNIQUE (task_id, kind)
        );

        CREATE TABLE reports (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            owner_id uuid REFERENCES users (id) ON DELETE CASCADE,
            status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done')),
            object_name text,
            row_count integer,
            created_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz
        );
        """
    )
