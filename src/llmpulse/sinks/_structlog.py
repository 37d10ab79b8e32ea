"""The default sink: one structured (JSON) log line per call, via structlog.

llmpulse never calls ``structlog.configure()``: it builds its own logger,
so the app's logging setup is left alone, while the app's bound context
variables (``structlog.contextvars.bind_contextvars``) still appear on
every line, because sinks run inside the caller's contextvars.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any, TextIO, cast

from ..events import AttemptEvent, CallEvent, Event, InteractionSummary

__all__ = ["StructlogSink"]


class StructlogSink:
    """Log every event as one line; errors at warning level, attempts at debug.

    Args:
        file: Where lines go (default: standard output).
        format: "json" (one JSON object per line) or "console" (for humans).
        attempts: Also log one debug line per HTTP attempt.
        logger: A ready structlog logger to use instead (its own processors apply).

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
        self.event_types: tuple[type, ...] = (
            (CallEvent, AttemptEvent, InteractionSummary) if attempts else (CallEvent, InteractionSummary)
        )
        if logger is None:
            import structlog  # noqa: PLC0415 - 40 ms: only when a log sink is made

            renderer: Any = (
                structlog.processors.JSONRenderer()
                if format == "json"
                else structlog.dev.ConsoleRenderer(colors=False)
            )
            logger = structlog.wrap_logger(
                structlog.PrintLogger(cast("TextIO", file or sys.stdout)),
                processors=[
                    structlog.contextvars.merge_contextvars,
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    renderer,
                ],
                wrapper_class=structlog.make_filtering_bound_logger(
                    logging.DEBUG if attempts else logging.INFO
                ),
            )
        self._logger = logger

    def emit(self, event: Event) -> None:
        """Write one line for ``event``."""
        fields = event.to_dict()
        if isinstance(event, CallEvent):
            if event.outcome in ("error", "rejected"):
                self._logger.warning("llm.call", **fields)
            else:
                self._logger.info("llm.call", **fields)
        elif isinstance(event, AttemptEvent):
            self._logger.debug("llm.attempt", **fields)
        else:
            self._logger.info("llm.interaction", **fields)
