"""Reading call events from the JSON lines of the JSONL and log sinks.

Both sinks write the same fields (``CallEvent.to_dict()``, see
docs/events.md); they differ in the marker: the JSONL sink starts a line
with ``"type": "llm.call"``, the log sink ends it with ``"event":
"llm.call"`` plus ``level`` and ``timestamp`` (the time it was written).
The report uses ``started_at`` (the call's start, in both formats) as the
event's time. Everything else (other app logs, ``llm.attempt`` and
``llm.interaction`` lines, console-format logs, garbage) is skipped and
counted, never fatal.
"""

from __future__ import annotations

import gzip
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, cast

import orjson

__all__ = ["Call", "Skipped", "iter_lines", "newest_started_at", "open_inputs", "parse_line"]

_CALL_NAME = "llm.call"
_CALL_MARKER = b'"llm.call"'
_STARTED_AT = b'"started_at":"'


@dataclass(slots=True)
class Skipped:
    """Counts of input lines that were not call events, by reason."""

    not_json: int = 0
    """Not a JSON object (console logs, garbage, truncated lines)."""
    other_events: int = 0
    """JSON, but not an ``llm.call`` event (app logs, attempts, interactions)."""
    malformed: int = 0
    """Marked ``llm.call`` but without a usable ``started_at`` or ``latency_s``."""

    @property
    def total(self) -> int:
        """All skipped lines."""
        return self.not_json + self.other_events + self.malformed


@dataclass(slots=True)
class Call:
    """The fields of one call event that the report uses."""

    time: float
    model: str
    tenant: str
    route: str
    outcome: str
    http_status: int | None
    attempts: int
    latency_s: float
    ttft_s: float | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    error_type: str | None = None
    """The exception class the caller saw (None for "ok" and for policy rejections)."""
    rejected_reason: str | None = None
    """Which policy refused a ``rejected`` call."""


def parse_line(line: bytes, skipped: Skipped) -> Call | None:
    """Return the call event on ``line``, or None (counted in ``skipped``).

    A prefix before the first ``{`` (a container runtime's timestamp, a
    logging format's level) is ignored.
    """
    if not line.startswith(b"{"):
        start = line.find(b"{")
        if start < 0:
            if line.strip():
                skipped.not_json += 1
            return None
        line = line[start:]
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        skipped.not_json += 1
        return None
    if not isinstance(data, dict):
        skipped.not_json += 1
        return None
    if data.get("type") != _CALL_NAME and data.get("event") != _CALL_NAME:
        skipped.other_events += 1
        return None
    time = _epoch(data.get("started_at"))
    latency = _number(data.get("latency_s"))
    if time is None or latency is None:
        skipped.malformed += 1
        return None
    http_status = data.get("http_status")
    attempts = data.get("attempts")
    return Call(
        time=time,
        model=_label(data.get("model")),
        tenant=_label(data.get("tenant")),
        route=_label(data.get("route")),
        outcome=_label(data.get("outcome")),
        http_status=http_status if isinstance(http_status, int) else None,
        attempts=attempts if isinstance(attempts, int) else 1,
        latency_s=latency,
        ttft_s=_number(data.get("ttft_s")),
        input_tokens=_count(data.get("input_tokens")),
        output_tokens=_count(data.get("output_tokens")),
        cost_usd=_number(data.get("cost_usd")),
        error_type=_optional(data.get("error_type")),
        rejected_reason=_optional(data.get("rejected_reason")),
    )


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _label(value: Any) -> str:
    # A missing tenant/route/model is a group of its own, shown as "(none)".
    return value if isinstance(value, str) else "(none)"


def _optional(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # llmpulse always writes UTC with an offset; a naive time is ambiguous
    return moment.timestamp()


def newest_started_at(stream: IO[bytes]) -> float | None:
    """The newest ``started_at`` of the call events in ``stream`` (a quick scan, no JSON parse)."""
    newest: float | None = None
    for line in stream:
        if _CALL_MARKER not in line:
            continue
        start = line.find(_STARTED_AT)
        if start < 0:
            continue
        start += len(_STARTED_AT)
        end = line.find(b'"', start)
        moment = _epoch(line[start:end].decode("ascii", "replace"))
        if moment is not None and (newest is None or moment > newest):
            newest = moment
    return newest


def open_inputs(stack: ExitStack, paths: list[str], *, seekable: bool) -> list[IO[bytes]]:
    """Open every input for binary reading; ``-`` is stdin, ``*.gz`` is decompressed.

    With ``seekable`` stdin is first copied to a temporary file (on disk,
    not in memory), so it can be read twice.

    Raises:
        OSError: A file cannot be opened (the message names it).

    """
    streams: list[IO[bytes]] = []
    for path in paths:
        if path == "-":
            stdin = sys.stdin.buffer
            if seekable:
                spool = stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 - closed by the stack
                shutil.copyfileobj(stdin, spool)
                spool.seek(0)
                stdin = spool
            streams.append(stdin)
        elif path.endswith(".gz"):
            gz = cast("IO[bytes]", gzip.open(path, "rb"))  # noqa: SIM115 - closed by the stack
            streams.append(stack.enter_context(gz))
        else:
            streams.append(stack.enter_context(open(path, "rb")))  # noqa: SIM115 - closed by the stack
    return streams


def iter_lines(streams: list[IO[bytes]]) -> Iterator[bytes]:
    """Every line of every stream, in order."""
    for stream in streams:
        yield from stream
