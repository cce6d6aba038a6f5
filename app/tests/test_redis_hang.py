"""A Redis that hangs (SIGSTOP on the real redis-server) costs a request one short timeout per Redis call, no more.

A timeout is counted, not timed: `alle web` reaches Redis through a relay that records every command and the
connection it came on. A connection to a frozen Redis can wait for one reply and no more (redis-py drops it after
a timeout), so the connections a request used while Redis was frozen bound the timeouts it paid for. A client
that retries a timeout opens a fresh connection for every retry.
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
        #: Redis gone: every new connection is accepted and closed at once (as by a restarting Redis).
        self.dropping = False
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
            if self.dropping:
                with self._lock:
                    self.sent.append((number, "(dropped)"))
                client.close()
                continue
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
    """`alle web` through the relay, with a user logged in and a task created (so its connections are warm)."""
    short = Path(tempfile.mkdtemp(prefix="relay-"))  # a unix socket path has at most 107 bytes
    relay = RedisRelay(short / "redis.sock", services.redis.socket_file)
    web = spawn("web", env={"REDIS_URL": f"unix://{relay.path}"})
    auth = signup_and_login(web.url)
    task = httpx.post(f"{web.url}/v1/tasks", json={"title": "t"}, headers=auth)
    assert task.status_code == 201, task.text
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


def test_reading_a_task_while_redis_hangs_waits_on_redis_once(hung: Hung, services: backing.Backing) -> None:
    mark = hung.relay.mark()
    with frozen(services):
        read = httpx.get(f"{hung.web.url}/v1/tasks/{hung.task_id}", headers=hung.auth, timeout=60)
    assert read.status_code == 200, read.text
    assert read.json()["id"] == hung.task_id
    assert hung.web.terminate() == 0  # closes every Redis connection, so the relay has seen all they sent
    # One MGET (session and task) on a warm connection; a retried timeout would show as a fresh connection.
    assert list(hung.relay.connections_since(mark).values()) == [["MGET"]]


def test_completing_a_task_while_redis_hangs_waits_once_per_redis_call(hung: Hung, services: backing.Backing) -> None:
    mark = hung.relay.mark()
    with frozen(services):
        done = httpx.post(f"{hung.web.url}/v1/tasks/{hung.task_id}/complete", headers=hung.auth, timeout=60)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "done"
    assert hung.web.terminate() == 0
    # Three calls, each tried once: the session read, the invalidation, and the enqueue (the outbox keeps it).
    used = hung.relay.connections_since(mark)
    assert len(used) <= 3, used
