"""Structured logs: one line per event, `key=value` (logfmt), on stderr.

stdlib `logging` carries the lines (a logger, a stream handler, `LogfmtFormatter`); `Log` only
turns `log.info("run_done", project=..., ...)` into a record whose fields the formatter writes.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TextIO

_FIELDS = "logfmt_fields"  # the record attribute holding an event's fields


def _quoted(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\\\n\t'):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def format_line(level: str, event: str, fields: dict[str, object], now: datetime) -> str:
    stamp = now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    parts = [f"time={stamp}", f"level={level}", f"event={event}"]
    parts += [f"{key}={_quoted(value)}" for key, value in fields.items() if value is not None]
    return " ".join(parts)


class LogfmtFormatter(logging.Formatter):
    """`time=... level=... event=<the message> key=value...`, the time in UTC to the millisecond."""

    def format(self, record: logging.LogRecord) -> str:
        return format_line(record.levelname.lower(), record.getMessage(), getattr(record, _FIELDS, {}),
                           datetime.fromtimestamp(record.created, UTC))


class Log:
    """The sidecar's event log, written to `stream` (default: stderr)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        # A logger of its own, not logging.getLogger's shared one: each Log writes to its stream only
        # (the tests make one per daemon). The handler's lock keeps lines from run threads whole.
        self._logger = logging.Logger("compose_ckpt.sidecar")
        handler = logging.StreamHandler(stream)
        handler.setFormatter(LogfmtFormatter())
        self._logger.addHandler(handler)

    def info(self, event: str, **fields: object) -> None:
        self._logger.info(event, extra={_FIELDS: fields})

    def warning(self, event: str, **fields: object) -> None:
        self._logger.warning(event, extra={_FIELDS: fields})

    def error(self, event: str, **fields: object) -> None:
        self._logger.error(event, extra={_FIELDS: fields})
