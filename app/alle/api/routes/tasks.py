"""Tasks of the logged-in user: CRUD, completion, idempotent create, attachments in the bucket.

Each handler holds a database connection only around its statements and leaves that block before it
returns: the change is committed before the response, and nothing is held while Redis, the bucket or the
client is awaited.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote

import anyio
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from psycopg.errors import ForeignKeyViolation
from pydantic import BaseModel

from alle import repository
from alle.api.deps import (
    BEARER_SECURITY,
    CallerDep,
    Services,
    SessionRoute,
    TokenDep,
    authenticate,
    bearer,
    services_of,
    session_gone,
)
from alle.api.errors import NOSNIFF, answers, invalid
from alle.api.schemas import AttachmentOut, TaskCreate, TaskOut, TaskPage, TaskStatus, TaskUpdate
from alle.cache import task_key
from alle.logs import get_logger
from alle.storage import ATTACHMENT_TYPES, OCTET_STREAM, attachment_type

router = APIRouter(prefix="/v1/tasks", tags=["tasks"], responses=answers(503), route_class=SessionRoute)
log = get_logger(__name__)

MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
#: RFC 6838 caps type and subtype at 127 characters each; anything longer is not a media type.
MAX_CONTENT_TYPE_CHARS = 255
#: A file name as stored and shown: no path separator; no control character (C0, DEL, C1) nor line or paragraph
#: separator; no bidirectional control, which would show `inv\u202eexe.txt` as `invtxt.exe`; and no zero-width
#: space, word joiner, invisible operator or byte-order mark, which hide inside a name. Zero-width (non-)joiners
#: stay: emoji and scripts need them.
FILENAME = (
    r"^[^/\\\x00-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]+$"
)
#: The upload body as the OpenAPI document lists it: a JSON file is any JSON document, anything else is at least one
#: byte. Text types are left to the description: Schemathesis 4.32 sends an empty text body as a valid case despite
#: `minLength`, and a JSON object as an invalid one, though on the wire both are just text.
UPLOAD_CONTENT = {
    media_type: {
        "schema": {} if media_type == "application/json" else {"type": "string", "format": "binary", "minLength": 1}
    }
    for media_type in sorted({*ATTACHMENT_TYPES, OCTET_STREAM})
    if not media_type.startswith("text/")
}


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)]


def cache_value(owner_id: uuid.UUID, body: bytes) -> bytes:
    """`<owner id>\\n<TaskOut JSON>`: a hit is checked against the session and served as it is, never re-encoded."""
    return str(owner_id).encode() + b"\n" + body


def json_response(
    body: BaseModel, status_code: int = status.HTTP_200_OK, headers: dict[str, str] | None = None
) -> Response:
    """A body already validated by its model, sent as it is: returning the model would have FastAPI validate and
    serialize it a second time against the response model (for a list page, twenty models more)."""
    return Response(body.model_dump_json().encode(), status_code, headers, media_type="application/json")


def _not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, "No such task for this user.")


async def _enqueue_notification(services: Services, task_id: uuid.UUID) -> None:
    """After commit. If Redis is down the outbox row stays unenqueued and the worker's sweep enqueues it."""
    if not await services.enqueue(services.queue.notify_task_completed, str(task_id)):
        return
    try:
        async with services.pool.connection() as conn:
            await repository.record_notification_enqueued(conn, task_id=task_id)
    except Exception as error:  # noqa: BLE001 - unstamped, the sweep enqueues it again; handlers are idempotent
        log.warning("could not record the enqueued notification", task_id=str(task_id), error=str(error))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskOut,
    responses={
        200: {"model": TaskOut, "description": "A replay of the create that first used this `Idempotency-Key`."},
        **answers(400, 401, 409, 413, 422),
    },
)
async def create_task(body: TaskCreate, token: TokenDep, idempotency_key: IdempotencyKey = None) -> Response:
    fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest() if idempotency_key else None
    try:
        async with token.services.pool.connection() as conn:
            row, created = await repository.create_task(
                conn,
                token_hash=token.digest,
                title=body.title,
                notes=body.notes,
                due_date=body.due_date,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint,
            )
    except repository.SessionGoneError:
        raise session_gone() from None
    except ValueError as error:
        # 409, not 422: the request is valid on its own and conflicts only with what the key recorded earlier.
        raise HTTPException(status.HTTP_409_CONFLICT, f"{error}; use a new key.") from error
    if created:
        return json_response(TaskOut(**row), status.HTTP_201_CREATED)
    return json_response(TaskOut(**row), status.HTTP_200_OK, {"Idempotent-Replayed": "true"})


@router.get("", response_model=TaskPage, responses=answers(401, 422))
async def list_tasks(
    token: TokenDep,
    status_filter: Annotated[TaskStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> Response:
    try:
        async with token.services.pool.connection() as conn:
            rows, total = await repository.list_tasks(
                conn,
                token_hash=token.digest,
                status=status_filter.value if status_filter else None,
                limit=limit,
                offset=offset,
            )
    except repository.SessionGoneError:
        raise session_gone() from None
    return json_response(TaskPage.model_validate({"items": rows, "total": total, "limit": limit, "offset": offset}))


@router.get("/{task_id}", response_model=TaskOut, responses=answers(401, 404, 422), openapi_extra=BEARER_SECURITY)
async def get_task(task_id: uuid.UUID, request: Request) -> Response:
    """A cache hit costs one Redis round trip (session and task together) and no database connection."""
    # The busiest route calls `bearer` itself: solved as a FastAPI dependency it cost 8% of a cached read's CPU.
    services = services_of(request)
    key = task_key(task_id)
    session, (cached,) = await authenticate(services, await bearer(request), key)
    owner = str(session.user_id).encode() + b"\n"
    if cached is not None and cached.startswith(owner):
        return Response(cached[len(owner) :], media_type="application/json")
    lease = services.cache.lease()
    async with services.pool.connection() as conn:
        row = await repository.get_task(conn, owner_id=session.user_id, task_id=task_id)
    if row is None:
        raise _not_found()
    body = TaskOut(**row).model_dump_json().encode()
    await services.cache.set_raw(key, cache_value(session.user_id, body), lease)
    return Response(body, media_type="application/json")


async def _update(services: Services, user_id: uuid.UUID, task_id: uuid.UUID, changes: dict[str, Any]) -> Response:
    async with services.pool.connection() as conn:
        row, notify = await repository.update_task(conn, owner_id=user_id, task_id=task_id, changes=changes)
    if row is None:
        raise _not_found()
    await services.cache.delete(task_key(task_id))
    if notify:
        await _enqueue_notification(services, task_id)
    return json_response(TaskOut(**row))


@router.patch("/{task_id}", response_model=TaskOut, responses=answers(400, 401, 404, 413, 422))
async def update_task(task_id: uuid.UUID, body: TaskUpdate, caller: CallerDep) -> Response:
    changes = body.model_dump(exclude_unset=True)
    if "status" in changes:
        changes["status"] = changes["status"].value
    return await _update(caller.services, caller.user_id, task_id, changes)


@router.post("/{task_id}/complete", response_model=TaskOut, responses=answers(401, 404, 413, 422))
async def complete_task(task_id: uuid.UUID, caller: CallerDep) -> Response:
    return await _update(caller.services, caller.user_id, task_id, {"status": "done"})


@router.delete("/{task_id}", status_code=status.HTTP_204_NO_CONTENT, responses=answers(401, 404, 413, 422))
async def delete_task(task_id: uuid.UUID, caller: CallerDep) -> None:
    user_id, services = caller.user_id, caller.services
    async with services.pool.connection() as conn:
        objects = await repository.delete_task(conn, owner_id=user_id, task_id=task_id)
    if objects is None:
        raise _not_found()
    await services.cache.delete(task_key(task_id))
    for name in objects:
        try:
            await services.storage.delete(name)
        except Exception as error:  # noqa: BLE001 - the task is gone; an orphan object is only logged
            log.warning("could not delete attachment object", object_name=name, error=str(error))


@router.post(
    "/{task_id}/attachments",
    status_code=status.HTTP_201_CREATED,
    responses=answers(401, 404, 413, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": (
                "The file's bytes, at least one (an empty body is refused with 422). Besides these types, "
                f"{' and '.join(sorted(t for t in ATTACHMENT_TYPES if t.startswith('text/')))} are stored as sent; "
                "any other Content-Type is accepted and stored as application/octet-stream."
            ),
            "content": UPLOAD_CONTENT,
        }
    },
)
async def upload_attachment(
    task_id: uuid.UUID,
    request: Request,
    filename: Annotated[str, Query(min_length=1, max_length=255, pattern=FILENAME)],
    caller: CallerDep,
) -> AttachmentOut:
    """The body is the file, streamed to the bucket as it arrives: never buffered whole, never on local disk.

    No database connection is held while the bytes arrive: ownership is checked before, the row written after.
    """
    user_id, services = caller.user_id, caller.services
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_ATTACHMENT_BYTES:
        raise _too_large()
    async with services.pool.connection() as conn:
        owned = await repository.get_task(conn, owner_id=user_id, task_id=task_id) is not None
    if not owned:
        raise _not_found()
    declared_type = request.headers.get("content-type") or ""
    if len(declared_type) > MAX_CONTENT_TYPE_CHARS:
        raise invalid(["header", "Content-Type"], f"is limited to {MAX_CONTENT_TYPE_CHARS} characters")
    content_type = attachment_type(declared_type)
    object_name = f"attachments/{task_id}/{uuid.uuid4()}"
    size = await services.storage.upload(object_name, _capped(request.stream()), content_type=content_type)
    if size == 0:
        raise invalid(["body"], "The attachment is empty; send the file as the body.", "missing")
    try:
        async with services.pool.connection() as conn:
            row = await repository.add_attachment(
                conn,
                task_id=task_id,
                filename=filename,
                content_type=content_type,
                size_bytes=size,
                object_name=object_name,
            )
    except BaseException as error:
        # Not recorded, so not kept: the task was deleted meanwhile (404), or the database failed.
        with anyio.CancelScope(shield=True):
            await services.storage.delete(object_name)
        if isinstance(error, ForeignKeyViolation):
            raise _not_found() from error
        raise
    return AttachmentOut(**row)


async def _capped(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The limit is enforced while streaming, so a body without Content-Length cannot exceed it either."""
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > MAX_ATTACHMENT_BYTES:
            raise _too_large()
        yield chunk


def _too_large() -> HTTPException:
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"Attachments are limited to {MAX_ATTACHMENT_BYTES} bytes.")


@router.get("/{task_id}/attachments", responses=answers(401, 404, 422))
async def list_attachments(task_id: uuid.UUID, caller: CallerDep) -> list[AttachmentOut]:
    async with caller.services.pool.connection() as conn:
        rows = await repository.list_attachments(conn, owner_id=caller.user_id, task_id=task_id)
    if rows is None:
        raise _not_found()
    return [AttachmentOut(**r) for r in rows]


@router.get(
    "/{task_id}/attachments/{attachment_id}",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The file, as its stored type if that is on the allow-list, else application/octet-stream.",
            "content": {media_type: {} for media_type in sorted({*ATTACHMENT_TYPES, OCTET_STREAM})},
        },
        **answers(401, 404, 422),
    },
)
async def download_attachment(task_id: uuid.UUID, attachment_id: uuid.UUID, caller: CallerDep) -> StreamingResponse:
    """The connection is back in the pool before the first byte is read from the bucket."""
    user_id, services = caller.user_id, caller.services
    async with services.pool.connection() as conn:
        row = await repository.get_attachment(conn, owner_id=user_id, task_id=task_id, attachment_id=attachment_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such attachment on this task.")
    return StreamingResponse(
        await services.storage.stream(row["object_name"]),
        media_type=attachment_type(row["content_type"]),  # rows stored before the allow-list too
        headers={
            "Content-Length": str(row["size_bytes"]),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(row['filename'], safe='')}",
            **NOSNIFF,
        },
    )
