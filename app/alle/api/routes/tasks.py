"""Tasks of the logged-in user: CRUD, completion, idempotent create, attachments in the bucket."""

from __future__ import annotations

import hashlib
import uuid
from typing import IO, Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from psycopg.errors import ForeignKeyViolation

from alle import repository
from alle.api.deps import ConnDep, Services, ServicesDep, UserDep
from alle.api.schemas import AttachmentOut, TaskCreate, TaskOut, TaskPage, TaskStatus, TaskUpdate
from alle.logs import get_logger

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])
log = get_logger(__name__)

MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)]


def _cache_key(owner_id: uuid.UUID, task_id: uuid.UUID) -> str:
    return f"task:{owner_id}:{task_id}"


def _not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, "No such task for this user.")


def _enqueue_notification(services: ServicesDep, conn: ConnDep, task_id: uuid.UUID) -> None:
    """After commit. If Redis is down the outbox row stays unenqueued and the worker's sweep enqueues it."""
    try:
        services.queue.notify_task_completed.send(str(task_id))
    except Exception as error:  # noqa: BLE001 - the outbox row keeps the notification
        log.warning("could not enqueue notification; the worker sweep will", task_id=str(task_id), error=str(error))
        return
    repository.mark_notification_enqueued(conn, task_id=task_id)


@router.post("", status_code=status.HTTP_201_CREATED, responses={200: {"description": "Replay of an earlier create"}})
def create_task(
    body: TaskCreate, user_id: UserDep, conn: ConnDep, response: Response, idempotency_key: IdempotencyKey = None
) -> TaskOut:
    fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest() if idempotency_key else None
    try:
        row, created = repository.create_task(
            conn,
            owner_id=user_id,
            title=body.title,
            notes=body.notes,
            due_date=body.due_date,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
        )
    except ValueError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{error}; use a new key.") from error
    if not created:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return TaskOut(**row)


@router.get("")
def list_tasks(
    user_id: UserDep,
    conn: ConnDep,
    status_filter: Annotated[TaskStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> TaskPage:
    rows, total = repository.list_tasks(
        conn, owner_id=user_id, status=status_filter.value if status_filter else None, limit=limit, offset=offset
    )
    return TaskPage(items=[TaskOut(**r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/{task_id}")
def get_task(task_id: uuid.UUID, user_id: UserDep, conn: ConnDep, services: ServicesDep) -> TaskOut:
    key = _cache_key(user_id, task_id)
    cached = services.cache.get(key)
    if cached is not None:
        return TaskOut.model_validate(cached)
    row = repository.get_task(conn, owner_id=user_id, task_id=task_id)
    if row is None:
        raise _not_found()
    task = TaskOut(**row)
    services.cache.set(key, task.model_dump(mode="json"))
    return task


def _update(
    services: ServicesDep,
    conn: ConnDep,
    user_id: uuid.UUID,
    task_id: uuid.UUID,
    changes: dict[str, Any],
) -> TaskOut:
    row, notify = repository.update_task(conn, owner_id=user_id, task_id=task_id, changes=changes)
    if row is None:
        raise _not_found()
    conn.commit()
    services.cache.delete(_cache_key(user_id, task_id))
    if notify:
        _enqueue_notification(services, conn, task_id)
    return TaskOut(**row)


@router.patch("/{task_id}")
def update_task(
    task_id: uuid.UUID,
    body: TaskUpdate,
    user_id: UserDep,
    conn: ConnDep,
    services: ServicesDep,
) -> TaskOut:
    changes = body.model_dump(exclude_unset=True)
    for required in ("title", "notes", "status"):
        if required in changes and changes[required] is None:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"`{required}` cannot be null.")
    if "status" in changes:
        changes["status"] = changes["status"].value
    return _update(services, conn, user_id, task_id, changes)


@router.post("/{task_id}/complete")
def complete_task(task_id: uuid.UUID, user_id: UserDep, conn: ConnDep, services: ServicesDep) -> TaskOut:
    return _update(services, conn, user_id, task_id, {"status": "done"})


@router.delete("/{task_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_task(task_id: uuid.UUID, user_id: UserDep, conn: ConnDep, services: ServicesDep) -> None:
    objects = repository.delete_task(conn, owner_id=user_id, task_id=task_id)
    if objects is None:
        raise _not_found()
    conn.commit()
    services.cache.delete(_cache_key(user_id, task_id))
    for name in objects:
        try:
            services.storage.delete(name)
        except Exception as error:  # noqa: BLE001 - the task is gone; an orphan object is only logged
            log.warning("could not delete attachment object", object_name=name, error=str(error))


@router.post(
    "/{task_id}/attachments",
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {"required": True, "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}
    },
)
async def upload_attachment(
    task_id: uuid.UUID,
    request: Request,
    filename: Annotated[str, Query(min_length=1, max_length=255, pattern=r"^[^/\\\x00]+$")],
    user_id: UserDep,
    services: ServicesDep,
) -> AttachmentOut:
    """The body is the file, streamed to the bucket as it arrives: never buffered whole, never on local disk."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_ATTACHMENT_BYTES:
        raise _too_large()
    if not await run_in_threadpool(_owns_task, services, user_id, task_id):
        raise _not_found()
    content_type = request.headers.get("content-type") or "application/octet-stream"
    object_name = f"attachments/{task_id}/{uuid.uuid4()}"
    writer: IO[bytes] | None = None
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_ATTACHMENT_BYTES:
                raise _too_large()
            if chunk:
                if writer is None:
                    writer = await run_in_threadpool(services.storage.writer, object_name, content_type=content_type)
                await run_in_threadpool(writer.write, chunk)
        if writer is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, "The attachment is empty; send the file as the body."
            )
        await run_in_threadpool(writer.close)
    except BaseException:
        # Too large, or the client went away. A BlobWriter finalises its upload when it is closed or garbage
        # collected, so close it now and delete what it wrote: nothing stays in the bucket, nothing is recorded.
        if writer is not None:
            await run_in_threadpool(writer.close)
            await run_in_threadpool(services.storage.delete, object_name)
        raise
    row = await run_in_threadpool(_record_attachment, services, task_id, filename, content_type, size, object_name)
    if row is None:
        await run_in_threadpool(services.storage.delete, object_name)
        raise _not_found()
    return AttachmentOut(**row)


def _too_large() -> HTTPException:
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"Attachments are limited to {MAX_ATTACHMENT_BYTES} bytes.")


def _owns_task(services: Services, user_id: uuid.UUID, task_id: uuid.UUID) -> bool:
    """Short-lived connections: a slow upload must not hold a database connection."""
    with services.pool.connection() as conn:
        return repository.get_task(conn, owner_id=user_id, task_id=task_id) is not None


def _record_attachment(
    services: Services, task_id: uuid.UUID, filename: str, content_type: str, size: int, object_name: str
) -> dict[str, Any] | None:
    """None when the task was deleted while the file was uploading."""
    try:
        with services.pool.connection() as conn:
            return repository.add_attachment(
                conn,
                task_id=task_id,
                filename=filename,
                content_type=content_type,
                size_bytes=size,
                object_name=object_name,
            )
    except ForeignKeyViolation:
        return None


@router.get("/{task_id}/attachments")
def list_attachments(task_id: uuid.UUID, user_id: UserDep, conn: ConnDep) -> list[AttachmentOut]:
    if repository.get_task(conn, owner_id=user_id, task_id=task_id) is None:
        raise _not_found()
    return [AttachmentOut(**r) for r in repository.list_attachments(conn, task_id=task_id)]


@router.get("/{task_id}/attachments/{attachment_id}", response_class=StreamingResponse)
def download_attachment(
    task_id: uuid.UUID, attachment_id: uuid.UUID, user_id: UserDep, conn: ConnDep, services: ServicesDep
) -> StreamingResponse:
    row = repository.get_attachment(conn, owner_id=user_id, task_id=task_id, attachment_id=attachment_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such attachment on this task.")
    return StreamingResponse(
        services.storage.stream(row["object_name"]),
        media_type=row["content_type"],
        headers={
            "Content-Length": str(row["size_bytes"]),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(row['filename'], safe='')}",
        },
    )
