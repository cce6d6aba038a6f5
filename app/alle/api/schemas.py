"""Request and response bodies; every input is validated here before it reaches the database."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Notes = Annotated[str, Field(max_length=10_000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Credentials(Strict):
    email: EmailStr
    password: Annotated[str, Field(min_length=8, max_length=128)]


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    created_at: datetime


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a credential
    expires_in: int


class TaskStatus(StrEnum):
    todo = "todo"
    in_progress = "in_progress"
    done = "done"


class TaskCreate(Strict):
    title: Title
    notes: Notes = ""
    due_date: date | None = None


class TaskUpdate(Strict):
    title: Title | None = None
    notes: Notes | None = None
    status: TaskStatus | None = None
    due_date: date | None = None


class TaskOut(BaseModel):
    id: uuid.UUID
    title: str
    notes: str
    status: TaskStatus
    due_date: date | None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class TaskPage(BaseModel):
    items: list[TaskOut]
    total: int
    limit: int
    offset: int


class AttachmentOut(BaseModel):
    id: uuid.UUID
    filename: str
    content_type: str
    size_bytes: int
    created_at: datetime


class ReportOut(BaseModel):
    id: uuid.UUID
    status: str
    row_count: int | None = None
    created_at: datetime
    finished_at: datetime | None = None
