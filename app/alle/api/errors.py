"""Hostile input ends early and says little: bodies are bounded before parsing, and errors never echo values.

Every error has one of two bodies, and the OpenAPI document declares them per status (`answers`): a 422 is
`Invalid` (which inputs, and why), whether FastAPI or a route refused the request; every other error is
`Problem` (one sentence on what went wrong and what to do).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Match
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


class Problem(BaseModel):
    """Every error but 422."""

    detail: str


class FieldError(BaseModel):
    """One refused input: where it was (`["body", "title"]`, `["header", "Idempotency-Key"]`) and why."""

    loc: list[str | int]
    msg: str
    type: str


class Invalid(BaseModel):
    """422: the request was understood but refused. Values are never echoed, only where and why."""

    detail: list[FieldError]


_RETRY_AFTER = {
    "Retry-After": {"required": True, "description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
}
#: What each error status means in this API, for the OpenAPI document.
ANSWERS: dict[int, dict[str, Any]] = {
    400: {"description": "The body could not be read as JSON (it is not UTF-8, say)."},
    401: {
        "description": "No session, or one that is unknown or expired: log in at POST /v1/auth/login.",
        "headers": {"WWW-Authenticate": {"required": True, "schema": {"type": "string", "const": "Bearer"}}},
    },
    404: {"description": "Nothing by that id belongs to this user."},
    409: {"description": "The request conflicts with the state of the resource, or with an earlier request."},
    413: {"description": "The body is larger than this operation accepts."},
    422: {"description": "Refused input: each entry names an input and the reason, never its value."},
    429: {"description": "Too many attempts; retry after `Retry-After` seconds.", "headers": _RETRY_AFTER},
    503: {
        "description": "At capacity, or a backing service is unavailable; retry after `Retry-After` seconds.",
        "headers": _RETRY_AFTER,
    },
}


def answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that can answer these error statuses, each with its body schema."""
    return {status: {**ANSWERS[status], "model": Invalid if status == 422 else Problem} for status in statuses}


def invalid(loc: Sequence[str | int], msg: str, kind: str = "value_error") -> RequestValidationError:
    """A 422 raised by a route, answered exactly like FastAPI's own: the same handler, the same body."""
    return RequestValidationError([{"loc": tuple(loc), "msg": msg, "type": kind}])


def describe(errors: Any) -> list[dict[str, Any]]:
    """Where and why, never what: pydantic's `input` and `ctx` carry the submitted value, so they are dropped, and
    neither an unknown key the client wrote nor a message quoting the value comes back."""
    return [{"loc": _where(error), "msg": _reason(error), "type": error["type"]} for error in errors]


def _where(error: Any) -> list[str | int]:
    """An unknown field's name is the client's text: the location stops at the object that has it."""
    loc = list(error["loc"])
    return loc[:-1] if error["type"] == "extra_forbidden" else loc


def _reason(error: Any) -> str:
    """Pydantic's own sentences, except those that quote the value (email-validator's reasons, UUID parsing)."""
    msg: str = error["msg"]
    if msg.startswith(EMAIL_REASON):
        return EMAIL_REASON
    return QUOTING_REASONS.get(error["type"], msg)


EMAIL_REASON = "value is not a valid email address"
#: Pydantic messages that quote characters of the value ("found `z` at 0"), by error type.
QUOTING_REASONS = {
    "uuid_parsing": "Input should be a valid UUID",
    "extra_forbidden": "Unknown field; remove it",
}


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

    @app.exception_handler(405)
    async def method_not_allowed(request: Request, error: HTTPException) -> JSONResponse:
        """Starlette's `Allow` names the methods of the first route on the path; RFC 9110 wants every one."""
        allowed = sorted(
            {
                method
                for route in iter_route_contexts(request.app.routes)
                if route.matches(request.scope)[0] is not Match.NONE
                for method in route.methods or ()
            }
        )
        return JSONResponse(
            {"detail": f"This method is not allowed here; use {', '.join(allowed)}."},
            status_code=405,
            headers={"Allow": ", ".join(allowed)},
        )
