"""OtelSink: GenAI-semconv spans, attempt/backoff/network children, metrics, and trace-id exemplars."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

import llmpulse
from conftest import ANTHROPIC_KEY, MESSAGES
from llmpulse._context import current_trace_ids
from llmpulse.events import AttemptEvent
from llmpulse.sinks import _otel as otel_module
from llmpulse.sinks import _prometheus
from llmpulse.sinks._otel import OtelSink
from llmpulse.testing import CapturingSink, FakeProvider, Fault, make_call_event

DURATION_BOUNDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)


@pytest.fixture(name="sink")
def _sink() -> CapturingSink:
    sink = CapturingSink()
    # Delivered by the worker thread like OtelSink, not inline: the dispatcher
    # enters the call's one copied Context from both threads otherwise, and
    # Context.run refuses a second entry while the first is running.
    sink.inline = False  # type: ignore[misc]
    return sink


@pytest.fixture(name="exporter")
def _exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(name="provider")
def _provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture(name="reader")
def _reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture(name="otel")
def _otel(provider: TracerProvider, reader: InMemoryMetricReader) -> OtelSink:
    return OtelSink(
        tracer_provider=provider, meter_provider=MeterProvider(metric_readers=[reader]), metrics=True
    )


@pytest.fixture(name="timed")
def _timed() -> Iterator[None]:
    # Every call's network phases, so the phase spans can be checked (the default times 1 %).
    llmpulse.configure(sinks=("none",), network_timings="all")
    yield
    llmpulse.configure(sinks=("none",))


@pytest.fixture(name="client")
def _client(
    raw_openai: openai.OpenAI, otel: OtelSink, sink: CapturingSink, registry: CollectorRegistry
) -> openai.OpenAI:
    return llmpulse.wrap(raw_openai, sinks=[otel, sink], registry=registry)


def finished(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    assert llmpulse.flush()
    return list(exporter.get_finished_spans())


def root(spans: list[ReadableSpan]) -> ReadableSpan:
    [span] = [s for s in spans if s.kind is SpanKind.CLIENT and " attempt " not in s.name]
    return span


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    """Direct children of ``parent``, in start order."""
    assert parent.context is not None
    found = [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]
    return sorted(found, key=lambda s: (s.start_time or 0, s.name))


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


class TestCallSpan:
    def test_chat_span_follows_the_genai_conventions(
        self, client: openai.OpenAI, exporter: InMemorySpanExporter, sink: CapturingSink
    ) -> None:
        """A chat call is one CLIENT span "chat <model>" with gen_ai.* attributes and the event's times."""
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=64)
        spans = finished(exporter)
        span = root(spans)
        [event] = sink.calls
        a = attrs(span)

        assert span.name == "chat gpt-4o-mini"
        assert span.kind is SpanKind.CLIENT
        assert span.status.status_code is StatusCode.UNSET
        assert completion.usage is not None
        assert {k: a[k] for k in a if k.startswith(("gen_ai.", "server.", "openai."))} == {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": completion.model,
            "gen_ai.request.max_tokens": 64,
            "gen_ai.response.finish_reasons": ("stop",),
            "gen_ai.usage.input_tokens": completion.usage.prompt_tokens,
            "gen_ai.usage.output_tokens": completion.usage.completion_tokens,
            # The fake reports these as 0 (as OpenAI does): reported, not invented.
            "gen_ai.usage.cache_read.input_tokens": 0,
            "gen_ai.usage.reasoning.output_tokens": 0,
            "server.address": event.server_address,
            "server.port": client.base_url.port,
            "openai.api.type": "chat_completions",
        }
        assert "gen_ai.response.id" not in a  # the event has the request id header, not the response id
        assert a["llmpulse.call_id"] == event.call_id
        assert a["llmpulse.correlation_id"] == event.correlation_id
        assert a["llmpulse.request_id"] == completion._request_id
        assert (a["llmpulse.outcome"], a["llmpulse.attempts"], a["llmpulse.cache_hit"]) == ("ok", 1, False)
        assert a["llmpulse.cost_usd"] == event.cost_usd
        assert span.start_time == int(event.started_at.timestamp() * 1e9)
        assert span.end_time == span.start_time + int(event.latency_s * 1e9)
        [attempt] = children(spans, span)
        assert attempt.name == "chat gpt-4o-mini attempt 1"
        assert attrs(attempt)["http.response.status_code"] == 200
        assert (attempt.start_time, attempt.end_time) == (span.start_time, span.end_time)

    @pytest.mark.usefixtures("timed")
    def test_streamed_chat_has_stream_attributes_and_network_phases(
        self, raw_openai: openai.OpenAI, otel: OtelSink, sink: CapturingSink, exporter: InMemorySpanExporter
    ) -> None:
        """A stream sets gen_ai.request.stream and time_to_first_chunk; timed phases nest in the attempt."""
        client = llmpulse.wrap(raw_openai, sinks=[otel, sink])
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        for _ in stream:
            pass
        spans = finished(exporter)
        span = root(spans)
        [event] = sink.calls
        a = attrs(span)

        assert a["gen_ai.request.stream"] is True
        assert event.ttft_s is not None
        assert a["gen_ai.response.time_to_first_chunk"] == event.ttft_s
        assert a["gen_ai.usage.output_tokens"] == event.output_tokens
        [attempt] = children(spans, span)
        phases = children(spans, attempt)
        assert event.network is not None
        timed = [
            name
            for name, value in zip(
                ("connect", "tls", "request", "time_to_headers"),
                dataclasses.astuple(event.network)[:4],
                strict=True,
            )
            if value is not None
        ]
        assert "time_to_headers" in timed
        # The body is the rest of the call (httpcore reports it complete only after the call ended).
        assert [p.name for p in phases] == [*timed, "body"]
        assert phases[-1].end_time == attempt.end_time == span.end_time
        assert all(p.kind is SpanKind.INTERNAL for p in phases)
        for before, after in itertools.pairwise(phases):
            assert before.end_time == after.start_time  # laid end to end
        assert phases[0].start_time == attempt.start_time
        assert all(attempt.start_time <= p.start_time <= p.end_time <= attempt.end_time for p in phases)  # type: ignore[operator]

    def test_anthropic_input_tokens_include_cache_reads_and_writes(
        self, fake: FakeProvider, otel: OtelSink, exporter: InMemorySpanExporter
    ) -> None:
        """Anthropic's input_tokens become input + cache read + cache write; "messages" is semconv "chat"."""
        fake.plan = fake.plan.__class__(cached_input_tokens=30, cache_write_input_tokens=20)
        client = anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=fake.anthropic_base_url)
        try:
            wrapped = llmpulse.wrap(client, sinks=[otel])
            message = wrapped.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES)
        finally:
            client.close()
        span = root(finished(exporter))
        a = attrs(span)

        assert span.name == "chat claude-sonnet-4-6"
        assert a["gen_ai.provider.name"] == "anthropic"
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.usage.input_tokens"] == message.usage.input_tokens + 30 + 20
        assert a["gen_ai.usage.cache_read.input_tokens"] == 30
        assert a["gen_ai.usage.cache_creation.input_tokens"] == 20
        assert a["gen_ai.usage.output_tokens"] == message.usage.output_tokens
        assert a["gen_ai.response.finish_reasons"] == (message.stop_reason,)
        assert "openai.api.type" not in a


class TestContext:
    def test_parent_is_the_callers_current_span(
        self, client: openai.OpenAI, provider: TracerProvider, exporter: InMemorySpanExporter
    ) -> None:
        """The call span is a child of the span current when the call was made, in the same trace."""
        tracer = provider.get_tracer("app")
        with tracer.start_as_current_span("handle request") as parent:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        span = root(finished(exporter))

        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id
        assert span.context is not None
        assert span.context.trace_id == parent.get_span_context().trace_id

    async def test_async_client_keeps_the_task_s_span_as_parent(
        self, fake: FakeProvider, otel: OtelSink, provider: TracerProvider, exporter: InMemorySpanExporter
    ) -> None:
        """With AsyncOpenAI the parent is the span current in the calling task."""
        client = openai.AsyncOpenAI(api_key="sk-test-abcdefghijklmnop", base_url=fake.openai_base_url)
        wrapped = llmpulse.wrap(client, sinks=[otel])
        tracer = provider.get_tracer("app")
        try:
            with tracer.start_as_current_span("async handler") as parent:
                await wrapped.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        finally:
            await client.close()
        assert await llmpulse.aflush()
        span = root(list(exporter.get_finished_spans()))

        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id

    def test_no_current_span_makes_a_root_span(
        self, client: openai.OpenAI, exporter: InMemorySpanExporter
    ) -> None:
        """Without a current span the call span starts its own trace."""
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert root(finished(exporter)).parent is None


class TestFailures:
    def test_5xx_after_retries_is_an_error_with_one_span_per_attempt_and_backoffs(
        self, raw_openai: openai.OpenAI, otel: OtelSink, fake: FakeProvider, exporter: InMemorySpanExporter
    ) -> None:
        """Three 500s: ERROR with error.type; attempts 1-3 as children, a backoff after each retried one."""
        fake.enqueue(*[Fault.status(500, retry_after_ms=2)] * 3)
        client = llmpulse.wrap(raw_openai, sinks=[otel], policies=llmpulse.Policies(max_retries=2))
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        spans = finished(exporter)
        span = root(spans)
        a = attrs(span)

        assert span.status.status_code is StatusCode.ERROR
        assert a["error.type"] == "InternalServerError"
        assert (a["llmpulse.outcome"], a["llmpulse.attempts"]) == ("error", 3)
        kids = children(spans, span)
        assert [k.name for k in kids] == [
            "chat gpt-4o-mini attempt 1",
            "backoff",
            "chat gpt-4o-mini attempt 2",
            "backoff",
            "chat gpt-4o-mini attempt 3",
        ]
        attempts = [k for k in kids if k.name != "backoff"]
        assert [attrs(k)["http.response.status_code"] for k in attempts] == [500, 500, 500]
        assert [attrs(k)["error.type"] for k in attempts] == ["500", "500", "500"]
        assert [attrs(k)["llmpulse.will_retry"] for k in attempts] == [True, True, False]
        assert [attrs(k).get("http.request.resend_count") for k in attempts] == [None, 1, 2]
        assert all(k.status.status_code is StatusCode.ERROR for k in attempts)
        backoffs = [k for k in kids if k.name == "backoff"]
        assert [attrs(b)["llmpulse.backoff_s"] for b in backoffs] == [0.002, 0.002]
        for before, after in itertools.pairwise(kids):
            assert before.end_time == after.start_time  # laid end to end on the call's timeline
        assert kids[-1].end_time == span.end_time

    def test_a_call_rejected_by_the_open_breaker_is_an_error_without_attempts(
        self, raw_openai: openai.OpenAI, otel: OtelSink, fake: FakeProvider, exporter: InMemorySpanExporter
    ) -> None:
        """A call the breaker refuses: ERROR, error.type CircuitOpenError, outcome rejected, no attempts."""
        policies = llmpulse.Policies(breaker=llmpulse.BreakerConfig(failure_threshold=1), max_retries=0)
        client = llmpulse.wrap(raw_openai, sinks=[otel], policies=policies)
        fake.enqueue(Fault.status(500))
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        with pytest.raises(llmpulse.CircuitOpenError):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        spans = finished(exporter)
        [rejected] = [s for s in spans if attrs(s).get("llmpulse.outcome") == "rejected"]
        a = attrs(rejected)

        assert rejected.status.status_code is StatusCode.ERROR
        assert a["error.type"] == "CircuitOpenError"
        assert a["llmpulse.attempts"] == 0
        assert a["llmpulse.rejected_reason"] == "circuit_open"
        assert children(spans, rejected) == []

    def test_a_raising_sink_is_counted_and_never_reaches_the_caller(
        self, raw_openai: openai.OpenAI, otel: OtelSink, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A tracer that raises costs the sink the event (counted as dropped), not the app its answer."""

        def boom(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("exporter on fire")

        monkeypatch.setattr(otel, "name", "otel-on-fire")  # routes are named at wrap time
        monkeypatch.setattr(otel._tracer, "start_span", boom)
        client = llmpulse.wrap(raw_openai, sinks=[otel])
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert llmpulse.flush()

        assert completion.choices[0].message.content
        [stats] = [s for s in llmpulse.sink_stats() if s.name == "otel-on-fire"]
        assert (stats.emitted, stats.exported, stats.dropped) == (2, 1, 1)  # the attempt, then the call


class TestSamplingAndContent:
    def test_unsampled_call_has_no_span_but_is_counted_in_metrics(
        self, otel: OtelSink, exporter: InMemorySpanExporter, reader: InMemoryMetricReader
    ) -> None:
        """sampled=False: no span; the duration histogram still counts the call."""
        otel.emit(make_call_event(call_id="unsampled", sampled=False))
        assert exporter.get_finished_spans() == ()
        assert points(reader, "gen_ai.client.operation.duration")[0].count == 1
        otel.emit(make_call_event(call_id="sampled"))
        roots = [s for s in exporter.get_finished_spans() if s.parent is None]
        assert [attrs(s)["llmpulse.call_id"] for s in roots] == ["sampled"]

    def test_an_unsampled_parent_makes_the_sdk_record_nothing(
        self, otel: OtelSink, provider: TracerProvider, exporter: InMemorySpanExporter
    ) -> None:
        """The SDK's parent-based sampler is obeyed: under a non-recording parent no span is exported."""
        parent = trace.NonRecordingSpan(
            trace.SpanContext(trace_id=1, span_id=2, is_remote=True, trace_flags=trace.TraceFlags(0))
        )
        with trace.use_span(parent):
            otel.emit(make_call_event(attempts=1))
        assert exporter.get_finished_spans() == ()

    def test_content_only_when_captured_and_allowed(
        self, provider: TracerProvider, exporter: InMemorySpanExporter
    ) -> None:
        """Messages appear in semconv shape when the event carries them, never with capture_content=False."""
        captured = make_call_event(
            input_content=orjson.dumps({"system": "Be brief.", "messages": MESSAGES}).decode(),
            output_content="Hello, on-call engineer.",
            finish_reason="stop",
        )
        OtelSink(tracer_provider=provider).emit(captured)
        OtelSink(tracer_provider=provider, capture_content=False).emit(captured)
        OtelSink(tracer_provider=provider).emit(make_call_event())
        shown, refused, absent = (attrs(s) for s in exporter.get_finished_spans() if s.parent is None)

        assert orjson.loads(shown["gen_ai.input.messages"]) == [
            {"role": "user", "parts": [{"type": "text", "content": MESSAGES[0]["content"]}]}
        ]
        assert orjson.loads(shown["gen_ai.system_instructions"]) == [{"type": "text", "content": "Be brief."}]
        assert orjson.loads(shown["gen_ai.output.messages"]) == [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": "Hello, on-call engineer."}],
                "finish_reason": "stop",
            }
        ]
        content_keys = {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions"}
        assert content_keys.isdisjoint(refused)
        assert content_keys.isdisjoint(absent)

    def test_captured_content_from_a_real_call(
        self, raw_openai: openai.OpenAI, otel: OtelSink, exporter: InMemorySpanExporter
    ) -> None:
        """With LLMPULSE capture on, a real call's prompt and answer reach the span."""
        llmpulse.configure(sinks=("none",), capture_content=True)
        try:
            client = llmpulse.wrap(raw_openai, sinks=[otel])
            completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        finally:
            llmpulse.configure(sinks=("none",))
        a = attrs(root(finished(exporter)))

        [message] = orjson.loads(a["gen_ai.input.messages"])
        assert message["parts"][0]["content"] == MESSAGES[0]["content"]
        [answer] = orjson.loads(a["gen_ai.output.messages"])
        assert answer["parts"][0]["content"] == completion.choices[0].message.content


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    return list(metric.data.data_points)
    return []


def metric_units(reader: InMemoryMetricReader) -> dict[str, str]:
    data = reader.get_metrics_data()
    if data is None:  # nothing was ever recorded
        return {}
    return {
        m.name: m.unit or "" for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }


class TestMetrics:
    def test_semconv_names_units_buckets_and_attributes(
        self, client: openai.OpenAI, reader: InMemoryMetricReader, sink: CapturingSink
    ) -> None:
        """Duration and token usage use semconv names, units, advised buckets and gen_ai.* attributes."""
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        for _ in stream:
            pass
        assert llmpulse.flush()
        plain, streamed = sink.calls

        assert metric_units(reader) == {
            "gen_ai.client.operation.duration": "s",
            "gen_ai.client.token.usage": "{token}",
            "gen_ai.client.operation.time_to_first_chunk": "s",
        }
        [duration] = points(reader, "gen_ai.client.operation.duration")
        assert tuple(duration.explicit_bounds) == DURATION_BOUNDS
        assert duration.count == 2
        assert duration.sum == pytest.approx(plain.latency_s + streamed.latency_s)
        assert dict(duration.attributes) == {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": plain.response_model,
            "server.address": plain.server_address,
            "server.port": plain.server_port,
        }
        tokens = {p.attributes["gen_ai.token.type"]: p for p in points(reader, "gen_ai.client.token.usage")}
        assert tokens["input"].sum == (plain.input_tokens or 0) + (streamed.input_tokens or 0)
        assert tokens["output"].sum == (plain.output_tokens or 0) + (streamed.output_tokens or 0)
        assert tokens["input"].explicit_bounds[:3] == (1, 4, 16)
        [ttfc] = points(reader, "gen_ai.client.operation.time_to_first_chunk")
        assert (ttfc.count, ttfc.sum) == (1, pytest.approx(streamed.ttft_s))

    def test_errors_carry_error_type(
        self, raw_openai: openai.OpenAI, otel: OtelSink, fake: FakeProvider, reader: InMemoryMetricReader
    ) -> None:
        """A failed call's duration point has error.type; no token point is invented for it."""
        fake.enqueue(Fault.status(400))
        client = llmpulse.wrap(raw_openai, sinks=[otel])
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert llmpulse.flush()
        [duration] = points(reader, "gen_ai.client.operation.duration")

        assert duration.attributes["error.type"] == "BadRequestError"
        assert points(reader, "gen_ai.client.token.usage") == []

    def test_no_metrics_unless_asked(self, provider: TracerProvider, reader: InMemoryMetricReader) -> None:
        """metrics=False (the default) records nothing on the meter provider."""
        OtelSink(tracer_provider=provider, meter_provider=MeterProvider(metric_readers=[reader])).emit(
            make_call_event()
        )
        assert metric_units(reader) == {}


class TestAttemptBuffer:
    def attempt(self, call_id: str, n: int = 1) -> AttemptEvent:
        return AttemptEvent(
            call_id=call_id,
            correlation_id="corr",
            attempt=n,
            provider="openai",
            operation="chat",
            model="gpt-4o-mini",
            http_status=500,
            error_type=None,
            request_id=None,
            latency_s=0.1,
            retry_after_s=None,
            will_retry=True,
            backoff_s=0.0,
        )

    def test_too_many_pending_calls_evicts_the_oldest_and_counts_it(
        self, otel: OtelSink, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Past MAX_PENDING_CALLS the oldest call's attempts are dropped and counted; the others survive."""
        monkeypatch.setattr(otel, "MAX_PENDING_CALLS", 2)
        for call_id in ("c1", "c2", "c3"):
            otel.emit(self.attempt(call_id))
        assert otel.attempts_dropped == 1
        for call_id in ("c1", "c2"):
            otel.emit(make_call_event(call_id=call_id, attempts=2, outcome="error", error_type="X"))
        spans = list(exporter.get_finished_spans())
        by_call = {attrs(s)["llmpulse.call_id"]: s for s in spans if s.parent is None}

        assert children(spans, by_call["c1"]) == []
        assert [k.name for k in children(spans, by_call["c2"])] == ["chat gpt-4o-mini attempt 1"]

    def test_old_pending_attempts_expire(self, otel: OtelSink, monkeypatch: pytest.MonkeyPatch) -> None:
        """Attempts whose call event never came are dropped after MAX_PENDING_AGE_S, and counted."""
        clock = [1000.0]
        monkeypatch.setattr(otel_module, "_monotonic", lambda: clock[0])
        otel.emit(self.attempt("lost", 1))
        clock[0] += otel.MAX_PENDING_AGE_S
        otel.emit(self.attempt("lost", 2))
        assert otel.attempts_dropped == 0  # exactly MAX_PENDING_AGE_S old: still waiting
        clock[0] += 0.001
        otel.emit(self.attempt("next"))
        assert otel.attempts_dropped == 2
        assert list(otel._pending) == ["next"]


class TestExemplars:
    def test_duration_exemplar_carries_the_callers_trace_and_span_ids(
        self,
        client: openai.OpenAI,
        provider: TracerProvider,
        registry: CollectorRegistry,
        sink: CapturingSink,
    ) -> None:
        """The OpenMetrics duration exemplar has the caller's trace_id and span_id, and the correlation id."""
        with provider.get_tracer("app").start_as_current_span("handler") as parent:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        ctx = parent.get_span_context()
        assert llmpulse.flush()
        [event] = sink.calls
        [line] = [line for line in generate_openmetrics(registry).decode().splitlines() if "# {" in line]

        assert line.startswith("gen_ai_client_operation_duration_seconds_bucket{")
        assert f'trace_id="{ctx.trace_id:032x}"' in line
        assert f'span_id="{ctx.span_id:016x}"' in line
        assert f'correlation_id="{event.correlation_id}"' in line

    @pytest.mark.parametrize("traces", [True, False])
    def test_a_client_whose_own_traces_are_off_is_not_read(
        self, fake: FakeProvider, provider: TracerProvider, sink: CapturingSink, traces: bool
    ) -> None:
        """anthropic's open_telemetry=False: llmpulse reads no span for that client (none is on its event)."""
        option: Any = None if traces else False
        raw = anthropic.Anthropic(
            api_key="sk-ant-test-0123456789", base_url=fake.anthropic_base_url, open_telemetry=option
        )
        client = llmpulse.wrap(raw, sinks=[sink], registry=CollectorRegistry())
        with provider.get_tracer("app").start_as_current_span("handler") as parent:
            client.messages.create(model="claude-3-5-haiku-latest", max_tokens=16, messages=MESSAGES)
            client.with_options(timeout=5.0).messages.create(
                model="claude-3-5-haiku-latest", max_tokens=16, messages=MESSAGES
            )
        assert llmpulse.flush()
        expected = f"{parent.get_span_context().trace_id:032x}" if traces else None
        assert [e.trace_id for e in sink.calls] == [expected, expected]

    def test_without_a_span_the_exemplar_is_the_correlation_id_alone(
        self, client: openai.OpenAI, registry: CollectorRegistry
    ) -> None:
        """No current span: no trace labels, the correlation id as before."""
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        [line] = [line for line in generate_openmetrics(registry).decode().splitlines() if "# {" in line]
        assert "trace_id" not in line
        assert "correlation_id=" in line

    @pytest.mark.parametrize(
        ("cid_len", "keys"),
        [
            (51, {"trace_id", "span_id", "correlation_id"}),  # exactly 128 characters
            (52, {"trace_id", "correlation_id"}),  # span_id makes room
            (74, {"trace_id", "correlation_id"}),
            (75, {"trace_id", "span_id"}),  # too long even without span_id: left out
        ],
    )
    def test_labels_stay_within_128_characters(
        self, provider: TracerProvider, cid_len: int, keys: set[str]
    ) -> None:
        """Trace id always, then the correlation id over span_id, within the 128-character limit."""
        with provider.get_tracer("app").start_as_current_span("handler"):
            labels = _prometheus._exemplar("c" * cid_len, current_trace_ids())
        assert set(labels) == keys
        assert sum(len(k) + len(v) for k, v in labels.items()) <= 128

    def test_an_unsampled_trace_is_not_linked(self) -> None:
        """A current span that is not sampled (never exported) gives no trace labels."""
        parent = trace.NonRecordingSpan(
            trace.SpanContext(trace_id=1, span_id=2, is_remote=True, trace_flags=trace.TraceFlags(0))
        )
        with trace.use_span(parent):
            assert _prometheus._exemplar("cid", current_trace_ids()) == {"correlation_id": "cid"}


class TestOptionalDependency:
    def test_missing_opentelemetry_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without opentelemetry, OtelSink() raises ImportError naming pip install 'llmpulse[otel]'."""
        monkeypatch.setitem(sys.modules, "opentelemetry", None)
        with pytest.raises(ImportError, match=r"pip install 'llmpulse\[otel\]'"):
            OtelSink()

    def test_llmpulse_imports_and_exemplars_work_without_opentelemetry(self) -> None:
        """`import llmpulse` and the Prometheus exemplar path never need opentelemetry."""
        code = (
            "import sys\n"
            "sys.modules['opentelemetry'] = None\n"
            "import llmpulse\n"
            "from llmpulse._context import current_trace_ids\n"
            "from llmpulse.sinks._prometheus import _exemplar\n"
            "assert llmpulse.OtelSink is llmpulse.sinks.OtelSink\n"
            "assert _exemplar('cid', current_trace_ids()) == {'correlation_id': 'cid'}\n"
            "assert not any(m.startswith('opentelemetry.') for m in sys.modules)\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
