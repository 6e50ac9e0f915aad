"""
Structured logs: one JSON object per line, one access record per request.

Records name the key by its public id and the tenant, the route, model, status, the
decision (admitted, denied and why, clamped), held and charged amounts, token counts and
timings. Prompt and completion bodies are never logged unless the operator sets
``log_bodies``; the client's credentials and the gateway's upstream keys never are.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

__all__ = ["JsonFormatter", "access_logger", "configure_logging"]

ACCESS = "execbudget.gateway.access"

#: LogRecord attributes, and uvicorn's ANSI-coloured duplicate of its message.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line; ``extra={"fields": {...}}`` adds structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key != "fields" and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def configure_logging(level: str = "INFO") -> None:
    """JSON logs on stderr for the gateway (and uvicorn's own loggers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("execbudget", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    # uvicorn's access log duplicates ours, without the budget fields
    logging.getLogger("uvicorn.access").disabled = True


def access_logger() -> logging.Logger:
    return logging.getLogger(ACCESS)
