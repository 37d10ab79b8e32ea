"""The sink extension point: anything with ``emit(event)``."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..events import Event

__all__ = ["Sink"]


@runtime_checkable
class Sink(Protocol):
    """Receives llmpulse events.

    ``emit`` is called from the sink's own delivery thread (or, for sinks with a
    true ``inline`` attribute, on the caller's path), inside a copy of the
    caller's contextvars. It may raise: the event is then counted as dropped
    and logged, and the app never sees the exception.

    Optional attributes: ``name`` (used in metrics and `sink_stats`),
    ``inline`` (call on the caller's path; only for in-memory sinks),
    ``event_types`` (a tuple of event classes to receive; default: all),
    and a ``flush()`` method called after each delivered batch.
    """

    def emit(self, event: Event) -> None:
        """Handle one event."""
