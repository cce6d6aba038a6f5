"""The Tasks API over HTTP against a real `alle web` on real PostgreSQL, Redis and the storage emulator."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest
from google.cloud.storage import Bucket

from conftest import SharedWeb, Spawn, signup_and_login


@pytest.fixture
def web(shared_web: SharedWeb) -> SharedWeb:
    """Shared: each test signs up users of its own, and reads only their rows and objects."""
    return shared_web


def test_openapi_document_is_served(web: SharedWeb) -> None:
    spec = httpx.get(f"{web.url}/openapi.json").json()
    assert "/v1/tasks" in spec["paths"]
    assert "/v1/tasks/{task_id}/attachments" in spec["paths"]


def test_task_lifecycle_create_read_update_complete_delete(web: SharedWeb) -> None:
    auth = signup_and_login(web.url)
    created = httpx.post(
        f"{web.url}/v1/tasks", json={"title": "  Write report ", "due_date": "2026-12-01"}, headers=auth
    )
    assert created.status_code == 201
    task = created.json()
    assert task["title"] == "Write report"
    assert task["status"] == "todo"
    url = f"{web.url}/v1/tasks/{task['id']}"
    assert httpx.get(url, headers=auth).json()["due_date"] == "2026-12-01"
    patched = httpx.patch(url, json={"notes": "two pages", "status": "in_progress"}, headers=auth).json()
    assert (patched["notes"], patched["status"]) == ("two pages", "in_progress")
    done = httpx.post(f"{url}/complete", headers=auth).json()
    assert done["status"] == "done" and done["completed_at"] is not None
    reopened = httpx.patch(url, json={"status": "todo"}, headers=auth).json()
    assert reopened["completed_at"] is None
    assert httpx.delete(url, headers=auth).status_code == 204
    assert httpx.get(url, headers=auth).status_code == 404


def test_a_created_task_is_visible_to_another_client_as_soon_as_the_201_arrives(web: SharedWeb, spawn: Spawn) -> None:
    """The commit happens before the response: a client told 201 can hand the id on, and it is there."""
    creating, reading = web, spawn("web", web.env)
    auth = signup_and_login(creating.url)
    with (
        httpx.Client(base_url=creating.url, headers=auth) as creator,
        httpx.Client(base_url=reading.url, headers=auth) as reader,
    ):
        missing = []
        for i in range(300):
            created = creator.post("/v1/tasks", json={"title": f"t{i}"})
            assert created.status_code == 201
            if reader.get(f"/v1/tasks/{created.json()['id']}").status_code != 200:
                missing.append(i)
    assert missing == []


def test_a_commit_that_fails_answers_an_error_never_a_2xx(
    web: SharedWeb, shared_db: psycopg.Connection[tuple[object, ...]]
) -> None:
    # A deferred constraint trigger fails the transaction at COMMIT, after the INSERT itself succeeded. The names
    # and the title are this test's own, and the trigger goes at the end: the database is shared.
    name = f"refuse_{uuid.uuid4().hex[:12]}"
    title = f"refused at commit {name}"
    shared_db.execute(
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$"
    )
    shared_db.execute(
        f"CREATE CONSTRAINT TRIGGER {name} AFTER INSERT ON tasks DEFERRABLE INITIALLY DEFERRED "
        f"FOR EACH ROW WHEN (NEW.title = '{title}') EXECUTE FUNCTION {name}()"
    )
    try:
        auth = signup_and_login(web.url)
        owner = httpx.get(f"{web.url}/v1/users/me", headers=auth).json()["id"]
        refused = httpx.post(f"{web.url}/v1/tasks", json={"title": title}, headers=auth)
        assert refused.status_code == 500
        assert shared_db.execute("SELECT count(*) FROM tasks WHERE owner_id = %s", (owner,)).fetchone() == (0,)
        assert httpx.post(f"{web.url}/v1/tasks", json={"title": "kept"}, headers=auth).status_code == 201
    finally:
        shared_db.execute(f"DROP TRIGGER {name} ON tasks")
        shared_db.execute(f"DROP FUNCTION {name}()")


def test_user_sees_and_changes_only_their_own_tasks(web: SharedWeb) -> None:
    alice, bob = signup_and_login(web.url), signup_and_login(web.url)
    task = httpx.post(f"{web.url}/v1/tasks", json={"title": "alice's"}, headers=alice).json()
    url = f"{web.url}/v1/tasks/{task['id']}"
    assert httpx.get(url, headers=bob).status_code == 404
    assert httpx.patch(url, json={"title": "mine now"}, headers=bob).status_code == 404
    assert httpx.delete(url, headers=bob).status_code == 404
    assert httpx.get(f"{web.url}/v1/tasks", headers=bob).json()["total"] == 0
    assert httpx.get(url, headers=alice).json()["title"] == "alice's"


def test_list_paginates_and_filters_by_status(web: SharedWeb) -> None:
    auth = signup_and_login(web.url)
    ids = [httpx.post(f"{web.url}/v1/tasks", json={"title": f"t{i}"}, headers=auth).json()["id"] for i in range(5)]
    httpx.post(f"{web.url}/v1/tasks/{ids[0]}/complete", headers=auth)
    page = httpx.get(f"{web.url}/v1/tasks", params={"limit": 2, "offset": 2}, headers=auth).json()
    assert page["total"] == 5 and len(page["items"]) == 2
    assert [t["title"] for t in page["items"]] == ["t2", "t1"]
    done = httpx.get(f"{web.url}/v1/tasks", params={"status": "done"}, headers=auth).json()
    assert [t["id"] for t in done["items"]] == [ids[0]]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/v1/tasks", {"title": ""}, 422),
        ("post", "/v1/tasks", {"title": "x" * 201}, 422),
        ("post", "/v1/tasks", {"title": "ok", "due_date": "tomorrow"}, 422),
        ("post", "/v1/tasks", {"title": "ok", "owner_id": "someone"}, 422),
        ("patch", "/v1/tasks/not-a-uuid", {"title": "x"}, 422),
        ("patch", "/v1/tasks/{id}", {"status": "finished"}, 422),
        ("patch", "/v1/tasks/{id}", {"title": None}, 422),
        ("get", "/v1/tasks?limit=1000", None, 422),
        ("get", "/v1/tasks?status=bogus", None, 422),
    ],
)
def test_bad_input_gets_a_4xx_with_a_message_never_a_5xx(
    web: SharedWeb, method: str, path: str, body: dict[str, object] | None, status: int
) -> None:
    auth = signup_and_login(web.url)
    task_id = httpx.post(f"{web.url}/v1/tasks", json={"title": "t"}, headers=auth).json()["id"]
    response = httpx.request(method, web.url + path.replace("{id}", task_id), json=body, headers=auth)
    assert response.status_code == status
    assert response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "extra"),
    [("GET", {}), ("POST", {}), ("POST", {"Idempotency-Key": "forged-1"})],
    ids=["list", "create", "idempotent-create"],
)
def test_requests_without_a_session_are_refused(web: SharedWeb, method: str, extra: dict[str, str]) -> None:
    """A create and a list check the session in their own statements, not through the cache."""
    body = {"title": "t"} if method == "POST" else None
    assert httpx.request(method, f"{web.url}/v1/tasks", json=body, headers=extra).status_code == 401
    bad = httpx.request(method, f"{web.url}/v1/tasks", json=body, headers={**extra, "Authorization": "Bearer forged"})
    assert bad.status_code == 401
    assert "log in again" in bad.json()["detail"]


def test_signup_twice_does_not_reveal_the_account_and_wrong_password_is_refused(web: SharedWeb) -> None:
    creds = {"email": f"Same-{uuid.uuid4().hex[:10]}@Example.com", "password": "long enough passphrase"}
    assert httpx.post(f"{web.url}/v1/auth/signup", json=creds).status_code == 201
    again = httpx.post(f"{web.url}/v1/auth/signup", json={**creds, "email": creds["email"].lower()})
    assert again.status_code == 201
    wrong = httpx.post(f"{web.url}/v1/auth/login", json={**creds, "password": "not the password"})
    assert wrong.status_code == 401


def test_logout_ends_the_session(web: SharedWeb) -> None:
    auth = signup_and_login(web.url)
    assert httpx.post(f"{web.url}/v1/auth/logout", headers=auth).status_code == 204
    assert httpx.get(f"{web.url}/v1/users/me", headers=auth).status_code == 401


def test_idempotent_create_replays_the_same_task(web: SharedWeb) -> None:
    auth = signup_and_login(web.url)
    headers = {**auth, "Idempotency-Key": "create-1"}
    first = httpx.post(f"{web.url}/v1/tasks", json={"title": "once"}, headers=headers)
    second = httpx.post(f"{web.url}/v1/tasks", json={"title": "once"}, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.headers["Idempotent-Replayed"] == "true"
    assert first.json()["id"] == second.json()["id"]
    reused = httpx.post(f"{web.url}/v1/tasks", json={"title": "different"}, headers=headers)
    assert reused.status_code == 409
    assert "different request body" in reused.json()["detail"]


def test_idempotent_create_under_concurrent_retries_gives_one_task(
    web: SharedWeb, spawn: Spawn, shared_db: psycopg.Connection[tuple[object, ...]]
) -> None:
    urls = [web.url, spawn("web", web.env).url]
    auth = signup_and_login(web.url)
    owner = httpx.get(f"{web.url}/v1/users/me", headers=auth).json()["id"]
    headers = {**auth, "Idempotency-Key": f"retry-{uuid.uuid4()}"}

    def attempt(i: int) -> httpx.Response:
        return httpx.post(f"{urls[i % 2]}/v1/tasks", json={"title": "pay rent"}, headers=headers)

    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(attempt, range(32)))
    assert {r.status_code for r in responses} <= {200, 201}
    assert sum(r.status_code == 201 for r in responses) == 1
    assert len({r.json()["id"] for r in responses}) == 1
    count = shared_db.execute("SELECT count(*) FROM tasks WHERE owner_id = %s", (owner,)).fetchone()
    assert count == (1,)


def test_attachment_streams_to_the_bucket_and_downloads_back(spawn: Spawn, bucket: Bucket, tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    web = spawn("web", {"TMPDIR": str(scratch)})
    auth = signup_and_login(web.url)
    task_id = httpx.post(f"{web.url}/v1/tasks", json={"title": "with file"}, headers=auth).json()["id"]
    payload = bytes(range(256)) * 20_000  # 5 MB: more than any in-memory spool threshold
    uploaded = httpx.post(
        f"{web.url}/v1/tasks/{task_id}/attachments",
        params={"filename": "scan ü.pdf"},
        content=payload,
        headers={**auth, "Content-Type": "application/pdf"},
        timeout=30,
    )
    assert uploaded.status_code == 201, uploaded.text
    attachment = uploaded.json()
    assert (attachment["filename"], attachment["size_bytes"]) == ("scan ü.pdf", len(payload))
    download = httpx.get(f"{web.url}/v1/tasks/{task_id}/attachments/{attachment['id']}", headers=auth)
    assert download.status_code == 200
    assert download.content == payload
    assert download.headers["content-type"] == "application/pdf"
    assert "filename*=UTF-8''scan%20%C3%BC.pdf" in download.headers["content-disposition"]
    blobs = list(bucket.list_blobs(prefix=f"attachments/{task_id}/"))
    assert len(blobs) == 1 and blobs[0].size == len(payload)
    assert list(scratch.iterdir()) == [], "the upload touched the local disk"
    listed = httpx.get(f"{web.url}/v1/tasks/{task_id}/attachments", headers=auth).json()
    assert [a["id"] for a in listed] == [attachment["id"]]
    other = signup_and_login(web.url)
    assert httpx.get(f"{web.url}/v1/tasks/{task_id}/attachments/{attachment['id']}", headers=other).status_code == 404


def test_oversized_or_foreign_attachment_is_refused_and_leaves_nothing(web: SharedWeb, shared_bucket: Bucket) -> None:
    auth = signup_and_login(web.url)
    task_id = httpx.post(f"{web.url}/v1/tasks", json={"title": "big"}, headers=auth).json()["id"]
    url = f"{web.url}/v1/tasks/{task_id}/attachments"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while streaming
        for _ in range(11):
            yield b"x" * (1024 * 1024)

    too_big = httpx.post(url, params={"filename": "big.bin"}, content=chunks(), headers=auth, timeout=30)
    assert too_big.status_code == 413
    assert "limited to 10485760 bytes" in too_big.json()["detail"]
    other = signup_and_login(web.url)
    assert httpx.post(url, params={"filename": "a.txt"}, content=b"x", headers=other).status_code == 404
    assert httpx.post(url, params={"filename": "../etc/passwd"}, content=b"x", headers=auth).status_code == 422
    # A right-to-left override would show `inv\u202eexe.txt` as `invtxt.exe`; the others are controls, a line
    # separator and invisible characters.
    for hidden in (
        "inv\u202eexe.txt",
        "a\x85b.txt",
        "a\x9bb.txt",
        "a\u2028b.txt",
        "a\u200bb.txt",
        "a\u2060b.txt",
        "\ufeffa.txt",
    ):
        refused = httpx.post(url, params={"filename": hidden}, content=b"x", headers=auth)
        assert refused.status_code == 422, hidden
    assert httpx.post(url, params={"filename": "empty.txt"}, content=b"", headers=auth).status_code == 422
    assert [(b.name, b.size) for b in shared_bucket.list_blobs(prefix=f"attachments/{task_id}/")] == []
    assert httpx.get(url, headers=auth).json() == []
