"""What a wrapped client's transport knows, fixed when the client is wrapped."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._call import _COLLECTED, Call, finish_collected
from ._content import input_content
from ._context import Context, active_context, new_id
from ._runtime import price_table, token_counter
from ._sampling import Sampler
from ._tokens import estimate_request_tokens
from .policies import BreakerState, Policies
from .providers import Provider

if TYPE_CHECKING:
    from ._pipeline import Pipeline
    from .sinks._dispatch import Route
    from .sinks._prometheus import PrometheusSink

__all__ = ["Hook"]

_NO_CONTEXT = Context(priority="interactive", cache=False, private=False)


@dataclass(frozen=True, slots=True)
class Hook:
    """Per-client configuration shared by every call through one transport.

    Attributes:
        provider: The wire-format adapter.
        http: The HTTP module the client runs on (``httpx2`` or ``httpx``).
        pipeline: Where events go.
        max_retries: Retries after the first attempt (the SDK's setting).
        routes: Output sinks of this client; None means the process defaults.
        metrics: Prometheus sink of this client; None means the process default.
        api_key_id: Fingerprint of the client's API key.
        server_address: Host of the client's base URL.
        server_port: Its port (the scheme's default when the URL has none).
        inject_stream_usage: Ask OpenAI chat streams for usage.
        capture_content: Capture prompt and completion text (opt-in).
        network_sampler: Picks the calls whose network phases are timed
            (httpcore's trace hook); None: none are.
        policies: Retry, timeout and circuit-breaker settings and their state.
        endpoint: ``(provider, host, api_key_id)``: what policy state is keyed by.
        connection_error: The SDK's ``APIConnectionError``: llmpulse's own
            exceptions also subclass it when raised through this client.

    """

    provider: Provider
    http: ModuleType
    pipeline: Pipeline
    max_retries: int
    routes: tuple[Route, ...] | None = None
    metrics: PrometheusSink | None = None
    api_key_id: str | None = None
    server_address: str = ""
    server_port: int | None = None
    inject_stream_usage: bool = True
    network_sampler: Sampler | None = None
    capture_content: bool = False
    policies: Policies = field(default_factory=Policies)
    endpoint: tuple[str, str, str] = ("", "", "")
    connection_error: type[BaseException] = Exception

    def with_max_retries(self, max_retries: int) -> Hook:
        """Return a copy retrying ``max_retries`` times (for ``with_options(max_retries=N)``)."""
        return dataclasses.replace(self, max_retries=max_retries)

    def circuit_changed(
        self, provider: str, host: str, key_id: str, model: str, old: BreakerState, new: BreakerState
    ) -> None:
        """Record a breaker transition of this client's endpoint in the metrics."""
        self.pipeline.circuit_changed(self.metrics, provider, host, model, old, new)

    def concurrency_changed(self, old: int, new: int) -> None:
        """Record a new concurrency limit of this client's endpoint."""
        provider, host, _ = self.endpoint
        self.pipeline.concurrency_changed(self.metrics, provider, host, new)

    def start_call(self, request: Any) -> Call | None:
        """Begin observing ``request`` as one logical call; None lets it pass unobserved."""
        try:
            return self._start_call(request)
        except Exception:  # noqa: BLE001 - a bug here must not break the call
            self.pipeline.internal_error("start_call")
            return None

    def _start_call(self, request: Any) -> Call:
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
        path = request.url.path
        info = self.provider.describe(request.method, path, body, inject_usage=self.inject_stream_usage)
        info.path = path
        if info.new_body is not None:
            body = info.new_body
            request.stream = self.http.ByteStream(body)
            request._content = body
            request.headers["Content-Length"] = str(len(body))
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
        )
        self.pipeline.call_started(self.provider.name, self.metrics)
        return call

    def sdk_error_name(self, exc: BaseException) -> str:
        """The class name of the exception the SDK will raise for a failed send."""
        names = {cls.__name__ for cls in type(exc).__mro__}
        if "TimeoutException" in names:
            return "APITimeoutError"
        if "TransportError" in names or "RequestError" in names:
            return "APIConnectionError"
        if self.provider.name == "anthropic" and not type(exc).__module__.startswith("anthropic"):
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
