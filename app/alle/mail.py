"""Mail adapter: SendGrid's HTTP API when MAIL_API_KEY is set (the cloud), a log line otherwise (local)."""

from __future__ import annotations

from typing import Protocol

import httpx

from alle.config import Settings
from alle.logs import get_logger

log = get_logger(__name__)

SENDGRID_URL = "https://api.sendgrid.com/v3/mail/send"


class Mailer(Protocol):
    def send(self, *, to: str, subject: str, body: str) -> None: ...


class LogMailer:
    def send(self, *, to: str, subject: str, body: str) -> None:
        log.info("mail", to=to, subject=subject, body=body)


class SendGridMailer:
    def __init__(self, api_key: str, sender: str, client: httpx.Client | None = None) -> None:
        self.sender = sender
        self.client = client or httpx.Client(timeout=10, headers={"Authorization": f"Bearer {api_key}"})

    def send(self, *, to: str, subject: str, body: str) -> None:
        """Raises on any non-2xx so the queue retries the job with backoff."""
        response = self.client.post(
            SENDGRID_URL,
            json={
                "personalizations": [{"to": [{"email": to}]}],
                "from": {"email": self.sender},
                "subject": subject,
                "content": [{"type": "text/plain", "value": body}],
            },
        )
        response.raise_for_status()


def create_mailer(settings: Settings) -> Mailer:
    if settings.MAIL_API_KEY:
        return SendGridMailer(settings.MAIL_API_KEY, settings.MAIL_FROM)
    return LogMailer()
