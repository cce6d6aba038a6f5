"""Request and response bodies; every input is validated here before it reaches the database."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from pydantic import MISSING, AfterValidator, BaseModel, BeforeValidator, ConfigDict, EmailStr, Field, field_validator

from alle.security import MIN_PASSWORD_LENGTH

#: `Strict` refuses NUL in text; this says so in the OpenAPI document (the check itself stays in `Strict`, whose
#: message is plainer than a pattern's). An unpaired surrogate needs no word there: JSON Schema text cannot hold one.
NO_NUL = Field(json_schema_extra={"pattern": r"^[^\u0000]*$"})


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


_SPECIAL_USE = "|".join(_any_case(name) for name in SPECIAL_USE_DOMAIN_NAMES)
#: What separates a domain's labels: the full stop, and the dots IDNA reads as one (email-validator accepts
#: `a@example。com` and stores `a@example.com`).
_DOT = "\\.\\u3002\\uff0e\\uff61"
#: `format: email` (RFC 5321's mailbox) admits addresses email-validator refuses by default, and this pattern says
#: so in the document for these kinds: one at a special-use domain (`.test`, `.invalid`, …: RFC 6761), built from
#: email-validator's own list; a quoted local part (`"a b"@example.com`); a domain literal (`a@[127.0.0.1]`); and a
#: domain without a dot or that does not end in a letter (`a@example`, `a@example.123`, `a@example.x1`). Others it
#: refuses, such as a label over 63 characters, are left to the 422. `[\\s\\S]` rather than `.`, and no line break
#: at all, so that Python and JavaScript, whose `.` and `$` differ on line breaks, read it alike.
DELIVERABLE = Field(
    json_schema_extra={
        "pattern": (
            f"^(?![\\s\\S]*[\\r\\n])(?![\\s\\S]*@(?:[\\s\\S]*[{_DOT}])?(?:{_SPECIAL_USE})$)"
            f'(?![\\s\\S]*")(?![\\s\\S]*@\\[)[\\s\\S]*@[^@]*[{_DOT}][^@{_DOT}]*[^@{_DOT}0-9]$'
        )
    }
)
Email = Annotated[EmailStr, DELIVERABLE]

#: What `str.strip()` removes, as a regex class: the characters `str.isspace()` is true for (a test checks this
#: against Python's own), written out because JSON Schema's `\s` (ECMAScript's) is another set.
WHITESPACE = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def _stripped(value: str) -> str:
    """A title is stored without surrounding whitespace, and one of whitespace alone is refused rather than stored
    empty. Its length is checked before, on what was sent, as the document's maxLength says."""
    stripped = value.strip()
    if not stripped:
        raise ValueError("must contain a character other than whitespace")
    return stripped


#: The document says what `_stripped` refuses: no NUL, and at least one character that is not whitespace.
#: Schemathesis found the gap a bare `minLength: 1` left: it sent `" "`, valid by the document, and got a 422.
Title = Annotated[
    str,
    Field(
        min_length=1, max_length=200, json_schema_extra={"pattern": f"^[^\\u0000]*[^\\u0000{WHITESPACE}][^\\u0000]*$"}
    ),
    AfterValidator(_stripped),
]
Notes = Annotated[str, Field(max_length=10_000), NO_NUL]


ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def _date_text(value: object) -> object:
    """Only `YYYY-MM-DD` text: pydantic would otherwise read a number as seconds since 1970 (0 is 1970-01-01)."""
    if isinstance(value, date) or (isinstance(value, str) and ISO_DAY.fullmatch(value)):
        return value
    raise ValueError("must be a date written as YYYY-MM-DD")


Day = Annotated[date, BeforeValidator(_date_text)]


class Strict(BaseModel):
    """Request bodies: unknown fields refused, and no text PostgreSQL or UTF-8 cannot hold."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: object) -> object:
        """NUL is not allowed in PostgreSQL text, and an unpaired surrogate has no UTF-8 form: both would be 500s."""
        if isinstance(value, str):
            if "\x00" in value:
                raise ValueError("must not contain the NUL character")
            try:
                value.encode()
            except UnicodeEncodeError:
                raise ValueError("must not contain unpaired surrogates") from None
        return value


class Credentials(Strict):
    """Log-in: accounts made before the 12-character rule keep their shorter passwords."""

    email: Email
    password: Annotated[str, Field(min_length=8, max_length=128), NO_NUL]


class SignUp(Credentials):
    password: Annotated[
        str,
        Field(
            min_length=MIN_PASSWORD_LENGTH,
            max_length=128,
            description="Not the email address, and not one of the 30,000 most common passwords (else 422).",
        ),
        NO_NUL,
    ]


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
    due_date: Day | None = None


class TaskUpdate(Strict):
    """Only the fields sent change. `due_date: null` clears the due date; the others cannot be null."""

    # MISSING marks a field left out, and the document does not show it. A sent value is validated against the
    # field's own type alone: with `SkipJsonSchema[None]` as the marker, a refused title got one error per member
    # of the union, the second "Input should be None".
    title: Title | MISSING = MISSING
    notes: Notes | MISSING = MISSING
    status: TaskStatus | MISSING = MISSING
    due_date: Day | None = None

    @field_validator("title", "notes", "status", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        """Runs only for a field that was sent: a left-out field keeps its default without validation."""
        if value is None:
            raise ValueError("cannot be null; leave the field out to keep its value")
        return value


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
