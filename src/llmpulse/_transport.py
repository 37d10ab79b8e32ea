"""③ The attempt's I/O: the transports a wrapped client's sends go through.

The only code in llmpulse that sends, sleeps or reads bytes. The sync and
async shells differ only by ``await``; every decision is the `Call`'s.
Classes are built once per HTTP module (``httpx2`` for the current SDKs,
``httpx`` for the previous majors), since each stack checks that its
transports and byte streams subclass its own base classes.
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._exit import STATE, ExitState
from ._loop import LOGICAL_EXTENSION, Logical, current, request_body
from .policies._elsewhere import ServeElsewhere

if TYPE_CHECKING:
    from ._body import BodyWatcher
    from ._call import Call
    from ._hook import Hook

__all__ = ["instrument_http", "report_open_bodies", "transport_classes"]


class _Body:
    """What both stacks' sync and async bodies share: telling the call, once, how the body ended."""

    _exit: ExitState = STATE  # read through self: __del__ may run after teardown cleared the globals
    _call: Call
    _hook: Hook
    _reported: bool

    def _watch(self, call: Call, hook: Hook) -> None:
        self._call, self._hook, self._reported = call, hook, False
        _OPEN.add(self)

    def _report(self, how: str, *args: Any) -> None:
        # ``how`` names the `Call` method ("body_ended", ...): a name, not the
        # method, since a global such as `Call` may be None by the time __del__ runs.
        if self._reported:
            return
        self._reported = True
        if not self._exit.exited:
            getattr(self._call, how)(*args)
            return
        # After llmpulse's exit hook, maybe during interpreter teardown: building an
        # event may import or start a thread, and neither works any more. Count it.
        try:  # noqa: SIM105 - not contextlib.suppress: a global, maybe None by now
            self._hook.pipeline.call_lost(self._hook.routes, self._hook.metrics)
        except Exception:  # noqa: BLE001 - the interpreter is being torn down: best effort
            pass


_OPEN: weakref.WeakSet[_Body] = weakref.WeakSet()  # every body handed to an SDK and still referenced
# A forked child's copies of the parent's bodies are the parent's to report.
os.register_at_fork(after_in_child=_OPEN.clear)


def report_open_bodies() -> None:
    """Report each body the app left open as collected (llmpulse's exit hook; see `llmpulse._exit`).

    Their calls end with outcome "abandoned" once `llmpulse._call.finish_collected` runs.
    """
    for _ in range(10):
        try:
            bodies = list(_OPEN)
        except RuntimeError:  # a daemon thread handed over a body meanwhile: look again
            continue
        for body in bodies:
            body._report("body_collected")
        return


@functools.cache
def transport_classes(http: ModuleType) -> tuple[type[Any], type[Any]]:
    """Return (sync transport, async transport) classes for one HTTP module."""

    class ObservedStream(_Body, http.SyncByteStream):  # type: ignore[name-defined,misc]
        """The response body on its way to the SDK, watched chunk by chunk."""

        def __init__(self, inner: Any, call: Call, hook: Hook, watcher: BodyWatcher) -> None:
            self._inner = inner
            self._watcher = watcher
            self._watch(call, hook)

        def __iter__(self) -> Iterator[bytes]:
            feed = self._watcher.feed
            try:
                for chunk in self._inner:
                    out = feed(chunk)
                    if out:
                        yield out
            except GeneratorExit:
                raise  # the consumer stopped iterating: close() or __del__ reports it
            except BaseException as exc:
                self._report("body_failed", exc)
                raise
            rest = self._watcher.drain()
            if rest:
                yield rest
            self._report("body_ended")

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                self._report("body_closed")

        def __del__(self) -> None:
            # A stream the caller dropped without closing (sync openai
            # streams sit in a reference cycle until the GC runs).
            self._report("body_collected")

    class AsyncObservedStream(_Body, http.AsyncByteStream):  # type: ignore[name-defined,misc]
        """Async twin of ObservedStream."""

        def __init__(self, inner: Any, call: Call, hook: Hook, watcher: BodyWatcher) -> None:
            self._inner = inner
            self._watcher = watcher
            self._watch(call, hook)

        async def __aiter__(self) -> AsyncIterator[bytes]:
            feed = self._watcher.feed
            try:
                async for chunk in self._inner:
                    out = feed(chunk)
                    if out:
                        yield out
            except GeneratorExit:
                raise  # the consumer stopped iterating: aclose() or __del__ reports it
            except BaseException as exc:
                self._report("body_failed", exc)
                raise
            rest = self._watcher.drain()
            if rest:
                yield rest
            self._report("body_ended")

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                self._report("body_closed")

        def __del__(self) -> None:
            self._report("body_collected")

    class Transport(http.BaseTransport):  # type: ignore[name-defined,misc]
        """Runs each request as one logical call of one or more attempts."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def handle_request(self, request: Any) -> Any:
            logical = _take_logical(request)
            if logical is None:
                # Not an attempt of a call the wrapped client's request entry runs
                # (the SDK's own credential exchange): no event, no policies.
                return self.inner.handle_request(request)
            base_extensions = request.extensions
            first = logical.call is None
            call = _call_of(logical, request)
            if call is None:
                return self.inner.handle_request(request)
            try:
                if first:
                    cached = call.cached_answer(request)
                    if cached is not None:
                        call.serve_cached(cached)
                        return _response(http, request, (cached.status, cached.headers, cached.body))
                    call.admit(request)
                call.acquire_slot(request)
                request.extensions = call.begin_attempt(request, base_extensions, is_async=False)
                return self._attempt(call, logical, request)
            except ServeElsewhere as offer:
                # The provider cannot serve it; the user's function may (else the original failure).
                return _response(http, request, call.serve_elsewhere(offer))
            except BaseException as exc:
                if logical.delay is None:
                    call.abort(exc)
                raise

        def _attempt(self, call: Call, logical: Logical, request: Any) -> Any:
            try:
                response = self._send(call, request)
            except Exception as exc:
                delay = call.attempt_failed(exc)
                if delay is not None:
                    logical.retry_in(delay, call, request)
                raise
            status = response.status_code
            body = response.read() if call.wants_error_body(status) else None
            delay = _decide(call, logical, request, response, body)
            if delay is None:
                return _hand_over(http, call, logical.hook, response, ObservedStream)
            # The SDK (its retries off for this attempt) raises its error for it; the loop above goes again.
            logical.retry_in(delay, call, request)
            return response

        def _send(self, call: Call, request: Any) -> Any:
            response = self.inner.handle_request(request)
            if _read_whole(call, response):
                # The SDK reads this body whole inside its send, where failing to is one
                # of its attempts (and retried): so is it here.
                raw = response.stream
                try:
                    response.stream = http.ByteStream(b"".join(raw))
                finally:
                    raw.close()
            return response

    class AsyncTransport(http.AsyncBaseTransport):  # type: ignore[name-defined,misc]
        """Async twin of Transport."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def handle_async_request(self, request: Any) -> Any:
            logical = _take_logical(request)
            if logical is None:
                return await self.inner.handle_async_request(request)
            base_extensions = request.extensions
            first = logical.call is None
            call = _call_of(logical, request)
            if call is None:
                return await self.inner.handle_async_request(request)
            try:
                if first:
                    cached = await call.acached_answer(request)
                    if cached is not None:
                        call.serve_cached(cached)
                        return _response(http, request, (cached.status, cached.headers, cached.body))
                    await call.aadmit(request)
                await call.aacquire_slot(request)
                request.extensions = call.begin_attempt(request, base_extensions, is_async=True)
                return await self._attempt(call, logical, request)
            except ServeElsewhere as offer:
                return _response(http, request, await call.aserve_elsewhere(offer))
            except BaseException as exc:
                if logical.delay is None:
                    call.abort(exc)
                raise

        async def _attempt(self, call: Call, logical: Logical, request: Any) -> Any:
            try:
                response = await self._send(call, request)
            except Exception as exc:
                delay = call.attempt_failed(exc)
                if delay is not None:
                    logical.retry_in(delay, call, request)
                raise
            status = response.status_code
            body = await response.aread() if call.wants_error_body(status) else None
            delay = _decide(call, logical, request, response, body)
            if delay is None:
                return _hand_over(http, call, logical.hook, response, AsyncObservedStream)
            logical.retry_in(delay, call, request)
            return response

        async def _send(self, call: Call, request: Any) -> Any:
            response = await self.inner.handle_async_request(request)
            if _read_whole(call, response):
                raw = response.stream
                try:
                    response.stream = http.ByteStream(b"".join([chunk async for chunk in raw]))
                finally:
                    await raw.aclose()
            return response

    return Transport, AsyncTransport


_INSTRUMENTED: set[ModuleType] = set()
_INSTRUMENT_LOCK = threading.Lock()


def instrument_http(http: ModuleType) -> None:
    """Route the attempts of wrapped clients through llmpulse's transports, for one HTTP module (once).

    httpx picks a request's transport (the client's own or a mounted one) in
    ``_transport_for_url``; during a wrapped client's call that pick comes back
    wrapped, for that send only. The http client keeps its own transports (the
    caller's objects, untouched); any other send, and every send outside a
    wrapped call, gets the transport httpx picked.
    """
    if http in _INSTRUMENTED:  # every copy() of a wrapped client asks: no lock once done
        return
    with _INSTRUMENT_LOCK:
        if http in _INSTRUMENTED:
            return
        sync_cls, async_cls = transport_classes(http)
        for client_cls, wrapper in ((http.Client, sync_cls), (http.AsyncClient, async_cls)):
            client_cls._transport_for_url = _lookup(client_cls._transport_for_url, wrapper)
        _INSTRUMENTED.add(http)


def _lookup(pick: Any, wrapper: type[Any]) -> Any:
    @functools.wraps(pick)
    def _transport_for_url(client: Any, url: Any) -> Any:
        transport = pick(client, url)
        return transport if current() is None else wrapper(transport)

    return _transport_for_url


def _hand_over(http: ModuleType, call: Call, hook: Hook, response: Any, stream_cls: type[Any]) -> Any:
    """The response goes to the SDK: watch its body on the way."""
    if _already_read(response):
        _replace_content(http, response, call)
    else:
        watcher = call.observe_body(response.headers)
        response.stream = stream_cls(response.stream, call, hook, watcher)
    return response


def _read_whole(call: Call, response: Any) -> bool:
    # Not an event stream: the SDK streams those (a GET of one has no "stream" in its body).
    return (
        call.reads_whole
        and not _already_read(response)
        and not response.headers.get("content-type", "").startswith("text/event-stream")
    )


def _already_read(response: Any) -> bool:
    # Transports such as MockTransport hand back bodies that httpx read eagerly.
    return hasattr(response, "_content")


def _response(http: ModuleType, request: Any, answer: tuple[int, Any, bytes]) -> Any:
    # An answer made without an attempt (cache, another provider): the SDK
    # parses it as it would the provider's own.
    status, headers, body = answer
    return http.Response(status, headers=list(headers), content=body, request=request)


def _replace_content(http: ModuleType, response: Any, call: Call) -> None:
    call.observe_body(None, decoded=True)  # httpx decoded it while reading
    kept = call.consume(response.content)
    if kept is not response.content:
        response._content = kept
        response.stream = http.ByteStream(kept)


def _call_of(logical: Logical, request: Any) -> Call | None:
    """The logical call ``request`` is an attempt of, started on its first attempt."""
    call = logical.call
    if call is None:
        logical.first_body = request_body(request)
        call = logical.call = logical.hook.start_call(
            request, logical.max_retries, logical.sdk_backoff, sdk_streams=logical.sdk_streams
        )
    else:
        logical.reapply(logical.hook, request)
    return call


def _decide(call: Call, logical: Logical, request: Any, response: Any, body: bytes | None) -> float | None:
    status = response.status_code
    delay = call.attempt_answered(status, response.headers, body)
    if delay is None and status == 401 and logical.sdk_retries_401(call, request, response):
        delay = call.retry_for_credentials()
    return delay


def _take_logical(request: Any) -> Logical | None:
    # The marker is llmpulse's, not the wire's: the transports below never see it.
    # Each attempt's request is the SDK's own, built for it: take the marker off in place.
    logical: Logical | None = request.extensions.pop(LOGICAL_EXTENSION, None)
    if logical is not None:
        logical.sent_built += 1
    return logical
