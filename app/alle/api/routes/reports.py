"""Task reports: requested over HTTP, written to the bucket by the worker, downloaded from the bucket."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.responses import StreamingResponse

from alle import repository
from alle.api.deps import ConnDep, ServicesDep, UserDep
from alle.api.schemas import ReportOut

router = APIRouter(prefix="/v1/reports", tags=["reports"])


@router.post("", status_code=status.HTTP_202_ACCEPTED)
def request_report(user_id: UserDep, conn: ConnDep, services: ServicesDep, response: Response) -> ReportOut:
    row = repository.create_report(conn, owner_id=user_id)
    conn.commit()
    try:
        services.queue.generate_report.send(str(row["id"]))
    except Exception as error:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "The job queue is unavailable; request the report again shortly."
        ) from error
    response.headers["Location"] = f"/v1/reports/{row['id']}"
    return ReportOut(**row)


def _own_report(conn: ConnDep, user_id: uuid.UUID, report_id: uuid.UUID) -> dict[str, object]:
    row = repository.get_report(conn, report_id=report_id, owner_id=user_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such report for this user.")
    return row


@router.get("/{report_id}")
def get_report(report_id: uuid.UUID, user_id: UserDep, conn: ConnDep) -> ReportOut:
    return ReportOut.model_validate(_own_report(conn, user_id, report_id))


@router.get("/{report_id}/download", response_class=StreamingResponse)
def download_report(report_id: uuid.UUID, user_id: UserDep, conn: ConnDep, services: ServicesDep) -> StreamingResponse:
    row = _own_report(conn, user_id, report_id)
    if row["status"] != "done":
        raise HTTPException(status.HTTP_409_CONFLICT, "The report is still being generated; try again shortly.")
    return StreamingResponse(services.storage.stream(str(row["object_name"])), media_type="text/csv")
