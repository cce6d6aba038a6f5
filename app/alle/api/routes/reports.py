"""Task reports: requested over HTTP, written to the bucket by the worker, downloaded from the bucket."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.responses import StreamingResponse

from alle import repository
from alle.api.deps import CallerDep, Services, SessionRoute
from alle.api.errors import NOSNIFF, answers
from alle.api.schemas import ReportOut
from alle.logs import get_logger

log = get_logger(__name__)
router = APIRouter(prefix="/v1/reports", tags=["reports"], responses=answers(503), route_class=SessionRoute)


@router.post("", status_code=status.HTTP_202_ACCEPTED, responses=answers(401, 413))
async def request_report(caller: CallerDep, response: Response) -> ReportOut:
    """202 once the pending row is committed: the row is the durable request (the outbox), so a Redis that is
    away only delays the report; the worker's sweep enqueues an unenqueued report after a minute."""
    user_id, services = caller.user_id, caller.services
    async with services.pool.connection() as conn:
        row = await repository.request_report(conn, owner_id=user_id)
    if await services.enqueue(services.queue.generate_report, str(row["id"])):
        try:
            async with services.pool.connection() as conn:
                await repository.record_report_enqueued(conn, report_id=row["id"])
        except Exception as error:  # noqa: BLE001 - unstamped, the sweep enqueues it again; the job is idempotent
            log.warning("could not record the enqueued report", report_id=str(row["id"]), error=str(error))
    response.headers["Location"] = f"/v1/reports/{row['id']}"
    return ReportOut(**row)


async def _own_report(services: Services, user_id: uuid.UUID, report_id: uuid.UUID) -> dict[str, Any]:
    async with services.pool.connection() as conn:
        row = await repository.get_report(conn, report_id=report_id, owner_id=user_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such report for this user.")
    return row


@router.get("/{report_id}", responses=answers(401, 404, 422))
async def get_report(report_id: uuid.UUID, caller: CallerDep) -> ReportOut:
    return ReportOut.model_validate(await _own_report(caller.services, caller.user_id, report_id))


@router.get(
    "/{report_id}/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}, **answers(401, 404, 409, 422)},
)
async def download_report(report_id: uuid.UUID, caller: CallerDep) -> StreamingResponse:
    """The connection is back in the pool before the first byte is read from the bucket."""
    services = caller.services
    row = await _own_report(services, caller.user_id, report_id)
    if row["status"] != "done":
        raise HTTPException(status.HTTP_409_CONFLICT, "The report is still being generated; try again shortly.")
    return StreamingResponse(
        await services.storage.stream(str(row["object_name"])),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="report-{report_id}.csv"', **NOSNIFF},
    )
