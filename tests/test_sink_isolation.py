"""Sinks delivered independently: a blocked, slow or dead sink holds back only its own events."""

from __future__ import annotations

import contextvars
import http.server
import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from prometheus_client import REGISTRY, CollectorRegistry

import llmpulse
from conftest import MESSAGES
from llmpulse import CallEvent
from llmpulse._config import Settings
from llmpulse.alerts import AlertConfig, AlertEngine, LogAlertSink, WebhookAlertSink
from llmpulse.events import Event
from llmpulse.sinks._dispatch import Dispatcher
from llmpulse.testing import make_call_event
from local_server import free_port


class Blocked:
    """A sink whose ``emit`` waits until released: a hung disk, a stalled collector."""

    event_types = (CallEvent,)

    def __init__(self, name: str) -> None:
        self.name = name
        self.entered = threading.Event()
        self.release = threading.Event()
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.entered.set()
        assert self.release.wait(30)
        self.events.append(event)


class Counting:
    """A sink that says when it has received ``expected`` events."""

    event_types = (CallEvent,)

    def __init__(self, name: str, expected: int) -> None:
        self.name = name
        self.expected = expected
        self.events: list[Event] = []
        self.threads: set[str] = set()
        self.got_all = threading.Event()
        self._changed = threading.Condition()

    def emit(self, event: Event) -> None:
        with self._changed:
            self.events.append(event)
            self.threads.add(threading.current_thread().name)
            self._changed.notify_all()
        if len(self.events) >= self.expected:
            self.got_all.set()

    def wait_for(self, n: int) -> bool:
        """Wait until ``n`` events arrived."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.events) >= n, timeout=10)


class Slow:
    """A sink that takes each event only when given a step: 50 ms an event, without the clock."""

    def __init__(self) -> None:
        self.name = "slow"
        self.steps = threading.Semaphore(0)
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        assert self.steps.acquire(timeout=30)
        self.events.append(event)


def _stats(name: str) -> tuple[int, int, int, int]:
    [stats] = [s for s in llmpulse.sink_stats() if s.name == name]
    assert stats.emitted == stats.exported + stats.dropped + stats.pending
    return stats.emitted, stats.exported, stats.dropped, stats.pending


def _dropped(sink: str, reason: str) -> float:
    value = REGISTRY.get_sample_value("llmpulse_events_dropped_total", {"sink": sink, "reason": reason})
    return value or 0.0


def test_a_blocked_sink_drops_only_its_own_events(raw_openai: openai.OpenAI) -> None:
    """While one sink hangs inside emit, the sink beside it gets every event; only the hung one drops."""
    pipeline = llmpulse._pipeline.get_pipeline()
    capacity, pipeline.dispatcher.capacity = pipeline.dispatcher.capacity, 3
    blocked, normal = Blocked("iso-blocked"), Counting("iso-normal", expected=6)
    client = llmpulse.wrap(raw_openai, sinks=[blocked, normal], registry=CollectorRegistry())
    full_before = _dropped("iso-blocked", "buffer_full")
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert blocked.entered.wait(10)  # its thread is stuck in the first event
        for n in range(2, 7):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert normal.wait_for(n)  # its buffer (3) never fills: it is not held back
        assert _stats("iso-normal") == (6, 6, 0, 0)
        # Three held (one in flight, two buffered: the bound includes the batch in flight), three dropped.
        assert _stats("iso-blocked") == (6, 0, 3, 3)
        assert _dropped("iso-blocked", "buffer_full") - full_before == 3
        assert _dropped("iso-normal", "buffer_full") == 0
    finally:
        blocked.release.set()
        pipeline.dispatcher.capacity = capacity
    assert llmpulse.flush(10)
    assert _stats("iso-blocked") == (6, 3, 3, 0)
    assert len(blocked.events) == 3


def test_a_slow_sink_does_not_delay_a_fast_one() -> None:
    """A fast sink has all its events while a slow one has taken none; the slow one then loses none."""
    dispatcher = Dispatcher(capacity=100, on_drop=lambda *drop: pytest.fail(f"dropped {drop}"))
    slow, fast = Slow(), Counting("fast", expected=20)
    routes = (dispatcher.route(slow), dispatcher.route(fast))
    events = [make_call_event(call_id=str(i)) for i in range(20)]
    for event in events:
        dispatcher.submit(event, routes, contextvars.copy_context())
    assert fast.got_all.wait(10)
    assert slow.events == []
    for _ in events:
        slow.steps.release()
    assert dispatcher.flush(30)
    assert [e.call_id for e in slow.events] == [e.call_id for e in events]  # type: ignore[attr-defined]
    assert [s.pending for s in dispatcher.stats()] == [0, 0]


def test_one_delivery_thread_per_sink_shared_by_every_client(raw_openai: openai.OpenAI) -> None:
    """Three clients with the same two sinks: two routes, two delivery threads, not one per client."""
    a, b = Counting("iso-shared-a", expected=3), Counting("iso-shared-b", expected=3)
    clients = [llmpulse.wrap(raw_openai, sinks=[a, b], registry=CollectorRegistry()) for _ in range(3)]
    for client in clients:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert a.got_all.wait(10)
    assert b.got_all.wait(10)
    assert llmpulse.flush(10)
    assert [s.name for s in llmpulse.sink_stats()].count("iso-shared-a") == 1
    assert _stats("iso-shared-a") == (3, 3, 0, 0)
    assert len(a.threads) == len(b.threads) == 1
    assert a.threads != b.threads
    live = {t.name for t in threading.enumerate()}
    assert a.threads | b.threads <= live


def test_no_thread_until_a_sink_gets_an_event_and_none_after_it_idles() -> None:
    """A sink's thread starts on its first event and ends once idle; the next event starts another."""
    dispatcher = Dispatcher(capacity=10, on_drop=lambda *drop: None, idle_s=0.01)
    sink = Counting("lazy", expected=1)
    [route] = routes = (dispatcher.route(sink),)
    assert route.thread is None
    dispatcher.submit(make_call_event(), routes, contextvars.copy_context())
    thread = route.thread
    assert thread is not None
    assert dispatcher.flush(10)
    thread.join(10)  # it ends by itself once idle
    assert (thread.is_alive(), route.thread) == (False, None)
    sink.got_all.clear()
    dispatcher.submit(make_call_event(), routes, contextvars.copy_context())
    assert dispatcher.flush(10)
    assert len(sink.events) == 2


def test_close_counts_what_a_hung_sink_still_holds_as_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    """At exit a hung sink's events, in flight and buffered, are counted once as "shutdown"."""
    drops: list[tuple[str, str, int]] = []
    dispatcher = Dispatcher(capacity=10, on_drop=lambda *drop: drops.append(drop), batch_interval=3600.0)
    normal, blocked = Counting("fine", expected=3), Blocked("hung")
    routes = (dispatcher.route(normal), dispatcher.route(blocked))
    dispatcher.submit(make_call_event(), routes, contextvars.copy_context())
    dispatcher.flush(0)  # hurry: each thread takes its batch now
    assert blocked.entered.wait(10)
    for _ in range(2):
        dispatcher.submit(make_call_event(), routes, contextvars.copy_context())
    dispatcher.flush(0)
    assert normal.got_all.wait(10)
    thread = routes[1].thread
    assert thread is not None
    monkeypatch.setattr(llmpulse._exit.STATE, "exiting", True)
    assert not dispatcher.close(0.1)
    assert drops == [("hung", "shutdown", 3)]
    fine, hung = dispatcher.stats()
    assert (fine.emitted, fine.exported, fine.dropped, fine.pending) == (3, 3, 0, 0)
    assert (hung.emitted, hung.exported, hung.dropped, hung.pending) == (3, 0, 3, 0)
    dispatcher.submit(make_call_event(), routes, contextvars.copy_context())  # after close: counted
    assert drops[1:] == [("fine", "shutdown", 1), ("hung", "shutdown", 1)]
    blocked.release.set()  # the sink returns after all: what was counted stays counted, once
    thread.join(10)
    assert not thread.is_alive()
    _, hung = dispatcher.stats()
    assert (hung.emitted, hung.exported, hung.dropped, hung.pending) == (4, 0, 4, 0)


# --- alert sinks ---------------------------------------------------------------------------


class _Silent(http.server.BaseHTTPRequestHandler):
    """Reads the POST and never answers until released (then hangs up without a status line)."""

    entered: threading.Event
    release: threading.Event

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.entered.set()
        self.release.wait(30)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(name="silent")
def _silent() -> Iterator[tuple[str, type[_Silent]]]:
    handler = type("Handler", (_Silent,), {"entered": threading.Event(), "release": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/s3cr3t", handler
    handler.release.set()
    server.shutdown()
    server.server_close()


class _Lines(io.StringIO):
    """A log stream that says when a line was written."""

    def __init__(self) -> None:
        super().__init__()
        self.written = threading.Event()

    def write(self, s: str) -> int:
        n = super().write(s)
        self.written.set()
        return n


def _engine(webhook: WebhookAlertSink, log: LogAlertSink, delivered: list[tuple[str, str]]) -> AlertEngine:
    return AlertEngine(
        AlertConfig(slow_call_s=10.0),
        [webhook, log],
        on_delivery=lambda sink, result: delivered.append((sink, result)),
    )


def test_a_webhook_that_never_answers_does_not_hold_back_the_log(silent: tuple[str, type[_Silent]]) -> None:
    """The log's line is out while the webhook still waits for its receiver; then it fails, counted."""
    url, handler = silent
    delivered: list[tuple[str, str]] = []
    stream = _Lines()
    webhook = WebhookAlertSink(url, timeout_s=30.0, retries=1, sleep=lambda s: None)
    engine = _engine(webhook, LogAlertSink(stream), delivered)
    engine.record(make_call_event(latency_s=60.0))  # slow_call fires
    assert stream.written.wait(10)
    assert handler.entered.wait(10)
    assert json.loads(stream.getvalue())["rule"] == "slow_call"
    assert ("LogAlertSink", "ok") in delivered
    assert not any(sink == "WebhookAlertSink" for sink, _ in delivered)  # still in its first attempt
    handler.release.set()  # the receiver hangs up: both attempts fail
    assert engine.flush(30)
    assert ("WebhookAlertSink", "failed") in delivered
    engine.close()


def test_a_webhook_that_refuses_connections_beside_the_log() -> None:
    """A refused webhook is counted as failed; the log sink still gets the alert."""
    delivered: list[tuple[str, str]] = []
    stream = _Lines()
    webhook = WebhookAlertSink(
        f"http://127.0.0.1:{free_port()}/hooks/s3cr3t", retries=2, sleep=lambda s: None
    )
    engine = _engine(webhook, LogAlertSink(stream), delivered)
    engine.record(make_call_event(latency_s=60.0))
    assert engine.flush(30)
    assert sorted(delivered) == [("LogAlertSink", "ok"), ("WebhookAlertSink", "failed")]
    assert json.loads(stream.getvalue())["rule"] == "slow_call"
    engine.close()


def test_alerts_a_hung_sink_has_not_taken_are_counted_as_dropped_on_close() -> None:
    """Closing the engine counts the alerts still queued behind a hung sink as dropped."""
    delivered: list[tuple[str, str]] = []

    class Hung:
        def __init__(self) -> None:
            self.entered, self.release = threading.Event(), threading.Event()

        def emit(self, alert: object) -> None:
            self.entered.set()
            assert self.release.wait(30)

    class Two:
        def __init__(self) -> None:
            self.got: list[object] = []
            self.both = threading.Event()

        def emit(self, alert: object) -> None:
            self.got.append(alert)
            if len(self.got) == 2:
                self.both.set()

    hung, two = Hung(), Two()
    engine = AlertEngine(
        AlertConfig(slow_call_s=10.0, max_output_tokens=100),
        [hung, two],
        on_delivery=lambda sink, result: delivered.append((sink, result)),
    )
    engine.record(make_call_event(latency_s=60.0, output_tokens=1000))  # slow_call and large_output
    assert two.both.wait(10)  # both alerts were handed to the hung sink too: one taken, one queued
    assert hung.entered.wait(10)
    assert not engine.close(0.1)
    assert sorted(delivered) == [("Hung", "dropped"), ("Two", "ok"), ("Two", "ok")]
    hung.release.set()


@pytest.mark.parametrize("raw", ["0", "-1", "inf", "nan", "soon"])
def test_flush_timeout_must_be_a_positive_number_of_seconds(raw: str) -> None:
    """A bad LLMPULSE_FLUSH_TIMEOUT_S fails at configure time, naming the variable and the value."""
    with pytest.raises(llmpulse.ConfigError, match="LLMPULSE_FLUSH_TIMEOUT_S="):
        Settings.from_env({"LLMPULSE_FLUSH_TIMEOUT_S": raw})
    assert Settings.from_env({"LLMPULSE_FLUSH_TIMEOUT_S": "1.5"}).flush_timeout_s == 1.5
