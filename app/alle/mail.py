"""Mail adapter: SendGrid's HTTP API when MAIL_API_KEY is set (the cloud), a log line otherwise (local).

Every mail carries a stable id in the `X-Alle-Notification-Id` header (and in SendGrid's `custom_args`, which
its event webhook echoes): delivery is at least once, so a repeat after a crash has the same id and can be
dropped by whoever reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from alle.config import Settings
from alle.logs import get_logger

if TYPE_CHECKING:
    import httpx

log = get_logger(__name__)

NOTIFICATION_ID_HEADER = "X-Alle-Notification-Id"


class Mailer(Protocol):
    def send(self, *, to: str, subject: str, body: str, notification_id: str) -> None: ...


class LogMailer:
    def send(self, *, to: str, subject: str, body: str, notification_id: str) -> None:
        log.info("mail", to=to, subject=subject, body=body, notification_id=notification_id)


class SendGridMailer:
    def __init__(self, api_key: str, sender: str, *, url: str, client: httpx.Client | None = None) -> None:
        self.sender = sender
        self.url = url
        if client is None:
            import httpx  # only the worker sends mail; the web process never loads it

            client = httpx.Client(timeout=10, headers={"Authorization": f"Bearer {api_key}"})
        self.client = client

    def send(self, *, to: str, subject: str, body: str, notification_id: str) -> None:
        """Raises on any non-2xx so the queue retries the job with backoff."""
        response = self.client.post(
            self.url,
            json={
                "personalizations": [{"to": [{"email": to}]}],
                "from": {"email": self.sender},
                "subject": subject,
                "content": [{"type": "text/plain", "value": body}],
                "headers": {NOTIFICATION_ID_HEADER: notification_id},
                "custom_args": {"notification_id": notification_id},
            },
        )
        response.raise_for_status()


def create_mailer(settings: Settings) -> Mailer:
    if settings.MAIL_API_KEY:
        return SendGridMailer(settings.MAIL_API_KEY, settings.MAIL_FROM, url=settings.MAIL_API_URL)
    return LogMailer()
