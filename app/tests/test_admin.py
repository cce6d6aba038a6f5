"""One-off admin processes run against the same backing services as the app."""

from __future__ import annotations

import csv
import io
import json
import subprocess

import httpx
import psycopg
from google.cloud.storage import Bucket

from conftest import Spawn, signup_and_login


def test_cleanup_deletes_only_old_completed_tasks_and_their_attachments(
    spawn: Spawn, app_env: dict[str, str], db: psycopg.Connection[tuple[object, ...]], bucket: Bucket
) -> None:
    web = spawn("web")
    auth = signup_and_login(web.url)
    ids = {
        t: httpx.post(f"{web.url}/v1/tasks", json={"title": t}, headers=auth).json()["id"]
        for t in ("old-done", "new-done", "old-open")
    }
    httpx.post(
        f"{web.url}/v1/tasks/{ids['old-done']}/attachments", params={"filename": "a.txt"}, content=b"x", headers=auth
    )
    for title in ("old-done", "new-done"):
        httpx.post(f"{web.url}/v1/tasks/{ids[title]}/complete", headers=auth)
    db.execute(
        "UPDATE tasks SET completed_at = now() - interval '40 days', created_at = now() - interval '41 days' "
        "WHERE title LIKE 'old-%'"
    )
    assert len(list(bucket.list_blobs(prefix=f"attachments/{ids['old-done']}/"))) == 1
    run = subprocess.run(
        ["alle", "cleanup-old-tasks", "--older-than-days", "30"], env=app_env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout
    remaining = {r[0] for r in db.execute("SELECT title FROM tasks").fetchall()}
    assert remaining == {"new-done", "old-open"}
    assert list(bucket.list_blobs(prefix=f"attachments/{ids['old-done']}/")) == []
    assert '"deleted_tasks": 1' in run.stdout


def test_cleanup_refuses_a_nonsense_age(app_env: dict[str, str]) -> None:
    run = subprocess.run(
        ["alle", "cleanup-old-tasks", "--older-than-days", "0"], env=app_env, capture_output=True, text=True
    )
    assert run.returncode == 2
    assert "--older-than-days" in run.stderr


def test_generate_report_writes_a_csv_of_all_tasks_to_the_bucket(
    spawn: Spawn, app_env: dict[str, str], bucket: Bucket
) -> None:
    web = spawn("web")
    for title in ("mine", "theirs"):
        httpx.post(f"{web.url}/v1/tasks", json={"title": title}, headers=signup_and_login(web.url))
    run = subprocess.run(["alle", "generate-report"], env=app_env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout
    [written] = [json.loads(line) for line in run.stdout.splitlines() if '"report written"' in line]
    rows = list(csv.DictReader(io.StringIO(bucket.blob(written["object_name"]).download_as_text())))
    assert sorted(r["title"] for r in rows) == ["mine", "theirs"]
    assert set(rows[0]) == {"id", "owner", "title", "status", "due_date", "created_at", "completed_at"}
