"""A sink that appends one JSON object per event to a file (the report CLI reads these)."""

from __future__ import annotations

import json
import os
import threading
from typing import IO

from ..events import CallEvent, Event, InteractionSummary

__all__ = ["JsonlSink"]


class JsonlSink:
    """Append events as JSON lines to ``path``; the file is opened on first write.

    Each line is ``{"type": "llm.call" | "llm.interaction", ...fields}``.
    """

    name = "jsonl"
    event_types = (CallEvent, InteractionSummary)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._file: IO[str] | None = None
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        """Append one line."""
        kind = "llm.call" if isinstance(event, CallEvent) else "llm.interaction"
        line = json.dumps({"type": kind, **event.to_dict()}, separators=(",", ":"), default=str)
        with self._lock:
            if self._file is None:
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
            self._file.write(line + "\n")

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
