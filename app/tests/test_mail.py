"""The mail adapter: the cloud one speaks SendGrid's v3 API and fails loudly so the job is retried.

Completion mail is sent at least once: a worker killed after the provider took the mail, before the commit that
records it, sends it again, with the same notification id (app/README.md, "Jobs").
"""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import psycopg
import pytest

from alle.jobs import notification_id
from alle.mail import NOTIFICATION_ID_HEADER, LogMailer, SendGridMailer, create_mailer
from conftest import SECRET, Spawn, signup_and_login, wait_for

SENDGRID_URL = "https://api.sendgrid.com/v3/mail/send"


def _mailer(status: int, seen: list[httpx.Request]) -> SendGridMailer:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status)

    client = httpx.Client(transport=httpx.MockTransport(handler), headers={"Authorization": "Bearer SG.k"})
    return SendGridMailer("SG.k", "alle@example.com", url=SENDGRID_URL, client=client)


def test_sendgrid_mailer_posts_one_message_to_the_v3_api() -> None:
    seen: list[httpx.Request] = []
    _mailer(202, seen).send(to="ada@example.com", subject="Done", body="Your task is done.", notification_id="n-1")
    [request] = seen
    assert str(request.url) == SENDGRID_URL
    assert request.headers["Authorization"] == "Bearer SG.k"
    assert json.loads(request.content) == {
        "personalizations": [{"to": [{"email": "ada@example.com"}]}],
        "from": {"email": "alle@example.com"},
        "subject": "Done",
        "content": [{"type": "text/plain", "value": "Your task is done."}],
        "headers": {"X-Alle-Notification-Id": "n-1"},
        "custom_args": {"notification_id": "n-1"},
    }


def test_a_refused_send_raises_so_the_queue_retries_it() -> None:
    with pytest.raises(httpx.HTTPStatusError):
        _mailer(503, []).send(to="ada@example.com", subject="Done", body="x", notification_id="n-1")


def test_the_api_key_selects_the_cloud_mailer() -> None:
    from alle.config import Settings

    base = {
        "APP_ENV": "test",
        "RELEASE": "r",
        "DATABASE_URL": "postgresql://x",
        "REDIS_URL": "redis://x",
        "STORAGE_BUCKET": "alle-test",
        "SECRET_KEY": SECRET,
    }
    assert isinstance(create_mailer(Settings.model_validate(base)), LogMailer)
    assert isinstance(create_mailer(Settings.model_validate({**base, "MAIL_API_KEY": "SG.k"})), SendGridMailer)


@dataclass
class SendGridStandIn:
    """A local stand-in for SendGrid's send endpoint that records each mail it accepts.

    It holds its answer to the first mail until `release` is set, so a test can act while the worker has
    handed the mail over but not yet heard back, let alone committed.
    """

    url: str = ""
    mails: list[dict[str, Any]] = field(default_factory=list)
    first_accepted: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def sendgrid() -> Iterator[SendGridStandIn]:
    stand_in = SendGridStandIn()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            stand_in.mails.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            if len(stand_in.mails) == 1:
                stand_in.first_accepted.set()
                stand_in.release.wait()
            try:
                self.send_response(202)
                self.end_headers()
            except OSError:
                pass  # the sender was killed while we held the answer

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stand_in.url = f"http://127.0.0.1:{server.server_address[1]}/v3/mail/send"
    yield stand_in
    stand_in.release.set()
    server.shutdown()
    server.server_close()


def test_worker_killed_between_the_send_and_its_commit_sends_the_mail_again_with_the_same_id(
    spawn: Spawn, db: psycopg.Connection[tuple[object, ...]], sendgrid: SendGridStandIn
) -> None:
    mail_env = {"MAIL_API_KEY": "SG.test", "MAIL_API_URL": sendgrid.url}
    web = spawn("web")
    auth = signup_and_login(web.url, email="ada@example.com")
    task = httpx.post(f"{web.url}/v1/tasks", json={"title": "ship it"}, headers=auth).json()
    doomed = spawn("worker", mail_env)
    httpx.post(f"{web.url}/v1/tasks/{task['id']}/complete", headers=auth)
    assert sendgrid.first_accepted.wait(30), "the worker never sent the mail"
    os.killpg(doomed.popen.pid, signal.SIGKILL)  # the provider has the mail; the worker never commits
    doomed.popen.wait(5)
    sendgrid.release.set()
    sent_at = "SELECT sent_at FROM notifications WHERE task_id = %s"
    assert db.execute(sent_at, (task["id"],)).fetchone() == (None,)

    spawn("worker", mail_env)
    wait_for(lambda: db.execute(sent_at, (task["id"],)).fetchone() != (None,), what="the redelivery", timeout=30)
    assert len(sendgrid.mails) == 2, "at least once: the mail is sent again"
    expected = notification_id(uuid.UUID(task["id"]))
    assert [m["headers"][NOTIFICATION_ID_HEADER] for m in sendgrid.mails] == [expected, expected]
    assert [m["custom_args"]["notification_id"] for m in sendgrid.mails] == [expected, expected]
    assert all(m["personalizations"] == [{"to": [{"email": "ada@example.com"}]}] for m in sendgrid.mails)
