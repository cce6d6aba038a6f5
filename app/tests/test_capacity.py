"""Capacity: a request holds a database connection only while it uses one, and overload gets a fast 503.

The web process is started with a tiny pool or in-flight bound, and requests are parked inside it on a row
lock the test holds, so every property is shown by ordering: what must answer does so while the lock is
still held, and nothing here depends on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import psycopg
from google.cloud.storage import Bucket

import procfs
from alle.config import Settings
from alle.db import create_async_pool
from conftest import Proc, SharedWeb, Spawn, blocked_on_lock, signup_and_login, wait_for


@contextlib.contextmanager
def parked(
    db: psycopg.Connection[tuple[object, ...]], web: Proc, auth: dict[str, str], task_id: str, count: int
) -> Iterator[list[Future[httpx.Response]]]:
    """`count` PATCHes in flight inside `web`, each holding a pooled connection while it waits for a row lock.

    On exit the lock is released and the PATCHes complete; their responses are the futures' results.
    """
    database_url = db.info.dsn
    with ThreadPoolExecutor(max_workers=count) as pool, db.transaction():
        locked = db.execute("SELECT id FROM tasks WHERE id = %s FOR UPDATE", (task_id,)).fetchone()
        assert locked is not None, "the task must be committed before the test can lock it"
        futures = [
            pool.submit(
                httpx.patch, f"{web.url}/v1/tasks/{task_id}", json={"notes": "parked"}, headers=auth, timeout=30
            )
            for _ in range(count)
        ]

        def all_waiting() -> bool:
            answered = [future.result() for future in futures if future.done()]
            if answered:
                early = answered[0]
                raise AssertionError(f"a request was answered instead of waiting: {early.status_code} {early.text}")
            return blocked_on_lock(database_url, "alle-web", count)

        wait_for(all_waiting, what=f"{count} requests to wait on the lock", proc=web)
        yield futures


def _task(web: Proc, auth: dict[str, str], title: str = "t") -> dict[str, str]:
    created = httpx.post(f"{web.url}/v1/tasks", json={"title": title}, headers=auth)
    assert created.status_code == 201, created.text
    task: dict[str, str] = created.json()
    return task


def test_requests_beyond_the_in_flight_bound_get_503_with_retry_after_and_probes_still_answer(
    spawn: Spawn, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    web = spawn("web", {"MAX_REQUESTS_IN_FLIGHT": "2"})
    auth = signup_and_login(web.url)
    task = _task(web, auth)
    with parked(db, web, auth, task["id"], 2) as requests:
        # Answered while both slots are still taken: the refusal did not wait for one to come free.
        refused = httpx.get(f"{web.url}/v1/tasks", headers=auth)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert "at capacity" in refused.json()["detail"]
        assert httpx.get(f"{web.url}/healthz").status_code == 200
        assert httpx.get(f"{web.url}/readyz").status_code == 200
    assert [r.result().status_code for r in requests] == [200, 200]
    assert httpx.get(f"{web.url}/v1/tasks", headers=auth).status_code == 200


def test_with_several_processes_a_process_at_its_bound_takes_what_the_instance_has_room_for(
    spawn: Spawn, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    """Two processes, bound 1 each: Cloud Run sends the instance 2 requests at once, and the kernel may hand both
    connections to one process (wrk's 64 split up to 52/12 between production's two). Neither may be refused.
    The other process is stopped (SIGSTOP) until both requests wait inside the running one, so that both land
    there: left to the kernel, that would be luck. (Which process a third request would reach is the kernel's
    choice: test_limits.py shows a full instance refusing it.)"""
    web = spawn("web", {"WEB_CONCURRENCY": "2", "MAX_REQUESTS_IN_FLIGHT": "1"})
    assert web.port is not None
    auth = signup_and_login(web.url)
    task = _task(web, auth)
    # /healthz answers once the first process serves; gunicorn forks the second up to 0.1 s later.
    wait_for(lambda: len(procfs.children(web.popen.pid)) == 2, what="both web processes", proc=web)
    serving, stopped = procfs.children(web.popen.pid)
    before = procfs.connections_accepted([serving], web.port)
    os.kill(stopped, signal.SIGSTOP)
    try:
        with parked(db, web, auth, task["id"], 2) as requests:
            during = procfs.connections_accepted([serving], web.port)
    finally:
        os.kill(stopped, signal.SIGCONT)
    assert len(during[serving] - before[serving]) == 2, "both connections should be in the running process"
    assert [r.result().status_code for r in requests] == [200, 200]


def test_cached_reads_and_sessions_found_in_redis_take_no_database_connection(
    spawn: Spawn, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    web = spawn("web", {"DATABASE_POOL_SIZE": "1"})
    auth = signup_and_login(web.url)
    task = _task(web, auth, "cached")
    url = f"{web.url}/v1/tasks/{task['id']}"
    assert httpx.get(url, headers=auth).status_code == 200  # now in Redis
    with parked(db, web, auth, task["id"], 1) as requests:
        cached = httpx.get(url, headers=auth)
        assert cached.status_code == 200
        assert cached.json()["title"] == "cached"
        # The pool really is exhausted: a read that needs PostgreSQL gets the pool's 503.
        exhausted = httpx.get(f"{web.url}/v1/tasks", headers=auth)
        assert exhausted.status_code == 503
        assert exhausted.headers["Retry-After"] == "1"
    assert requests[0].result().status_code == 200


def test_downloads_hold_no_database_connection_while_their_bytes_stream(shared_web: SharedWeb, spawn: Spawn) -> None:
    """The upload goes through the shared web; the downloads through a web of their own on the same data."""
    uploader, web = shared_web, spawn("web", {**shared_web.env, "DATABASE_POOL_SIZE": "1"})
    auth = signup_and_login(web.url)
    task = _task(web, auth)
    payload = b"0123456789abcdef" * (10 * 1024 * 1024 // 16)  # 10 MiB: far more than socket buffers hold
    uploaded = httpx.post(
        f"{uploader.url}/v1/tasks/{task['id']}/attachments",
        params={"filename": "big.bin"},
        content=payload,
        headers=auth,
        timeout=60,
    )
    assert uploaded.status_code == 201, uploaded.text
    download = f"{web.url}/v1/tasks/{task['id']}/attachments/{uploaded.json()['id']}"
    with contextlib.ExitStack() as stack:
        # Clients that open a download and do not read it: their handlers have returned (the status line is
        # here) while most of the body is still to be sent.
        slow = [stack.enter_context(httpx.stream("GET", download, headers=auth, timeout=60)) for _ in range(3)]
        assert [r.status_code for r in slow] == [200, 200, 200]
        listed = httpx.get(f"{web.url}/v1/tasks", headers=auth)
        assert listed.status_code == 200
        assert listed.json()["total"] == 1
        assert httpx.get(f"{web.url}/readyz").status_code == 200
        assert slow[0].read() == payload


def test_concurrent_uploads_each_need_only_one_connection_at_a_time(spawn: Spawn, bucket: Bucket) -> None:
    web = spawn("web", {"DATABASE_POOL_SIZE": "1"})
    auth = signup_and_login(web.url)
    task = _task(web, auth)
    payload = b"x" * (2 * 1024 * 1024)

    def upload(i: int) -> httpx.Response:
        return httpx.post(
            f"{web.url}/v1/tasks/{task['id']}/attachments",
            params={"filename": f"f{i}.bin"},
            content=payload,
            headers=auth,
            timeout=60,
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(upload, range(4)))
    assert [r.status_code for r in responses] == [201] * 4, [r.text for r in responses]
    assert len(list(bucket.list_blobs(prefix=f"attachments/{task['id']}/"))) == 4


def test_a_web_statement_and_a_silent_database_are_bounded_so_no_request_holds_its_connection_for_ever(
    app_env: dict[str, str],
) -> None:
    """A statement stuck behind a long transaction's lock, or a connection to a server that vanished in a failover,
    held a pooled connection and an in-flight slot with no end: Cloud Run's request timeout does not stop the
    container's work. The web pool's sessions carry both bounds (alle.db.WEB_BOUNDS)."""
    settings = Settings.model_validate(app_env)

    async def session() -> tuple[object, dict[str, str]]:
        pool = create_async_pool(settings)
        await pool.open(wait=True)
        try:
            async with pool.connection() as conn:
                shown = await (await conn.execute("SHOW statement_timeout")).fetchone()
                return shown, conn.info.get_parameters()
        finally:
            await pool.close()

    shown, parameters = asyncio.run(session())
    assert shown == {"statement_timeout": "20s"}
    assert {key: parameters.get(key) for key in ("tcp_user_timeout", "keepalives_idle", "connect_timeout")} == {
        "tcp_user_timeout": "30000",
        "keepalives_idle": "10",
        "connect_timeout": "10",
    }


def _web_backends(db: psycopg.Connection[tuple[object, ...]]) -> set[int]:
    """The sessions of the webs on this test's database (the shared web's are on another)."""
    rows = db.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'alle-web' AND datname = current_database()"
    ).fetchall()
    return {int(str(pid)) for (pid,) in rows}


def test_after_a_database_failover_one_failed_request_replaces_every_broken_connection(
    spawn: Spawn, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    """A failover or restart breaks every pooled connection at once. Each used to fail a request of its own before
    the pool replaced it (4 here; up to DATABASE_POOL_SIZE per process, on every instance); the first failure now
    has the pool test the others in the background."""
    web = spawn("web", {"DATABASE_POOL_SIZE": "4"})
    auth = signup_and_login(web.url)
    wait_for(lambda: len(_web_backends(db)) == 4, what="the web's 4 pooled connections")
    broken = _web_backends(db)
    for pid in broken:
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))

    statuses = []
    while 503 not in statuses:
        statuses.append(httpx.get(f"{web.url}/v1/tasks", headers=auth).status_code)
        assert len(statuses) <= 4, statuses

    def replaced() -> bool:
        now = _web_backends(db)
        return len(now) == 4 and not now & broken

    wait_for(replaced, what="the pool to replace every broken connection")
    assert [httpx.get(f"{web.url}/v1/tasks", headers=auth).status_code for _ in range(8)] == [200] * 8
