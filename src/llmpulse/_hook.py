"""What a wrapped client's transport knows, fixed when the client is wrapped."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._call import _COLLECTED, Call, finish_collected
from ._content import input_content
from ._context import Context, active_context, current_trace_ids, new_id
from ._redact import Secret
from ._runtime import price_table, token_counter
from ._sampling import Sampler
from ._tokens import estimate_request_tokens
from .policies import BreakerState, Policies
from .policies._stream_usage import ask_for_stream_usage
from .providers import Provider

if TYPE_CHECKING:
    from ._pipeline import Pipeline
    from .sinks._dispatch import Route
    from .sinks._prometheus import PrometheusSink

__all__ = ["Hook"]


def _port(url: Any) -> int | None:
    port = url.port
    return int(port) if port is not None else {"https": 443, "http": 80}.get(str(url.scheme))


_NO_CONTEXT = Context(priority="interactive", cache=False, private=False)
# The SDKs mark ``with_streaming_response`` calls so: the non-stream calls whose body they do not read whole.
_RAW_RESPONSE_HEADER = "x-stainless-raw-response"


@dataclass(frozen=True, slots=True)
class Hook:
    """Per-client configuration shared by every call through one transport.

    Attributes:
        provider: The wire-format adapter.
        http: The HTTP module the client runs on (``httpx2`` or ``httpx``).
        pipeline: Where events go.
        routes: Output sinks of this client; None means the process defaults.
        metrics: Prometheus sink of this client; None means the process default.
        api_key_id: Fingerprint of the client's API key.
        secrets: The client's credentials, for the scrubbing step to remove
            from every output (never logged themselves).
        inject_stream_usage: Ask OpenAI chat streams for usage.
        stream_usage_hosts: Hosts asked from the first stream (besides api.openai.com).
        trace_context: Read the caller's OpenTelemetry span for the event (off
            where the client's own OpenTelemetry option turns its traces off).
        capture_content: Capture prompt and completion text (opt-in).
        network_sampler: Picks the calls whose network phases are timed
            (httpcore's trace hook); None: none are.
        policies: Retry, timeout and circuit-breaker settings and their state.
        connection_error: The SDK's ``APIConnectionError``: llmpulse's own
            exceptions also subclass it when raised through this client.

    """

    provider: Provider
    http: ModuleType
    pipeline: Pipeline
    routes: tuple[Route, ...] | None = None
    metrics: PrometheusSink | None = None
    api_key_id: str | None = None
    secrets: tuple[Secret, ...] = field(default=(), repr=False, compare=False)
    inject_stream_usage: bool = True
    stream_usage_hosts: frozenset[str] = frozenset()
    trace_context: bool = True
    network_sampler: Sampler | None = None
    capture_content: bool = False
    policies: Policies = field(default_factory=Policies)
    connection_error: type[BaseException] = Exception
    _listeners: dict[str, Callable[[int, int], None]] = field(default_factory=dict, repr=False, compare=False)

    def circuit_changed(
        self, provider: str, host: str, key_id: str, model: str, old: BreakerState, new: BreakerState
    ) -> None:
        """Record a breaker transition of this client's endpoint in the metrics."""
        self.pipeline.circuit_changed(self.metrics, provider, host, model, old, new)

    def limit_listener(self, host: str) -> Callable[[int, int], None]:
        """What records a new concurrency limit of the endpoint at ``host`` in the metrics."""
        listener = self._listeners.get(host)
        if listener is None:
            provider = self.provider.name

            def listener(old: int, new: int) -> None:
                self.pipeline.concurrency_changed(self.metrics, provider, host, new)

            if len(self._listeners) < 64:
                self._listeners[host] = listener
        return listener

    def start_call(
        self,
        request: Any,
        max_retries: int = 0,
        sdk_backoff: Callable[[int, Mapping[str, str] | None], float] | None = None,
        *,
        sdk_streams: bool = False,
    ) -> Call | None:
        """Begin observing ``request`` as one logical call; None lets it pass unobserved.

        ``max_retries`` is the call's own (per request or the client's), as the SDK reads it;
        ``sdk_backoff`` the client's own delay before retry n (given the failed response's headers);
        ``sdk_streams`` that the SDK was asked for a stream, so it never reads the body whole.
        """
        try:
            return self._start_call(request, max_retries, sdk_backoff, sdk_streams)
        except Exception:  # noqa: BLE001 - a bug here must not break the call
            self.pipeline.internal_error("start_call")
            return None

    def _start_call(
        self,
        request: Any,
        max_retries: int,
        sdk_backoff: Callable[[int, Mapping[str, str] | None], float] | None,
        sdk_streams: bool,
    ) -> Call:
        if _COLLECTED:
            finish_collected()

        # Outside any context there is nothing to merge: share one empty
        # context; the call's own id is a fresh correlation id as well.
        ctx = active_context() or _NO_CONTEXT
        call_id = new_id()
        correlation_id = ctx.correlation_id or call_id
        try:
            body: bytes | None = request.content
        except Exception:  # noqa: BLE001 - a streamed upload has no readable content
            body = None
        url = request.url
        path = url.path
        ask = self._ask_usage(url)
        info = self.provider.describe(request.method, path, body, inject_usage=bool(ask))
        info.path = path
        original_body = None
        if info.new_body is not None:
            original_body, body = body, info.new_body
            self.set_body(request, body)
        capture = self.capture_content and not ctx.private
        call = Call(
            self,
            info,
            ctx,
            correlation_id=correlation_id,
            call_id=call_id,
            prompt_estimate=estimate_request_tokens(body) if body else None,
            sdk_timeout=request.extensions.get("timeout"),
            input_content=input_content(body) if capture else None,
            capture=capture,
            reads_whole=not (sdk_streams or info.streamed)
            and request.headers.get(_RAW_RESPONSE_HEADER) != "stream",
            original_body=original_body,
            address=(url.host, _port(url)),
            max_retries=max_retries,
            sdk_backoff=sdk_backoff,
            learns_stream_usage=ask is None and info.streamed,
            trace_ids=current_trace_ids() if self.trace_context else None,
        )
        self.pipeline.call_started(self.provider.name, self.metrics)
        return call

    def _ask_usage(self, url: Any) -> bool | None:
        # Only OpenAI chat streams are asked (the provider decides that); where is decided here.
        # None: an endpoint whose behaviour is learned from this stream, sent as the caller made it.
        # Never where the body may not change (signed, or the model in the URL).
        if (
            not self.inject_stream_usage
            or self.provider.sdk == "anthropic"
            or not self.provider.rewrites_body
        ):
            return False
        host, port, path = url.host, url.port, url.path
        memory = self.policies.stream_usage()
        if memory.refused(host, port, path):
            return False
        query = url.query if isinstance(url.query, bytes) else b""
        known = ask_for_stream_usage(self.provider.name, host, path, query, self.stream_usage_hosts)
        return known if known is not None else memory.learned(host, port, path)

    def set_body(self, request: Any, body: bytes) -> None:
        """Send ``request`` with ``body`` instead of the one it has (a rewrite of llmpulse's)."""
        request.stream = self.http.ByteStream(body)
        request._content = body
        request.headers["Content-Length"] = str(len(body))

    def sdk_error_name(self, exc: BaseException) -> str:
        """The class name of the exception the SDK will raise for a failed send."""
        names = {cls.__name__ for cls in type(exc).__mro__}
        if "TimeoutException" in names:
            return "APITimeoutError"
        if "TransportError" in names or "RequestError" in names:
            return "APIConnectionError"
        if self.provider.sdk == "anthropic" and not type(exc).__module__.startswith("anthropic"):
            return "APIConnectionError"  # anthropic wraps any foreign exception
        return type(exc).__name__

    def price(self, response_model: str | None, model: str | None, **usage: int) -> float | None:
        """USD cost of the usage, or None when neither model's price is known."""
        first = response_model or model
        if first is None:
            return None
        try:
            return price_table().cost(self.provider.name, first, fallback_model=model, **usage)
        except Exception:  # noqa: BLE001 - pricing must never break a call
            self.pipeline.internal_error("pricing")
            return None

    def count_tokens(self, text: str, model: str | None) -> int:
        """Tokens in ``text`` (tiktoken when an encoding is available offline, else a heuristic)."""
        return token_counter().count(text, model)[0]
