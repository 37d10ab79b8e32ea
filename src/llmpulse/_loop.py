"""llmpulse's attempt loop, above the SDK's request preparation (docs/retry-loop.md).

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
import functools
import importlib
import threading
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._registry import hook_of

if TYPE_CHECKING:
    from ._call import Call
    from ._hook import Hook

__all__ = ["LOGICAL_EXTENSION", "Logical", "current", "instrument_sdk", "request_body"]

LOGICAL_EXTENSION = "llmpulse.logical"
"""The request extension marking an attempt of a logical call (set where the SDK builds the request)."""


class Logical:
    """One logical call as the request entry runs it: what the transport and the loop share."""

    __slots__ = (
        "attempt",
        "built",
        "call",
        "client",
        "delay",
        "first",
        "first_body",
        "hook",
        "max_retries",
        "override",
        "replay",
        "sdk_streams",
        "sent_built",
        "should_retry",
    )

    def __init__(
        self,
        client: Any,
        hook: Hook,
        first: Any,
        max_retries: int,
        should_retry: Callable[[Any], bool] | None = None,
        *,
        sdk_streams: bool = False,
    ) -> None:
        self.client = client  # the wrapped SDK client whose request entry runs this call
        self.hook = hook
        self.first = first  # the call's options, as each attempt copies them
        self.max_retries = max_retries
        self.sdk_streams = sdk_streams  # the SDK was asked for a stream: it will not read the body whole
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

    def sdk_backoff(self, retries_taken: int, headers: Any) -> float:
        """The client's own delay before the next retry: its backoff, its random, its Retry-After rules."""
        remaining = self.max_retries - retries_taken
        return float(self.client._calculate_retry_timeout(remaining, self.first, headers))

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


def current() -> Logical | None:
    """The logical call this context is running an attempt of, if any."""
    return _LOGICAL.get()


_INSTRUMENTED: set[str] = set()
_INSTRUMENT_LOCK = threading.Lock()


def instrument_sdk(package: str) -> None:
    """Put llmpulse's loop at the request entry of the base clients of ``package`` (openai, anthropic), once.

    On the classes, not the instances: a wrapped client keeps the SDK's attributes only. Each entry
    point looks its client up in the registry; an unwrapped client passes straight through.
    """
    if package in _INSTRUMENTED:  # every copy() of a wrapped client asks: no lock once done
        return
    with _INSTRUMENT_LOCK:
        if package in _INSTRUMENTED:
            return
        base = importlib.import_module(f"{package}._base_client")
        compat = importlib.import_module(f"{package}._compat")
        _Entries(package, base, compat.model_copy).install()
        _INSTRUMENTED.add(package)


class _Entries:
    """The SDK entry points llmpulse takes over, for one SDK package."""

    def __init__(self, package: str, base: ModuleType, model_copy: Callable[[Any], Any]) -> None:
        self.package = package
        self.base = base
        self.model_copy = model_copy
        self.replay_cls = getattr(base, "_RequestBodyReplay", None)  # openai only: anthropic retries any body
        self.log = base.log
        # anthropic 2.x runs its loop in `_request`, under the OpenTelemetry span `request` opens;
        # earlier releases (and openai) run it in `request` itself.
        has_inner = package == "anthropic" and hasattr(base.SyncAPIClient, "_request")
        self.entry_name = "_request" if has_inner else "request"

    def install(self) -> None:
        base = self.base
        build = base.BaseClient._build_request
        _patch(base.BaseClient, "_build_request", self._build_request(build))
        for cls, is_async in ((base.SyncAPIClient, False), (base.AsyncAPIClient, True)):
            entry = getattr(cls, self.entry_name)
            process = cls._process_response
            if is_async:
                _patch(cls, self.entry_name, self._arequest(entry))
                _patch(cls, "_process_response", self._aprocess(process))
            else:
                _patch(cls, self.entry_name, self._request(entry))
                _patch(cls, "_process_response", self._process(process))
            if self.package == "anthropic" and hasattr(cls, "_build_middleware_chain"):
                _patch(cls, "_build_middleware_chain", _numbered_chain(cls._build_middleware_chain))

    def start(self, client: Any, hook: Hook, options: Any, kwargs: dict[str, Any]) -> Logical:
        max_retries = options.get_max_retries(client.max_retries)
        validate = getattr(client, "_validate_max_retries", None)
        if validate is not None:
            validate(max_retries)
        first = self.model_copy(options)
        if first.idempotency_key is None and first.method.lower() != "get":
            first.idempotency_key = client._idempotency_key()  # one key for every attempt, as bare
        base = self.base.BaseClient
        own_rule = client._should_retry if type(client)._should_retry is not base._should_retry else None
        return Logical(client, hook, first, max_retries, own_rule, sdk_streams=bool(kwargs.get("stream")))

    def one_attempt(self, logical: Logical) -> Any:
        options = self.model_copy(logical.first)
        options.max_retries = 0  # the SDK makes this one attempt; llmpulse decides on the next
        logical.delay = None
        logical.built = logical.sent_built = 0
        return options

    def again(self, logical: Logical, exc: Exception) -> float | None:
        options = logical.first
        delay, call = logical.delay, logical.call
        own_exception_rule = getattr(logical.client, "_should_retry_exception", None)  # anthropic's
        if logical.built == logical.sent_built == 0 and own_exception_rule is not None:
            # Nothing was sent in this pass (anthropic middleware raised RetryableError itself): not
            # the provider's failure, so the SDK's own rule and backoff decide, as bare.
            return self.unsent_retry(logical, own_exception_rule, exc)
        if delay is None or call is None:
            return None
        if logical.replay is not None and not logical.replay.rewind():
            call.abort(exc)  # the body cannot be sent again: the SDK would not retry either
            return None
        left = logical.max_retries - (logical.attempt - 1)
        if left == 1:
            self.log.debug("1 retry left")
        else:
            self.log.debug("%i retries left", left)
        if self.package == "anthropic":
            self.log.info("Retrying request to %s in %f seconds", options.url, delay)
        else:
            self.log.info(
                "Retrying request in %f seconds (retry %i of %s)", delay, logical.attempt, logical.max_retries
            )
        return delay

    def unsent_retry(self, logical: Logical, rule: Any, exc: Exception) -> float | None:
        left = logical.max_retries - logical.attempt
        if left <= 0 or not rule(exc)[0]:
            return None
        delay = logical.sdk_backoff(logical.attempt, None)
        logical.attempt += 1
        self.log.info("Retrying request to %s in %f seconds", logical.first.url, delay)
        return delay

    def _build_request(self, build: Callable[..., Any]) -> Callable[..., Any]:
        replay_cls = self.replay_cls

        def _build_request(client: Any, options: Any, *, retries_taken: int = 0) -> Any:
            logical = _LOGICAL.get()
            if logical is None or logical.client is not client:
                return build(client, options, retries_taken=retries_taken)
            logical.built += 1
            if replay_cls is not None:
                # As the SDK does: of the options as prepared for this attempt, before building reads them.
                logical.replay = replay_cls(options)
            request = build(client, options, retries_taken=logical.attempt)
            request.extensions[LOGICAL_EXTENSION] = logical
            return request

        return _build_request

    def _request(self, entry: Callable[..., Any]) -> Callable[..., Any]:
        def request(client: Any, cast_to: Any, options: Any, **kwargs: Any) -> Any:
            hook = hook_of(client)
            if hook is None:
                return entry(client, cast_to, options, **kwargs)
            logical = self.start(client, hook, options, kwargs)
            token = _LOGICAL.set(logical)
            try:
                while True:
                    attempt_options = self.one_attempt(logical)
                    try:
                        return entry(client, cast_to, attempt_options, **kwargs)
                    except Exception as exc:
                        delay = self.again(logical, exc)
                        if delay is None:
                            raise
                    _sleep(hook.policies.clock, delay, logical)
            finally:
                _LOGICAL.reset(token)

        return request

    def _arequest(self, entry: Callable[..., Any]) -> Callable[..., Any]:
        async def request(client: Any, cast_to: Any, options: Any, **kwargs: Any) -> Any:
            hook = hook_of(client)
            if hook is None:
                return await entry(client, cast_to, options, **kwargs)
            logical = self.start(client, hook, options, kwargs)
            token = _LOGICAL.set(logical)
            try:
                while True:
                    attempt_options = self.one_attempt(logical)
                    try:
                        return await entry(client, cast_to, attempt_options, **kwargs)
                    except Exception as exc:
                        delay = self.again(logical, exc)
                        if delay is None:
                            raise
                    await _asleep(hook.policies.clock, delay, logical)
            finally:
                _LOGICAL.reset(token)

        return request

    def _process(self, process: Callable[..., Any]) -> Callable[..., Any]:
        def _process_response(client: Any, *args: Any, **kwargs: Any) -> Any:
            _retries_of(client, kwargs)
            return process(client, *args, **kwargs)

        return _process_response

    def _aprocess(self, process: Callable[..., Any]) -> Callable[..., Any]:
        async def _process_response(client: Any, *args: Any, **kwargs: Any) -> Any:
            _retries_of(client, kwargs)
            return await process(client, *args, **kwargs)

        return _process_response


def _patch(cls: type, name: str, function: Callable[..., Any]) -> None:
    # The SDK's name, signature and docstring stay what introspection (and the SDKs' own tests) see.
    original = getattr(cls, name)
    functools.update_wrapper(function, original)
    setattr(cls, name, function)


def _retries_of(client: Any, kwargs: dict[str, Any]) -> None:
    logical = _LOGICAL.get()
    if logical is not None and logical.client is client and "retries_taken" in kwargs:
        kwargs["retries_taken"] = logical.attempt


def _numbered_chain(build_chain: Callable[..., Any]) -> Callable[..., Any]:
    # The SDK's APIRequest carries its loop's count, 0 for each of llmpulse's passes: give it the attempt's.
    def _build_middleware_chain(client: Any, *args: Any, **kwargs: Any) -> Any:
        chain = build_chain(client, *args, **kwargs)
        if chain is None:
            return None

        def run(request: Any) -> Any:
            logical = _LOGICAL.get()
            if logical is not None and logical.client is client:
                request.retries_taken = logical.attempt
            return chain(request)

        return run

    return _build_middleware_chain


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
