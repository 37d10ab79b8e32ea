"""Sinks: off the caller's path, bounded, failures counted, nothing secret logged."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import threading
from datetime import UTC, datetime

import openai
import pytest
import structlog
from prometheus_client import CollectorRegistry

import llmpulse
from conftest import MESSAGES, OPENAI_KEY
from llmpulse import CallEvent, JsonlSink, NetworkTimings, StructlogSink
from llmpulse.testing import CapturingSink, FakeProvider, Fault, make_call_event


class BlockingSink:
    """Holds every emit until released, to fill the queue deterministically."""

    name = "blocking"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.events: list[object] = []

    def emit(self, event: object) -> None:
        self.entered.set()
        self.release.wait(10)
        self.events.append(event)


class FailingSink:
    name = "failing"

    def emit(self, event: object) -> None:
        raise RuntimeError("disk full")


def _wrap(raw: openai.OpenAI, *sinks: object) -> openai.OpenAI:
    return llmpulse.wrap(raw, sinks=list(sinks), registry=CollectorRegistry())


def test_structlog_sink_writes_one_json_line_per_call(raw_openai: openai.OpenAI) -> None:
    """The log sink writes one JSON line with every field and the app's bound contextvars."""
    out = io.StringIO()
    client = _wrap(raw_openai, StructlogSink(out))
    structlog.contextvars.bind_contextvars(request_path="/api/chat")
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    finally:
        structlog.contextvars.clear_contextvars()
    assert llmpulse.flush()
    [line] = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "llm.call"
    assert record["level"] == "info"
    assert record["request_path"] == "/api/chat"
    for field in (
        "call_id",
        "correlation_id",
        "model",
        "input_tokens",
        "cost_usd",
        "latency_s",
        "request_id",
    ):
        assert field in record
    assert OPENAI_KEY not in line


def test_errors_log_at_warning_without_secrets(raw_openai: openai.OpenAI, fake: FakeProvider) -> None:
    """A failed call logs at warning; the API key echoed by the provider is redacted."""
    out = io.StringIO()
    client = _wrap(raw_openai, StructlogSink(out))
    fake.enqueue(Fault.status(401, message=f"Incorrect API key provided: {OPENAI_KEY}"))
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    llmpulse.flush()
    record = json.loads(out.getvalue())
    assert record["level"] == "warning"
    assert record["error_type"] == "AuthenticationError"
    assert "Incorrect API key" in record["error_message"]
    assert OPENAI_KEY not in out.getvalue()
    assert "abcdefghijklmnop" not in out.getvalue()


def test_attempt_lines_only_when_asked(raw_openai: openai.OpenAI, fake: FakeProvider) -> None:
    """Attempt events are logged at debug only with attempts=True."""
    quiet, verbose = io.StringIO(), io.StringIO()
    client = _wrap(raw_openai, StructlogSink(quiet), StructlogSink(verbose, attempts=True))
    fake.enqueue(Fault.status(500, retry_after_ms=1))
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    llmpulse.flush()
    assert [json.loads(x)["event"] for x in quiet.getvalue().splitlines()] == ["llm.call"]
    assert [json.loads(x)["event"] for x in verbose.getvalue().splitlines()] == [
        "llm.attempt",
        "llm.attempt",
        "llm.call",
    ]


def test_failing_sink_is_counted_not_raised(raw_openai: openai.OpenAI) -> None:
    """A sink that raises never reaches the caller; the loss is counted."""
    failing, capture = FailingSink(), CapturingSink()
    client = _wrap(raw_openai, failing, capture)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert llmpulse.flush()
    [stats] = [s for s in llmpulse.sink_stats() if s.name == "failing"][-1:]
    assert stats.dropped >= 2  # the attempt and the call
    assert stats.exported == 0
    assert len(capture.calls) == 1


class BrokenStream(io.StringIO):
    """An output stream that fails every write, like a closed pipe."""

    def write(self, s: str) -> int:
        raise BrokenPipeError("stdout closed")


def test_log_sink_whose_stream_fails_counts_every_line(raw_openai: openai.OpenAI) -> None:
    """Lines written in one batch are all counted as dropped when the write fails."""
    registry = CollectorRegistry()
    client = llmpulse.wrap(raw_openai, sinks=[StructlogSink(BrokenStream())], registry=registry)
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert llmpulse.flush()
    [stats] = [s for s in llmpulse.sink_stats() if s.name == "log"][-1:]
    assert (stats.emitted, stats.exported, stats.dropped, stats.pending) == (3, 0, 3, 0)


def test_a_line_that_cannot_be_rendered_is_dropped_not_raised(raw_openai: openai.OpenAI) -> None:
    """Rendering runs on the caller's path, so its failure must be caught there."""

    class Unrenderable(JsonlSink):
        name = "unrenderable"

        def render_line(self, event: object) -> str:
            raise ValueError("cannot render")

    sink = Unrenderable(os.devnull)
    client = _wrap(raw_openai, sink)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert llmpulse.flush()
    [stats] = [s for s in llmpulse.sink_stats() if s.name == "unrenderable"][-1:]
    assert (stats.emitted, stats.exported, stats.dropped) == (1, 0, 1)


def test_console_format_is_rendered_for_humans(raw_openai: openai.OpenAI) -> None:
    """format="console" writes one readable key=value line per call, with the app's contextvars."""
    out = io.StringIO()
    client = _wrap(raw_openai, StructlogSink(out, format="console"))
    structlog.contextvars.bind_contextvars(request_path="/api/chat")
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    finally:
        structlog.contextvars.clear_contextvars()
    assert llmpulse.flush()
    [line] = out.getvalue().splitlines()
    assert "llm.call" in line
    assert "model=gpt-4o-mini" in line
    assert "request_path=/api/chat" in line


def test_log_sink_rejects_an_unknown_format() -> None:
    """A typo in the format names the accepted values."""
    with pytest.raises(ValueError, match=r"json, console.*'jsno'"):
        StructlogSink(format="jsno")


def test_user_logger_gets_every_field(raw_openai: openai.OpenAI) -> None:
    """With logger=, the user's own structlog logger (its processors, its output) gets each event."""
    seen: list[tuple[str, dict[str, object]]] = []

    class Recorder:
        def info(self, name: str, **fields: object) -> None:
            seen.append((name, fields))

    client = _wrap(raw_openai, StructlogSink(logger=Recorder()))
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert llmpulse.flush()
    [(name, fields)] = seen
    assert name == "llm.call"
    assert fields["model"] == "gpt-4o-mini"
    assert fields["outcome"] == "ok"


def test_full_buffer_drops_and_counts(raw_openai: openai.OpenAI) -> None:
    """With the buffer full (the event being delivered included), new events are dropped and counted."""
    pipeline = llmpulse._pipeline.get_pipeline()
    capacity = pipeline.dispatcher.capacity
    pipeline.dispatcher.capacity = 2
    blocking = BlockingSink()
    blocking.event_types = (CallEvent,)  # type: ignore[attr-defined]
    client = _wrap(raw_openai, blocking)
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert blocking.entered.wait(5)  # the worker holds event 1
        for _ in range(4):  # one fits beside the one in flight, three are dropped
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        [stats] = [s for s in llmpulse.sink_stats() if s.name == "blocking"][-1:]
        assert (stats.emitted, stats.dropped, stats.pending, stats.exported) == (5, 3, 2, 0)
    finally:
        blocking.release.set()
        pipeline.dispatcher.capacity = capacity
    assert llmpulse.flush()
    [stats] = [s for s in llmpulse.sink_stats() if s.name == "blocking"][-1:]
    assert stats.emitted == stats.exported + stats.dropped + stats.pending
    assert (stats.exported, stats.pending) == (2, 0)


def test_jsonl_sink_appends_lines(raw_openai: openai.OpenAI, tmp_path: os.PathLike[str]) -> None:
    """The JSONL sink appends one parseable line per call."""
    path = os.path.join(tmp_path, "events.jsonl")
    sink = JsonlSink(path)
    client = _wrap(raw_openai, sink)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    llmpulse.flush()
    sink.close()
    with open(path, encoding="utf-8") as fh:
        lines = [json.loads(x) for x in fh]
    assert [x["type"] for x in lines] == ["llm.call", "llm.call"]
    assert lines[0]["started_at"].endswith("+00:00")


async def test_aflush_waits_without_blocking_the_loop(aoai: openai.AsyncOpenAI) -> None:
    """aflush() returns once queued events are delivered."""
    out = io.StringIO()
    client = llmpulse.wrap(llmpulse.unwrap(aoai), sinks=[StructlogSink(out)], registry=CollectorRegistry())
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert await llmpulse.aflush()
    assert out.getvalue().count("llm.call") == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")
def test_events_after_fork_are_delivered_in_the_child(
    raw_openai: openai.OpenAI, tmp_path: os.PathLike[str]
) -> None:
    """A forked worker (gunicorn --preload) restarts delivery and keeps its own counts."""
    path = os.path.join(tmp_path, "child.jsonl")
    client = _wrap(raw_openai, JsonlSink(path))
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    llmpulse.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            ok = llmpulse.flush(5)
            stats = [s for s in llmpulse.sink_stats() if s.name == "jsonl"][-1]
            os._exit(0 if ok and (stats.emitted, stats.exported) == (1, 1) else 1)
        except BaseException:  # noqa: BLE001 - the child must always exit here
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with open(path, encoding="utf-8") as fh:
        assert len(fh.readlines()) == 2


def test_log_line_has_exactly_the_event_fields_then_the_app_context() -> None:
    """The JSON line is to_dict() plus event/level/timestamp and the app's contextvars (fields win)."""
    event = dataclasses.replace(
        make_call_event(outcome="error", error_type="RateLimitError", http_status=429),
        backoff_s=(0.5, 1.0),
        network=NetworkTimings(connect_s=0.01, connection_reused=False),
        tags={"team": "search"},
    )
    out = io.StringIO()
    structlog.contextvars.bind_contextvars(request_path="/api/chat", model="not-the-event-model")
    try:
        StructlogSink(out).emit(event)
    finally:
        structlog.contextvars.clear_contextvars()
    line = json.loads(out.getvalue())
    timestamp = datetime.fromisoformat(line.pop("timestamp"))
    assert abs((datetime.now(UTC) - timestamp).total_seconds()) < 60
    assert line == {**event.to_dict(), "event": "llm.call", "request_path": "/api/chat", "level": "warning"}


def test_jsonl_line_is_type_then_the_event_fields(tmp_path: os.PathLike[str]) -> None:
    """Each JSONL line is {"type": ..., **to_dict()}, for calls and interaction summaries."""
    path = os.path.join(tmp_path, "events.jsonl")
    sink = JsonlSink(path)
    event = make_call_event(tags={"a": "b"})
    sink.emit(event)
    sink.close()
    with open(path, encoding="utf-8") as f:
        [line] = f.read().splitlines()
    assert line.startswith('{"type":"llm.call",')
    assert json.loads(line) == {"type": "llm.call", **event.to_dict()}


def test_an_inline_sink_and_a_threaded_one_share_a_call_context() -> None:
    """The delivery thread inside a call's context does not stop an inline sink from entering it too."""
    import contextvars  # noqa: PLC0415

    from llmpulse.sinks._dispatch import Dispatcher  # noqa: PLC0415

    entered, release = threading.Event(), threading.Event()

    class Slow:
        def emit(self, event: object) -> None:
            entered.set()
            release.wait(10)

    inline = CapturingSink()
    drops: list[tuple[str, str, int]] = []
    dispatcher = Dispatcher(capacity=10, on_drop=lambda *drop: drops.append(drop))
    routes = (dispatcher.route(Slow()), dispatcher.route(inline))
    app_ctx = contextvars.copy_context()  # one call's context, for its attempt and call events
    dispatcher.submit(make_call_event(call_id="a"), routes[:1], app_ctx)
    assert entered.wait(10)  # the delivery thread is inside app_ctx now
    dispatcher.submit(make_call_event(call_id="b"), routes[1:], app_ctx)
    release.set()
    assert dispatcher.flush(10)
    assert [e.call_id for e in inline.calls] == ["b"]
    assert drops == []
