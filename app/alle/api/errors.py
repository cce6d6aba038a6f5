"""Hostile input ends early and says little: bodies are bounded before parsing, and errors never echo values."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alle.logs import get_logger
from alle.storage import StorageUnavailableError

log = get_logger(__name__)

#: A JSON body above this is refused with 413 before a byte of it is parsed. The largest valid body (a task
#: with 10,000 characters of notes, all escaped as \uXXXX) is about 60 KiB.
MAX_JSON_BYTES = 64 * 1024
#: Attachment uploads stream to the bucket under their own limit (routes/tasks.py), so they pass untouched.
STREAMED = re.compile(r"^/v1/tasks/[^/]+/attachments$")
#: On every download: browsers must take the declared type, never guess one (an upload sniffed as HTML).
NOSNIFF = {"X-Content-Type-Options": "nosniff"}


def _answer(status: int, detail: str) -> tuple[Message, Message]:
    body = json.dumps({"detail": detail}).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    return start, {"type": "http.response.body", "body": body}


class BodyLimit:
    """Reads at most MAX_JSON_BYTES of a request body, then hands the buffered body on; more gets 413.

    A declared Content-Length above the limit is refused before anything is read; a chunked body is counted
    as it arrives, so leaving out the length does not get around the limit either.
    """

    def __init__(self, app: ASGIApp, *, limit: int = MAX_JSON_BYTES) -> None:
        self.app = app
        self.limit = limit
        self._refusal = _answer(413, f"Request bodies are limited to {limit} bytes.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS") or STREAMED.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay([{"type": "http.request", "body": bytes(body)}], receive), send)

    async def _refuse(self, send: Send) -> None:
        start, body = self._refusal
        await send(start)
        await send(body)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """The buffered messages first, then the client's own (a disconnect, if it comes)."""

    async def replayed() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replayed


def describe(errors: Any) -> list[dict[str, Any]]:
    """Where and why, never what: pydantic's `input` and `ctx` carry the submitted value, so they are dropped."""
    return [{"loc": list(error["loc"]), "msg": _reason(error), "type": error["type"]} for error in errors]


def _reason(error: Any) -> str:
    """email-validator's reasons quote parts of the address; the field name says enough."""
    msg: str = error["msg"]
    return EMAIL_REASON if msg.startswith(EMAIL_REASON) else msg


EMAIL_REASON = "value is not a valid email address"


def install(app: FastAPI) -> None:
    """The error handlers; BodyLimit is added in app.py, where the middleware order is decided."""

    @app.exception_handler(StorageUnavailableError)
    async def storage_unavailable(request: Request, error: StorageUnavailableError) -> JSONResponse:
        log.error("storage unavailable", path=request.url.path, error=str(error))
        return JSONResponse(
            {"detail": "File storage is unavailable; retry shortly."}, status_code=503, headers={"Retry-After": "5"}
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe(error.errors())}, status_code=422)
