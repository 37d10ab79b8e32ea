"""⑤ Getting events to sinks without ever slowing or breaking the caller.

Sinks that do I/O (logs, files, user sinks) get events through a bounded
queue each, drained by one daemon thread; a full queue drops the new event
and counts it. The thread is woken at most once per ``batch_interval``
(and at once by `flush`): waking it for every event would cost each call
a thread switch and a GIL hand-off, several times what the sinks cost.
Sinks marked ``inline = True`` (in-memory ones such as the test kit's
`CapturingSink`) are called directly. The built-in log and file sinks
(``renders_lines = True``) render each event on the caller's path, where
the CPU caches are warm and the app's contextvars current, and the thread
writes their lines in one batch: in the thread, rendering cost three times
as much per event. Whatever a sink raises is
counted and logged, never raised into the app. For every sink
``emitted == exported + dropped + pending`` holds at all times.

At interpreter exit no thread may start (see `llmpulse._exit`): `close`
delivers what is queued on the exiting thread, and events submitted after
it are counted as dropped with reason "shutdown".
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._exit import STATE as _EXIT
from .._exit import start_daemon
from ..events import Event

__all__ = ["Dispatcher", "Route", "SinkStats"]

_log = logging.getLogger("llmpulse")

# One route's events (or rendered lines), each with the caller's contextvars.
_Batch = tuple["Route", list[tuple[Any, contextvars.Context | None]]]


@dataclass(frozen=True, slots=True)
class SinkStats:
    """Delivery counts of one sink (see `llmpulse.sink_stats`).

    Attributes:
        name: The sink's name (its ``name`` attribute, or its class name).
        emitted: Events handed to the sink's queue.
        exported: Events the sink accepted.
        dropped: Events lost: queue full, or the sink raised.
        pending: Events queued or being delivered.

    """

    name: str
    emitted: int
    exported: int
    dropped: int
    pending: int


class Route:
    """One sink and its queue and counters."""

    __slots__ = (
        "dropped",
        "emitted",
        "event_types",
        "exported",
        "inflight",
        "inline",
        "last_error_log",
        "name",
        "queue",
        "render",
        "sink",
    )

    def __init__(self, sink: Any, name: str) -> None:
        self.sink = sink
        self.name = name
        self.inline = bool(getattr(sink, "inline", False))
        self.event_types: tuple[type, ...] | None = getattr(sink, "event_types", None)
        self.render: Callable[[Event], str] | None = (
            sink.render_line if getattr(sink, "renders_lines", False) else None
        )
        # Events (or, for rendering sinks, their lines) and the caller's contextvars.
        self.queue: deque[tuple[Any, contextvars.Context | None]] = deque()
        self.emitted = self.exported = self.dropped = self.inflight = 0
        self.last_error_log = 0.0

    def wants(self, event: Event) -> bool:
        """Whether this sink asked for events of this type."""
        return self.event_types is None or isinstance(event, self.event_types)

    def wants_type(self, cls: type) -> bool:
        """Whether this sink asked for events of class ``cls``."""
        return self.event_types is None or issubclass(cls, self.event_types)


class Dispatcher:
    """Delivers events to routes: inline ones at once, the others from a worker thread."""

    def __init__(
        self,
        *,
        capacity: int,
        on_drop: Callable[[str, str, int], None],
        batch_interval: float = 0.05,
    ) -> None:
        self.capacity = capacity
        self.batch_interval = batch_interval
        self._on_drop = on_drop
        self._routes: list[Route] = []
        self._new_state()
        os.register_at_fork(after_in_child=self._after_fork)

    def _new_state(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._worker: threading.Thread | None = None
        self._stopping = False
        self._closed = False  # closed at exit: events are counted as dropped, not queued
        self._armed = False  # the worker has been woken for the queued events
        self._hurry = threading.Event()  # flush() wants the batch now

    def route(self, sink: Any) -> Route:
        """Register ``sink`` and return its route."""
        name = getattr(sink, "name", None) or type(sink).__name__
        route = Route(sink, str(name))
        with self._lock:
            self._routes.append(route)
        return route

    def submit(self, event: Event, routes: tuple[Route, ...], app_ctx: contextvars.Context) -> None:
        """Hand ``event`` to each route that wants it; never blocks, never raises."""
        wake = False
        for route in routes:
            if not route.wants(event):
                continue
            if route.inline:
                route.emitted += 1
                # A copy: the delivery thread may be inside this very context for
                # another event of the call, and a context cannot be entered twice.
                self._deliver(route, event, app_ctx.copy())
                continue
            item: tuple[Any, contextvars.Context | None] = (event, app_ctx)
            if route.render is not None:
                try:
                    item = (route.render(event), None)
                except Exception as exc:  # noqa: BLE001 - a sink must never break the app
                    with self._lock:
                        route.emitted += 1
                        route.dropped += 1
                    self._sink_failed(route, exc)
                    continue
            with self._lock:
                route.emitted += 1
                dropped = None
                if self._closed or _EXIT.exited:  # also a dispatcher made after the exit hook
                    route.dropped += 1
                    dropped = "shutdown"
                elif len(route.queue) >= self.capacity:
                    route.dropped += 1
                    dropped = "buffer_full"
                else:
                    route.queue.append(item)
                    if not self._armed:
                        self._armed = wake = True
            if dropped is not None:
                self._on_drop(route.name, dropped, 1)
        if wake:
            self._ensure_worker()
            with self._lock:
                self._wake.notify()

    def _deliver(self, route: Route, event: Event, app_ctx: contextvars.Context | None) -> None:
        ok = self._call_sink(route, event, app_ctx)
        with self._lock:
            if ok:
                route.exported += 1
            else:
                route.dropped += 1

    def _call_sink(self, route: Route, event: Event, app_ctx: contextvars.Context | None) -> bool:
        try:
            if app_ctx is None:
                route.sink.emit(event)
            else:
                app_ctx.run(route.sink.emit, event)
        except Exception as exc:  # noqa: BLE001 - a sink must never break the app
            self._sink_failed(route, exc)
            return False
        return True

    def _write_lines(self, route: Route, lines: list[str]) -> int:
        try:
            route.sink.write_lines(lines)
        except Exception as exc:  # noqa: BLE001 - a sink must never break the app
            self._sink_failed(route, exc, len(lines))
            return 0
        return len(lines)

    def _sink_failed(self, route: Route, exc: Exception, n: int = 1) -> None:
        self._on_drop(route.name, "sink_error", n)
        now = time.monotonic()
        if now - route.last_error_log > 60.0:  # one line a minute, not one per event
            route.last_error_log = now
            _log.warning("llmpulse sink %s raised %s: %s", route.name, type(exc).__name__, exc)

    def _ensure_worker(self) -> None:
        if self._worker is not None and self._worker.is_alive():
            return
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                return
            self._stopping = False
            # None at exit: the events wait for `close`, which delivers them on the exiting thread.
            self._worker = start_daemon(self._run, "llmpulse-sinks")

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not any(r.queue for r in self._routes):
                    self._wake.wait()
                if self._stopping and not any(r.queue for r in self._routes):
                    return
            # Let a batch gather, unless someone is waiting for it.
            if not self._stopping and self._hurry.wait(self.batch_interval):
                self._hurry.clear()
            with self._lock:
                batches = self._take_batches()
            self._deliver_batches(batches)
            with self._lock:
                self._idle.notify_all()

    def _take_batches(self) -> list[_Batch]:
        # Under the lock: empty every queue; the events are in flight until delivered.
        self._armed = False
        batches = []
        for route in self._routes:
            if route.queue:
                batch = list(route.queue)
                route.queue.clear()
                route.inflight += len(batch)
                batches.append((route, batch))
        return batches

    def _deliver_batches(self, batches: list[_Batch]) -> None:
        for route, batch in batches:
            if route.render is not None:
                ok = self._write_lines(route, [line for line, _ in batch])
            else:
                ok = sum(self._call_sink(route, event, app_ctx) for event, app_ctx in batch)
            with self._lock:  # one update per batch keeps emitted == exported + dropped + pending
                route.exported += ok
                route.dropped += len(batch) - ok
                route.inflight -= len(batch)
            flush = getattr(route.sink, "flush", None)
            if callable(flush):
                # A failing flush loses nothing that was not counted per event.
                with contextlib.suppress(Exception):
                    flush()

    def count_dropped(self, cls: type, routes: tuple[Route, ...], reason: str) -> None:
        """Count an event of class ``cls`` that each route taking it will never get."""
        for route in routes:
            if route.wants_type(cls):
                with self._lock:
                    route.emitted += 1
                    route.dropped += 1
                self._on_drop(route.name, reason, 1)

    def pending(self) -> int:
        """Events queued or in delivery, over all routes."""
        with self._lock:
            return sum(len(r.queue) + r.inflight for r in self._routes)

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until every queued event is delivered; True if all were."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._hurry.set()
        with self._lock:
            while any(r.queue or r.inflight for r in self._routes):
                if self._worker is None or not self._worker.is_alive():
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._hurry.set()
                self._idle.wait(remaining)
            return not any(r.queue or r.inflight for r in self._routes)

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Deliver what is queued, then stop the worker; True if nothing was left."""
        done = self.flush(timeout)
        with self._lock:
            self._stopping = True
            self._hurry.set()
            self._wake.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join(timeout)
        return done

    def close(self, timeout: float | None = 5.0) -> bool:
        """At exit: deliver what is queued, then count later events as dropped ("shutdown").

        The worker delivers if it runs; else (it could not start: see
        `llmpulse._exit`) this thread does. Events the worker still holds when
        ``timeout`` ends stay pending; queued ones are counted as dropped.

        Returns:
            True if nothing was left undelivered.

        """
        done = self.stop(timeout)
        worker = self._worker
        stuck = worker is not None and worker.is_alive()
        with self._lock:
            self._closed = True
            batches = self._take_batches()
        if not stuck:
            self._deliver_batches(batches)
            return self.pending() == 0
        for route, batch in batches:  # the worker is still inside a sink: do not call it twice at once
            with self._lock:
                route.inflight -= len(batch)
                route.dropped += len(batch)
            self._on_drop(route.name, "shutdown", len(batch))
        return done and not batches

    def stats(self) -> list[SinkStats]:
        """Delivery counts of every route."""
        with self._lock:
            return [
                SinkStats(
                    name=r.name,
                    emitted=r.emitted,
                    exported=r.exported,
                    dropped=r.dropped,
                    pending=len(r.queue) + r.inflight,
                )
                for r in self._routes
            ]

    def remove(self, routes: tuple[Route, ...]) -> None:
        """Forget routes (their sinks were replaced by `configure`)."""
        with self._lock:
            self._routes = [r for r in self._routes if r not in routes]

    def _after_fork(self) -> None:
        # The worker thread did not survive fork(); the queued events are the
        # parent's to deliver. Start the child with empty queues and counters.
        self._new_state()
        for route in self._routes:
            route.queue.clear()
            route.emitted = route.exported = route.dropped = route.inflight = 0
