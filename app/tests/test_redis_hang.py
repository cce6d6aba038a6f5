"""A Redis that hangs (SIGSTOP on the real redis-server) costs a request a bounded delay, not 11 s."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

import backing
from conftest import Proc, Spawn, signup_and_login

#: Above the web process's 0.5 s Redis timeouts times redis-py's default retries (1.8 s for a read, 2.8 s for a
#: completion, measured), far below the 11.8 s a completion took with the enqueue's 10 s timeout.
BOUND_SECONDS = 5


@contextmanager
def frozen(services: backing.Backing) -> Iterator[None]:
    """redis-server stopped, not killed: connections stay open and every reply just never comes."""
    pid = services.redis.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture
def web(spawn: Spawn) -> Proc:
    return spawn("web")


def test_completing_a_task_while_redis_hangs_is_answered_within_a_short_bound(
    web: Proc, services: backing.Backing
) -> None:
    auth = signup_and_login(web.url)
    task = httpx.post(f"{web.url}/v1/tasks", json={"title": "t"}, headers=auth).json()
    with frozen(services):
        started = time.monotonic()
        done = httpx.post(f"{web.url}/v1/tasks/{task['id']}/complete", headers=auth, timeout=60)
        elapsed = time.monotonic() - started
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "done"
    assert elapsed < BOUND_SECONDS, f"{elapsed:.1f} s"


def test_reading_a_task_while_redis_hangs_is_answered_within_a_short_bound(
    web: Proc, services: backing.Backing
) -> None:
    auth = signup_and_login(web.url)
    task = httpx.post(f"{web.url}/v1/tasks", json={"title": "t"}, headers=auth).json()
    with frozen(services):
        started = time.monotonic()
        read = httpx.get(f"{web.url}/v1/tasks/{task['id']}", headers=auth, timeout=60)
        elapsed = time.monotonic() - started
    assert read.status_code == 200, read.text
    assert elapsed < BOUND_SECONDS, f"{elapsed:.1f} s"
