"""Exceptions raised by llmpulse itself.

Errors from the provider are never wrapped: the SDK's own exception classes
reach the caller unchanged. llmpulse raises for misuse it can name, and
when one of its policies refuses or ends a call::

    LLMPulseError
    ├── ConfigError             a bad LLMPULSE_* value or configure() argument
    ├── UnsupportedClientError  wrap() of something it cannot wrap (also a TypeError)
    └── PolicyError             a policy refused or ended a call
        ├── CircuitOpenError        the endpoint's breaker is open (no fallback)
        ├── RateLimitedError        a rate limit or emergency throttle, wait exceeded
        ├── BudgetExceededError     a budget with action "block"
        ├── DeadlineExceededError   the call's total deadline is spent
        ├── OverloadedError         the pending queue is full
        └── MalformedResponseError  no longer raised (see its docstring)

A `PolicyError` raised through a wrapped client is also an instance of that
SDK's ``APIConnectionError``: ``except openai.APIError`` handlers keep
working, and neither SDK wraps it again (both re-raise their own errors as
they are). Catch ``llmpulse.CircuitOpenError`` and friends to tell them apart.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

__all__ = [
    "BudgetExceededError",
    "CircuitOpenError",
    "ConfigError",
    "DeadlineExceededError",
    "LLMPulseError",
    "MalformedResponseError",
    "OverloadedError",
    "PolicyError",
    "RateLimitedError",
    "UnsupportedClientError",
]


class LLMPulseError(Exception):
    """Root of every exception llmpulse raises itself."""


class ConfigError(LLMPulseError, ValueError):
    """A configuration value is invalid; the message names it and what is accepted."""


class UnsupportedClientError(LLMPulseError, TypeError):
    """`llmpulse.wrap()` was given an object it cannot instrument."""


class PolicyError(LLMPulseError):
    """A policy refused a call before sending it, or ended it.

    Attributes:
        message: What happened, for humans.
        provider: The client's provider ("openai", "azure", "anthropic").
        model: The model the call asked for.
        retry_after_s: When trying again may succeed (seconds), if known.

    """

    reason = "policy"
    """A short, stable name of the cause (the event's ``rejected_reason``)."""

    message: str
    provider: str | None
    model: str | None
    retry_after_s: float | None

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        Exception.__init__(self, message)
        self._set(message, provider, model, retry_after_s)

    def _set(
        self, message: str, provider: str | None, model: str | None, retry_after_s: float | None
    ) -> None:
        self.message = message
        self.provider = provider
        self.model = model
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return self.message


class CircuitOpenError(PolicyError):
    """The endpoint's circuit breaker is open and no fallback was configured."""

    reason = "circuit_open"


class RateLimitedError(PolicyError):
    """A per-tenant rate limit or an emergency throttle refused the call after the allowed wait."""

    reason = "rate_limited"


class BudgetExceededError(PolicyError):
    """A USD or token budget with action "block" is spent."""

    reason = "budget_exceeded"


class DeadlineExceededError(PolicyError):
    """The call's total deadline (attempts, backoff and queueing) is spent."""

    reason = "deadline_exceeded"


class OverloadedError(PolicyError):
    """The pending queue in front of the provider is full: the call was shed at once."""

    reason = "overloaded"


class MalformedResponseError(PolicyError):
    """Kept importable for code that catches it; llmpulse no longer raises it.

    A 2xx body that is not the JSON it says it is now reaches the SDK
    unchanged, and the caller gets the SDK's own exception, as without
    llmpulse (``json.JSONDecodeError``, a ``ValueError``, in both SDKs). The
    call's event records it: ``body_malformed=True``, ``error_type="JSONDecodeError"``.

    .. versionchanged:: Unreleased
       No longer raised.
    """

    reason = "malformed_response"


E = TypeVar("E", bound=PolicyError)

_combined: dict[tuple[type[PolicyError], type[BaseException]], type[Any]] = {}
_combined_lock = threading.Lock()


def sdk_error(
    cls: type[E],
    sdk_base: type[BaseException],
    request: Any,
    message: str,
    *,
    provider: str | None = None,
    model: str | None = None,
    retry_after_s: float | None = None,
) -> E:
    """Build ``cls`` as it is raised through a client: also an instance of ``sdk_base``.

    Args:
        cls: The llmpulse exception class.
        sdk_base: The SDK's ``APIConnectionError`` (its ``__init__`` takes
            ``message`` and ``request`` keywords).
        request: The HTTP request of the call.
        message: What happened.
        provider: The client's provider.
        model: The requested model.
        retry_after_s: When trying again may succeed.

    """
    key = (cls, sdk_base)
    combined = _combined.get(key)
    if combined is None:
        with _combined_lock:
            combined = _combined.get(key)
            if combined is None:
                # Named and placed like llmpulse's class, so tracebacks read naturally.
                namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
                combined = _combined[key] = type(cls.__name__, (cls, sdk_base), namespace)
    exc: E = Exception.__new__(combined)
    sdk_base.__init__(exc, message=message, request=request)  # type: ignore[call-arg]
    exc._set(message, provider, model, retry_after_s)
    return exc
