"""Interpreter exit with a wrapped call still open: prompt, quiet, and the call accounted for.

Each end-to-end case runs `SCRIPT` in a fresh interpreter against the
session's fake provider, with the JSONL sink and the alert engine on, and
prometheus_client in multiprocess mode so that the counters outlive the
process. A case passes when the interpreter exits 0 within `HANG_GUARD_S`,
writes nothing to stderr, counted no internal error, and the call's event
is in the file or its loss is counted.

At loop shutdown asyncio reports failures closing the SDK's and httpx's own
async generators ("an error occurred during closing of asynchronous
generator", "Task was destroyed but it is pending!"), for the bare SDK as
much as for a wrapped one and in an order that depends on object addresses.
The async scripts send the asyncio logger to a file of its own, and the
tests check that none of what it got mentions llmpulse.
"""

from __future__ import annotations

import contextvars
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

import llmpulse
from llmpulse import _exit
from llmpulse.alerts import AlertEngine
from llmpulse.events import Event
from llmpulse.sinks._dispatch import Dispatcher
from llmpulse.state import WriteBack
from llmpulse.testing import FakeProvider, make_call_event

HANG_GUARD_S = 30.0
SRC = str(Path(llmpulse.__file__).parent.parent)

SCRIPT = """
import asyncio
import atexit
import logging
import os
import sys
import threading

SDK, CASE, BASE = sys.argv[1:4]
KEEP = []


def late() -> None:
    KEEP.append(open_sync())  # after llmpulse's exit hook: it never sees this stream open


def spans() -> None:
    outcomes = [span.attributes.get("llmpulse.outcome") for span in EXPORTER.get_finished_spans()]
    print("outcomes", [o for o in outcomes if o is not None])


if CASE == "late":
    atexit.register(late)  # registered before llmpulse's hook, so it runs after it
elif CASE == "otel":
    atexit.register(spans)  # the last to run: after the provider's own hook

import llmpulse  # noqa: E402



def early() -> None:
    c = client(False)  # wrapped while the atexit handlers run
    for _ in request(c):
        pass
    KEEP.append(open_sync())


if CASE == "early":
    atexit.register(early)  # registered after llmpulse's hook, so it runs before it

if CASE == "otel":  # a provider set up after llmpulse was imported, before the client was wrapped
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    EXPORTER = InMemorySpanExporter()
    PROVIDER = TracerProvider()  # its atexit hook shuts it down
    PROVIDER.add_span_processor(BatchSpanProcessor(EXPORTER))

if CASE.startswith("async"):
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addHandler(logging.FileHandler(os.environ["ASYNCIO_LOG"]))
    asyncio_log.propagate = False


def client(is_async):
    if SDK == "openai":
        import openai

        cls = openai.AsyncOpenAI if is_async else openai.OpenAI
        sinks = [llmpulse.OtelSink(tracer_provider=PROVIDER)] if CASE == "otel" else None
        return llmpulse.wrap(cls(base_url=BASE + "/v1", api_key="sk-test", max_retries=0), sinks=sinks)
    import anthropic

    cls = anthropic.AsyncAnthropic if is_async else anthropic.Anthropic
    return llmpulse.wrap(cls(base_url=BASE, api_key="sk-test", max_retries=0))


def request(c):
    messages = [{"role": "user", "content": "hi"}]
    if SDK == "openai":
        return c.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
    return c.messages.create(model="claude-3-5-haiku-latest", max_tokens=50, messages=messages, stream=True)


def open_sync():
    stream = request(client(False))
    next(iter(stream))  # one event read, the rest never
    return stream


async def open_async():
    stream = await request(client(True))
    await stream.__aiter__().__anext__()
    return stream


READY = threading.Event()  # set once a thread holds its stream


if CASE in ("sync-global", "otel"):
    STREAM = open_sync()
elif CASE == "sync-local":
    def returns():
        stream = open_sync()  # noqa: F841 - dropped on return (openai's sits in a cycle until the GC)
    returns()
elif CASE == "sync-thread":  # a daemon thread mid-stream when the interpreter exits
    def reads():
        stream = open_sync()  # noqa: F841
        READY.set()
        threading.Event().wait()
    threading.Thread(target=reads, daemon=True).start()
    assert READY.wait(10)
elif CASE == "async-closed":  # asyncio.run returned: its loop is closed
    STREAM = asyncio.run(open_async())
elif CASE == "async-local":
    async def returns():
        stream = await open_async()  # noqa: F841
    asyncio.run(returns())
elif CASE == "async-open":  # a loop never closed
    STREAM = asyncio.new_event_loop().run_until_complete(open_async())
elif CASE == "async-running":  # the process exits from inside a running loop
    async def exits():
        stream = await open_async()  # noqa: F841
        sys.exit(0)
    asyncio.run(exits())
elif CASE == "async-thread":  # a loop still running in a daemon thread
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    async def waits():
        stream = await open_async()  # noqa: F841
        READY.set()
        await asyncio.Event().wait()
    asyncio.run_coroutine_threadsafe(waits(), loop)
    assert READY.wait(10)
elif CASE == "stuck":  # two sinks hung inside emit at exit, beside the JSONL file
    class Stuck:
        event_types = (llmpulse.CallEvent,)

        def __init__(self, name):
            self.name, self.entered = name, threading.Event()

        def emit(self, event):
            self.entered.set()
            threading.Event().wait()  # never returns

    STUCK = [Stuck("stuck-a"), Stuck("stuck-b")]
    llmpulse.configure(sinks=["jsonl", *STUCK], flush_timeout_s=0.5)
    c = client(False)
    for _ in request(c):
        pass
    assert all(sink.entered.wait(10) for sink in STUCK)
    for _ in request(c):  # its event waits behind the first one in each stuck sink
        pass
elif CASE == "finished":  # a finished call whose event is still queued at exit
    llmpulse._pipeline.get_pipeline().dispatcher.batch_interval = 3600.0  # only a flush delivers it
    for _ in request(client(False)):
        pass
    print("pending", sum(s.pending for s in llmpulse.sink_stats()))
"""


@dataclass
class Exited:
    """What one script run left behind."""

    returncode: int
    stdout: str
    stderr: str
    events: list[dict[str, Any]]
    registry: CollectorRegistry
    asyncio_log: str

    def counter(self, name: str, **labels: str) -> float:
        """A counter's value summed over the series matching ``labels``."""
        return sum(
            sample.value
            for metric in self.registry.collect()
            for sample in metric.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def assert_quiet(self) -> None:
        """Exit code 0, nothing on stderr, no internal error, no llmpulse in asyncio's reports."""
        assert self.returncode == 0, self.stderr
        assert self.stderr == ""
        assert self.counter("llmpulse_internal_errors_total") == 0
        assert "llmpulse" not in self.asyncio_log


@pytest.fixture(name="run")
def _run(fake: FakeProvider, tmp_path: Path) -> Callable[[str, str], Exited]:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)

    def run(sdk: str, case: str) -> Exited:
        out = tmp_path / f"{sdk}-{case}"
        prom = out / "prometheus"
        prom.mkdir(parents=True)
        events, asyncio_log = out / "events.jsonl", out / "asyncio.log"
        env = os.environ | {
            "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])),
            "LLMPULSE_SINKS": "jsonl",
            "LLMPULSE_JSONL_PATH": str(events),
            "LLMPULSE_ALERTS": "1",
            "PROMETHEUS_MULTIPROC_DIR": str(prom),
            "ASYNCIO_LOG": str(asyncio_log),
        }
        argv = [sys.executable, str(script), sdk, case, fake.base_url]
        try:
            done = subprocess.run(
                argv, check=False, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"the interpreter did not exit within {HANG_GUARD_S:.0f} s")
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(prom))
        return Exited(
            returncode=done.returncode,
            stdout=done.stdout,
            stderr=done.stderr,
            events=[json.loads(line) for line in events.read_text().splitlines()] if events.exists() else [],
            registry=registry,
            asyncio_log=asyncio_log.read_text() if asyncio_log.exists() else "",
        )

    return run


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
@pytest.mark.parametrize(
    "case",
    [
        "sync-global",
        "sync-local",
        "sync-thread",
        "async-closed",
        "async-local",
        "async-open",
        "async-running",
        "async-thread",
    ],
)
def test_a_stream_left_open_at_exit_ends_as_one_abandoned_event(
    run: Callable[[str, str], Exited], sdk: str, case: str
) -> None:
    """However the app left a stream open, the exit is prompt and quiet and the event says "abandoned"."""
    exited = run(sdk, case)
    exited.assert_quiet()
    assert [(e["type"], e["provider"], e["outcome"]) for e in exited.events] == [
        ("llm.call", sdk, "abandoned")
    ]
    assert exited.counter("llmpulse_events_dropped_total") == 0


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_a_stream_opened_after_the_exit_hook_is_counted_as_dropped(
    run: Callable[[str, str], Exited], sdk: str
) -> None:
    """A stream only an atexit handler running after llmpulse's opened is counted as dropped ("shutdown")."""
    exited = run(sdk, "late")
    exited.assert_quiet()
    assert exited.events == []
    assert exited.counter("llmpulse_events_dropped_total", sink="jsonl", reason="shutdown") == 1
    assert exited.counter("llmpulse_events_dropped_total", sink="prometheus", reason="shutdown") == 1
    assert exited.counter("llmpulse_requests_total") == 0  # the event was never built


def test_calls_made_by_an_atexit_handler_that_runs_first_are_delivered(
    run: Callable[[str, str], Exited],
) -> None:
    """A handler running before llmpulse's (it wraps a client, finishes one call, leaves a stream open)."""
    exited = run("openai", "early")
    exited.assert_quiet()
    assert sorted(e["outcome"] for e in exited.events) == ["abandoned", "ok"]


def test_the_queued_event_of_a_finished_call_is_delivered_at_exit(run: Callable[[str, str], Exited]) -> None:
    """A finished call's event still queued when the script ends reaches the file at exit."""
    exited = run("openai", "finished")
    exited.assert_quiet()
    assert exited.stdout == "pending 1\n"
    assert [e["outcome"] for e in exited.events] == ["ok"]


def test_an_otel_provider_set_up_before_wrapping_gets_the_spans_at_exit(
    run: Callable[[str, str], Exited],
) -> None:
    """llmpulse's exit hook runs before the atexit hook of a tracer provider made before wrap()."""
    exited = run("openai", "otel")
    exited.assert_quiet()  # no "Processor is already shutdown" warnings either
    assert exited.stdout == "outcomes ['abandoned']\n"


def test_sinks_hung_at_exit_cost_one_flush_timeout_and_are_counted(
    run: Callable[[str, str], Exited],
) -> None:
    """Two sinks stuck inside emit: a prompt exit, both calls in the file, two counted per stuck sink."""
    exited = run("openai", "stuck")
    exited.assert_quiet()
    assert [e["outcome"] for e in exited.events] == ["ok", "ok"]
    for sink in ("stuck-a", "stuck-b"):
        assert exited.counter("llmpulse_events_dropped_total", sink=sink, reason="shutdown") == 2
    assert exited.counter("llmpulse_events_dropped_total", sink="jsonl") == 0


class ThreadSink:
    """A queued (not inline) sink that records which thread delivered each event."""

    name = "threads"

    def __init__(self) -> None:
        self.threads: list[str] = []

    def emit(self, event: Event) -> None:
        self.threads.append(threading.current_thread().name)


@pytest.fixture(name="exiting")
def _exiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_exit.STATE, "exiting", True)


@pytest.mark.usefixtures("exiting")
def test_close_delivers_on_the_exiting_thread_then_counts_drops() -> None:
    """At exit no worker starts: close() delivers on the exiting thread, later events are counted."""
    drops: list[tuple[str, str, int]] = []
    dispatcher = Dispatcher(capacity=10, on_drop=lambda *drop: drops.append(drop))
    sink = ThreadSink()
    routes = (dispatcher.route(sink),)
    event = make_call_event()
    dispatcher.submit(event, routes, contextvars.copy_context())
    assert (dispatcher.pending(), sink.threads) == (1, [])  # queued, no worker
    assert dispatcher.close(5.0)
    assert sink.threads == [threading.current_thread().name]
    dispatcher.submit(event, routes, contextvars.copy_context())
    assert drops == [("threads", "shutdown", 1)]
    [stats] = dispatcher.stats()
    assert (stats.emitted, stats.exported, stats.dropped, stats.pending) == (2, 1, 1, 0)


@pytest.mark.usefixtures("exiting")
def test_alert_engine_and_write_back_start_no_thread_and_do_not_wait_at_exit() -> None:
    """At exit the alert engine and the store write-back start no thread, and their flushes return at once."""
    engine = AlertEngine(background=True)
    engine.record(make_call_event(latency_s=120.0))  # a slow call: the slow_call rule queues its alert
    writeback = WriteBack()
    ran: list[bool] = []
    writeback.submit(lambda: ran.append(True))
    started = time.monotonic()
    assert not engine.flush(HANG_GUARD_S)
    assert not writeback.join(HANG_GUARD_S)
    assert time.monotonic() - started < HANG_GUARD_S / 2
    assert (engine._thread, writeback._worker, ran) == (None, None, [])
    assert _exit.start_daemon(lambda: None, "never") is None
