"""Task reports: requested over HTTP, written to the bucket by the worker, downloaded from the bucket."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.responses import StreamingResponse

from alle import repository
from alle.api.deps import Services, ServicesDep, UserDep
from alle.api.errors import NOSNIFF, answers
from alle.api.schemas import ReportOut

router = APIRouter(prefix="/v1/reports", tags=["reports"], responses=answers(503))


@router.post("", status_code=status.HTTP_202_ACCEPTED, responses=answers(401, 413))
async def request_report(user_id: UserDep, services: ServicesDep, response: Response) -> ReportOut:
    async with services.pool.connection() as conn:
        row = await repository.request_report(conn, owner_id=user_id)
    try:
        await services.offload(services.queue.generate_report.send, str(row["id"]))
    except Exception as error:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "The job queue is unavailable; request the report again shortly.",
            headers={"Retry-After": "5"},
        ) from error
    response.headers["Location"] = f"/v1/reports/{row['id']}"
    return ReportOut(**row)


async def _own_report(services: Services, user_id: uuid.UUID, report_id: uuid.UUID) -> dict[str, Any]:
    async with services.pool.connection() as conn:
        row = await repository.get_report(conn, report_id=report_id, owner_id=user_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such report for this user.")
    return row


@router.get("/{report_id}", responses=answers(401, 404, 422))
async def get_report(report_id: uuid.UUID, user_id: UserDep, services: ServicesDep) -> ReportOut:
    return ReportOut.model_validate(await _own_report(services, user_id, report_id))


@router.get(
    "/{report_id}/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}, **answers(401, 404, 409, 422)},
)
async def download_report(report_id: uuid.UUID, user_id: UserDep, services: ServicesDep) -> StreamingResponse:
    """The connection is back in the pool before the first byte is read from the bucket."""
    row = await _own_report(services, user_id, report_id)
    if row["status"] != "done":
        raise HTTPException(status.HTTP_409_CONFLICT, "The report is still being generated; try again shortly.")
    return StreamingResponse(
        await services.storage.stream(str(row["object_name"])),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="report-{report_id}.csv"', **NOSNIFF},
    )
