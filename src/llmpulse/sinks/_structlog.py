"""The default sink: one structured (JSON) log line per call, via structlog.

llmpulse never calls ``structlog.configure()``: it builds its own logger,
so the app's logging setup is left alone, while the app's bound context
variables (``structlog.contextvars.bind_contextvars``) still appear on
every line.

Lines are rendered on the caller's path, where the app's contextvars are
current, and written in batches by the delivery thread, so the caller
never waits on the output stream. A JSON line is rendered directly (orjson,
a few µs) rather than through structlog's processor chain (~30 µs), with
the same output: the event's fields, ``event``, the app's contextvars,
then ``level`` and ``timestamp``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from datetime import UTC, datetime
from typing import IO, Any, TextIO, cast

from ..events import AttemptEvent, CallEvent, Event, InteractionSummary
from ._json import field_names, json_line

__all__ = ["StructlogSink"]

_FORMATS = ("json", "console")
_STRUCTLOG_PREFIX = "structlog_"


class StructlogSink:
    """Log every event as one line; errors at warning level, attempts at debug.

    Args:
        file: Where lines go (default: standard output).
        format: "json" (one JSON object per line) or "console" (for humans).
        attempts: Also log one debug line per HTTP attempt.
        logger: A ready structlog logger to use instead (its own processors
            and output apply; it is called from llmpulse's delivery thread,
            inside the caller's contextvars).

    Raises:
        ValueError: ``format`` is not "json" or "console".

    """

    name = "log"

    def __init__(
        self,
        file: IO[str] | None = None,
        *,
        format: str = "json",
        attempts: bool = False,
        logger: Any = None,
    ) -> None:
        if format not in _FORMATS:
            msg = f"StructlogSink format must be one of {', '.join(_FORMATS)}, got {format!r}"
            raise ValueError(msg)
        self.event_types: tuple[type, ...] = (
            (CallEvent, AttemptEvent, InteractionSummary) if attempts else (CallEvent, InteractionSummary)
        )
        self._file = cast("TextIO", file or sys.stdout)
        self._lock = threading.Lock()
        self._logger = logger
        # The dispatcher renders on the caller's path and hands batches to
        # `write_lines`; a user-supplied logger does its own output instead.
        self.renders_lines = logger is None
        self._console: Any = None
        if format == "console":
            import structlog  # noqa: PLC0415 - 40 ms: only for the human format

            self._console = structlog.wrap_logger(
                structlog.ReturnLogger(),
                processors=[
                    structlog.contextvars.merge_contextvars,
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.dev.ConsoleRenderer(colors=False),
                ],
                wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
            )

    def emit(self, event: Event) -> None:
        """Write one line for ``event``."""
        if self._logger is None:
            self.write_lines([self.render_line(event)])
            return
        name, level = _name_and_level(event)
        getattr(self._logger, level)(name, **event.to_dict())

    def render_line(self, event: Event) -> str:
        """Return the line for ``event``, newline included."""
        name, level = _name_and_level(event)
        if self._console is not None:
            return f"{getattr(self._console, level)(name, **event.to_dict())}\n"
        tail: dict[str, Any] = {"event": name}
        contextvars = _structlog_contextvars()
        if contextvars:
            fields = field_names(type(event))
            for var, value in contextvars:
                if var not in fields:  # the event's own fields win, as with structlog's setdefault
                    tail.setdefault(var, value)
        tail["level"] = level
        tail["timestamp"] = _utc_now_iso()
        return json_line(event, tail=tail)

    def write_lines(self, lines: list[str]) -> None:
        """Write rendered lines in one go."""
        with self._lock:
            self._file.write("".join(lines))
            self._file.flush()


def _name_and_level(event: Event) -> tuple[str, str]:
    if isinstance(event, CallEvent):
        return "llm.call", ("warning" if event.outcome in ("error", "rejected") else "info")
    if isinstance(event, AttemptEvent):
        return "llm.attempt", "debug"
    return "llm.interaction", "info"


def _structlog_contextvars() -> list[tuple[str, Any]]:
    # What structlog.contextvars.merge_contextvars adds, without importing
    # structlog on the hot path: its variables are named "structlog_<key>".
    import contextvars  # noqa: PLC0415 - stdlib, already loaded

    ctx = contextvars.copy_context()
    return [
        (var.name[len(_STRUCTLOG_PREFIX) :], value)
        for var, value in ctx.items()
        if value is not Ellipsis and var.name.startswith(_STRUCTLOG_PREFIX)
    ]


_second: tuple[int, str] = (0, "")  # the last whole second seen, formatted (swapped atomically)


def _utc_now_iso() -> str:
    # structlog's TimeStamper(fmt="iso", utc=True) format, e.g. 2026-11-29T10:00:00.123456Z.
    # Formatting a datetime costs several µs per line; the seconds part changes once a second.
    global _second  # noqa: PLW0603 - a one-entry cache
    now = time.time()
    second, prefix = _second
    if second != int(now):
        second = int(now)
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = (second, prefix)
    return f"{prefix}.{int((now - second) * 1e6):06d}Z"
