"""What a wrapped client's transport knows, fixed when the client is wrapped."""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._call import _COLLECTED, Call, finish_collected
from ._content import input_content
from ._context import Context, active_context, new_id
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

__all__ = ["RETRIES_OFF", "ClientRef", "Hook"]


class _RetriesOff(int):
    """The SDK's ``max_retries`` on a wrapped client: 0, and recognisably llmpulse's.

    llmpulse runs the attempts, so the SDK's own loop must not. A caller (or a
    framework: LiteLLM sets it on every client) may still assign
    ``client.max_retries = n``; anything but this very object is such an
    assignment, 0 included, and llmpulse then retries ``n`` times itself.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "0"


RETRIES_OFF = _RetriesOff(0)


def _port(url: Any) -> int | None:
    port = url.port
    return int(port) if port is not None else {"https": 443, "http": 80}.get(str(url.scheme))


class ClientRef:
    """A weak reference to the one SDK client a `Hook` serves, set once that client exists."""

    __slots__ = ("_ref",)

    def __init__(self) -> None:
        self._ref: weakref.ref[Any] | None = None

    def bind(self, client: Any) -> None:
        """Point at ``client``."""
        self._ref = weakref.ref(client)

    def get(self) -> Any:
        """The client, or None (not bound yet, or collected)."""
        return None if self._ref is None else self._ref()


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
        max_retries: Retries after the first attempt (the SDK's setting).
        routes: Output sinks of this client; None means the process defaults.
        metrics: Prometheus sink of this client; None means the process default.
        api_key_id: Fingerprint of the client's API key.
        secrets: The client's credentials, for the scrubbing step to remove
            from every output (never logged themselves).
        inject_stream_usage: Ask OpenAI chat streams for usage.
        capture_content: Capture prompt and completion text (opt-in).
        network_sampler: Picks the calls whose network phases are timed
            (httpcore's trace hook); None: none are.
        policies: Retry, timeout and circuit-breaker settings and their state.
        connection_error: The SDK's ``APIConnectionError``: llmpulse's own
            exceptions also subclass it when raised through this client.
        client: The wrapped SDK client this hook serves (each copy has its own hook).

    """

    provider: Provider
    http: ModuleType
    pipeline: Pipeline
    max_retries: int
    routes: tuple[Route, ...] | None = None
    metrics: PrometheusSink | None = None
    api_key_id: str | None = None
    secrets: tuple[Secret, ...] = field(default=(), repr=False, compare=False)
    inject_stream_usage: bool = True
    network_sampler: Sampler | None = None
    capture_content: bool = False
    policies: Policies = field(default_factory=Policies)
    connection_error: type[BaseException] = Exception
    client: ClientRef = field(default_factory=ClientRef)
    _listeners: dict[str, Callable[[int, int], None]] = field(default_factory=dict, repr=False, compare=False)

    def with_max_retries(self, max_retries: int) -> Hook:
        """Return a copy retrying ``max_retries`` times, for another client (``with_options``, ``copy``)."""
        return dataclasses.replace(self, max_retries=max_retries, client=ClientRef(), _listeners={})

    def assigned_retries(self) -> int | None:
        """The ``max_retries`` the caller assigned on the client since it was wrapped, or None."""
        client = self.client.get()
        value = getattr(client, "max_retries", RETRIES_OFF)
        if value is RETRIES_OFF or not isinstance(value, int):
            return None
        return int(value)

    def max_retries_of(self, client: Any) -> int:
        """The retries a call through ``client`` (served by this hook) makes by the SDK's count."""
        value = getattr(client, "max_retries", RETRIES_OFF)
        return self.max_retries if value is RETRIES_OFF or not isinstance(value, int) else int(value)

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

    def start_call(self, request: Any, max_retries: int | None = None) -> Call | None:
        """Begin observing ``request`` as one logical call; None lets it pass unobserved.

        ``max_retries`` is the call's own (per request or the client's), as the SDK reads it.
        """
        try:
            return self._start_call(request, max_retries)
        except Exception:  # noqa: BLE001 - a bug here must not break the call
            self.pipeline.internal_error("start_call")
            return None

    def _start_call(self, request: Any, max_retries: int | None) -> Call:
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
        info = self.provider.describe(request.method, path, body, inject_usage=self._ask_usage(url))
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
            reads_whole=not info.streamed and request.headers.get(_RAW_RESPONSE_HEADER) != "stream",
            original_body=original_body,
            address=(url.host, _port(url)),
            max_retries=max_retries,
        )
        self.pipeline.call_started(self.provider.name, self.metrics)
        return call

    def _ask_usage(self, url: Any) -> bool:
        # Only OpenAI chat streams are asked (the provider decides that); where is decided here.
        if not self.inject_stream_usage:
            return False
        host, port, path = url.host, url.port, url.path
        if self.policies.stream_usage().refused(host, port, path):
            return False
        query = url.query
        return ask_for_stream_usage(
            self.provider.name, host, path, query if isinstance(query, bytes) else b""
        )

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
