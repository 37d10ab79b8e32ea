"""How much one bad sink holds back the others: the numbers behind per-sink delivery.

    PYTHONPATH=src .venv/bin/python benchmarks/sink_isolation.py

Three cases, each through a bare `Dispatcher` (no SDK, no HTTP):

- a sink that blocks in ``emit`` beside a normal one: how many of 50 events the normal one got;
- a 50 ms/event sink beside a fast one: the longest a fast sink's event waited;
- ``buffer_size=50`` with a blocked sink: the most events pending at once;
- an alert webhook whose server never answers (1 s timeout, 1 retry) before the log alert sink:
  how long the log line took.
"""

from __future__ import annotations

import contextvars
import io
import logging
import socket
import threading
import time
from typing import Any

from llmpulse.alerts import AlertConfig, AlertEngine, LogAlertSink, WebhookAlertSink
from llmpulse.sinks._dispatch import Dispatcher
from llmpulse.testing import make_call_event


class Blocked:
    name = "blocked"

    def __init__(self) -> None:
        self.release = threading.Event()

    def emit(self, event: Any) -> None:
        self.release.wait()


class Slow:
    name = "slow"

    def emit(self, event: Any) -> None:
        time.sleep(0.05)


class Fast:
    name = "fast"

    def __init__(self) -> None:
        self.waits: list[float] = []

    def emit(self, event: Any) -> None:
        self.waits.append(time.monotonic() - event.latency_s)  # latency_s carries the submit time


def _dispatcher(capacity: int = 10_000) -> Dispatcher:
    return Dispatcher(capacity=capacity, on_drop=lambda *drop: None)


def blocked_beside_normal() -> int:
    d = _dispatcher()
    blocked, fast = Blocked(), Fast()
    routes = (d.route(blocked), d.route(fast))
    for _ in range(50):
        d.submit(make_call_event(latency_s=time.monotonic()), routes, contextvars.copy_context())
    d.flush(2.0)
    got = len(fast.waits)
    blocked.release.set()
    return got


def slow_beside_fast() -> float:
    d = _dispatcher()
    fast = Fast()
    routes = (d.route(Slow()), d.route(fast))
    for _ in range(100):  # one event every 10 ms, for a second
        d.submit(make_call_event(latency_s=time.monotonic()), routes, contextvars.copy_context())
        time.sleep(0.01)
    d.flush(30.0)
    return max(fast.waits)


def pending_with_small_buffer() -> int:
    d = _dispatcher(capacity=50)
    blocked = Blocked()
    routes = (d.route(blocked),)
    most = 0
    for i in range(200):
        d.submit(make_call_event(), routes, contextvars.copy_context())
        most = max(most, d.pending())
        if i == 49:
            d.flush(0.5)  # the thread takes a full buffer as one batch, and blocks in it
    blocked.release.set()
    return most


class _Lines(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.at: float | None = None

    def write(self, s: str) -> int:
        self.at = self.at or time.monotonic()
        return super().write(s)


def dead_webhook_beside_log() -> float:
    with socket.socket() as server:  # accepts connections (the kernel does) and never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/hook"
        lines = _Lines()
        webhook = WebhookAlertSink(url, timeout_s=1.0, retries=1, backoff_s=0.1)
        engine = AlertEngine(AlertConfig(slow_call_s=10.0), [webhook, LogAlertSink(lines)])
        started = time.monotonic()
        engine.record(make_call_event(latency_s=60.0))
        engine.flush(10.0)
        engine.close()
        return (lines.at or time.monotonic()) - started


def main() -> None:
    logging.getLogger("llmpulse").setLevel(logging.ERROR)  # the webhook's failure is expected
    print(f"blocked sink beside a normal one: the normal one got {blocked_beside_normal()} of 50 events")
    print(f"50 ms/event sink beside a fast one: a fast sink's event waited up to {slow_beside_fast():.2f} s")
    print(f"buffer_size=50, blocked sink: up to {pending_with_small_buffer()} events pending")
    print(f"dead webhook before the log alert sink: the log line took {dead_webhook_beside_log():.2f} s")


if __name__ == "__main__":
    main()
