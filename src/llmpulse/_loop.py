"""Design (b) prototype: llmpulse's attempt loop above the SDK's request preparation.

A wrapped client's request entry (openai ``request``, anthropic ``_request``,
below anthropic's OpenTelemetry span) runs llmpulse's loop: each attempt is
one pass of the SDK's own single-attempt path (its retries off for that pass
only), so option preparation, credentials, signing, middleware, body building
and the retry headers happen per attempt as they do bare. The transport sees
one send per attempt and tells this loop, through `Logical`, whether and when
to go again: the decisions stay the `Call`'s.
"""

from __future__ import annotations

import contextvars
import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._call import Call
    from ._hook import Hook

__all__ = ["LOGICAL_EXTENSION", "Logical", "install_loop", "request_body"]

LOGICAL_EXTENSION = "llmpulse.logical"
"""The request extension marking an attempt of a logical call (set where the SDK builds the request)."""


class Logical:
    """One logical call as the request entry runs it: what the transport and the loop share."""

    __slots__ = (
        "attempt",
        "built",
        "call",
        "delay",
        "first_body",
        "max_retries",
        "override",
        "replay",
        "sent_built",
        "should_retry",
    )

    def __init__(self, max_retries: int, should_retry: Callable[[Any], bool] | None = None) -> None:
        self.max_retries = max_retries
        # The client's own retry rule where its class adds one (anthropic's token refresh on a 401).
        self.should_retry = should_retry
        self.call: Call | None = None
        self.delay: float | None = None  # set by the transport: go again after this sleep
        self.attempt = 0  # the SDK's retries_taken for the next attempt
        self.first_body: bytes | None = None  # the body the SDK built, before llmpulse rewrote it
        self.override: bytes | None = None  # llmpulse's rewrite (usage request, fallback model)
        self.built = 0  # requests the SDK built in this pass
        self.sent_built = 0  # of them, the ones that reached the transport
        self.replay: Any = None  # the SDK's check that this attempt's prepared body can be sent again

    def retry_in(self, delay: float, call: Call, request: Any) -> None:
        """The transport decided on another attempt: remember how to make it."""
        self.delay = delay
        self.attempt = call.retries + (0 if call.resending else 1)
        # Only a body llmpulse could read before sending is one it may have rewritten.
        body = request_body(request) if self.first_body is not None else None
        self.override = body if body is not None and body != self.first_body else None

    def sdk_retries_401(self, call: Call, request: Any, response: Any) -> bool:
        """Whether the client's own rule retries this 401 (a refreshed credential), within max_retries."""
        if self.should_retry is None or call.retries >= self.max_retries:
            return False
        response.request = request  # what the SDK's rule reads; httpx sets it once the transport returns
        try:
            return bool(self.should_retry(response))
        except Exception:  # noqa: BLE001 - the SDK's rule failing: keep llmpulse's decision
            return False

    def reapply(self, hook: Hook, request: Any) -> None:
        """Give the SDK's fresh request of a later attempt the body llmpulse chose for the call."""
        if self.override is not None and request_body(request) == self.first_body:
            hook.set_body(request, self.override)


def request_body(request: Any) -> bytes | None:
    """The body of ``request`` as bytes, or None for a streamed upload."""
    try:
        body: bytes = request.content
    except Exception:  # noqa: BLE001 - a streamed upload has no readable content
        return None
    return body


_LOGICAL: contextvars.ContextVar[Logical | None] = contextvars.ContextVar("llmpulse_logical", default=None)


def install_loop(wrapped: Any, hook: Hook) -> None:  # noqa: PLR0915 - one closure per SDK entry point
    """Put llmpulse's loop at ``wrapped``'s request entry (instance attributes: the class stays the SDK's)."""
    package = type(wrapped).__module__.split(".")[0]
    base = importlib.import_module(f"{package}._base_client")
    compat = importlib.import_module(f"{package}._compat")
    model_copy = compat.model_copy
    replay_cls = getattr(base, "_RequestBodyReplay", None)  # openai only: anthropic retries any body
    sdk_log = base.log
    # anthropic 2.x runs its loop in `_request`, under the OpenTelemetry span `request` opens; earlier
    # releases (and openai) run it in `request` itself.
    entry_name = "_request" if package == "anthropic" and hasattr(type(wrapped), "_request") else "request"
    entry = getattr(type(wrapped), entry_name)
    build = type(wrapped)._build_request
    process = type(wrapped)._process_response
    clock = hook.policies.clock
    own_exception_rule: Any = getattr(wrapped, "_should_retry_exception", None)  # anthropic's
    own_rule = (
        wrapped._should_retry if type(wrapped)._should_retry is not base.BaseClient._should_retry else None
    )
    if package == "anthropic":
        _number_middleware_attempts(wrapped)

    def start(options: Any) -> tuple[Any, Logical]:
        max_retries = options.get_max_retries(wrapped.max_retries)
        validate = getattr(wrapped, "_validate_max_retries", None)
        if validate is not None:
            validate(max_retries)
        first = model_copy(options)
        if first.idempotency_key is None and first.method.lower() != "get":
            first.idempotency_key = wrapped._idempotency_key()  # one key for every attempt, as bare
        return first, Logical(max_retries, own_rule)

    def one_attempt(first: Any, logical: Logical) -> Any:
        options = model_copy(first)
        options.max_retries = 0  # the SDK makes this one attempt; llmpulse decides on the next
        logical.delay = None
        logical.built = logical.sent_built = 0
        return options

    def again(logical: Logical, exc: Exception, options: Any) -> float | None:
        delay, call = logical.delay, logical.call
        if logical.built == logical.sent_built == 0 and own_exception_rule is not None:
            # Nothing was sent in this pass (anthropic middleware raised RetryableError itself): not
            # the provider's failure, so the SDK's own rule and backoff decide, as bare.
            return unsent_retry(logical, exc, options)
        if delay is None or call is None:
            return None
        if logical.replay is not None and not logical.replay.rewind():
            call.abort(exc)  # the body cannot be sent again: the SDK would not retry either
            return None
        left = logical.max_retries - (logical.attempt - 1)
        if left == 1:
            sdk_log.debug("1 retry left")
        else:
            sdk_log.debug("%i retries left", left)
        if package == "anthropic":
            sdk_log.info("Retrying request to %s in %f seconds", options.url, delay)
        else:
            sdk_log.info(
                "Retrying request in %f seconds (retry %i of %s)", delay, logical.attempt, logical.max_retries
            )
        return delay

    def unsent_retry(logical: Logical, exc: Exception, options: Any) -> float | None:
        left = logical.max_retries - logical.attempt
        if left <= 0 or not own_exception_rule(exc)[0]:
            return None
        delay: float = wrapped._calculate_retry_timeout(left, options, None)
        logical.attempt += 1
        sdk_log.info("Retrying request to %s in %f seconds", options.url, delay)
        return delay

    def build_request(options: Any, *, retries_taken: int = 0) -> Any:
        logical = _LOGICAL.get()
        if logical is None:
            return build(wrapped, options, retries_taken=retries_taken)
        logical.built += 1
        if replay_cls is not None:
            # As the SDK does: of the options as prepared for this attempt, before building reads them.
            logical.replay = replay_cls(options)
        request = build(wrapped, options, retries_taken=logical.attempt)
        request.extensions[LOGICAL_EXTENSION] = logical
        return request

    def retries_of(kwargs: dict[str, Any]) -> None:
        logical = _LOGICAL.get()
        if logical is not None and "retries_taken" in kwargs:
            kwargs["retries_taken"] = logical.attempt

    if inspect.iscoroutinefunction(entry):

        async def arequest(cast_to: Any, options: Any, **kwargs: Any) -> Any:
            first, logical = start(options)
            token = _LOGICAL.set(logical)
            try:
                while True:
                    attempt_options = one_attempt(first, logical)
                    try:
                        return await entry(wrapped, cast_to, attempt_options, **kwargs)
                    except Exception as exc:
                        delay = again(logical, exc, first)
                        if delay is None:
                            raise
                    await _asleep(clock, delay, logical)
            finally:
                _LOGICAL.reset(token)

        async def aprocess(*args: Any, **kwargs: Any) -> Any:
            retries_of(kwargs)
            return await process(wrapped, *args, **kwargs)

        object.__setattr__(wrapped, entry_name, arequest)
        object.__setattr__(wrapped, "_process_response", aprocess)
    else:

        def srequest(cast_to: Any, options: Any, **kwargs: Any) -> Any:
            first, logical = start(options)
            token = _LOGICAL.set(logical)
            try:
                while True:
                    attempt_options = one_attempt(first, logical)
                    try:
                        return entry(wrapped, cast_to, attempt_options, **kwargs)
                    except Exception as exc:
                        delay = again(logical, exc, first)
                        if delay is None:
                            raise
                    _sleep(clock, delay, logical)
            finally:
                _LOGICAL.reset(token)

        def sprocess(*args: Any, **kwargs: Any) -> Any:
            retries_of(kwargs)
            return process(wrapped, *args, **kwargs)

        object.__setattr__(wrapped, entry_name, srequest)
        object.__setattr__(wrapped, "_process_response", sprocess)
    object.__setattr__(wrapped, "_build_request", build_request)


def _number_middleware_attempts(wrapped: Any) -> None:
    # The SDK's APIRequest carries its loop's count, 0 for each of llmpulse's passes: give it the attempt's.
    def numbered(chain: Any) -> Any:
        if chain is None:
            return None

        def run(request: Any) -> Any:
            logical = _LOGICAL.get()
            if logical is not None:
                request.retries_taken = logical.attempt
            return chain(request)

        return run

    if getattr(wrapped, "_middleware_chain", None) is not None:
        object.__setattr__(wrapped, "_middleware_chain", numbered(wrapped._middleware_chain))
    build_chain = type(wrapped)._build_middleware_chain

    def build_middleware_chain(call: Any = None) -> Any:
        return numbered(build_chain(wrapped, call))

    object.__setattr__(wrapped, "_build_middleware_chain", build_middleware_chain)


def _sleep(clock: Any, delay: float, logical: Logical) -> None:
    try:
        clock.sleep(delay)
    except BaseException as exc:
        if logical.call is not None:
            logical.call.abort(exc)
        raise


async def _asleep(clock: Any, delay: float, logical: Logical) -> None:
    try:
        await clock.asleep(delay)
    except BaseException as exc:
        if logical.call is not None:
            logical.call.abort(exc)
        raise
