"""A Redis that hangs (SIGSTOP on the real redis-server) costs a request at most one short timeout, then nothing.

A timeout is counted, not timed: `alle web` reaches Redis through a relay that records every command and the
connection it came on. A connection to a frozen Redis can wait for one reply and no more (redis-py drops it after
a timeout, and a retry or a new call opens a fresh one), so the connections that sent something while Redis was
frozen count the timeouts paid. Before the breaker (alle.cache.Breaker), completing a task paid three: the
session read, the invalidation and the enqueue.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

import backing
from conftest import Proc, Spawn, signup_and_login


def _command(buffer: bytearray) -> tuple[int, str] | None:
    """The length and name of the first complete RESP command (an array of bulk strings) in `buffer`, if any."""
    end = buffer.find(b"\r\n")
    if end < 0:
        return None
    count, position, name = int(buffer[1:end]), end + 2, ""
    for index in range(count):
        end = buffer.find(b"\r\n", position)
        if end < 0:
            return None
        start = end + 2
        stop = start + int(buffer[position + 1 : end])
        if len(buffer) < stop + 2:
            return None
        if index == 0:
            name = buffer[start:stop].decode().upper()
        position = stop + 2
    return position, name


class RedisRelay:
    """A unix-socket relay in front of the real Redis that records (connection number, command name) per command.

    A command is recorded before it is passed on, so whatever the web process waited a reply for is recorded
    before that reply came. A connection's recording ends when the web process closes it.
    """

    def __init__(self, path: Path, upstream: str) -> None:
        self.path = path
        self.upstream = upstream
        self.sent: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._readers: list[threading.Thread] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        number = 0
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:  # closed
                return
            number += 1
            redis_side = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            redis_side.connect(self.upstream)  # queued in the backlog even while Redis is stopped
            reader = threading.Thread(target=self._from_client, args=(number, client, redis_side), daemon=True)
            self._readers.append(reader)
            reader.start()
            threading.Thread(target=self._to_client, args=(redis_side, client), daemon=True).start()

    def _from_client(self, number: int, client: socket.socket, redis_side: socket.socket) -> None:
        pending = bytearray()
        while chunk := client.recv(65536):
            pending += chunk
            while (command := _command(pending)) is not None:
                length, name = command
                del pending[:length]
                with self._lock:
                    self.sent.append((number, name))
            redis_side.sendall(chunk)
        redis_side.close()

    @staticmethod
    def _to_client(redis_side: socket.socket, client: socket.socket) -> None:
        try:
            while chunk := redis_side.recv(65536):
                client.sendall(chunk)
        except OSError:  # the web process closed its side
            pass
        client.close()

    def mark(self) -> int:
        with self._lock:
            return len(self.sent)

    def connections_since(self, mark: int) -> dict[int, list[str]]:
        """Every connection that sent a command after `mark`, with those commands; wait for the readers first."""
        for reader in self._readers:
            reader.join(timeout=30)
            assert not reader.is_alive(), "the web process still holds a Redis connection"
        commands: dict[int, list[str]] = {}
        for number, name in self.sent[mark:]:
            commands.setdefault(number, []).append(name)
        return commands

    def close(self) -> None:
        self._server.close()


@dataclass
class Hung:
    web: Proc
    auth: dict[str, str]
    task_id: str
    relay: RedisRelay


@pytest.fixture
def hung(spawn: Spawn, services: backing.Backing) -> Iterator[Hung]:
    """`alle web` through the relay, with a user logged in, a task created and the session read through Redis (a
    create checks it in PostgreSQL), so its Redis connection is warm."""
    short = Path(tempfile.mkdtemp(prefix="relay-"))  # a unix socket path has at most 107 bytes
    relay = RedisRelay(short / "redis.sock", services.redis.socket_file)
    # A breaker pause longer than any test, so the order of events, not the clock, decides what is skipped.
    web = spawn("web", env={"REDIS_URL": f"unix://{relay.path}", "REDIS_BREAKER_SECONDS": "3600"})
    auth = signup_and_login(web.url)
    task = httpx.post(f"{web.url}/v1/tasks", json={"title": "t"}, headers=auth)
    assert task.status_code == 201, task.text
    assert httpx.get(f"{web.url}/v1/users/me", headers=auth).status_code == 200
    yield Hung(web, auth, task.json()["id"], relay)
    relay.close()
    shutil.rmtree(short)


@contextmanager
def frozen(services: backing.Backing) -> Iterator[None]:
    """redis-server stopped, not killed: connections stay open and every reply just never comes."""
    pid = services.redis.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_hang_costs_one_wait_on_redis_then_none_while_the_breaker_is_open(
    hung: Hung, services: backing.Backing
) -> None:
    url = hung.web.url
    first = hung.relay.mark()
    with frozen(services):
        read = httpx.get(f"{url}/v1/tasks/{hung.task_id}", headers=hung.auth, timeout=60)
        assert read.status_code == 200, read.text
        after_first = hung.relay.mark()  # the MGET was recorded before it was passed on, so before the answer
        again = httpx.get(f"{url}/v1/tasks/{hung.task_id}", headers=hung.auth, timeout=60)
        login = httpx.post(f"{url}/v1/auth/login", json={"email": "a@example.com", "password": "x" * 12}, timeout=60)
    assert (again.status_code, again.json()["id"], login.status_code) == (200, hung.task_id, 401)
    assert hung.web.terminate() == 0  # closes every Redis connection, so the relay has seen all they sent
    # One MGET (session and task together) on a warm connection, its only wait; then Redis is left alone.
    assert list(hung.relay.connections_since(first).values()) == [["MGET"]]
    assert hung.relay.connections_since(after_first) == {}


def test_completing_a_task_while_redis_hangs_waits_on_redis_once(
    hung: Hung, services: backing.Backing, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    epoch = db.execute("SELECT epoch FROM cache_epoch").fetchone()
    mark = hung.relay.mark()
    with frozen(services):
        done = httpx.post(f"{hung.web.url}/v1/tasks/{hung.task_id}/complete", headers=hung.auth, timeout=60)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "done"
    assert hung.web.terminate() == 0
    # The session read waited and tripped the breaker; the invalidation and the enqueue did not try Redis.
    assert list(hung.relay.connections_since(mark).values()) == [["MGET"]]
    assert db.execute("SELECT epoch - 1 FROM cache_epoch").fetchone() == epoch  # invalidated all the same
    queued = db.execute("SELECT enqueued_at FROM notifications WHERE task_id = %s", (hung.task_id,)).fetchone()
    assert queued == (None,)  # left to the outbox sweep
