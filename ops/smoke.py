"""Smoke test of a deployed release: ready, running the expected release, its web client, a task round-trip.

The whole test is bounded by one budget (`--timeout`). /readyz may use it all but a reserve, min(30 s, a quarter of
it), kept for the checks after it: a release that becomes ready near the end of the budget is still checked, rather
than failed as out of time although healthy. Each request after /readyz gets at most what is left, saying what it
waits for when it is slow.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from ops.errors import OpsError
from ops.progress import progress, wait

T = TypeVar("T")
#: One request's longest wait, within the budget: a healthy service answers each in well under a second.
REQUEST_SECONDS = 15.0
#: What --timeout keeps for the checks after /readyz: this much, or a quarter of it when that is less. Seven
#: requests to a healthy service take well under a second each.
RESERVE_SECONDS = 30.0


def reserve(seconds: float) -> float:
    """The part of a smoke budget of `seconds` that /readyz may not use."""
    return min(RESERVE_SECONDS, seconds / 4)


class SmokeError(OpsError):
    pass


def _call(
    url: str, method: str = "GET", body: Any = None, token: str | None = None, timeout: float = REQUEST_SECONDS
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - URL checked by the CLI
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


def wait_ready(
    base: str,
    wait_seconds: float,
    poll_seconds: float = 3,
    say: Callable[[str], None] = progress,
    kept: float = 0,
) -> dict[str, Any]:
    """Poll /readyz until it answers 200 and ready, saying after each miss what was seen and how long it has been.
    `kept` is what the budget keeps beyond `wait_seconds` for the checks after it, named when /readyz fails.

    `degraded` (200: PostgreSQL answers, Redis does not) serves traffic but is not a release that passed: a new
    release with a wrong REDIS_URL or CA would be degraded for good.
    """
    url = f"{base}/readyz"
    say(f"waiting up to {wait_seconds:.0f} s for {url} to answer 200, ready")
    started = time.monotonic()
    while True:
        remaining = wait_seconds - (time.monotonic() - started)
        try:
            status, ready = _call(url, timeout=max(1.0, min(REQUEST_SECONDS, remaining)))
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            status, ready = 0, str(getattr(error, "reason", error))
        if status == 200 and isinstance(ready, dict) and ready.get("status") == "ready":
            return dict(ready)
        elapsed = time.monotonic() - started
        if elapsed >= wait_seconds:
            seen = f"answered {status}: {ready}" if status else f"did not answer ({ready})"
            share = (
                f" (the part of --timeout {wait_seconds + kept:g} s it may use: {kept:g} s are kept for the checks "
                "after it)"
            )
            raise SmokeError(
                f"{url} {seen} after {elapsed:.0f} s of waiting{share if kept else ''}; check the service's logs, "
                "or allow longer: --timeout"
            )
        say(f"  {url}: {status or 'no answer'} ({ready}); {elapsed:.0f} s of {wait_seconds:.0f} s")
        time.sleep(min(poll_seconds, max(0.0, wait_seconds - elapsed)))


class Budget:
    """What is left of the smoke test's --timeout. Each request runs in a thread the caller waits on, so a server
    that accepts and then stalls cannot hold the test past its budget (a socket timeout bounds each read, not the
    request), and a slow request is named while it is awaited."""

    def __init__(self, seconds: float, every: float = 5, say: Callable[[str], None] = progress) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.every = every
        self.say = say

    def run(self, what: str, request: Callable[[float], T]) -> T:
        """`request(socket_timeout)` within what is left; a network failure or the budget's end is a SmokeError."""
        left = self.ends - time.monotonic()
        if left <= 0:
            raise SmokeError(f"--timeout {self.seconds:.0f} s ran out before {what}; allow longer: --timeout")
        answers: list[T] = []
        failures: list[Exception] = []

        def attempt() -> None:
            try:
                answers.append(request(min(REQUEST_SECONDS, left)))
            except Exception as error:  # noqa: BLE001 - handed to the waiting thread, which raises it
                failures.append(error)

        worker = threading.Thread(target=attempt, name=f"smoke {what}", daemon=True)
        worker.start()

        def finished(at_most: float) -> bool:
            worker.join(at_most)
            return not worker.is_alive()

        if not wait(what, left, finished, self.every, self.say):
            raise SmokeError(
                f"{what} did not answer in the {left:.0f} s left of --timeout {self.seconds:.0f} s; "
                "check the service's logs, or allow longer: --timeout"
            )
        if answers:
            return answers[0]
        [error] = failures
        if isinstance(error, urllib.error.URLError | OSError) and not isinstance(error, urllib.error.HTTPError):
            raise SmokeError(f"{what} did not answer ({getattr(error, 'reason', error)})") from error
        raise error


def _page(url: str, timeout: float) -> tuple[str, str]:
    """The entry page's Content-Security-Policy and text."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - URL checked by the CLI
        return response.headers.get("Content-Security-Policy", ""), response.read().decode()


def _fetch(url: str, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 - URL checked by the CLI
        pass


def _check_client(base: str, budget: Budget) -> str:
    """The entry page answers 200 with a strict CSP, and the content-hashed script it names is served."""
    try:
        csp, page = budget.run(f"GET {base}/", lambda timeout: _page(f"{base}/", timeout))
    except urllib.error.HTTPError as error:
        raise SmokeError(f"GET / answered {error.code}; the web client is not served") from error
    if "script-src 'self'" not in csp or "frame-ancestors 'none'" not in csp:
        raise SmokeError(f"GET / has no strict Content-Security-Policy (got {csp!r})")
    script = re.search(r'src="(/assets/[\w-]+\.[0-9a-f]{16}\.js)"', page)
    if script is None:
        raise SmokeError("GET / references no content-hashed script (/assets/NAME.HASH.js)")
    try:
        budget.run(f"GET {base}{script[1]}", lambda timeout: _fetch(f"{base}{script[1]}", timeout))
    except urllib.error.HTTPError as error:
        raise SmokeError(f"GET {script[1]}, named by the entry page, answered {error.code}") from error
    return f"/ 200 with a strict CSP; {script[1]} 200"


def smoke(
    base_url: str,
    release: str | None = None,
    wait_seconds: float = 120,
    say: Callable[[str], None] = progress,
    every: float = 5,
) -> list[str]:
    """Raise SmokeError with what failed; return what was checked. All of it within `wait_seconds`, of which /readyz
    may use all but `reserve(wait_seconds)`."""
    base = base_url.rstrip("/")
    budget = Budget(wait_seconds, every, say)
    kept = reserve(wait_seconds)
    ready = wait_ready(base, wait_seconds - kept, say=say, kept=kept)
    checked = [f"/readyz 200 (release {ready.get('release')})"]
    if release and ready.get("release") != release:
        raise SmokeError(f"{base} runs release {ready.get('release')!r}, expected {release!r}")
    checked.append(_check_client(base, budget))

    def call(method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        url = f"{base}{path}"
        return budget.run(f"{method} {url}", lambda timeout: _call(url, method, body, token, timeout))

    credentials = {"email": f"smoke-{uuid.uuid4().hex[:12]}@example.com", "password": uuid.uuid4().hex}
    for path, expected in (("/v1/auth/signup", 201), ("/v1/auth/login", 200)):
        status, body = call("POST", path, credentials)
        if status != expected:
            raise SmokeError(f"POST {path} answered {status}: {body}")
    token = body["access_token"]
    title = f"smoke {uuid.uuid4().hex[:8]}"
    status, created = call("POST", "/v1/tasks", {"title": title}, token)
    if status != 201:
        raise SmokeError(f"POST /v1/tasks answered {status}: {created}")
    status, read = call("GET", f"/v1/tasks/{created['id']}", token=token)
    if status != 200 or read.get("title") != title:
        raise SmokeError(f"GET /v1/tasks/{created['id']} answered {status}: {read}")
    status, _ = call("DELETE", f"/v1/tasks/{created['id']}", token=token)
    if status != 204:
        raise SmokeError(f"DELETE /v1/tasks/{created['id']} answered {status}")
    checked.append(f"task {created['id']} created, read back and deleted")
    return checked
