"""One-off admin processes run against the same backing services as the app."""

from __future__ import annotations

import csv
import io
import json

import httpx
import psycopg
from google.cloud.storage import Bucket

from conftest import ForkedAlle, PrivateRedis, Proc, Spawn, cached_session, read_until_cached, signup_and_login

Db = psycopg.Connection[tuple[object, ...]]


def _records(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _titles(db: Db) -> set[object]:
    return {r[0] for r in db.execute("SELECT title FROM tasks").fetchall()}


def _age(db: Db, title: str, days: int = 40) -> None:
    """Make a task look completed and last changed `days` ago, as if time had passed."""
    db.execute(
        "UPDATE tasks SET created_at = now() - make_interval(days => %s + 1), "
        "completed_at = now() - make_interval(days => %s), updated_at = now() - make_interval(days => %s) "
        "WHERE title = %s",
        (days, days, days, title),
    )


def _create(url: str, auth: dict[str, str], *titles: str) -> dict[str, str]:
    return {t: httpx.post(f"{url}/v1/tasks", json={"title": t}, headers=auth).json()["id"] for t in titles}


def _web_on(spawn: Spawn, redis: PrivateRedis) -> tuple[Proc, dict[str, str]]:
    """`alle web` on a Redis the test can stop and start, and a user logged in to it."""
    web = spawn("web", {"REDIS_URL": f"unix://{redis.socket}"})
    return web, signup_and_login(web.url)


def _run_while_redis_is_down(forked_alle: ForkedAlle, redis: PrivateRedis, env: dict[str, str], *args: str) -> None:
    """Run an admin command with Redis stopped; Redis comes back holding every entry it had."""
    redis.stop()
    run = forked_alle({**env, "REDIS_URL": f"unix://{redis.socket}"}, *args)
    redis.start()
    assert run.returncode == 0, run.stdout + run.stderr


def test_cleanup_deletes_only_old_completed_tasks_and_their_attachments(
    spawn: Spawn,
    app_env: dict[str, str],
    db: Db,
    bucket: Bucket,
    forked_alle: ForkedAlle,
) -> None:
    web = spawn("web")
    auth = signup_and_login(web.url)
    ids = _create(web.url, auth, "old-done", "new-done", "old-open")
    httpx.post(
        f"{web.url}/v1/tasks/{ids['old-done']}/attachments", params={"filename": "a.txt"}, content=b"x", headers=auth
    )
    db.execute("UPDATE attachments SET created_at = now() - interval '41 days'")
    for title in ("old-done", "new-done"):
        httpx.post(f"{web.url}/v1/tasks/{ids[title]}/complete", headers=auth)
    _age(db, "old-done")
    db.execute("UPDATE tasks SET created_at = now() - interval '41 days' WHERE title = 'old-open'")
    assert len(list(bucket.list_blobs(prefix=f"attachments/{ids['old-done']}/"))) == 1
    run = forked_alle(app_env, "cleanup-old-tasks", "--older-than-days", "30")
    assert run.returncode == 0, run.stdout
    assert _titles(db) == {"new-done", "old-open"}
    assert list(bucket.list_blobs(prefix=f"attachments/{ids['old-done']}/")) == []
    assert '"deleted_tasks": 1' in run.stdout


def test_cleanup_keeps_old_completed_tasks_edited_or_given_an_attachment_since(
    spawn: Spawn,
    app_env: dict[str, str],
    db: Db,
    bucket: Bucket,
    forked_alle: ForkedAlle,
) -> None:
    web = spawn("web")
    auth = signup_and_login(web.url)
    ids = _create(web.url, auth, "edited", "attached", "untouched")
    for task_id in ids.values():
        httpx.post(f"{web.url}/v1/tasks/{task_id}/complete", headers=auth)
    for title in ids:
        _age(db, title)
    # Completed 40 days ago, but the user worked on these today.
    assert httpx.patch(f"{web.url}/v1/tasks/{ids['edited']}", json={"notes": "still useful"}, headers=auth).is_success
    attached = httpx.post(
        f"{web.url}/v1/tasks/{ids['attached']}/attachments", params={"filename": "b.txt"}, content=b"y", headers=auth
    )
    assert attached.status_code == 201
    run = forked_alle(app_env, "cleanup-old-tasks", "--older-than-days", "30")
    assert run.returncode == 0, run.stdout
    assert _titles(db) == {"edited", "attached"}


def test_cleanup_dry_run_prints_what_it_would_delete_and_deletes_nothing(
    spawn: Spawn,
    app_env: dict[str, str],
    db: Db,
    bucket: Bucket,
    forked_alle: ForkedAlle,
) -> None:
    web = spawn("web")
    auth = signup_and_login(web.url)
    ids = _create(web.url, auth, "old-done", "new-done")
    httpx.post(
        f"{web.url}/v1/tasks/{ids['old-done']}/attachments", params={"filename": "a.txt"}, content=b"x", headers=auth
    )
    db.execute("UPDATE attachments SET created_at = now() - interval '41 days'")
    for task_id in ids.values():
        httpx.post(f"{web.url}/v1/tasks/{task_id}/complete", headers=auth)
    _age(db, "old-done")
    run = forked_alle(app_env, "cleanup-old-tasks", "--older-than-days", "30", "--dry-run")
    assert run.returncode == 0, run.stdout
    records = _records(run.stdout)
    would = [r for r in records if r["message"] == "would delete task"]
    assert [(r["task_id"], r["attachments"]) for r in would] == [(ids["old-done"], 1)]
    [summary] = [r for r in records if str(r["message"]).startswith("cleanup dry run finished")]
    assert summary["would_delete_tasks"] == 1 and summary["would_delete_objects"] == 1
    assert _titles(db) == {"old-done", "new-done"}
    assert len(list(bucket.list_blobs(prefix=f"attachments/{ids['old-done']}/"))) == 1


def test_a_task_deleted_by_cleanup_is_no_longer_served_from_the_cache(
    spawn: Spawn,
    app_env: dict[str, str],
    db: Db,
    forked_alle: ForkedAlle,
) -> None:
    web = spawn("web")
    auth = signup_and_login(web.url)
    ids = _create(web.url, auth, "old-done")
    httpx.post(f"{web.url}/v1/tasks/{ids['old-done']}/complete", headers=auth)
    _age(db, "old-done")
    url = f"{web.url}/v1/tasks/{ids['old-done']}"
    assert httpx.get(url, headers=auth).status_code == 200  # now in the read cache
    assert forked_alle(app_env, "cleanup-old-tasks", "--older-than-days", "30").returncode == 0
    assert _titles(db) == set()
    assert httpx.get(url, headers=auth).status_code == 404


def test_a_task_cleaned_up_while_redis_is_down_is_not_served_when_redis_returns_with_its_data(
    spawn: Spawn, forked_alle: ForkedAlle, app_env: dict[str, str], db: Db, private_redis: PrivateRedis
) -> None:
    web, auth = _web_on(spawn, private_redis)
    ids = _create(web.url, auth, "old-done")
    httpx.post(f"{web.url}/v1/tasks/{ids['old-done']}/complete", headers=auth)
    _age(db, "old-done")
    url, key = f"{web.url}/v1/tasks/{ids['old-done']}", f"task:{ids['old-done']}"
    read_until_cached(url, auth, private_redis.client, key)
    _run_while_redis_is_down(forked_alle, private_redis, app_env, "cleanup-old-tasks", "--older-than-days", "30")
    assert _titles(db) == set()
    assert private_redis.client.exists(key)  # Redis came back holding the deleted task
    # The first read after a reconnect misses anyway; the second trusts Redis again, under the epoch it re-read.
    assert [httpx.get(url, headers=auth).status_code for _ in range(2)] == [404, 404]


def test_cleanup_refuses_a_nonsense_age(forked_alle: ForkedAlle, app_env: dict[str, str]) -> None:
    run = forked_alle(app_env, "cleanup-old-tasks", "--older-than-days", "0")
    assert run.returncode == 2
    assert "--older-than-days" in run.stderr


def test_prune_sessions_deletes_expired_sessions_and_their_cache_entries(
    spawn: Spawn,
    app_env: dict[str, str],
    db: Db,
    forked_alle: ForkedAlle,
) -> None:
    web = spawn("web")
    expired, current = signup_and_login(web.url), signup_and_login(web.url)
    for auth in (expired, current):  # both sessions are in the cache now
        assert httpx.get(f"{web.url}/v1/users/me", headers=auth).status_code == 200
    expired_user = httpx.get(f"{web.url}/v1/users/me", headers=expired).json()["id"]
    db.execute("UPDATE sessions SET expires_at = now() - interval '1 second' WHERE user_id = %s", (expired_user,))
    run = forked_alle(app_env, "prune-sessions")
    assert run.returncode == 0, run.stdout + run.stderr
    [done] = [r for r in _records(run.stdout) if r["message"] == "expired sessions pruned"]
    assert done["deleted_sessions"] == 1
    assert db.execute("SELECT count(*) FROM sessions").fetchone() == (1,)
    assert db.execute("SELECT count(*) FROM sessions WHERE user_id = %s", (expired_user,)).fetchone() == (0,)
    assert httpx.get(f"{web.url}/v1/users/me", headers=expired).status_code == 401
    assert httpx.get(f"{web.url}/v1/users/me", headers=current).status_code == 200


def test_a_session_pruned_while_redis_is_down_is_not_honoured_when_redis_returns_with_its_data(
    spawn: Spawn, forked_alle: ForkedAlle, app_env: dict[str, str], db: Db, private_redis: PrivateRedis
) -> None:
    web, auth = _web_on(spawn, private_redis)
    key = cached_session(web.url, auth, private_redis.client)
    # Ended in PostgreSQL only: the cached copy still carries the expiry it was issued with.
    db.execute("UPDATE sessions SET expires_at = now() - interval '1 second'")
    _run_while_redis_is_down(forked_alle, private_redis, app_env, "prune-sessions")
    assert db.execute("SELECT count(*) FROM sessions").fetchone() == (0,)
    assert private_redis.client.exists(key)
    assert [httpx.get(f"{web.url}/v1/users/me", headers=auth).status_code for _ in range(2)] == [401, 401]


def test_generate_report_writes_a_csv_of_all_tasks_to_the_bucket(
    spawn: Spawn,
    app_env: dict[str, str],
    bucket: Bucket,
    forked_alle: ForkedAlle,
) -> None:
    web = spawn("web")
    for title in ("mine", "theirs"):
        httpx.post(f"{web.url}/v1/tasks", json={"title": title}, headers=signup_and_login(web.url))
    run = forked_alle(app_env, "generate-report")
    assert run.returncode == 0, run.stdout
    [written] = [json.loads(line) for line in run.stdout.splitlines() if '"report written"' in line]
    rows = list(csv.DictReader(io.StringIO(bucket.blob(written["object_name"]).download_as_text())))
    assert sorted(r["title"] for r in rows) == ["mine", "theirs"]
    assert set(rows[0]) == {"id", "owner", "title", "status", "due_date", "created_at", "completed_at"}
