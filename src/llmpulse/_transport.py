"""③ The attempt loop: wrapper transports that sit under the SDK's http client.

The only code in llmpulse that sends, sleeps or reads bytes. The sync and
async shells differ only by ``await``; every decision is the `Call`'s.
Classes are built once per HTTP module (``httpx2`` for the current SDKs,
``httpx`` for the previous majors), since each stack checks that its
transports and byte streams subclass its own base classes.
"""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._exit import STATE, ExitState
from .policies._elsewhere import ServeElsewhere

if TYPE_CHECKING:
    from ._body import BodyWatcher
    from ._call import Call
    from ._hook import Hook

__all__ = ["report_open_bodies", "transport_classes"]


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

        def __init__(self, inner: Any, hook: Hook) -> None:
            self.inner = inner
            self.hook = hook

        def handle_request(self, request: Any) -> Any:
            call = self.hook.start_call(request)
            if call is None:
                return self.inner.handle_request(request)
            base_extensions = request.extensions
            clock = self.hook.policies.clock
            try:
                cached = call.cached_answer(request)
                if cached is not None:
                    call.serve_cached(cached)
                    return _response(http, request, (cached.status, cached.headers, cached.body))
                call.admit(request)
                while True:
                    call.acquire_slot(request)
                    request.extensions = call.begin_attempt(request, base_extensions, is_async=False)
                    _mark_retry(request, call)
                    try:
                        response = self.inner.handle_request(request)
                    except Exception as exc:
                        delay = call.attempt_failed(exc)
                        if delay is None:
                            raise
                    else:
                        status = response.status_code
                        body = response.read() if call.wants_error_body(status) else None
                        delay = call.attempt_answered(status, response.headers, body)
                        if delay is None:
                            if _already_read(response):
                                _replace_content(http, response, call)
                            else:
                                watcher = call.observe_body(response.headers)
                                response.stream = ObservedStream(response.stream, call, self.hook, watcher)
                            return response
                        response.close()
                    clock.sleep(delay)
            except ServeElsewhere as offer:
                # The provider cannot serve it; the user's function may (else the original failure).
                return _response(http, request, call.serve_elsewhere(offer))
            except BaseException as exc:
                call.abort(exc)
                raise

        def close(self) -> None:
            self.inner.close()

    class AsyncTransport(http.AsyncBaseTransport):  # type: ignore[name-defined,misc]
        """Async twin of Transport."""

        def __init__(self, inner: Any, hook: Hook) -> None:
            self.inner = inner
            self.hook = hook

        async def handle_async_request(self, request: Any) -> Any:
            call = self.hook.start_call(request)
            if call is None:
                return await self.inner.handle_async_request(request)
            base_extensions = request.extensions
            clock = self.hook.policies.clock
            try:
                cached = await call.acached_answer(request)
                if cached is not None:
                    call.serve_cached(cached)
                    return _response(http, request, (cached.status, cached.headers, cached.body))
                await call.aadmit(request)
                while True:
                    await call.aacquire_slot(request)
                    request.extensions = call.begin_attempt(request, base_extensions, is_async=True)
                    _mark_retry(request, call)
                    try:
                        response = await self.inner.handle_async_request(request)
                    except Exception as exc:
                        delay = call.attempt_failed(exc)
                        if delay is None:
                            raise
                    else:
                        status = response.status_code
                        body = await response.aread() if call.wants_error_body(status) else None
                        delay = call.attempt_answered(status, response.headers, body)
                        if delay is None:
                            if _already_read(response):
                                _replace_content(http, response, call)
                            else:
                                watcher = call.observe_body(response.headers)
                                response.stream = AsyncObservedStream(
                                    response.stream, call, self.hook, watcher
                                )
                            return response
                        await response.aclose()
                    await clock.asleep(delay)
            except ServeElsewhere as offer:
                return _response(http, request, await call.aserve_elsewhere(offer))
            except BaseException as exc:
                call.abort(exc)
                raise

        async def aclose(self) -> None:
            await self.inner.aclose()

    return Transport, AsyncTransport


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


def _mark_retry(request: Any, call: Call) -> None:
    # The SDK numbers its attempts in this header; ours replace its loop.
    if call.attempts > 1:
        request.headers["x-stainless-retry-count"] = str(call.attempts - 1)
