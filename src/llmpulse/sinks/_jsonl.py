"""A sink that appends one JSON object per event to a file (the report CLI reads these)."""

from __future__ import annotations

import os
import threading
from typing import IO

from ..events import CallEvent, Event, InteractionSummary
from ._json import json_line

__all__ = ["JsonlSink"]

_CALL = {"type": "llm.call"}
_INTERACTION = {"type": "llm.interaction"}


class JsonlSink:
    """Append events as JSON lines to ``path``; the file is opened on first write.

    Each line is ``{"type": "llm.call" | "llm.interaction", ...fields}``.
    Lines are rendered on the caller's path and written in batches by
    llmpulse's delivery thread.
    """

    name = "jsonl"
    event_types = (CallEvent, InteractionSummary)
    renders_lines = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._file: IO[str] | None = None
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        """Append one line."""
        self.write_lines([self.render_line(event)])

    def render_line(self, event: Event) -> str:
        """Return the line for ``event``, newline included."""
        return json_line(event, head=_CALL if isinstance(event, CallEvent) else _INTERACTION)

    def write_lines(self, lines: list[str]) -> None:
        """Append rendered lines in one go."""
        with self._lock:
            if self._file is None:
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
            self._file.write("".join(lines))

    def flush(self) -> None:
        """Push buffered lines to the OS."""
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        """Close the file (it is reopened on the next event)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
