"""The events llmpulse emits: what crosses from the call path to the sinks.

Every logical call through a wrapped client yields exactly one `CallEvent`;
every HTTP attempt inside it yields one `AttemptEvent`; an
`llmpulse.interaction()` block yields one `InteractionSummary` at exit.
All are frozen, slotted dataclasses: sinks may keep them, share them across
threads and serialise them with `to_dict()`. Every field is documented in
``docs/events.md``.
"""

from __future__ import annotations

import dataclasses
import operator
import typing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "AttemptEvent",
    "CallEvent",
    "Event",
    "InteractionSummary",
    "NetworkTimings",
    "Outcome",
    "RateLimitInfo",
]

Outcome = Literal["ok", "error", "cancelled", "abandoned", "rejected"]
"""How a logical call ended (see `CallEvent.outcome`)."""


@dataclass(frozen=True, slots=True)
class NetworkTimings:
    """Network phases of the last attempt, from httpcore's ``trace`` extension.

    All values are seconds, or None when the phase did not happen (a reused
    keep-alive connection has no ``connect_s``; plain HTTP has no ``tls_s``).

    Attributes:
        connect_s: TCP connect, DNS resolution included (httpcore does both at once).
        tls_s: TLS handshake.
        request_s: Sending request headers and body.
        time_to_headers_s: From the end of the request to the response headers:
            for a non-streaming call this is mostly the provider's generation time.
        body_s: Reading the response body (the whole stream for streaming calls).
        connection_reused: True when no new connection was opened.

    """

    connect_s: float | None = None
    tls_s: float | None = None
    request_s: float | None = None
    time_to_headers_s: float | None = None
    body_s: float | None = None
    connection_reused: bool | None = None


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """The provider's view of the remaining quota, from its response headers.

    Attributes:
        remaining_requests: Requests left in the current window.
        remaining_tokens: Tokens left in the current window.
        limit_requests: Request limit of the window.
        limit_tokens: Token limit of the window.

    """

    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    limit_requests: int | None = None
    limit_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One logical API call, however it ended.

    Token counts follow the OpenTelemetry rule: ``input_tokens`` counts all
    input tokens, cached ones included; ``cached_input_tokens`` and
    ``cache_write_tokens`` are subsets of it, ``reasoning_tokens`` a subset of
    ``output_tokens``. See ``docs/events.md`` for every field.
    """

    call_id: str
    correlation_id: str
    interaction_id: str | None
    provider: str
    operation: str
    model: str | None
    response_model: str | None
    tenant: str | None
    route: str | None
    feature: str | None
    tags: dict[str, str]
    priority: str
    streamed: bool
    outcome: Outcome
    stream_interrupted: bool
    http_status: int | None
    error_type: str | None
    attempts: int
    retries: int
    backoff_s: tuple[float, ...]
    request_id: str | None
    latency_s: float
    provider_latency_s: float | None
    ttft_s: float | None
    input_tokens: int | None
    output_tokens: int | None
    cached_input_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    tokens_estimated: bool
    cost_usd: float | None
    finish_reason: str | None
    max_tokens: int | None
    prompt_tokens_estimate: int | None
    response_bytes: int
    api_key_id: str | None
    network: NetworkTimings | None
    ratelimit: RateLimitInfo | None
    started_at: datetime
    server_address: str = ""
    server_port: int | None = None
    error_message: str | None = None
    path: str = ""
    input_content: str | None = None
    output_content: str | None = None
    retry_stop_reason: str | None = None
    rejected_reason: str | None = None
    served_model: str | None = None
    served_provider: str | None = None
    fallback_reason: str | None = None
    cache_hit: bool = False
    cost_saved_usd: float | None = None
    queue_wait_s: float = 0.0
    budget_action: str | None = None
    sampled: bool = True
    content_encoding: str | None = None
    body_unread_reason: str | None = None
    body_malformed: bool = False
    stream_usage_refused: bool = False
    trace_id: str | None = None
    span_id: str | None = None
    deadline_phase: str | None = None
    deadline_learned_s: float | None = None
    deadline_exceeded: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return the event as plain JSON-serialisable values."""
        return _to_dict(self)


@dataclass(frozen=True, slots=True)
class AttemptEvent:
    """One HTTP attempt of a logical call (a retried call has several).

    Attributes:
        call_id: The `CallEvent.call_id` this attempt belongs to.
        correlation_id: As on the call.
        attempt: 1 for the first attempt.
        provider: As on the call.
        operation: As on the call.
        model: As on the call.
        http_status: Response status, None when no response arrived.
        error_type: Exception class name of a transport failure, else None.
        request_id: The provider's request id of this attempt.
        latency_s: From sending to response headers (or failure).
        retry_after_s: The delay the provider asked for, if any.
        will_retry: Whether llmpulse retries after this attempt.
        backoff_s: The sleep before the next attempt (0 when none follows).
        network: Network phases of this attempt.

    """

    call_id: str
    correlation_id: str
    attempt: int
    provider: str
    operation: str
    model: str | None
    http_status: int | None
    error_type: str | None
    request_id: str | None
    latency_s: float
    retry_after_s: float | None
    will_retry: bool
    backoff_s: float
    network: NetworkTimings | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the event as plain JSON-serialisable values."""
        return _to_dict(self)


@dataclass(frozen=True, slots=True)
class InteractionSummary:
    """Totals of one `llmpulse.interaction()` block, emitted when it exits.

    Attributes:
        interaction_id: Shared by every call of the interaction.
        name: The name given to `llmpulse.interaction()`.
        correlation_id: Correlation id of the block.
        tenant: Tenant of the block's context.
        route: Route of the block's context.
        feature: Feature of the block's context.
        calls: Logical calls made inside the block.
        errors: Those that did not end "ok".
        input_tokens: Sum over the calls (known values only).
        output_tokens: Sum over the calls (known values only).
        cost_usd: Sum of known costs; None if no call had a known price.
        unpriced_calls: Calls whose cost is unknown (not counted in ``cost_usd``).
        latency_s: Wall time of the block.
        outcome: "ok", or "error" when the block raised.

    """

    interaction_id: str
    name: str
    correlation_id: str
    tenant: str | None
    route: str | None
    feature: str | None
    calls: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    unpriced_calls: int
    latency_s: float
    outcome: str
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the event as plain JSON-serialisable values."""
        return _to_dict(self)


Event = CallEvent | AttemptEvent | InteractionSummary
"""Anything a sink may receive."""


def _plain_nested(value: Any) -> Any:
    return None if value is None else dict(zip(_names(type(value)), _getter(type(value))(value), strict=True))


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _as_list(value: tuple[Any, ...]) -> list[Any]:
    return list(value)


def _copy_dict(value: dict[str, Any]) -> dict[str, Any]:
    return dict(value)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
_GETTERS: dict[type, Any] = {}
_CONVERTERS: dict[type, tuple[tuple[str, Any], ...]] = {}


def _names(cls: type) -> tuple[str, ...]:
    # dataclasses.fields() builds a tuple per call: cache it, this runs per event.
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _getter(cls: type) -> Any:
    getter = _GETTERS.get(cls)
    if getter is None:
        names = _names(cls)
        # attrgetter of one name returns the value, not a 1-tuple; events have many fields.
        getter = _GETTERS[cls] = operator.attrgetter(*names)
    return getter


def _converters(cls: type) -> tuple[tuple[str, Any], ...]:
    # The fields that are not plain JSON values already, and how to make them
    # so, from the annotations; every other field is copied as it is.
    converters = _CONVERTERS.get(cls)
    if converters is None:
        found: list[tuple[str, Any]] = []
        for name, hint in typing.get_type_hints(cls).items():
            args = set(typing.get_args(hint)) | {typing.get_origin(hint) or hint}
            if datetime in args:
                found.append((name, _iso))
            elif args & {NetworkTimings, RateLimitInfo}:
                found.append((name, _plain_nested))
            elif tuple in args:
                found.append((name, _as_list))
            elif dict in args:
                found.append((name, _copy_dict))
        converters = _CONVERTERS[cls] = tuple(found)
    return converters


def _to_dict(event: Any) -> dict[str, Any]:
    cls = type(event)
    out = dict(zip(_names(cls), _getter(cls)(event), strict=True))
    for name, convert in _converters(cls):
        out[name] = convert(out[name])
    return out
