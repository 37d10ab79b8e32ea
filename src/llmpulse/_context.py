"""① Who a call is for: tenant, route, feature, correlation id, carried in contextvars.

A `Context` is a frozen value. Entering it merges it over the active one
(inner values win, the correlation id is inherited) and makes the result
current for the block; asyncio tasks and `with_context`-wrapped callables
inherit it. Every call through a wrapped client snapshots the current context
once, when it starts.
"""

from __future__ import annotations

import base64
import contextvars
import functools
import inspect
import math
import random
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from urllib.parse import quote, unquote

if TYPE_CHECKING:
    from .events import CallEvent

__all__ = [
    "Context",
    "context",
    "context_from_headers",
    "current_context",
    "interaction",
    "with_context",
]

P = ParamSpec("P")
R = TypeVar("R")

_PRIORITIES = ("interactive", "background")
_BAGGAGE_PREFIX = "llmpulse."


_B64_TO_62 = bytes.maketrans(b"+/", b"Az")


def new_id() -> str:
    """Return a random 16-char base62 id (96 random bits, two symbols folded).

    `random` is reseeded by CPython after fork(), and these ids need to be
    unique, not unguessable, so the cheaper generator is the right one;
    base64 with ``+`` and ``/`` folded onto letters is ten times faster than
    a true base-62 conversion, at a negligible loss of entropy.
    """
    return base64.b64encode(random.getrandbits(96).to_bytes(12, "big")).translate(_B64_TO_62).decode()


@dataclass(frozen=True, slots=True)
class Context:
    """Who and what LLM calls are made for; a context manager and a decorator.

    Build one with `llmpulse.context(...)`. Entering it (``with`` or as a
    decorator) merges it over the active context and returns the effective,
    merged `Context`, whose ``correlation_id`` is always set.

    Attributes:
        tenant: The customer or account the calls are made for.
        route: A low-cardinality name of the entry point, e.g. "/chat/{id}".
        feature: The product feature, e.g. "summarize".
        tags: Free-form string labels, merged key by key.
        correlation_id: Shared by every call made for one user request.
        priority: "interactive" (default) or "background".
        cache: Whether responses may be served from the response cache.
        private: Whether prompt/completion capture is forbidden for these calls.
        interaction_id: Set inside `llmpulse.interaction()`.
        total_timeout_s: A deadline over each call made in the block (its
            attempts, backoff and waits), on top of the SDK's per-attempt timeout.

    """

    tenant: str | None = None
    route: str | None = None
    feature: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    correlation_id: str | None = None
    priority: str | None = None
    cache: bool | None = None
    private: bool | None = None
    interaction_id: str | None = None
    total_timeout_s: float | None = None

    def merged_over(self, outer: Context | None) -> Context:
        """Return this context laid over ``outer``: set values win, tags merge."""
        if outer is None:
            outer = _ROOT
        return Context(
            tenant=_pick(self.tenant, outer.tenant),
            route=_pick(self.route, outer.route),
            feature=_pick(self.feature, outer.feature),
            tags={**outer.tags, **self.tags} if self.tags else outer.tags,
            correlation_id=self.correlation_id or outer.correlation_id or new_id(),
            priority=_pick(self.priority, outer.priority) or "interactive",
            cache=_pick(self.cache, outer.cache) or False,
            private=_pick(self.private, outer.private) or False,
            interaction_id=_pick(self.interaction_id, outer.interaction_id),
            total_timeout_s=_pick(self.total_timeout_s, outer.total_timeout_s),
        )

    def to_headers(self) -> dict[str, str]:
        """Return a W3C ``baggage`` header carrying this context to another process.

        Keys are prefixed ``llmpulse.`` so the entries ride along with other
        OpenTelemetry baggage; `context_from_headers` reads them back.
        """
        values: dict[str, str] = {}
        for name in ("tenant", "route", "feature", "correlation_id", "priority", "interaction_id"):
            value = getattr(self, name)
            if value is not None:
                values[name] = value
        for flag in ("cache", "private"):
            if getattr(self, flag):
                values[flag] = "1"
        for key, value in self.tags.items():
            values[f"tag.{key}"] = value
        members = [f"{_BAGGAGE_PREFIX}{quote(k, safe='')}={quote(v, safe='')}" for k, v in values.items()]
        return {"baggage": ",".join(members)} if members else {}

    def __enter__(self) -> Context:
        effective = self.merged_over(_current.get())
        stack = _token_stack.get()
        _token_stack.set((*stack, _current.set(effective)))
        return effective

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _pop_context()

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` (sync or async) to run inside this context."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_inner(*args: P.args, **kwargs: P.kwargs) -> Any:
                with self:
                    return await fn(*args, **kwargs)

            return async_inner  # type: ignore[return-value]

        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            with self:
                return fn(*args, **kwargs)

        return inner


def _pop_context() -> None:
    stack = _token_stack.get()
    _token_stack.set(stack[:-1])
    _current.reset(stack[-1])


def _pick(inner: Any, outer: Any) -> Any:
    return outer if inner is None else inner


_ROOT = Context()
_current: ContextVar[Context | None] = ContextVar("llmpulse_context", default=None)
_token_stack: ContextVar[tuple[Token[Context | None], ...]] = ContextVar(
    "llmpulse_context_tokens", default=()
)


def context(
    tenant: str | None = None,
    route: str | None = None,
    feature: str | None = None,
    tags: Mapping[str, str] | None = None,
    correlation_id: str | None = None,
    priority: str | None = None,
    cache: bool | None = None,
    private: bool | None = None,
    total_timeout_s: float | None = None,
) -> Context:
    """Describe who the calls in a block are for.

    Use it as ``with llmpulse.context(tenant="acme", route="/chat"):`` or as a
    decorator (sync and async). Unset values are inherited from the enclosing
    context; the correlation id is inherited, or made fresh at the outermost
    level.

    Args:
        tenant: The customer or account the calls are made for.
        route: A name the app chooses for its entry point (a template such as
            "/chat/{id}", never a raw URL: it becomes a metric label).
        feature: The product feature.
        tags: Extra string labels (logs and events only, never metric labels).
        correlation_id: Continue an existing correlation id.
        priority: "interactive" (the default) or "background".
        cache: Allow the response cache for these calls.
        private: Never capture prompt or completion text for these calls.
        total_timeout_s: Give each call in the block a deadline over all its
            attempts, backoff and waits (seconds). Each attempt is cut at the
            time left (the SDK raises its timeout error), no retry is made past
            it, and a call whose deadline passes before its next attempt ends
            with `llmpulse.DeadlineExceededError`. The SDK's timeout still applies
            to each attempt; without this (or ``LLMPULSE_TOTAL_TIMEOUT_S``) a
            call has no overall deadline, as with the bare SDK.

    Raises:
        ValueError: For an unknown priority, non-string tags or a timeout that is not positive.

    """
    if priority is not None and priority not in _PRIORITIES:
        raise ValueError(f"priority must be one of {_PRIORITIES}, got {priority!r}")
    if total_timeout_s is not None and not (
        isinstance(total_timeout_s, int | float) and 0 < total_timeout_s < math.inf
    ):
        raise ValueError(f"total_timeout_s must be a positive number of seconds, got {total_timeout_s!r}")
    clean_tags: dict[str, str] = {}
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"tags must map str to str, got {key!r}: {value!r}")
        clean_tags[key] = value
    return Context(
        tenant=tenant,
        route=route,
        feature=feature,
        tags=clean_tags,
        correlation_id=correlation_id,
        priority=priority,
        cache=cache,
        private=private,
        total_timeout_s=None if total_timeout_s is None else float(total_timeout_s),
    )


def current_context() -> Context:
    """Return the active context, with a fresh correlation id outside any block."""
    active = _current.get()
    return active if active is not None else _ROOT.merged_over(None)


def active_context() -> Context | None:
    """Return the active context, or None outside any block (no id is made)."""
    return _current.get()


def with_context(fn: Callable[P, R]) -> Callable[P, R]:
    """Bind ``fn`` to the caller's current context, e.g. to submit it to a thread pool.

    ``executor.submit(llmpulse.with_context(work), item)`` runs ``work`` with
    the tenant and correlation id of the code that submitted it.
    """
    snapshot = contextvars.copy_context()

    @functools.wraps(fn)
    def inner(*args: P.args, **kwargs: P.kwargs) -> R:
        # A copy per run: one bound callable may run in several threads at once.
        return snapshot.copy().run(fn, *args, **kwargs)

    return inner


def context_from_headers(headers: Mapping[str, str]) -> Context:
    """Rebuild the `Context` that `Context.to_headers` sent, e.g. in a background worker.

    Other baggage members and malformed entries are ignored, so any incoming
    request's headers can be passed as they are.
    """
    raw = next((v for k, v in headers.items() if k.lower() == "baggage"), "")
    values: dict[str, str] = {}
    tags: dict[str, str] = {}
    for member in raw.split(","):
        key, sep, value = member.strip().partition("=")
        if not sep or not key.startswith(_BAGGAGE_PREFIX):
            continue
        key = unquote(key[len(_BAGGAGE_PREFIX) :])
        value = unquote(value.split(";", 1)[0].strip())
        if key.startswith("tag."):
            tags[key[4:]] = value
        else:
            values[key] = value
    priority = values.get("priority")
    return Context(
        tenant=values.get("tenant"),
        route=values.get("route"),
        feature=values.get("feature"),
        tags=tags,
        correlation_id=values.get("correlation_id"),
        priority=priority if priority in _PRIORITIES else None,
        cache=True if values.get("cache") == "1" else None,
        private=True if values.get("private") == "1" else None,
        interaction_id=values.get("interaction_id"),
    )


class InteractionTotals:
    """Running totals of one interaction; calls report here when they finish.

    Calls may finish in other threads (a stream closed elsewhere), hence the lock.
    """

    __slots__ = (
        "_lock",
        "calls",
        "cost_usd",
        "errors",
        "input_tokens",
        "output_tokens",
        "priced_calls",
        "unpriced_calls",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = self.errors = self.input_tokens = self.output_tokens = 0
        self.priced_calls = self.unpriced_calls = 0
        self.cost_usd = 0.0

    def add(self, event: CallEvent) -> None:
        """Count one finished call."""
        with self._lock:
            self.calls += 1
            if event.outcome != "ok":
                self.errors += 1
            self.input_tokens += event.input_tokens or 0
            self.output_tokens += event.output_tokens or 0
            if event.cost_usd is None:
                if event.attempts:
                    self.unpriced_calls += 1
            else:
                self.priced_calls += 1
                self.cost_usd += event.cost_usd


_interaction: ContextVar[InteractionTotals | None] = ContextVar("llmpulse_interaction", default=None)


_interaction_frames: ContextVar[tuple[tuple[Context, float, Token[InteractionTotals | None]], ...]] = (
    ContextVar("llmpulse_interaction_frames", default=())
)


def current_interaction() -> InteractionTotals | None:
    """Return the totals of the innermost active interaction, if any."""
    return _interaction.get()


class interaction:
    """A context that also emits one `InteractionSummary` when it exits.

    ``with llmpulse.interaction("answer-question", tenant="acme") as ctx:``
    groups every call made inside (threads via `with_context`, tasks by
    inheritance) under one ``interaction_id`` and sums their calls, tokens
    and cost. Works as a decorator too (sync and async).
    """

    def __init__(self, name: str, **fields: Any) -> None:
        self.name = name
        self._context = context(**fields)

    def __enter__(self) -> Context:
        ctx = replace(self._context, interaction_id=new_id()).__enter__()
        totals = InteractionTotals()
        # Kept in a contextvar, not on self: one decorated function may run
        # as several interactions at once in different tasks.
        frame = (ctx, time.perf_counter(), _interaction.set(totals))
        _interaction_frames.set((*_interaction_frames.get(), frame))
        return ctx

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        frames = _interaction_frames.get()
        _interaction_frames.set(frames[:-1])
        ctx, started, token = frames[-1]
        totals = _interaction.get()
        _interaction.reset(token)
        _pop_context()
        if totals is not None:
            from ._pipeline import emit_interaction  # noqa: PLC0415 - avoids an import cycle

            emit_interaction(self.name, ctx, totals, time.perf_counter() - started, failed=exc is not None)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` (sync or async) to run as one interaction per call."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_inner(*args: P.args, **kwargs: P.kwargs) -> Any:
                with self:
                    return await fn(*args, **kwargs)

            return async_inner  # type: ignore[return-value]

        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            with self:
                return fn(*args, **kwargs)

        return inner


def current_trace_ids() -> tuple[str, str] | None:
    """The current OpenTelemetry (trace id, span id) in hex; None unless a sampled span is current."""
    # No import: an app that never imported opentelemetry.trace has no
    # current span, and importing it here would cost every app that does not use it.
    otel_trace = sys.modules.get("opentelemetry.trace")
    if otel_trace is None:
        return None
    span_context = otel_trace.get_current_span().get_span_context()
    # An unsampled trace is never exported: its id would link to nothing.
    if not span_context.is_valid or not span_context.trace_flags.sampled:
        return None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")
