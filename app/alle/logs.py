"""Logs are an event stream: one JSON object per line on stdout, in Cloud Logging's structured format."""

from __future__ import annotations

import logging
import sys
import warnings
from contextvars import ContextVar
from typing import Any

import structlog

#: Trace context of the request being served, set by the access-log middleware.
trace_context: ContextVar[dict[str, Any] | None] = ContextVar("trace_context", default=None)

_SEVERITY = {
    "debug": "DEBUG",
    "info": "INFO",
    "warning": "WARNING",
    "warn": "WARNING",
    "error": "ERROR",
    "exception": "ERROR",
    "critical": "CRITICAL",
}


def _cloud_logging_fields(_: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Rename structlog's keys to the ones Cloud Logging lifts into the LogEntry."""
    event.pop("color_message", None)  # uvicorn's ANSI-coloured duplicate of the message
    level = event.pop("level", method)
    event["severity"] = _SEVERITY.get(level, "DEFAULT")
    event["message"] = event.pop("event", "")
    if "timestamp" in event:
        event["time"] = event.pop("timestamp")
    trace = trace_context.get()
    if trace:
        event.update(trace)
    return event


def parse_trace(headers: dict[str, str], project: str | None) -> dict[str, Any]:
    """Read W3C `traceparent` or Google's `X-Cloud-Trace-Context` into Cloud Logging's trace fields."""
    trace_id = span_id = None
    sampled = False
    traceparent = headers.get("traceparent", "")
    parts = traceparent.split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
        trace_id, span_id, sampled = parts[1], parts[2], parts[3] == "01"
    elif cloud := headers.get("x-cloud-trace-context"):
        trace_id, _, rest = cloud.partition("/")
        span_part, _, options = rest.partition(";")
        span_id = span_part or None
        sampled = options == "o=1"
    if not trace_id or not project:
        return {}
    fields: dict[str, Any] = {
        "logging.googleapis.com/trace": f"projects/{project}/traces/{trace_id}",
        "logging.googleapis.com/trace_sampled": sampled,
    }
    if span_id:
        fields["logging.googleapis.com/spanId"] = span_id
    return fields


def configure(level: str) -> None:
    """Route structlog and stdlib logging (uvicorn, dramatiq, alembic) through one JSON renderer."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _cloud_logging_fields,
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "dramatiq", "alembic"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    logging.captureWarnings(True)  # library warnings become JSON lines too, not stray stderr text
    quiet_known_warnings()
    # Access logs are written by our middleware with httpRequest; uvicorn's own would duplicate them.
    logging.getLogger("uvicorn.access").disabled = True
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def quiet_known_warnings() -> None:
    """Silence notices nothing here can act on, each by its exact module and category, so every other stays loud.

    google-api-core announces on import, in every process, the date Google stops supporting this Python
    version; moving to a newer Python is the image's decision, not something each log line should repeat.
    """
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\._python_version_support")


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
