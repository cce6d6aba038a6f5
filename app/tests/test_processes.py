"""Twelve-factor properties of the processes themselves: stateless, disposable, logs as event streams."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, cast

import httpx
import psycopg
import pytest
from gunicorn.arbiter import Arbiter
from pydantic import ValidationError

import backing
import procfs
from alle.api.app import create_app
from alle.api.prefork import Drainer, Prefork
from alle.api.server import uvicorn_config
from alle.config import Settings
from conftest import OFFLINE_ENV, Spawn, blocked_on_lock, signup_and_login, wait_for

if TYPE_CHECKING:
    from gunicorn.workers.base import Worker

#: Between Cloud Run's SIGTERM and its SIGKILL.
CLOUD_RUN_GRACE_SECONDS = 10


def test_two_web_processes_share_sessions_and_data(spawn: Spawn) -> None:
    first, second = spawn("web"), spawn("web")
    auth = signup_and_login(first.url)
    task = httpx.post(f"{first.url}/v1/tasks", json={"title": "shared"}, headers=auth).json()
    seen = httpx.get(f"{second.url}/v1/tasks/{task['id']}", headers=auth)
    assert seen.status_code == 200 and seen.json()["title"] == "shared"
    httpx.patch(f"{second.url}/v1/tasks/{task['id']}", json={"title": "edited"}, headers=auth)
    assert httpx.get(f"{first.url}/v1/tasks/{task['id']}", headers=auth).json()["title"] == "edited"


@pytest.mark.parametrize(
    ("processes", "stop"),
    [("1", signal.SIGTERM), ("1", signal.SIGINT), ("2", signal.SIGTERM), ("2", signal.SIGINT)],
    ids=["one-process-SIGTERM", "one-process-SIGINT", "two-forked-processes-SIGTERM", "two-forked-processes-SIGINT"],
)
def test_a_stop_signal_during_a_request_lets_it_complete_then_exits_zero(
    spawn: Spawn,
    db: psycopg.Connection[tuple[object, ...]],
    app_env: dict[str, str],
    processes: str,
    stop: signal.Signals,
) -> None:
    """Cloud Run sends SIGTERM; `podman run -it` and a terminal send SIGINT. With two processes, as in production,
    the signal goes to gunicorn's arbiter alone, which has each process drain on its own."""
    web = spawn("web", {"WEB_CONCURRENCY": processes})
    auth = signup_and_login(web.url)
    task = httpx.post(f"{web.url}/v1/tasks", json={"title": "slow"}, headers=auth).json()
    result: dict[str, httpx.Response] = {}
    with db.transaction():
        # Hold the row so the PATCH is in flight inside the web process when SIGTERM arrives. The create was
        # committed before its 201, so the row is there to lock (committing after the response made this flaky).
        locked = db.execute("SELECT id FROM tasks WHERE id = %s FOR UPDATE", (task["id"],)).fetchone()
        assert locked is not None
        request = threading.Thread(
            target=lambda: result.setdefault(
                "r",
                httpx.patch(f"{web.url}/v1/tasks/{task['id']}", json={"title": "finished"}, headers=auth, timeout=20),
            )
        )
        request.start()
        wait_for(lambda: blocked_on_lock(app_env["DATABASE_URL"], "alle-web"), what="the PATCH to wait on the lock")
        web.popen.send_signal(stop)

        def refuses_connections() -> bool:
            try:
                httpx.get(f"{web.url}/healthz", timeout=1)
            except httpx.HTTPError:
                return True
            return False

        wait_for(refuses_connections, what=f"web to stop accepting after {stop.name}", timeout=5)
        assert web.popen.poll() is None, "web exited while a request was in flight"
    request.join(10)
    assert result["r"].status_code == 200
    assert result["r"].json()["title"] == "finished"
    assert web.popen.wait(10) == 0
    assert "web stopped; pools closed" in web.output()


def test_logs_are_json_lines_on_stdout_with_trace_and_http_request(spawn: Spawn, workdir: Path) -> None:
    web = spawn("web", {"GOOGLE_CLOUD_PROJECT": "alle-test-project"})
    auth = signup_and_login(web.url)
    trace = "0af7651916cd43dd8448eb211c80319c"
    httpx.get(f"{web.url}/v1/tasks", headers={**auth, "traceparent": f"00-{trace}-b7ad6b7169203331-01"})
    httpx.get(
        f"{web.url}/v1/tasks", headers={**auth, "X-Cloud-Trace-Context": "105445aa7843bc8bf206b12000100000/1;o=1"}
    )
    web.terminate()
    records = [json.loads(line) for line in web.output().splitlines()]
    assert all({"severity", "message", "time"} <= r.keys() for r in records)
    assert not any("color_message" in r for r in records)
    access = [r for r in records if "httpRequest" in r]
    assert any(r["httpRequest"]["requestUrl"] == "/v1/tasks" and r["httpRequest"]["status"] == 200 for r in access)
    traced = [r.get("logging.googleapis.com/trace") for r in access]
    assert f"projects/alle-test-project/traces/{trace}" in traced
    assert "projects/alle-test-project/traces/105445aa7843bc8bf206b12000100000" in traced
    assert list(workdir.iterdir()) == [], "the app wrote files to its working directory"


def test_worker_killed_mid_job_still_completes_the_job_once(
    spawn: Spawn, db: psycopg.Connection[tuple[object, ...]], app_env: dict[str, str]
) -> None:
    web = spawn("web")
    auth = signup_and_login(web.url)
    task = httpx.post(f"{web.url}/v1/tasks", json={"title": "ship it"}, headers=auth).json()
    httpx.post(f"{web.url}/v1/tasks/{task['id']}/complete", headers=auth)
    with db.transaction():
        # The handler locks the notification row; holding it first keeps the job in progress.
        db.execute("SELECT id FROM notifications WHERE task_id = %s FOR UPDATE", (task["id"],))
        doomed = spawn("worker")
        wait_for(lambda: blocked_on_lock(app_env["DATABASE_URL"], "alle-worker"), what="the worker inside the job")
        doomed.popen.send_signal(signal.SIGKILL)
        doomed.popen.wait(5)
    assert db.execute("SELECT sent_at FROM notifications WHERE task_id = %s", (task["id"],)).fetchone() == (None,)
    survivor = spawn("worker")
    wait_for(
        lambda: (
            db.execute("SELECT sent_at IS NOT NULL FROM notifications WHERE task_id = %s", (task["id"],)).fetchone()
            == (True,)
        ),
        what="the redelivered job to complete",
        timeout=30,
    )
    survivor.terminate()
    mails = [line for line in survivor.output().splitlines() if json.loads(line)["message"] == "mail"]
    assert len(mails) == 1
    assert "ship it" in mails[0]


def test_worker_stops_on_sigterm_within_cloud_runs_10_s_whichever_of_its_threads_the_kernel_offers_it_to(
    spawn: Spawn,
) -> None:
    """A SIGTERM that one of Dramatiq's threads took left the main thread asleep until its next sweep, 30 s later.
    Blocked in every thread but the main one, it can only reach the main thread's sigwait. A signal sent to a
    thread's id is the whole process's, offered to that thread first."""
    worker = spawn("worker")
    wait_for(lambda: "worker started" in worker.output(), what="worker start")
    pid = worker.popen.pid
    blocked = procfs.blocked_signals_by_thread(pid)
    del blocked[pid]  # the main thread, whose sigwait unblocks them while it waits
    assert blocked, "the worker runs its jobs on threads of its own"
    assert all({signal.SIGTERM, signal.SIGINT} <= numbers for numbers in blocked.values()), blocked

    os.kill(min(blocked), signal.SIGTERM)

    assert worker.popen.wait(CLOUD_RUN_GRACE_SECONDS) == 0
    assert "worker stopped" in worker.output()


def test_worker_stops_within_cloud_runs_10_s_while_its_outbox_sweep_waits_on_a_lock(
    spawn: Spawn, db: psycopg.Connection[tuple[object, ...]], app_env: dict[str, str]
) -> None:
    """A migration's ALTER TABLE holds such a lock. When the sweep ran on the thread that takes the stop signals,
    the stop waited for the sweep's lock_timeout, 30 s, and Cloud Run's SIGKILL cut the jobs in flight."""
    with db.transaction():
        db.execute("LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE")
        worker = spawn("worker")
        wait_for(lambda: blocked_on_lock(app_env["DATABASE_URL"], "alle-worker"), what="the sweep to wait on the lock")
        worker.popen.send_signal(signal.SIGTERM)
        assert worker.popen.wait(CLOUD_RUN_GRACE_SECONDS) == 0
    assert "worker stopped" in worker.output()


def test_web_concurrency_forks_that_many_processes_replaces_one_that_dies_and_all_drain_on_sigterm(
    spawn: Spawn,
) -> None:
    web = spawn("web", {"WEB_CONCURRENCY": "2"}, wait_ready=False)
    wait_for(lambda: web.output().count('"web started"') == 2, what="two web processes to start", proc=web)
    forked = procfs.children(web.popen.pid)
    assert len(forked) == 2, forked
    auth = signup_and_login(web.url)
    assert httpx.post(f"{web.url}/v1/tasks", json={"title": "served"}, headers=auth).status_code == 201

    os.kill(forked[0], signal.SIGKILL)
    wait_for(lambda: web.output().count('"web started"') == 3, what="a process in place of the killed one", proc=web)
    assert len(procfs.children(web.popen.pid)) == 2
    assert httpx.get(f"{web.url}/v1/tasks", headers=auth).status_code == 200

    assert web.terminate() == 0
    assert web.output().count("web stopped; pools closed") == 2


#: An arbiter whose processes each, just forked, have it stopped by STOP (the arbiter then sends each process the
#: same signal), then take a while to set their own handlers.
_STOPPED_AT_FORK = """
import os, signal, sys, time
STOP = signal.Signals[sys.argv[1]]
from alle.api.app import create_app
from alle.api.prefork import Prefork
from alle.api.server import uvicorn_config
from alle.config import Settings
from alle.logs import configure

def stop_the_arbiter(arbiter, process):
    os.kill(arbiter.pid, STOP)
    # Until the arbiter's signal to this process has come, which takes it at most 0.1 s: held, it waits as
    # pending. Lost to the arbiter's handlers, it never shows, and at the deadline the process goes on to serve,
    # before the arbiter's kill at 9 s.
    deadline = time.monotonic() + 5
    while STOP not in signal.sigpending() and time.monotonic() < deadline:
        time.sleep(0.01)

configure("INFO")
settings = Settings()
app = create_app(settings)
prefork = Prefork(uvicorn_config(app, settings), settings, app.instance)
prefork.cfg.set("post_fork", stop_the_arbiter)
sys.exit(prefork.serve())
"""


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGQUIT"])
def test_a_stop_that_comes_as_a_process_is_forked_ends_it_before_it_serves_and_without_a_core_dump(
    stop: str, tmp_path: Path
) -> None:
    """A just-forked process runs the arbiter's signal handlers, which only queue a signal for the arbiter's loop:
    a SIGTERM as an instance started was lost, the process went on to serve, and the arbiter killed it 9 s later.
    Held until the process has its own handlers, the stop must then end it: SIGQUIT's default action dumps core."""
    done = subprocess.run(
        [sys.executable, "-c", _STOPPED_AT_FORK, stop],
        env={**os.environ, **OFFLINE_ENV, "WEB_CONCURRENCY": "2", "PORT": str(backing.free_port())},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("Booting worker") == 2
    # Each process ended on its own before it served: not by the signal's default action, which the arbiter
    # reports ("was sent"), nor by the arbiter's kill at its limit, which would come only after both had served.
    assert "was sent" not in done.stdout
    assert "web started" not in done.stdout
    assert done.stdout.count("stopped before serving: a stop came as it started") == 2


def test_gunicorn_never_kills_an_idle_instances_processes_and_stops_within_cloud_runs_10_s() -> None:
    """Cloud Run all but stops an idle instance's CPU, so a process cannot keep a heartbeat; gunicorn's default
    30 s one killed both processes after every idle spell. Its kill after SIGTERM comes after the longest drain
    the settings allow and before Cloud Run's SIGKILL."""
    settings = Settings(**{**OFFLINE_ENV, "WEB_CONCURRENCY": "2"})  # type: ignore[arg-type]
    app = create_app(settings)
    assert app.instance is not None
    arbiter = Prefork(uvicorn_config(app, settings), settings, app.instance).cfg
    assert arbiter.timeout == 0
    assert arbiter.graceful_timeout < CLOUD_RUN_GRACE_SECONDS
    with pytest.raises(ValidationError, match="SHUTDOWN_GRACE_SECONDS"):
        Settings(**{**OFFLINE_ENV, "SHUTDOWN_GRACE_SECONDS": str(arbiter.graceful_timeout)})  # type: ignore[arg-type]


def test_an_exiting_process_leaves_its_heap_out_of_the_final_garbage_collections(app_env: dict[str, str]) -> None:
    """Walking the whole heap once more at exit cost each `alle` process about 0.5 s of CPU (web, worker, and every
    admin command) for memory the OS reclaims anyway. atexit handlers run after `main` and before those collections."""
    probe = (
        "import atexit, gc; from alle.cli import main; "
        "atexit.register(lambda: print('frozen objects at exit:', gc.get_freeze_count())); "
        "main(['dead-jobs', 'list'])"
    )
    run = subprocess.run([sys.executable, "-c", probe], env=app_env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    [line] = [line for line in run.stdout.splitlines() if line.startswith("frozen objects at exit:")]
    assert int(line.split(":")[1]) > 0, "the heap was left to the final collections"


def test_each_forked_process_gets_a_slot_of_its_own_a_replacement_the_freed_zeroed_one_and_a_reload_fits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The instance-wide in-flight bound (alle.api.limits.InstanceLoad) adds up one slot per process: two processes
    in one slot would hide each other's requests, and a slot left to a dead process would hold its count."""
    settings = Settings(**{**OFFLINE_ENV, "WEB_CONCURRENCY": "2"})  # type: ignore[arg-type]
    app = create_app(settings)
    instance = app.instance
    assert instance is not None
    arbiter = Drainer(Prefork(uvicorn_config(app, settings), settings, instance))
    forked: dict[int, int | None] = {}  # pid → the slot the process found set as it was forked

    def fork(self: Arbiter) -> int:
        pid = 1000 + len(forked)
        forked[pid] = instance.slot
        self.WORKERS[pid] = cast("Worker", object())  # only its key is read
        return pid

    monkeypatch.setattr(Arbiter, "spawn_worker", fork)
    first, second = arbiter.spawn_worker(), arbiter.spawn_worker()
    assert (forked[first], forked[second]) == (0, 1)

    instance.slot = 0
    instance.publish(7)  # the first process dies with 7 requests in flight
    del arbiter.WORKERS[first]
    arbiter.cfg.child_exit(arbiter, object())
    assert instance.total() == 0
    replacement = arbiter.spawn_worker()
    assert forked[replacement] == 0

    # A reload forks as many new processes before the old ones exit; one more than that finds no slot.
    reloaded = [arbiter.spawn_worker() for _ in range(2)]
    assert [forked[pid] for pid in reloaded] == [2, 3]
    assert forked[arbiter.spawn_worker()] is None


@pytest.mark.parametrize("processes", ["1", "2"])
def test_web_listens_on_every_ipv4_address_unless_told_otherwise_as_cloud_run_routes_to_it(
    spawn: Spawn, processes: str
) -> None:
    """Cloud Run sends requests to the container's port from outside it; only bin/run-local narrows WEB_HOST."""
    web = spawn("web", {"WEB_CONCURRENCY": processes})
    assert web.port is not None
    assert procfs.listening_addresses(web.port) == {"0.0.0.0"}  # noqa: S104 - what the test is about
