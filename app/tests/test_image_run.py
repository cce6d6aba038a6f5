"""The release image built with podman and run the way Cloud Run runs it (dev/image.py).

These tests need podman, runc and debootstrap. Without them the module skips with one line; under CI it fails.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import psycopg
import pytest

import backing
import image
from alle.config import CONTRACT_ENV
from conftest import signup_and_login, wait_for

DOCKERFILE = image.ROOT / image.DOCKERFILE
MISSING = image.missing_tools()
if MISSING:
    _MESSAGE = f"{', '.join(MISSING)} not installed: the built-image tests need podman, runc and debootstrap."
    if os.environ.get("CI") == "true":
        pytest.fail(_MESSAGE, pytrace=False)
    pytest.skip(_MESSAGE, allow_module_level=True)

#: A cold build (debootstrap, then pip in the build stage) takes minutes; the project default is 120 s per test.
#: One xdist worker runs the whole module in a row (bin/test's --dist loadgroup): the image's migrate, web and
#: worker start once, not once per worker and again each time a worker comes back to the module.
pytestmark = [pytest.mark.timeout(900), pytest.mark.xdist_group("image")]


@pytest.fixture(scope="module")
def built() -> str:
    return image.build()


def _run(built: str, *command: str) -> subprocess.CompletedProcess[str]:
    """A one-off process in the image, read-only, with no service env."""
    podman_run = [*image.PODMAN, "run", "--rm", "--read-only", *image.RUN_FLAGS]
    return subprocess.run(
        [*podman_run, "--entrypoint", command[0], built, *command[1:]], capture_output=True, text=True
    )


def test_a_build_with_nothing_changed_returns_the_built_image_without_running_podman_build(
    built: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    called: list[tuple[str, ...]] = []
    real = image.podman

    def spied(*args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess[str]:
        called.append(args)
        return real(*args, check=check, capture=capture)

    monkeypatch.setattr(image, "podman", spied)
    assert image.build() == built
    assert [args for args in called if args[0] == "build"] == []
    assert ("image", "exists", built) in called, "the stamp was trusted without looking for its image in the store"
    assert ("tag", built, image.TAG) in called


def test_image_holds_no_compiler_or_build_tools(built: str) -> None:
    probe = (
        "import importlib.util, shutil; "
        "print([t for t in ('gcc', 'cc', 'c++', 'g++', 'make', 'ld', 'as') if shutil.which(t)]"
        " + [m for m in ('setuptools', 'wheel') if importlib.util.find_spec(m)])"
    )
    result = _run(built, "python", "-c", probe)
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr


def test_image_and_this_venv_run_the_same_python_minor_as_the_dockerfiles_base(built: str) -> None:
    result = _run(built, "python", "-c", "import sys; print('%d.%d' % sys.version_info[:2])")
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert result.stdout.strip() == minor, result.stderr
    assert re.search(rf"^ARG BASE=python:{re.escape(minor)}\.\d+-", DOCKERFILE.read_text(), re.M)


def test_pip_check_passes_inside_the_image(built: str) -> None:
    result = _run(built, "pip", "--no-cache-dir", "check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_stays_under_its_size_budget(built: str) -> None:
    size = image.size_mb(built)
    print(f"release image: {size:.0f} MB (budget {image.SIZE_BUDGET_MB} MB)")
    assert size < image.SIZE_BUDGET_MB


@dataclass
class Release:
    """migrate as a job, then web and worker running from the image against the backing services."""

    image: str
    env: dict[str, str]
    database: str
    url: str
    migrate: subprocess.CompletedProcess[str]
    mounts: list[str]
    ready_cpu: float
    ready_wall: float
    names: dict[str, str] = field(default_factory=dict)

    def logs(self, kind: str) -> str:
        result = image.podman("logs", self.names[kind], check=False)
        return result.stdout + result.stderr


def _started_at(name: str) -> datetime:
    """When the runtime started the container's process, as podman recorded it."""
    stamp = image.inspect(name)["State"]["StartedAt"]
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", stamp))


@pytest.fixture(scope="module")
def release(built: str, services: backing.Backing) -> Iterator[Release]:
    attached = image.attach(services)
    database = services.create_database(f"i_{uuid.uuid4().hex[:12]}")
    attached.env["DATABASE_URL"] = f"{database.split('?', 1)[0]}?host={image.SOCKETS}"
    env = {
        "APP_ENV": "staging",
        "RELEASE": "image-test",
        "LOG_LEVEL": "INFO",
        "SECRET_KEY": secrets.token_urlsafe(48),
        **attached.env,
    }
    run_id = uuid.uuid4().hex[:8]
    names = {kind: f"alle-test-{kind}-{run_id}" for kind in ("migrate", "web", "worker")}
    migrate = subprocess.run(
        image.run_args(built, "migrate", name=names["migrate"], env=env, mounts=attached.mounts, remove=True),
        capture_output=True,
        text=True,
    )
    port = backing.free_port()
    url = f"http://127.0.0.1:{port}"
    # Two processes per instance, as production runs them (Pulumi.production.yaml webProcesses).
    web_env = {**env, "PORT": str(port), "WEB_CONCURRENCY": "2"}
    try:
        for kind, kind_env in (("web", web_env), ("worker", env)):
            args = image.run_args(built, kind, name=names[kind], env=kind_env, mounts=attached.mounts, detach=True)
            subprocess.run(args, check=True, capture_output=True)
            if kind == "web":
                wait_for(lambda: image.ready(url), what=f"the image's web on {url}", timeout=30)
                cpu = image.cpu_seconds(names["web"])
                wall = (datetime.now().astimezone() - _started_at(names["web"])).total_seconds()
        yield Release(built, env, database, url, migrate, attached.mounts, cpu, wall, names)
    finally:
        for name in (names["web"], names["worker"]):
            image.podman("rm", "--force", "--ignore", name, check=False)


def test_the_container_env_is_the_contract_plus_the_emulator_switch(release: Release) -> None:
    assert set(release.env) <= {*CONTRACT_ENV, "STORAGE_EMULATOR_HOST"}
    web = image.inspect(release.names["web"])
    assert web["Config"]["User"] == "10001"
    assert web["HostConfig"]["ReadonlyRootfs"] is True


def test_migrate_runs_to_completion_as_a_job(release: Release) -> None:
    assert release.migrate.returncode == 0, release.migrate.stdout + release.migrate.stderr
    with psycopg.connect(release.database) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() is not None


def test_web_is_ready_within_2_cpu_seconds_of_its_start(release: Release) -> None:
    """Cloud Run gives the process its own vCPU, where CPU time to ready is wall time; this machine is shared,
    so its wall time (printed) measures the neighbours as much as the app."""
    print(f"web ready after {release.ready_cpu:.2f} CPU s, {release.ready_wall:.2f} s wall since the container started")
    assert release.ready_cpu <= 2, release.logs("web")


def test_web_serves_the_api_end_to_end_with_an_attachment_round_trip(release: Release) -> None:
    auth = signup_and_login(release.url)
    created = httpx.post(f"{release.url}/v1/tasks", json={"title": "from the image"}, headers=auth)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    payload = os.urandom(300_000)
    uploaded = httpx.post(
        f"{release.url}/v1/tasks/{task_id}/attachments",
        params={"filename": "scan.pdf"},
        content=payload,
        headers={**auth, "Content-Type": "application/pdf"},
        timeout=30,
    )
    assert uploaded.status_code == 201, uploaded.text + release.logs("web")
    download = httpx.get(f"{release.url}/v1/tasks/{task_id}/attachments/{uploaded.json()['id']}", headers=auth)
    assert (download.status_code, download.content) == (200, payload)


def test_worker_in_the_image_processes_a_report_job(release: Release) -> None:
    auth = signup_and_login(release.url)
    assert httpx.post(f"{release.url}/v1/tasks", json={"title": "reported"}, headers=auth).status_code == 201
    requested = httpx.post(f"{release.url}/v1/reports", headers=auth)
    assert requested.status_code == 202, requested.text
    url = f"{release.url}/v1/reports/{requested.json()['id']}"
    wait_for(lambda: httpx.get(url, headers=auth).json()["status"] == "done", what="the report", timeout=30)
    assert "reported" in httpx.get(f"{url}/download", headers=auth).text


def test_nothing_is_written_outside_tmp(release: Release) -> None:
    """/tmp is a tmpfs and the root is read-only; `podman diff` lists only what the runner itself created: the
    sockets' mount points and its /etc/hosts and /etc/resolv.conf."""
    runner = {"/etc", image.SOCKETS, *(mount.split(":")[1] for mount in release.mounts)}
    for kind in ("web", "worker"):
        changed = json.loads(image.podman("diff", "--format", "json", release.names[kind]).stdout or "{}") or {}
        written = {path for paths in changed.values() for path in paths}
        assert written <= runner, f"{kind} wrote {sorted(written - runner)}"


def test_web_and_worker_exit_0_on_podman_stop_within_cloud_runs_10_s(release: Release) -> None:
    """Last in this module: it stops the release. podman sends SIGKILL after 10 s, which would exit 137."""
    for kind in ("web", "worker"):
        assert image.stop(release.names[kind]) == 0, release.logs(kind)
    assert not image.ready(release.url)
