"""OpenTelemetry: one CLIENT span per call, following the GenAI semantic conventions (v1.41.0).

Spans are made when the `CallEvent` arrives, after the call ended, with
explicit start and end times, so the sink costs the caller nothing: it runs
on llmpulse's delivery thread, inside a copy of the caller's contextvars
taken when the call began, so the caller's span of that moment is the parent.
One call becomes this tree (every child optional)::

    chat gpt-4o                       CLIENT  gen_ai.* + llmpulse.* attributes
    ├── queue wait                    INTERNAL  rate limit / concurrency slot
    ├── chat gpt-4o attempt 1         CLIENT  http.response.status_code, error.type
    │   ├── connect                   INTERNAL  network phases (only on timed
    │   ├── tls                                 calls: LLMPULSE_NETWORK_TIMINGS)
    │   ├── request
    │   ├── time_to_headers           (mostly the provider's own time)
    │   └── body
    ├── backoff                       INTERNAL  the sleep before attempt 2
    └── chat gpt-4o attempt 2         CLIENT
        └── ...

Layout: the events carry durations, not start times, so the children are
laid end to end from the call's start: the whole queue wait first (it is
summed over the call; a wait for a concurrency slot before a retry is shown
there too), then each attempt for its ``latency_s`` (the last one until the
call's end, its body included), the backoff after it, and the network phases
end to end from the attempt's start. Everything is clamped into its parent.
Real gaps (pool checkout, llmpulse's own work) are small and land at the end
of each stretch; the answering attempt's ``body`` runs to the call's end.
Network phases are child spans rather than span events: a waterfall shows
network time next to provider time at a glance, where events would be points
to subtract; they exist only on calls whose phases were timed, which are
sampled already.

`AttemptEvent` s arrive before their `CallEvent` (one FIFO queue per sink);
they wait here per ``call_id``, at most `OtelSink.MAX_PENDING_CALLS` calls
of `OtelSink.MAX_ATTEMPTS_PER_CALL` attempts for `OtelSink.MAX_PENDING_AGE_S`
(a call whose event was lost); what is evicted is counted in
`OtelSink.attempts_dropped`. A call without its attempt events (they were
lost, or not kept for an unsampled call) gets no attempt spans, except a
one-attempt call, whose attempt is the call itself minus the queue wait.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson

from ..events import AttemptEvent, CallEvent, Event, NetworkTimings

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

__all__ = ["OtelSink"]

SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.41.0"

_DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
_TOKEN_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip

# Semconv's well-known values where llmpulse's names differ.
_PROVIDERS: Final = {"azure": "azure.ai.openai"}
_OPERATIONS: Final = {"messages": "chat", "responses": "chat"}
_OPENAI_API_TYPES: Final = {"chat": "chat_completions", "responses": "responses"}
_PHASES: Final = ("connect", "tls", "request", "time_to_headers", "body")
_INSTALL_HINT: Final = "OtelSink needs OpenTelemetry: pip install 'llmpulse[otel]'"
_monotonic = time.monotonic  # the pending attempts' clock (tests replace it)


class OtelSink:
    """Emit one OpenTelemetry span per call, and optionally the GenAI client metrics.

    Spans follow the GenAI semantic conventions v1.41.0 (name
    ``{gen_ai.operation.name} {gen_ai.request.model}``, kind CLIENT, ``gen_ai.*``
    attributes), with llmpulse's own fields under ``llmpulse.``; the span tree
    is drawn in this module's docstring and in docs/tracing.md. A call with
    ``sampled=False`` gets no span; the metrics count every call.

    Status: ERROR with ``error.type`` for outcomes "error", "rejected" (the
    policy's exception, e.g. ``CircuitOpenError``: the caller got an
    exception) and "cancelled" (``CancelledError``, as the OTel SDK does for
    an exception escaping a span); UNSET for "ok" and "abandoned" (the caller
    stopped reading a healthy stream, which is not a failure).

    Args:
        tracer_provider: Where spans go (default: OpenTelemetry's global one).
        meter_provider: Where metrics go (default: the global one).
        metrics: Also record ``gen_ai.client.operation.duration``,
            ``gen_ai.client.token.usage`` and, for streams,
            ``gen_ai.client.operation.time_to_first_chunk``.
        capture_content: False never puts prompts and answers on spans; None
            or True put them there when the event carries them (llmpulse
            captures them only when ``LLMPULSE_CAPTURE_CONTENT`` or
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` opts in).

    Raises:
        ImportError: opentelemetry-api is not installed.

    Attributes:
        attempts_dropped: Attempt events evicted before their call's event
            arrived (too many pending calls, too old, too many attempts).

    """

    name = "otel"
    event_types: tuple[type, ...] = (CallEvent, AttemptEvent)

    MAX_PENDING_CALLS: Final = 10_000
    """Calls whose attempt events wait for the call's event, at most."""
    MAX_PENDING_AGE_S: Final = 3600.0
    """How long attempt events wait for their call's event (longer than any stream)."""
    MAX_ATTEMPTS_PER_CALL: Final = 64
    """Attempt events kept per call."""

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        metrics: bool = False,
        capture_content: bool | None = None,
    ) -> None:
        try:
            from opentelemetry import metrics as otel_metrics  # noqa: PLC0415 - an optional extra
            from opentelemetry import trace  # noqa: PLC0415
            from opentelemetry.trace import SpanKind, Status, StatusCode  # noqa: PLC0415
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT) from exc
        from .. import __version__  # noqa: PLC0415 - the package imports this module

        self._trace = trace
        self._client, self._internal = SpanKind.CLIENT, SpanKind.INTERNAL
        self._error = StatusCode.ERROR
        self._status = Status
        self._tracer = trace.get_tracer("llmpulse", __version__, tracer_provider, schema_url=SCHEMA_URL)
        self._content = capture_content is not False
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, tuple[float, list[AttemptEvent]]] = OrderedDict()
        self.attempts_dropped = 0
        self._duration: Any = None
        if metrics:
            meter = otel_metrics.get_meter("llmpulse", __version__, meter_provider, schema_url=SCHEMA_URL)
            self._duration = meter.create_histogram(
                "gen_ai.client.operation.duration",
                unit="s",
                description="GenAI operation duration.",
                explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
            )
            self._tokens = meter.create_histogram(
                "gen_ai.client.token.usage",
                unit="{token}",
                description="Number of input and output tokens used.",
                explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
            )
            self._ttfc = meter.create_histogram(
                "gen_ai.client.operation.time_to_first_chunk",
                unit="s",
                description="Time to receive the first chunk in a streaming operation.",
                explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
            )

    def emit(self, event: Event) -> None:
        """Buffer an `AttemptEvent`; turn a `CallEvent` into spans (and metrics).

        Args:
            event: Any llmpulse event; interaction summaries are ignored.

        """
        if isinstance(event, AttemptEvent):
            self._hold(event)
        elif isinstance(event, CallEvent):
            attempts = self._take(event.call_id)
            if self._duration is not None:
                self._record_metrics(event)
            if event.sampled:
                self._spans(event, attempts)

    # -- attempt buffering ----------------------------------------------------

    def _hold(self, event: AttemptEvent) -> None:
        now = _monotonic()
        with self._lock:
            self._expire(now)
            entry = self._pending.get(event.call_id)
            if entry is None:
                if len(self._pending) >= self.MAX_PENDING_CALLS:
                    _, (_, lost) = self._pending.popitem(last=False)
                    self.attempts_dropped += len(lost)
                entry = self._pending[event.call_id] = (now, [])
            if len(entry[1]) >= self.MAX_ATTEMPTS_PER_CALL:
                self.attempts_dropped += 1
            else:
                entry[1].append(event)

    def _expire(self, now: float) -> None:
        # Oldest first: insertion order is arrival order.
        pending = self._pending
        while pending:
            call_id, (since, attempts) = next(iter(pending.items()))
            if now - since <= self.MAX_PENDING_AGE_S:
                return
            del pending[call_id]
            self.attempts_dropped += len(attempts)

    def _take(self, call_id: str) -> list[AttemptEvent]:
        with self._lock:
            entry = self._pending.pop(call_id, None)
        return [] if entry is None else entry[1]

    # -- spans ----------------------------------------------------------------

    def _spans(self, e: CallEvent, attempts: list[AttemptEvent]) -> None:
        start = int(e.started_at.timestamp() * 1e9)
        end = start + int(e.latency_s * 1e9)
        name = _span_name(e)
        # Attributes go in at creation: samplers may look at them.
        span = self._tracer.start_span(
            name, kind=self._client, attributes=self._call_attributes(e), start_time=start
        )
        try:
            if not span.is_recording():
                return  # the sampler (e.g. an unsampled parent) said no: build nothing more
            if e.outcome in ("error", "rejected", "cancelled"):
                span.set_status(self._status(self._error, e.error_message or e.error_type))
            self._children(span, e, attempts, name, start, end)
        finally:
            span.end(end_time=end)

    def _children(
        self, parent: Span, e: CallEvent, attempts: list[AttemptEvent], name: str, start: int, end: int
    ) -> None:
        ctx = self._trace.set_span_in_context(parent)
        cursor = start
        if e.queue_wait_s > 0:
            cursor = self._child(ctx, "queue wait", cursor, _ns(e.queue_wait_s), end)
        if not attempts and e.attempts == 1:
            # No attempt event (lost, or not kept): the one attempt is the rest of the call.
            attempts = [_attempt_of(e)]
        attempts.sort(key=lambda a: a.attempt)
        for a in attempts:
            last = a.attempt == e.attempts
            # The attempt that answered the caller lasts until the call's end (its body
            # included); a last attempt that wanted a retry ended the call in its backoff.
            a_end = end if last and not a.will_retry else min(cursor + _ns(a.latency_s), end)
            span = self._tracer.start_span(
                f"{name} attempt {a.attempt}",
                ctx,
                kind=self._client,
                attributes=_attempt_attributes(a, e.server_address),
                start_time=cursor,
            )
            try:
                if a.error_type is not None or (a.http_status or 0) >= 400:
                    span.set_status(self._status(self._error))
                network = e.network if last and e.network is not None else a.network
                if network is not None and span.is_recording():
                    self._phases(span, network, cursor, a_end, answered=last and not a.will_retry)
            finally:
                span.end(end_time=a_end)
            cursor = a_end
            if a.will_retry and a.backoff_s > 0:
                cursor = self._child(
                    ctx, "backoff", cursor, _ns(a.backoff_s), end, {"llmpulse.backoff_s": a.backoff_s}
                )

    def _phases(
        self, attempt: Span, network: NetworkTimings, start: int, end: int, *, answered: bool
    ) -> None:
        ctx = self._trace.set_span_in_context(attempt)
        cursor = start
        body_s = network.body_s
        if body_s is None and answered and network.time_to_headers_s is not None:
            # The call ends when the caller has the last byte, before httpcore
            # reports the body complete: the body is the rest of the call.
            body_s = float("inf")
        for phase, seconds in zip(
            _PHASES,
            (network.connect_s, network.tls_s, network.request_s, network.time_to_headers_s, body_s),
            strict=True,
        ):
            if seconds is not None:
                cursor = self._child(ctx, phase, cursor, _ns(seconds), end)

    def _child(
        self,
        ctx: Any,
        name: str,
        start: int,
        length: int,
        limit: int,
        attributes: dict[str, Any] | None = None,
    ) -> int:
        """An INTERNAL child span from ``start`` for ``length`` ns, clamped to ``limit``; returns its end."""
        end = min(start + length, limit)
        self._tracer.start_span(name, ctx, kind=self._internal, attributes=attributes, start_time=start).end(
            end_time=end
        )
        return end

    def _call_attributes(self, e: CallEvent) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": _OPERATIONS.get(e.operation, e.operation),
            "gen_ai.provider.name": _PROVIDERS.get(e.provider, e.provider),
            "llmpulse.call_id": e.call_id,
            "llmpulse.correlation_id": e.correlation_id,
            "llmpulse.outcome": e.outcome,
            "llmpulse.attempts": e.attempts,
            "llmpulse.cache_hit": e.cache_hit,
        }
        optional: tuple[tuple[str, Any], ...] = (
            ("gen_ai.request.model", e.model),
            ("gen_ai.response.model", e.response_model),
            ("gen_ai.request.max_tokens", e.max_tokens),
            ("gen_ai.usage.input_tokens", e.input_tokens),
            ("gen_ai.usage.output_tokens", e.output_tokens),
            ("gen_ai.usage.cache_read.input_tokens", e.cached_input_tokens),
            ("gen_ai.usage.cache_creation.input_tokens", e.cache_write_tokens),
            ("gen_ai.usage.reasoning.output_tokens", e.reasoning_tokens),
            ("server.address", e.server_address or None),
            ("server.port", e.server_port if e.server_address else None),
            ("error.type", _error_type(e)),
            ("llmpulse.tenant", e.tenant),
            ("llmpulse.route", e.route),
            ("llmpulse.feature", e.feature),
            ("llmpulse.interaction_id", e.interaction_id),
            ("llmpulse.request_id", e.request_id),
            ("llmpulse.cost_usd", e.cost_usd),
            ("llmpulse.served_model", e.served_model),
            ("llmpulse.served_provider", e.served_provider),
            ("llmpulse.fallback_reason", e.fallback_reason),
            ("llmpulse.rejected_reason", e.rejected_reason),
            ("llmpulse.retry_stop_reason", e.retry_stop_reason),
            ("llmpulse.queue_wait_s", e.queue_wait_s or None),
        )
        for key, value in optional:
            if value is not None:
                attrs[key] = value
        if e.finish_reason is not None:
            attrs["gen_ai.response.finish_reasons"] = (e.finish_reason,)
        if e.streamed:
            attrs["gen_ai.request.stream"] = True
            if e.ttft_s is not None:
                attrs["gen_ai.response.time_to_first_chunk"] = e.ttft_s
            if e.stream_interrupted:
                attrs["llmpulse.stream_interrupted"] = True
        if e.tokens_estimated:
            attrs["llmpulse.tokens_estimated"] = True
        if e.provider in ("openai", "azure") and e.operation in _OPENAI_API_TYPES:
            attrs["openai.api.type"] = _OPENAI_API_TYPES[e.operation]
        if self._content:
            _add_content(attrs, e)
        return attrs

    # -- metrics --------------------------------------------------------------

    def _record_metrics(self, e: CallEvent) -> None:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": _OPERATIONS.get(e.operation, e.operation),
            "gen_ai.provider.name": _PROVIDERS.get(e.provider, e.provider),
        }
        if e.model is not None:
            attrs["gen_ai.request.model"] = e.model
        if e.response_model is not None:
            attrs["gen_ai.response.model"] = e.response_model
        if e.server_address:
            attrs["server.address"] = e.server_address
            if e.server_port is not None:
                attrs["server.port"] = e.server_port
        error_type = _error_type(e)
        duration_attrs = attrs if error_type is None else {**attrs, "error.type": error_type}
        self._duration.record(e.latency_s, duration_attrs)
        if e.input_tokens is not None:
            self._tokens.record(e.input_tokens, {**attrs, "gen_ai.token.type": "input"})
        if e.output_tokens is not None:
            self._tokens.record(e.output_tokens, {**attrs, "gen_ai.token.type": "output"})
        if e.streamed and e.ttft_s is not None:
            self._ttfc.record(e.ttft_s, attrs)


def _ns(seconds: float) -> int:
    # inf: "until the parent's end", which the caller clamps to.
    return 1 << 62 if seconds == float("inf") else int(max(seconds, 0.0) * 1e9)


def _span_name(e: CallEvent) -> str:
    operation = _OPERATIONS.get(e.operation, e.operation)
    return operation if e.model is None else f"{operation} {e.model}"


def _error_type(e: CallEvent) -> str | None:
    if e.outcome in ("ok", "abandoned"):
        return None
    return e.error_type or "_OTHER"  # semconv's fallback when the error has no name


def _attempt_of(e: CallEvent) -> AttemptEvent:
    return AttemptEvent(
        call_id=e.call_id,
        correlation_id=e.correlation_id,
        attempt=1,
        provider=e.provider,
        operation=e.operation,
        model=e.model,
        http_status=e.http_status,
        error_type=e.error_type if e.http_status is None and e.outcome == "error" else None,
        request_id=e.request_id,
        latency_s=e.latency_s - e.queue_wait_s,
        retry_after_s=None,
        will_retry=False,
        backoff_s=0.0,
        network=e.network,
    )


def _attempt_attributes(a: AttemptEvent, server_address: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {"llmpulse.attempt": a.attempt, "llmpulse.will_retry": a.will_retry}
    if a.attempt > 1:
        attrs["http.request.resend_count"] = a.attempt - 1  # HTTP semconv's name for a retry
    if server_address:
        attrs["server.address"] = server_address
    if a.http_status is not None:
        attrs["http.response.status_code"] = a.http_status
    if a.error_type is not None:
        attrs["error.type"] = a.error_type
    elif a.http_status is not None and a.http_status >= 400:
        attrs["error.type"] = str(a.http_status)  # HTTP semconv: the status code
    if a.request_id is not None:
        attrs["llmpulse.request_id"] = a.request_id
    if a.retry_after_s is not None:
        attrs["llmpulse.retry_after_s"] = a.retry_after_s
    if a.network is not None and a.network.connection_reused is not None:
        attrs["llmpulse.connection_reused"] = a.network.connection_reused
    return attrs


# -- content: llmpulse captures the provider's request fields; semconv wants its own message shape


def _add_content(attrs: dict[str, Any], e: CallEvent) -> None:
    if e.input_content is not None:
        system, messages = _input_messages(e.input_content)
        if system:
            attrs["gen_ai.system_instructions"] = _json(system)
        if messages:
            attrs["gen_ai.input.messages"] = _json(messages)
    if e.output_content is not None:
        message: dict[str, Any] = {
            "role": "assistant",
            "parts": [{"type": "text", "content": e.output_content}],
        }
        if e.finish_reason is not None:
            message["finish_reason"] = e.finish_reason
        attrs["gen_ai.output.messages"] = _json([message])


def _input_messages(text: str) -> tuple[list[Any], list[Any]]:
    """Semconv ``gen_ai.system_instructions`` parts and ``gen_ai.input.messages`` from captured input."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        data = None  # cut at MAX_CONTENT_CHARS: keep the text, as one user message
    if not isinstance(data, dict):
        return [], [_message("user", text)]
    system: list[Any] = []
    for key in ("system", "instructions"):
        if key in data:
            system.extend(_parts(data[key]))
    messages: list[Any] = []
    for key in ("messages", "input", "prompt"):
        value = data.get(key)
        if isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value):
            messages.extend(_message(str(m["role"]), m.get("content")) for m in value)
        elif value is not None:
            messages.append(_message("user", value))
    return system, messages


def _message(role: str, content: Any) -> dict[str, Any]:
    return {"role": role, "parts": _parts(content)}


def _parts(content: Any) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, Sequence):
        parts: list[Any] = []
        for item in content:
            if isinstance(item, dict) and isinstance(item.get("text"), str):
                parts.append({"type": "text", "content": item["text"]})
            elif isinstance(item, dict) and "type" in item:
                parts.append(item)  # already a generic part: {"type": ..., ...}
            else:
                parts.extend(_parts(item))
        return parts
    return [] if content is None else [{"type": "text", "content": str(content)}]


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
