"""Structured logs: one JSON object per line on stdout.

Every line carries ``ts, level, service, version, msg, correlation_id`` and ``order_id`` when
known. The correlation and order ids live in context variables, set per request (and per
event by the outbox relay), so code logs plainly and the ids follow.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

__all__ = ["configure", "correlation_id", "new_correlation_id", "order_id", "log_fields"]

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
order_id: ContextVar[str | None] = ContextVar("order_id", default=None)

_service = "shop"
_version = "dev"


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def log_fields(**fields: Any) -> dict[str, Any]:
    """``extra=`` for a log call whose fields go into the JSON object."""
    return {"fields": fields}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": _service,
            "version": _version,
            "msg": record.getMessage(),
            "correlation_id": correlation_id.get(),
        }
        oid = order_id.get()
        if oid:
            doc["order_id"] = oid
        if record.name != "shop":
            doc["logger"] = record.name
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                doc.setdefault(key, value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


def configure(service: str, version: str, level: str = "INFO") -> None:
    global _service, _version
    _service, _version = service, version
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
