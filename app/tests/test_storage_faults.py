"""Attachments against a storage emulator that stops: bounded failures, clear 503s, nothing half-written.

Each test runs its own emulator (same package as the shared one), so stopping it touches no other test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gcp_storage_emulator.server import create_server

from backing import BUCKET, free_port
from conftest import Proc, Spawn, signup_and_login

#: The promise under test (app/README.md): a dead bucket is answered within this many seconds.
BOUND_SECONDS = 15


class Emulator:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: Any = None

    def start(self) -> None:
        self.server = create_server("127.0.0.1", self.port, in_memory=True, default_bucket=BUCKET)
        self.server._api.daemon = True
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def names(self) -> list[str]:
        """Every object in the bucket, through the JSON API the app's client library uses."""
        listing = httpx.get(f"{self.url}/storage/v1/b/{BUCKET}/o").json()
        return [item["name"] for item in listing.get("items", [])]


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    running = Emulator()
    running.start()
    yield running
    running.stop()


@pytest.fixture
def web(spawn: Spawn, app_env: dict[str, str], emulator: Emulator) -> Proc:
    return spawn("web", env={**app_env, "STORAGE_EMULATOR_HOST": emulator.url})


def _task(web: Proc, auth: dict[str, str]) -> str:
    created = httpx.post(f"{web.url}/v1/tasks", json={"title": "t"}, headers=auth)
    return f"{web.url}/v1/tasks/{created.json()['id']}/attachments"


def test_an_upload_to_a_stopped_bucket_is_a_503_within_the_bound_with_the_cause_logged(
    web: Proc, emulator: Emulator
) -> None:
    auth = signup_and_login(web.url)
    url = _task(web, auth)
    emulator.stop()
    started = time.monotonic()
    refused = httpx.post(url, params={"filename": "a.bin"}, content=b"x" * 3_000_000, headers=auth, timeout=60)
    elapsed = time.monotonic() - started
    assert refused.status_code == 503, refused.text
    assert refused.json() == {"detail": "File storage is unavailable; retry shortly."}
    assert elapsed < BOUND_SECONDS
    log = web.output()
    assert "storage unavailable" in log
    assert "Connection" in log  # the real cause, not "Stream is already exhausted"
    assert "Stream is already exhausted" not in log
    # No bytes were sent, so there is no partial object to delete, nor a by-hand deletion to ask for.
    assert "could not delete a partial upload" not in log
    emulator.start()
    assert httpx.get(url, headers=auth).json() == []
    assert emulator.names() == []


def test_an_upload_that_fails_partway_leaves_no_object(web: Proc, emulator: Emulator) -> None:
    """The first chunks reach the bucket, then it stops: the resumable upload is cancelled, never finalised."""
    auth = signup_and_login(web.url)
    url = _task(web, auth)

    def body() -> Iterator[bytes]:
        yield b"x" * 2_500_000  # more than two upload chunks: the upload is under way
        emulator.stop()
        yield b"y" * 2_500_000

    refused = httpx.post(url, params={"filename": "a.bin"}, content=body(), headers=auth, timeout=60)
    assert refused.status_code == 503
    emulator.start()
    assert emulator.names() == []
    assert httpx.get(url, headers=auth).json() == []


def test_a_download_from_a_stopped_bucket_is_a_503_before_any_byte(web: Proc, emulator: Emulator) -> None:
    auth = signup_and_login(web.url)
    url = _task(web, auth)
    stored = httpx.post(url, params={"filename": "a.bin"}, content=b"x" * 1000, headers=auth).json()
    assert len(emulator.names()) == 1  # the listing the other tests rely on sees what was stored
    emulator.stop()
    started = time.monotonic()
    refused = httpx.get(f"{url}/{stored['id']}", headers=auth, timeout=60)
    assert refused.status_code == 503
    assert time.monotonic() - started < BOUND_SECONDS
    assert "storage unavailable" in web.output()


def test_a_download_that_fails_midway_aborts_the_connection(web: Proc, emulator: Emulator) -> None:
    """Never a short body under a full Content-Length that a client could take for the whole file."""
    auth = signup_and_login(web.url)
    url = _task(web, auth)
    size = 10 * 1024 * 1024
    stored = httpx.post(url, params={"filename": "a.bin"}, content=b"x" * size, headers=auth, timeout=60).json()
    received = 0
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("GET", f"{url}/{stored['id']}", headers=auth, timeout=60) as response,
    ):
        assert response.headers["content-length"] == str(size)
        for chunk in response.iter_raw():
            if received == 0:
                emulator.stop()
            received += len(chunk)
    assert received < size


def test_uploads_are_served_as_an_allowed_type_or_octet_stream_never_sniffed(web: Proc) -> None:
    auth = signup_and_login(web.url)
    url = _task(web, auth)
    for declared, served in [
        ("text/html", "application/octet-stream"),
        ("image/svg+xml", "application/octet-stream"),
        ("image/PNG; charset=x", "image/png"),
        ("text/plain", "text/plain; charset=utf-8"),
    ]:
        stored = httpx.post(
            url, params={"filename": "f"}, content=b"<script>1</script>", headers={**auth, "Content-Type": declared}
        ).json()
        download = httpx.get(f"{url}/{stored['id']}", headers=auth)
        assert download.headers["content-type"] == served
        assert download.headers["x-content-type-options"] == "nosniff"
        assert download.headers["content-disposition"].startswith("attachment;")


def test_an_oversize_content_type_and_control_characters_in_filenames_are_refused(web: Proc) -> None:
    auth = signup_and_login(web.url)
    url = _task(web, auth)
    oversize = httpx.post(
        url, params={"filename": "f"}, content=b"x", headers={**auth, "Content-Type": "text/plain;" + "a" * 60_000}
    )
    assert oversize.status_code == 422
    for filename in ["a\r\nSet-Cookie: x=1", "a\nb", "a\tb"]:
        refused = httpx.post(url, params={"filename": filename}, content=b"x", headers=auth)
        assert refused.status_code == 422, filename
    assert httpx.get(url, headers=auth).json() == []
