"""The mail adapter: the cloud one speaks SendGrid's v3 API and fails loudly so the job is retried."""

from __future__ import annotations

import json

import httpx
import pytest

from alle.mail import SENDGRID_URL, LogMailer, SendGridMailer, create_mailer
from conftest import SECRET


def _mailer(status: int, seen: list[httpx.Request]) -> SendGridMailer:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status)

    client = httpx.Client(transport=httpx.MockTransport(handler), headers={"Authorization": "Bearer SG.k"})
    return SendGridMailer("SG.k", "alle@example.com", client=client)


def test_sendgrid_mailer_posts_one_message_to_the_v3_api() -> None:
    seen: list[httpx.Request] = []
    _mailer(202, seen).send(to="ada@example.com", subject="Done", body="Your task is done.")
    [request] = seen
    assert str(request.url) == SENDGRID_URL
    assert request.headers["Authorization"] == "Bearer SG.k"
    assert json.loads(request.content) == {
        "personalizations": [{"to": [{"email": "ada@example.com"}]}],
        "from": {"email": "alle@example.com"},
        "subject": "Done",
        "content": [{"type": "text/plain", "value": "Your task is done."}],
    }


def test_a_refused_send_raises_so_the_queue_retries_it() -> None:
    with pytest.raises(httpx.HTTPStatusError):
        _mailer(503, []).send(to="ada@example.com", subject="Done", body="x")


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
