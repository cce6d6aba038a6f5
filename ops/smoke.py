"""Smoke test of a deployed release: ready, running the expected release, its web client, a task round-trip."""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from ops.errors import OpsError


class SmokeError(OpsError):
    pass


def _call(
    url: str, method: str = "GET", body: Any = None, token: str | None = None, timeout: float = 15
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - https URL from stack outputs
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, _body(response.read())
    except urllib.error.HTTPError as error:
        return error.code, _body(error.read())


def _body(raw: bytes) -> Any:
    """JSON as the app answers; a proxy's error page comes back as its first line of text."""
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return raw.decode(errors="replace").strip().split("\n", 1)[0][:200]


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def wait_ready(
    base: str, wait_seconds: float, poll_seconds: float = 3, say: Callable[[str], None] = _progress
) -> dict[str, Any]:
    """Poll /readyz until it answers 200 and ready, saying after each miss what was seen and how long it has been.

    `degraded` (200: PostgreSQL answers, Redis does not) serves traffic but is not a release that passed: a new
    release with a wrong REDIS_URL or CA would be degraded for good.
    """
    url = f"{base}/readyz"
    say(f"waiting up to {wait_seconds:.0f} s for {url} to answer 200, ready")
    started = time.monotonic()
    while True:
        remaining = wait_seconds - (time.monotonic() - started)
        try:
            status, ready = _call(url, timeout=max(1.0, min(15.0, remaining)))
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            status, ready = 0, str(getattr(error, "reason", error))
        if status == 200 and isinstance(ready, dict) and ready.get("status") == "ready":
            return dict(ready)
        elapsed = time.monotonic() - started
        if elapsed >= wait_seconds:
            seen = f"answered {status}: {ready}" if status else f"did not answer ({ready})"
            raise SmokeError(
                f"{url} {seen} after {elapsed:.0f} s of waiting; check the service's logs, or allow longer: --timeout"
            )
        say(f"  {url}: {status or 'no answer'} ({ready}); {elapsed:.0f} s of {wait_seconds:.0f} s")
        time.sleep(min(poll_seconds, max(0.0, wait_seconds - elapsed)))


def _check_client(base: str) -> str:
    """The entry page answers 200 with a strict CSP, and the content-hashed script it names is served."""
    try:
        with urllib.request.urlopen(f"{base}/", timeout=15) as response:  # noqa: S310 - URL from stack outputs
            csp = response.headers.get("Content-Security-Policy", "")
            page = response.read().decode()
    except urllib.error.HTTPError as error:
        raise SmokeError(f"GET / answered {error.code}; the web client is not served") from error
    if "script-src 'self'" not in csp or "frame-ancestors 'none'" not in csp:
        raise SmokeError(f"GET / has no strict Content-Security-Policy (got {csp!r})")
    script = re.search(r'src="(/assets/[\w-]+\.[0-9a-f]{16}\.js)"', page)
    if script is None:
        raise SmokeError("GET / references no content-hashed script (/assets/NAME.HASH.js)")
    try:
        with urllib.request.urlopen(f"{base}{script[1]}", timeout=15):  # noqa: S310
            pass
    except urllib.error.HTTPError as error:
        raise SmokeError(f"GET {script[1]}, named by the entry page, answered {error.code}") from error
    return f"/ 200 with a strict CSP; {script[1]} 200"


def smoke(base_url: str, release: str | None = None, wait_seconds: float = 120) -> list[str]:
    """Raise SmokeError with what failed; return what was checked."""
    base = base_url.rstrip("/")
    ready = wait_ready(base, wait_seconds)
    checked = [f"/readyz 200 (release {ready.get('release')})"]
    if release and ready.get("release") != release:
        raise SmokeError(f"{base} runs release {ready.get('release')!r}, expected {release!r}")
    checked.append(_check_client(base))
    credentials = {"email": f"smoke-{uuid.uuid4().hex[:12]}@example.com", "password": uuid.uuid4().hex}
    for path, expected in (("/v1/auth/signup", 201), ("/v1/auth/login", 200)):
        status, body = _call(f"{base}{path}", "POST", credentials)
        if status != expected:
            raise SmokeError(f"POST {path} answered {status}: {body}")
    token = body["access_token"]
    title = f"smoke {uuid.uuid4().hex[:8]}"
    status, created = _call(f"{base}/v1/tasks", "POST", {"title": title}, token)
    if status != 201:
        raise SmokeError(f"POST /v1/tasks answered {status}: {created}")
    status, read = _call(f"{base}/v1/tasks/{created['id']}", token=token)
    if status != 200 or read.get("title") != title:
        raise SmokeError(f"GET /v1/tasks/{created['id']} answered {status}: {read}")
    status, _ = _call(f"{base}/v1/tasks/{created['id']}", "DELETE", token=token)
    if status != 204:
        raise SmokeError(f"DELETE /v1/tasks/{created['id']} answered {status}")
    checked.append(f"task {created['id']} created, read back and deleted")
    return checked
