"""Structured logs: one line per event, `key=value` (logfmt), on stderr."""

from __future__ import annotations

import sys
import threading
from datetime import datetime, UTC
from typing import TextIO

_lock = threading.Lock()


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


class Log:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def _write(self, level: str, event: str, fields: dict[str, object]) -> None:
        line = format_line(level, event, fields, datetime.now(UTC))
        stream = self._stream or sys.stderr
        with _lock:  # lines from several run threads must not interleave
            stream.write(line + "\n")
            stream.flush()

    def info(self, event: str, **fields: object) -> None:
        self._write("info", event, fields)

    def warning(self, event: str, **fields: object) -> None:
        self._write("warning", event, fields)

    def error(self, event: str, **fields: object) -> None:
        self._write("error", event, fields)
