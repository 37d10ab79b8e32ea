"""⑤ Getting events to sinks without ever slowing or breaking the caller.

Each sink that does I/O (logs, files, user sinks) has its own bounded
buffer and its own daemon delivery thread, so a sink that blocks or crawls
delays, then drops, only its own events. A sink object has one route, one
buffer and at most one thread however many clients use it; the thread starts
on the sink's first event and ends after ``idle_s`` without one. The buffer
holds ``capacity`` events, the batch being delivered included; an event
beyond it is dropped and counted ("buffer_full").

A sink's thread is woken at most once per ``batch_interval`` (and at once by
`Dispatcher.flush`): waking it for every event would cost each call a thread
switch and a GIL hand-off, several times what the sinks cost. Sinks marked
``inline = True`` (in-memory ones such as the test kit's `CapturingSink`)
are called directly. The built-in log and file sinks (``renders_lines =
True``) render each event on the caller's path, where the CPU caches are
warm and the app's contextvars current, and the thread writes their lines in
one batch: in the thread, rendering cost three times as much per event.
Whatever a sink raises is counted and logged (once a minute per sink), never
raised into the app. For every sink ``emitted == exported + dropped +
pending`` holds at all times.

At interpreter exit no thread may start (see `llmpulse._exit`): `close`
gives every sink's thread the same deadline, delivers on the exiting thread
what a sink without a thread holds, and counts what is left, and every
event submitted after it, as dropped with reason "shutdown".
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
from .._redact import redact
from ..events import Event

__all__ = ["Dispatcher", "Route", "SinkStats"]

_log = logging.getLogger("llmpulse")

# Events (or, for rendering sinks, their lines), each with the caller's contextvars.
_Batch = list[tuple[Any, "contextvars.Context | None"]]


@dataclass(frozen=True, slots=True)
class SinkStats:
    """Delivery counts of one sink (see `llmpulse.sink_stats`).

    Attributes:
        name: The sink's name (its ``name`` attribute, or its class name).
        emitted: Events handed to the sink's buffer.
        exported: Events the sink accepted.
        dropped: Events lost: buffer full, the sink raised, or still undelivered at exit.
        pending: Events buffered or being delivered.

    """

    name: str
    emitted: int
    exported: int
    dropped: int
    pending: int


class Route:
    """One sink with its buffer, counters and delivery thread."""

    __slots__ = (
        "armed",
        "dropped",
        "emitted",
        "event_types",
        "exported",
        "hurry",
        "idle",
        "inflight",
        "inline",
        "last_error_log",
        "lock",
        "name",
        "queue",
        "render",
        "sink",
        "stopping",
        "thread",
        "users",
        "wake",
        "written_off",
    )

    def __init__(self, sink: Any, name: str) -> None:
        self.sink = sink
        self.name = name
        self.inline = bool(getattr(sink, "inline", False))
        self.event_types: tuple[type, ...] | None = getattr(sink, "event_types", None)
        self.render: Callable[[Event], str] | None = (
            sink.render_line if getattr(sink, "renders_lines", False) else None
        )
        self.users = 1  # the clients (and default sink lists) that hold this route
        self.last_error_log = 0.0
        self.reset()

    def reset(self) -> None:
        """Empty buffer, zero counters, no thread (a new route, or a child after fork)."""
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)  # the thread: events are queued
        self.idle = threading.Condition(self.lock)  # flush(): a batch was delivered
        self.hurry = threading.Event()  # flush() wants the batch now
        self.thread: threading.Thread | None = None
        self.armed = False  # the thread has been woken for the queued events
        self.stopping = False
        self.queue: deque[tuple[Any, contextvars.Context | None]] = deque()
        self.emitted = self.exported = self.dropped = self.inflight = 0
        self.written_off = 0  # in flight at exit, already counted as dropped

    def wants(self, event: Event) -> bool:
        """Whether this sink asked for events of this type."""
        return self.event_types is None or isinstance(event, self.event_types)

    def wants_type(self, cls: type) -> bool:
        """Whether this sink asked for events of class ``cls``."""
        return self.event_types is None or issubclass(cls, self.event_types)

    def pending(self) -> int:
        """Events buffered or being delivered (lock held)."""
        return len(self.queue) + self.inflight


class Dispatcher:
    """Delivers events to routes: inline ones at once, each other one from its own thread."""

    def __init__(
        self,
        *,
        capacity: int,
        on_drop: Callable[[str, str, int], None],
        batch_interval: float = 0.05,
        idle_s: float = 60.0,
    ) -> None:
        self.capacity = capacity
        self.batch_interval = batch_interval
        self.idle_s = idle_s
        self._on_drop = on_drop
        self._lock = threading.Lock()  # the list of routes
        self._routes: list[Route] = []
        self._by_sink: dict[int, Route] = {}
        self._closed = False  # closed at exit: events are counted as dropped, not queued
        os.register_at_fork(after_in_child=self._after_fork)

    def route(self, sink: Any) -> Route:
        """Register ``sink`` (again) and return its route: one per sink object."""
        with self._lock:
            found = self._by_sink.get(id(sink))
            if found is not None:
                found.users += 1
                return found
            name = getattr(sink, "name", None) or type(sink).__name__
            route = Route(sink, str(name))
            self._by_sink[id(sink)] = route
            self._routes.append(route)
            return route

    def submit(self, event: Event, routes: tuple[Route, ...], app_ctx: contextvars.Context) -> None:
        """Hand ``event`` to each route that wants it; never blocks, never raises."""
        for route in routes:
            if not route.wants(event):
                continue
            if route.inline:
                route.emitted += 1
                self._deliver(route, event, app_ctx)  # `_call_sink` enters a copy
                continue
            item: tuple[Any, contextvars.Context | None] = (event, app_ctx)
            if route.render is not None:
                try:
                    item = (route.render(event), None)
                except Exception as exc:  # noqa: BLE001 - a sink must never break the app
                    with route.lock:
                        route.emitted += 1
                        route.dropped += 1
                    self._sink_failed(route, exc)
                    continue
            with route.lock:
                route.emitted += 1
                dropped = None
                if self._closed or _EXIT.exited:  # also a dispatcher made after the exit hook
                    route.dropped += 1
                    dropped = "shutdown"
                elif len(route.queue) + route.inflight >= self.capacity:
                    route.dropped += 1
                    dropped = "buffer_full"
                else:
                    route.queue.append(item)
                    if not route.armed:
                        route.armed = True
                        if route.thread is None:
                            self._start(route)
                        route.wake.notify()
            if dropped is not None:
                self._on_drop(route.name, dropped, 1)

    def _start(self, route: Route) -> None:
        # Lock held. None at exit: the events wait for `close`, which delivers them on the exiting thread.
        route.stopping = False
        route.thread = start_daemon(self._run, f"llmpulse-sink-{route.name}", (route,))

    def _deliver(self, route: Route, event: Event, app_ctx: contextvars.Context | None) -> None:
        ok = self._call_sink(route, event, app_ctx)
        with route.lock:
            if ok:
                route.exported += 1
            else:
                route.dropped += 1

    def _call_sink(self, route: Route, event: Event, app_ctx: contextvars.Context | None) -> bool:
        try:
            if app_ctx is None:
                route.sink.emit(event)
            else:
                # A copy: other sinks' threads may be inside the same call's context
                # right now, and a context cannot be entered twice at once.
                app_ctx.copy().run(route.sink.emit, event)
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
            _log.warning("llmpulse sink %s raised %s: %s", route.name, type(exc).__name__, redact(str(exc)))

    def _run(self, route: Route) -> None:
        me = threading.current_thread()
        try:
            while True:
                with route.lock:
                    while not route.queue:
                        # Idle long enough, or told to stop: end (the next event starts another).
                        if route.stopping or (not route.wake.wait(self.idle_s) and not route.queue):
                            if route.thread is me:
                                route.thread = None
                            route.idle.notify_all()
                            return
                # Let a batch gather, unless someone is waiting for it.
                if not route.stopping and route.hurry.wait(self.batch_interval):
                    route.hurry.clear()
                with route.lock:
                    batch = self._take(route)
                self._deliver_batch(route, batch)
                with route.lock:
                    route.idle.notify_all()
        finally:  # only reached by a bug: let the next event start a thread again
            with route.lock:
                if route.thread is me:
                    route.thread = None
                    route.armed = False

    @staticmethod
    def _take(route: Route) -> _Batch:
        # Lock held: empty the buffer; the events are in flight (and still count against it) until delivered.
        route.armed = False
        batch = list(route.queue)
        route.queue.clear()
        route.inflight += len(batch)
        return batch

    def _deliver_batch(self, route: Route, batch: _Batch) -> None:
        if not batch:
            return
        if route.render is not None:
            ok = self._write_lines(route, [line for line, _ in batch])
        else:
            ok = sum(self._call_sink(route, event, app_ctx) for event, app_ctx in batch)
        with route.lock:  # one update per batch keeps emitted == exported + dropped + pending
            if route.written_off:  # `close` gave up on this batch and counted it as dropped
                route.written_off = 0
            else:
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
                with route.lock:
                    route.emitted += 1
                    route.dropped += 1
                self._on_drop(route.name, reason, 1)

    def _threaded(self) -> list[Route]:
        with self._lock:
            return [r for r in self._routes if not r.inline]

    def pending(self) -> int:
        """Events buffered or in delivery, over all routes."""
        total = 0
        for route in self._threaded():
            with route.lock:
                total += route.pending()
        return total

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until every buffered event is delivered, all sinks at once; True if all were.

        Each sink's thread delivers its batch now; ``timeout`` bounds the
        whole wait, not each sink's.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        routes = self._threaded()
        for route in routes:
            route.hurry.set()
        done = True
        for route in routes:
            done = self._wait(route, deadline) and done
        return done

    def _wait(self, route: Route, deadline: float | None, *, here: bool = False) -> bool:
        # Until the route has nothing pending or the deadline passes. Without a
        # thread (at exit none can start), ``here`` delivers on this thread.
        while True:
            with route.lock:
                if not route.pending():
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if route.thread is None and route.queue:
                    self._start(route)
                if route.thread is None:
                    if not (here and route.queue):
                        return False  # no thread can deliver them, or another caller is
                    batch = self._take(route)
                else:
                    route.hurry.set()
                    route.idle.wait(remaining)
                    continue
            self._deliver_batch(route, batch)

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Deliver what is buffered, then end every sink's thread; True if nothing was left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        done = self.flush(timeout)
        threads = []
        for route in self._threaded():
            with route.lock:
                threads.append(self._stop(route))
        for thread in threads:
            if thread is not None:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return done

    @staticmethod
    def _stop(route: Route) -> threading.Thread | None:
        # Lock held: the thread delivers what is queued, then ends.
        route.stopping = True
        route.hurry.set()
        route.wake.notify_all()
        return route.thread

    def close(self, timeout: float | None = 5.0) -> bool:
        """At exit: deliver within ``timeout`` for all sinks together, then count the rest as dropped.

        Sinks with a thread deliver on it, all at once; a sink without one
        (it could not start: see `llmpulse._exit`) is called on this thread,
        while time is left. What is still buffered or being delivered at
        the deadline, and every event submitted later, is counted as dropped
        ("shutdown").

        Returns:
            True if nothing was left undelivered.

        """
        deadline = None if timeout is None else time.monotonic() + timeout
        routes = self._threaded()
        for route in routes:
            route.hurry.set()
        # The sinks no thread serves first, on this thread, while the others deliver on theirs.
        routes.sort(key=lambda r: r.thread is not None)
        done = True
        for route in routes:
            done = self._wait(route, deadline, here=True) and done
        self._closed = True
        for route in routes:
            with route.lock:
                left = route.pending()
                route.dropped += left
                route.queue.clear()
                route.written_off, route.inflight = route.inflight, 0
                self._stop(route)
            if left:
                self._on_drop(route.name, "shutdown", left)
        return done

    def stats(self) -> list[SinkStats]:
        """Delivery counts of every route."""
        with self._lock:
            routes = list(self._routes)
        out = []
        for r in routes:
            with r.lock:
                out.append(SinkStats(r.name, r.emitted, r.exported, r.dropped, r.pending()))
        return out

    def remove(self, routes: tuple[Route, ...]) -> None:
        """Let go of routes (`configure` replaced their sinks); a sink no one holds ends its thread."""
        for route in routes:
            with self._lock:
                route.users -= 1
                if route.users > 0 or self._by_sink.get(id(route.sink)) is not route:
                    continue
                del self._by_sink[id(route.sink)]
                self._routes.remove(route)
            with route.lock:
                self._stop(route)

    def _after_fork(self) -> None:
        # The delivery threads did not survive fork(); the queued events are the
        # parent's to deliver. Start the child with empty buffers and counters.
        self._lock = threading.Lock()
        for route in self._routes:
            route.reset()
