"""`CapturingSink`: keep events in memory, for tests."""

from __future__ import annotations

import threading

from ..events import AttemptEvent, CallEvent, Event, InteractionSummary

__all__ = ["CapturingSink"]


class CapturingSink:
    """A sink that keeps every event in a list, delivered on the caller's path.

    ``wrap(client, sinks=[sink])``, make calls, then assert on ``sink.calls``:
    no flushing needed, since this sink is ``inline``.
    """

    name = "capture"
    inline = True

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        """Keep ``event``."""
        with self._lock:
            self.events.append(event)

    @property
    def calls(self) -> list[CallEvent]:
        """The `CallEvent` s received, in order."""
        return [e for e in self.events if isinstance(e, CallEvent)]

    @property
    def attempts(self) -> list[AttemptEvent]:
        """The `AttemptEvent` s received, in order."""
        return [e for e in self.events if isinstance(e, AttemptEvent)]

    @property
    def interactions(self) -> list[InteractionSummary]:
        """The `InteractionSummary` events received, in order."""
        return [e for e in self.events if isinstance(e, InteractionSummary)]

    def clear(self) -> None:
        """Forget everything received so far."""
        with self._lock:
            self.events.clear()
