"""A fake OpenAI/Anthropic server on 127.0.0.1, with a scriptable fault plan and a capacity model.

A real HTTP/1.1 server (asyncio, in its own thread and loop), so the SDKs run
unmodified over real sockets: timeouts, resets, keep-alive and slow streams
behave as they do in production. JSON answers are gzipped when the client accepts
it, as the hosted APIs send them (see `FakeProvider`'s ``compress``). Usable from
sync and async tests alike: an async test's loop never runs the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import random
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal

from . import _fake_encoding as enc
from . import _fake_formats as fmt
from ._fake_replies import Reply, ReplyScript

__all__ = ["FakeProvider", "FakeStats", "Fault", "FaultKind", "FaultPlan", "RecordedRequest", "main"]

_log = logging.getLogger(__name__)

FaultKind = Literal[
    "status",
    "reset_before_headers",
    "reset_mid_stream",
    "malformed_json",
    "truncated",
    "latency",
    "slow_stream",
    "huge",
]
"""The kinds of `Fault`."""

_MAX_HEAD = 1 << 20
# How often a delayed request checks whether its client hung up.
_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class Fault:
    """One scripted misbehaviour for one request; build it with the class methods.

    Attributes:
        kind: What goes wrong.
        http_status: Status of a ``"status"`` fault.
        retry_after: ``retry-after`` header (seconds) of a ``"status"`` fault.
        retry_after_ms: ``retry-after-ms`` header of a ``"status"`` fault.
        should_retry: ``x-should-retry`` header of a ``"status"`` fault.
        error_code: OpenAI error ``code`` (Anthropic: error ``type``) of a ``"status"`` fault.
        message: Error message of a ``"status"`` fault (default: the provider's usual one).
        seconds: Delay of a ``"latency"`` or ``"slow_stream"`` fault.
        after_events: Events sent before a ``"reset_mid_stream"`` reset.
        n_bytes: Reply length of a ``"huge"`` fault.
    """

    kind: FaultKind
    http_status: int | None = None
    retry_after: float | None = None
    retry_after_ms: int | None = None
    should_retry: bool | None = None
    error_code: str | None = None
    message: str | None = None
    seconds: float = 0.0
    after_events: int = 2
    n_bytes: int = 0

    @classmethod
    def status(
        cls,
        code: int,
        *,
        retry_after: float | None = None,
        retry_after_ms: int | None = None,
        should_retry: bool | None = None,
        error_code: str | None = None,
        message: str | None = None,
    ) -> Fault:
        """An error response with the provider's error body.

        Args:
            code: HTTP status, e.g. 500, 429, or 529 (Anthropic's "overloaded").
            retry_after: Send ``retry-after`` with these seconds.
            retry_after_ms: Send ``retry-after-ms``.
            should_retry: Send ``x-should-retry: true/false``.
            error_code: E.g. ``"insufficient_quota"`` (default for 429: ``"rate_limit_exceeded"``).
            message: Error message.

        Returns:
            The fault.

        Raises:
            ValueError: ``code`` is not an HTTP error status.
        """
        if not 400 <= code <= 599:
            raise ValueError(f"not an HTTP error status: {code}")
        return cls(
            "status",
            http_status=code,
            retry_after=retry_after,
            retry_after_ms=retry_after_ms,
            should_retry=should_retry,
            error_code=error_code,
            message=message,
        )

    @classmethod
    def reset_before_headers(cls) -> Fault:
        """Reset the connection (TCP RST) without answering."""
        return cls("reset_before_headers")

    @classmethod
    def reset_mid_stream(cls, after_events: int = 2) -> Fault:
        """Send ``after_events`` SSE events (non-streaming: headers and half the body), then reset."""
        return cls("reset_mid_stream", after_events=after_events)

    @classmethod
    def malformed_json(cls) -> Fault:
        """A 200 ``application/json`` reply whose body is not JSON."""
        return cls("malformed_json")

    @classmethod
    def truncated(cls) -> Fault:
        """A 200 whose body ends (connection closed) before its Content-Length."""
        return cls("truncated")

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        """Wait this long (on top of the plan's latency) before the headers."""
        return cls("latency", seconds=_non_negative(seconds))

    @classmethod
    def slow_stream(cls, chunk_delay_s: float) -> Fault:
        """Wait this long before each stream event (instead of the plan's delay)."""
        return cls("slow_stream", seconds=_non_negative(chunk_delay_s))

    @classmethod
    def huge(cls, n_bytes: int) -> Fault:
        """A valid reply whose text is ``n_bytes`` long."""
        return cls("huge", n_bytes=max(1, n_bytes))


def _non_negative(seconds: float) -> float:
    if seconds < 0:
        raise ValueError(f"negative delay: {seconds}")
    return seconds


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """How the fake behaves for every request not given a queued `Fault`.

    Attributes:
        latency_s: Delay before the headers: fixed, or uniform in ``(low, high)``.
        chunk_delay_s: Delay before each stream event.
        error_rate: Probability of each error status per request, e.g. ``{500: 0.05}``.
        reset_rate: Probability of a reset before the headers.
        seed: Seed of the random draws (None: unseeded).
        max_concurrency: Requests in flight at once beyond which it answers 429.
        tokens_per_minute: Tokens (prompt + max output) admitted per rolling minute beyond which it
            answers 429.
        retry_after_s: ``retry-after`` of those 429s and of random ones.
        output_tokens: Words (= tokens) per reply (default 20), capped by the request's max tokens.
        cached_input_tokens: Cache-read input tokens reported per call.
        cache_write_input_tokens: Cache-write input tokens reported per call.
        cache_write_1h_input_tokens: Of those, the ones written for an hour (Anthropic's
            ``cache_creation.ephemeral_1h_input_tokens``; the rest are 5-minute writes).
        reasoning_tokens: Reasoning tokens reported per call, on top of the reply's.
        tokens_per_s: How fast a reply is generated, in output tokens (reasoning included) per
            second; None (the default): at once. A non-streamed answer then waits
            ``output tokens / tokens_per_s`` more before its headers, after ``latency_s`` (so the
            ``openai-processing-ms`` header includes it); a stream spreads that same time evenly
            over its events: of ``n`` events, the k-th is sent no earlier than ``k / n`` of it
            after the headers (and ``chunk_delay_s`` after the one before). So a reply takes as
            long streamed as not, and its first content comes after ``latency_s`` plus the share
            of the events up to it (in a chat stream: the role chunk and itself).

    Raises:
        ValueError: A rate or delay is out of range.
    """

    latency_s: float | tuple[float, float] = 0.0
    chunk_delay_s: float = 0.0
    error_rate: Mapping[int, float] = field(default_factory=dict)
    reset_rate: float = 0.0
    seed: int | None = 0
    max_concurrency: int | None = None
    tokens_per_minute: int | None = None
    retry_after_s: float = 1.0
    output_tokens: int | None = None
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    cache_write_1h_input_tokens: int = 0
    reasoning_tokens: int = 0
    tokens_per_s: float | None = None

    def __post_init__(self) -> None:
        low, high = self.latency_s if isinstance(self.latency_s, tuple) else (self.latency_s,) * 2
        if not 0 <= low <= high or self.chunk_delay_s < 0:
            raise ValueError(f"bad delays: latency_s={self.latency_s}, chunk_delay_s={self.chunk_delay_s}")
        rates = [self.reset_rate, *self.error_rate.values()]
        if min(rates) < 0 or sum(rates) > 1:
            raise ValueError("error and reset rates must be >= 0 and sum to at most 1")
        if self.tokens_per_s is not None and not self.tokens_per_s > 0:
            raise ValueError(f"tokens_per_s must be > 0 (or None: at once), got {self.tokens_per_s}")
        if any(not 400 <= s <= 599 for s in self.error_rate):
            raise ValueError(f"error_rate keys must be HTTP error statuses: {sorted(self.error_rate)}")


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request the fake received.

    Attributes:
        method: HTTP method.
        path: Path without the query string.
        headers: Headers, names lower-cased.
        json: Parsed JSON body, or None.
        received_at: ``time.monotonic()`` at arrival.
        query: Query string, without ``?``.
    """

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    received_at: float
    query: str = ""


@dataclass(frozen=True, slots=True)
class FakeStats:
    """Counters of a `FakeProvider` (since start or the last `FakeProvider.clear`).

    Attributes:
        requests: Requests received.
        by_status: Responses sent, by HTTP status (resets count as none).
        in_flight: Requests being answered right now.
        peak_concurrency: Most requests in flight at once.
        rejected: 429s sent by the capacity model.
        connections: TCP connections accepted (fewer than requests when keep-alive works).
    """

    requests: int
    by_status: dict[int, int]
    in_flight: int
    peak_concurrency: int
    rejected: int
    connections: int


class _Reset(Exception):
    """Abort the connection with a TCP reset."""


class _BadRequest(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


@dataclass(frozen=True, slots=True)
class _Decision:
    """What the fake does with one request, drawn once under the lock."""

    plan: FaultPlan
    fault: Fault | None
    delay: float
    admitted: bool


class _Window:
    """A rolling 60 s sum in 0.1 s buckets: O(1) per request, bounded memory under any load."""

    def __init__(self) -> None:
        self._buckets: deque[list[float]] = deque()  # [start time, amount]
        self.total = 0

    def expire(self, now: float) -> None:
        while self._buckets and now - self._buckets[0][0] >= 60:
            self.total -= int(self._buckets.popleft()[1])

    def add(self, now: float, amount: int) -> None:
        if self._buckets and now - self._buckets[-1][0] < 0.1:
            self._buckets[-1][1] += amount
        else:
            self._buckets.append([now, amount])
        self.total += amount

    def clear(self) -> None:
        self._buckets.clear()
        self.total = 0


class FakeProvider:
    """The fake provider server; a (async) context manager, or call `start` and `stop`.

    It serves from its own thread and event loop, so sync and async tests use it
    alike, and every method is thread-safe::

        with FakeProvider(FaultPlan(latency_s=0.05)) as fake:
            client = OpenAI(api_key="sk-test", base_url=fake.openai_base_url)
            fake.enqueue(Fault.status(500))
            client.chat.completions.create(model="gpt-4o", messages=[...])  # one retry
            assert fake.stats().by_status == {500: 1, 200: 1}

    JSON answers, errors included, are compressed as the hosted APIs compress them: gzip, at
    any size, when the request's ``Accept-Encoding`` accepts it (the SDKs always send it), with
    ``Content-Length`` the compressed length and ``Vary: Accept-Encoding``. Streams
    (``text/event-stream``) stay uncompressed, as the hosted APIs send them, unless
    ``compress_streams`` is set; then every event is flushed as it is sent, so it can be decoded
    on arrival. Faults apply to the compressed bytes: ``truncated`` cuts them, ``malformed_json``
    compresses a body that is not JSON.

    Args:
        plan: Default behaviour (see `FaultPlan`).
        host: Address to listen on.
        port: Port (0 picks a free one; see `port` once started).
        max_recorded: Recorded requests to keep (the oldest go first); None keeps all.
        compress: True: gzip when the client accepts it (what the hosted APIs do); False: never
            compress (what the fake did before it compressed); or ``"gzip"``, ``"deflate"``, ``"br"`` or
            ``"zstd"``: that coding, when the client accepts it.
        compress_streams: Compress streams too, with the same coding (for testing stream
            decoding; the hosted APIs do not).

    Raises:
        ValueError: ``compress`` is not one of those, or ``compress_streams`` without ``compress``.
        ImportError: ``"br"`` without ``brotli``, or ``"zstd"`` without ``backports-zstd``.
    """

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_recorded: int | None = 100_000,
        compress: bool | enc.ContentEncoding = True,
        compress_streams: bool = False,
    ) -> None:
        if compress is True:
            coding: enc.ContentEncoding | None = "gzip"
        elif compress is False:
            coding = None
        elif compress in enc.ENCODINGS:
            coding = compress
        else:
            raise ValueError(f"compress must be True, False or one of {enc.ENCODINGS}: {compress!r}")
        if coding is None and compress_streams:
            raise ValueError("compress_streams=True needs compress")
        if coding is not None:
            enc.check_available(coding)
        self._coding = coding
        self._compress_streams = compress_streams
        self.host = host
        self.port = port
        self._requested_port = port
        self._plan = plan or FaultPlan()
        self._rng = random.Random(self._plan.seed)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: deque[Fault] = deque()
        self._requests: deque[RecordedRequest] = deque(maxlen=max_recorded)
        self._n_requests = 0
        self._in_flight = 0
        self._admitted = 0
        self._peak = 0
        self._rejected = 0
        self._connections = 0
        self._by_status: dict[int, int] = {}
        self._replies: ReplyScript | None = None
        self._tokens = _Window()
        self._calls = _Window()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> FakeProvider:
        """Start serving in a background thread; returns once the port is listening.

        Returns:
            self.

        Raises:
            RuntimeError: Already started.
            OSError: The port could not be bound.
        """
        if self._thread is not None:
            raise RuntimeError("FakeProvider already started")
        listener = socket.create_server((self.host, self._requested_port), backlog=1024)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        # A selector loop on every platform: the accept callback needs add_reader.
        loop = asyncio.SelectorEventLoop()
        running = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.add_reader(listener, self._accept, listener)
            loop.call_soon(running.set)
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._loop, self._listener = loop, listener
        self._thread = threading.Thread(target=run, name=f"llmpulse-fake-provider-{self.port}", daemon=True)
        self._thread.start()
        running.wait()
        return self

    def stop(self) -> None:
        """Close every connection, stop the server and join its thread (idempotent)."""
        loop, thread, listener = self._loop, self._thread, self._listener
        if loop is None or thread is None or listener is None:
            return

        async def shutdown() -> None:
            loop.remove_reader(listener)
            listener.close()  # connections not accepted yet are refused
            # Handlers may be sleeping through a latency fault: end them rather than wait.
            handlers = list(self._handlers)
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            # Aborted transports close their sockets on the next turns of the loop.
            for _ in range(3):
                await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = self._listener = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> FakeProvider:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    # -- test-facing API ------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """What ``OpenAI(base_url=...)`` wants: the base URL plus ``/v1``."""
        return self.base_url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """What ``Anthropic(base_url=...)`` wants: the base URL (the SDK adds ``/v1/...``)."""
        return self.base_url

    @property
    def plan(self) -> FaultPlan:
        """The fault plan; assigning one (from any thread) resets the random draws and the token window."""
        return self._plan

    @plan.setter
    def plan(self, plan: FaultPlan) -> None:
        with self._lock:
            self._plan = plan
            self._rng = random.Random(plan.seed)
            self._tokens.clear()

    @property
    def replies(self) -> ReplyScript | None:
        """The reply script: called with each request, its `Reply` is sent instead of a generated one.

        None (the default), or a script that returns None for a request, leaves the fake to
        generate the reply from the request. Faults still apply first. The script runs on the
        fake's thread; one that raises aborts that request's connection (and is logged)::

            fake.replies = lambda request: (
                Reply.message("done") if "tool" in str(request.json) else Reply.tool_call("lookup", {"id": 7})
            )

        Unlike `plan`, `clear` keeps it; assign None to go back to generated replies.
        """
        return self._replies

    @replies.setter
    def replies(self, script: ReplyScript | None) -> None:
        with self._lock:
            self._replies = script

    def enqueue(self, *faults: Fault) -> None:
        """Give the next requests these faults, one each, in order, before any random or capacity fault."""
        with self._lock:
            self._queue.extend(faults)

    def clear(self) -> None:
        """Forget recorded requests, queued faults and counters."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._n_requests = 0
            self._by_status.clear()
            self._rejected = 0
            self._connections = 0
            self._peak = self._in_flight

    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Block until ``n`` requests have arrived (True) or ``timeout`` passed (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._n_requests >= n, timeout)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until no request is in flight (True) or ``timeout`` passed (False).

        A request whose client hung up counts as finished within about 50 ms,
        even during a long latency fault.
        """
        with self._changed:
            return self._changed.wait_for(lambda: self._in_flight == 0, timeout)

    def stats(self) -> FakeStats:
        """Counters: requests, responses by status, concurrency, capacity rejections."""
        with self._lock:
            return FakeStats(
                requests=self._n_requests,
                by_status=dict(self._by_status),
                in_flight=self._in_flight,
                peak_concurrency=self._peak,
                rejected=self._rejected,
                connections=self._connections,
            )

    # -- connection -----------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        # A synchronous accept callback rather than asyncio.start_server or sock_accept: both can
        # drop a just-accepted socket while stopping (leaking it), and stop() must close them all.
        loop = asyncio.get_running_loop()
        for _ in range(256):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                _log.exception("fake provider: accept failed")
                return
            conn.setblocking(False)
            task = loop.create_task(self._connection(conn))
            self._handlers.add(task)
            task.add_done_callback(functools.partial(self._finished, conn))

    def _finished(self, conn: socket.socket, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        if task.cancelled():
            conn.close()  # cancelled before it ran, or after aborting its transport

    async def _connection(self, conn: socket.socket) -> None:
        """Serve one connection: requests in turn while it is kept alive."""
        # Without it, Nagle plus delayed ACKs add 40 ms to a header write followed by a body write.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._connections += 1
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_MAX_HEAD)
        try:
            transport, protocol = await loop.connect_accepted_socket(
                lambda: asyncio.StreamReaderProtocol(reader), conn
            )
        except BaseException:
            conn.close()
            raise
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        try:
            while (request := await _read_request(reader, writer)) is not None:
                if not await self._serve(request, reader, writer):
                    break
        except _BadRequest as exc:
            with contextlib.suppress(ConnectionError):
                await _write(writer, exc.status, {"content-length": "0", "connection": "close"})
        except _Reset:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        except (ConnectionError, asyncio.IncompleteReadError):
            transport.abort()
        except asyncio.CancelledError:
            transport.abort()
            raise
        except Exception:  # noqa: BLE001 - logged; one broken handler must not stop the server
            _log.exception("fake provider: request handler failed")
            transport.abort()
        finally:
            transport.close()  # after a normal answer: flush what is buffered, then close

    async def _serve(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection must close."""
        received = time.monotonic()
        where = fmt.route(request.method, request.path, request.headers)
        try:
            parsed: Any = json.loads(request.body) if request.body else None
        except ValueError:
            parsed = None
        data: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        decision = self._admit(request, parsed, data, received)
        try:
            if decision.delay > 0 and not await _pause(decision.delay, reader):
                return False  # the client gave up waiting
            keep_alive = await self._answer(request, where, data, decision, reader, writer, received)
            return keep_alive and request.keep_alive
        finally:
            with self._changed:
                self._in_flight -= 1
                if decision.admitted:
                    self._admitted -= 1
                self._changed.notify_all()

    def _admit(self, request: _Request, parsed: Any, data: dict[str, Any], now: float) -> _Decision:
        """Record the request and draw its fate: queued fault, capacity 429, random fault, latency."""
        with self._changed:
            record = RecordedRequest(
                request.method, request.path, request.headers, parsed, now, request.query
            )
            self._requests.append(record)
            self._n_requests += 1
            self._changed.notify_all()
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
            plan = self._plan
            self._calls.expire(now)
            self._tokens.expire(now)
            self._calls.add(now, 1)
            if self._queue:
                fault: Fault | None = self._queue.popleft()
            elif (fault := self._over_capacity(plan, data, now)) is not None:
                self._rejected += 1
                # A rate limiter answers at once; it does not hold the request.
                return _Decision(plan, fault, 0.0, admitted=False)
            else:
                fault = self._draw_fault(plan)
            low, high = plan.latency_s if isinstance(plan.latency_s, tuple) else (plan.latency_s,) * 2
            delay = self._rng.uniform(low, high) if high > low else low
            if fault is not None and fault.kind == "latency":
                delay += fault.seconds
            self._admitted += 1
            return _Decision(plan, fault, delay, admitted=True)

    def _over_capacity(self, plan: FaultPlan, data: dict[str, Any], now: float) -> Fault | None:
        retry = plan.retry_after_s
        if plan.max_concurrency is not None and self._admitted >= plan.max_concurrency:
            return Fault.status(429, retry_after=retry, message="Too many concurrent requests.")
        tokens = fmt.prompt_tokens(data) + _max_output(data, plan)
        if plan.tokens_per_minute is not None and self._tokens.total + tokens > plan.tokens_per_minute:
            return Fault.status(429, retry_after=retry, message="Rate limit reached for tokens per minute.")
        self._tokens.add(now, tokens)
        return None

    def _draw_fault(self, plan: FaultPlan) -> Fault | None:
        if not plan.reset_rate and not plan.error_rate:
            return None
        draw = self._rng.random()
        if draw < plan.reset_rate:
            return Fault.reset_before_headers()
        draw -= plan.reset_rate
        for status, rate in sorted(plan.error_rate.items()):
            if draw < rate:
                return Fault.status(status, retry_after=plan.retry_after_s if status == 429 else None)
            draw -= rate
        return None

    # -- answers ---------------------------------------------------------------

    async def _answer(
        self,
        request: _Request,
        where: fmt.Route,
        data: dict[str, Any],
        decision: _Decision,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        received: float,
    ) -> bool:
        fault, plan = decision.fault, decision.plan
        kind = fault.kind if fault is not None else None
        if kind == "reset_before_headers":
            raise _Reset
        if fault is not None and fault.kind == "status":
            await self._send_error(writer, request, fault, where, received)
            return True
        if where.endpoint == "not_found":
            message = f"Invalid URL ({request.method} {request.path})"
            await self._send_error(writer, request, Fault.status(404, message=message), where, received)
            return True
        gen = fmt.Generation.for_request(
            data,
            reply=self._scripted(request, received),
            model=where.model,
            output_tokens=plan.output_tokens,
            cached=plan.cached_input_tokens,
            cache_write=plan.cache_write_input_tokens,
            cache_write_1h=plan.cache_write_1h_input_tokens,
            reasoning=plan.reasoning_tokens,
            huge_bytes=fault.n_bytes if fault is not None and kind == "huge" else 0,
        )
        streamed = where.stream if where.stream is not None else data.get("stream") is True
        stream = fmt.stream_events(where, data, gen) if streamed else None
        content_type = "application/json" if stream is None else "text/event-stream"
        if stream is not None and where.platform == "bedrock":
            stream = fmt.bedrock_chunks(stream, gen.input_tokens, gen.output_tokens)
            content_type = "application/vnd.amazon.eventstream"
        events = None if stream is None else list(stream)
        generating = gen.output_tokens / plan.tokens_per_s if plan.tokens_per_s is not None else 0.0
        if events is None and generating > 0 and not await _pause(generating, reader):
            return False  # the client gave up waiting for the whole reply
        headers = self._headers(request, where, content_type, received)
        if events is not None:
            delay = fault.seconds if fault is not None and kind == "slow_stream" else plan.chunk_delay_s
            pace = generating / len(events) if events else 0.0
            coding = (
                self._negotiate(request, headers)
                if self._compress_streams and where.platform is None
                else None
            )
            return await self._send_stream(writer, headers, events, delay, pace, fault, coding)
        payload = json.dumps(fmt.json_body(where, data, gen), separators=(",", ":")).encode()
        if kind == "malformed_json":
            payload = b'{"id": "chatcmpl-broken", "choices": [}'
        payload = self._encode(request, headers, payload)
        self._count(200)
        if kind in ("truncated", "reset_mid_stream"):
            await _write(writer, 200, headers, payload[: len(payload) // 2])
            if kind == "reset_mid_stream":
                raise _Reset
            return False
        await _write(writer, 200, headers, payload)
        return True

    def _scripted(self, request: _Request, received: float) -> Reply | None:
        with self._lock:
            script = self._replies
        if script is None:
            return None
        # The script sees the request as `requests` records it, body parsed the same way.
        try:
            parsed: Any = json.loads(request.body) if request.body else None
        except ValueError:
            parsed = None
        return script(
            RecordedRequest(request.method, request.path, request.headers, parsed, received, request.query)
        )

    def _negotiate(self, request: _Request, headers: dict[str, str]) -> enc.ContentEncoding | None:
        """The coding of this answer, if any; adds ``Vary`` when compression is on at all.

        The answer depends on ``Accept-Encoding`` whether or not this one is compressed, and a
        cache must know that about both variants.
        """
        if self._coding is None:
            return None
        headers["vary"] = "Accept-Encoding"
        if not enc.negotiate(request.headers.get("accept-encoding"), self._coding):
            return None
        headers["content-encoding"] = self._coding
        return self._coding

    def _encode(self, request: _Request, headers: dict[str, str], payload: bytes) -> bytes:
        """Compress a whole body as negotiated; sets ``Content-Length`` to what is sent."""
        if (coding := self._negotiate(request, headers)) is not None:
            payload = enc.compress(payload, coding)
        headers["content-length"] = str(len(payload))
        return payload

    def _count(self, status: int) -> None:
        with self._lock:
            self._by_status[status] = self._by_status.get(status, 0) + 1

    def _headers(
        self, request: _Request, where: fmt.Route, content_type: str, received: float
    ) -> dict[str, str]:
        with self._lock:
            calls, tokens, token_limit = self._calls.total, self._tokens.total, self._plan.tokens_per_minute
        headers = fmt.response_headers(
            where,
            content_type,
            requests_used=calls,
            tokens_used=tokens,
            token_limit=token_limit,
            processing_ms=int((time.monotonic() - received) * 1000),
        )
        if not request.keep_alive:
            headers["connection"] = "close"
        return headers

    async def _send_error(
        self, writer: asyncio.StreamWriter, request: _Request, fault: Fault, where: fmt.Route, received: float
    ) -> None:
        status = fault.http_status or 500
        headers = self._headers(request, where, "application/json", received)
        body = fmt.error_body(where, status, fault.message, fault.error_code, headers)
        if fault.retry_after is not None:
            headers["retry-after"] = f"{fault.retry_after:g}"
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = str(fault.retry_after_ms)
        if fault.should_retry is not None:
            headers["x-should-retry"] = "true" if fault.should_retry else "false"
        if where.platform == "bedrock":
            headers["x-amzn-errortype"] = (
                f"{fmt.bedrock_error_type(status)}:http://internal.amazon.com/coral/com.amazon.bedrock/"
            )
        payload = self._encode(request, headers, json.dumps(body).encode())
        self._count(status)
        await _write(writer, status, headers, payload)

    async def _send_stream(
        self,
        writer: asyncio.StreamWriter,
        headers: dict[str, str],
        events: list[bytes],
        delay: float,
        pace: float,
        fault: Fault | None,
        coding: enc.ContentEncoding | None,
    ) -> bool:
        """Send SSE events as HTTP chunks, each compressed and flushed if coded; False when cut short.

        Each event waits ``delay`` after the one before, and the k-th is sent no earlier than
        ``k * pace`` after the headers: generation keeps its speed when a write was slow.
        """
        headers |= {"transfer-encoding": "chunked", "cache-control": "no-cache"}
        self._count(200)
        kind = fault.kind if fault is not None else None
        if kind == "malformed_json" and len(events) > 1:
            # Cut inside the data line's JSON; an Anthropic event keeps its event: line.
            events[1] = events[1][: len(events[1]) // 2] + b"\n\n"
        stop: int | None = None  # where the stream breaks off
        if fault is not None and fault.kind == "reset_mid_stream":
            stop = fault.after_events
        elif kind == "truncated":
            stop = len(events) // 2
        encoder = enc.encoder(coding) if coding is not None else None

        def chunk(event: bytes) -> bytes:
            return _chunk(encoder.chunk(event) if encoder is not None else event)

        def end() -> bytes:
            # The compressor's end (gzip's checksum) comes before the last, empty chunk.
            return (_chunk(encoder.finish()) if encoder is not None else b"") + b"0\r\n\r\n"

        if delay <= 0 and pace <= 0 and stop is None:
            # Nothing to observe between events: one write is much cheaper for benchmarks.
            body = b"".join(map(chunk, events))
            await _write(writer, 200, headers, body + end())
            return True
        await _write(writer, 200, headers)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for k, event in enumerate(events[:stop], 1):
            if delay > 0:
                await asyncio.sleep(delay)
            if pace > 0 and (wait := started + k * pace - loop.time()) > 0:
                await asyncio.sleep(wait)
            writer.write(chunk(event))
            await writer.drain()
        if kind == "reset_mid_stream":
            raise _Reset
        if kind == "truncated":
            return False  # closed without the last chunk (nor the compressor's end)
        writer.write(end())
        await writer.drain()
        return True


# -- HTTP/1.1 ------------------------------------------------------------------


async def _read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Request | None:
    """Read one request (head and Content-Length body); None at a clean end of connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _BadRequest(400) from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise _BadRequest(431) from exc
    request_line, *lines = head.decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400)
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest(400)
            headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise _BadRequest(411)  # chunked request bodies: not needed by the SDKs
    try:
        length = int(headers.get("content-length") or 0)
    except ValueError as exc:
        raise _BadRequest(400) from exc
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = await reader.readexactly(length) if length > 0 else b""
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    path, _, query = target.partition("?")
    return _Request(method, path, query, headers, body, keep_alive)


def _chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk; none for no data (an empty chunk would end the body)."""
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


async def _write(
    writer: asyncio.StreamWriter, status: int, headers: Mapping[str, str], body: bytes = b""
) -> None:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Overloaded" if status == 529 else "Error"
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(head.encode("latin-1") + b"\r\n" + body)
    await writer.drain()


async def _pause(seconds: float, reader: asyncio.StreamReader) -> bool:
    """Sleep without blocking the loop; False as soon as the client hangs up.

    An abandoned request must not stay "in flight" for the rest of a long
    latency fault, or it would skew the capacity model for later tests.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        if reader.at_eof() or reader.exception() is not None:
            return False
        await asyncio.sleep(min(left, _POLL_S))
    return True


def _max_output(data: Mapping[str, Any], plan: FaultPlan) -> int:
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        if isinstance(value := data.get(key), int) and value > 0:
            return value
    return plan.output_tokens if plan.output_tokens is not None else fmt.DEFAULT_OUTPUT_TOKENS


# -- command line ----------------------------------------------------------------


def _latency(value: str) -> float | tuple[float, float]:
    low, sep, high = value.partition(",")
    return (float(low), float(high)) if sep else float(low)


def _error_rate(value: str) -> tuple[int, float]:
    status, sep, prob = value.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected STATUS=PROBABILITY, got {value!r}")
    return int(status), float(prob)


def main(argv: list[str] | None = None) -> int:
    """``llmpulse fake-provider``: serve the fake provider until interrupted (Ctrl-C).

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(
        prog="llmpulse fake-provider", description="A fake OpenAI/Anthropic API on 127.0.0.1."
    )
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free one)")
    parser.add_argument(
        "--latency", type=_latency, default=0.0, metavar="S[,MAX]", help="seconds before answers"
    )
    parser.add_argument("--chunk-delay", type=float, default=0.0, metavar="S", help="seconds between events")
    parser.add_argument(
        "--error-rate",
        type=_error_rate,
        action="append",
        default=[],
        metavar="STATUS=P",
        help="e.g. 500=0.05",
    )
    parser.add_argument("--reset-rate", type=float, default=0.0, metavar="P")
    parser.add_argument("--max-concurrency", type=int, default=None, metavar="N")
    parser.add_argument("--tokens-per-minute", type=int, default=None, metavar="N")
    parser.add_argument("--retry-after", type=float, default=1.0, metavar="S", help="retry-after of 429s")
    parser.add_argument("--output-tokens", type=int, default=None, metavar="N")
    parser.add_argument("--seed", type=int, default=None)
    coding = parser.add_mutually_exclusive_group()
    coding.add_argument(
        "--compress",
        choices=enc.ENCODINGS,
        default=True,
        metavar="ENCODING",
        help=f"answer JSON in this coding when accepted ({', '.join(enc.ENCODINGS)}; default: gzip)",
    )
    coding.add_argument("--no-compress", dest="compress", action="store_false", help="never compress answers")
    parser.add_argument(
        "--compress-streams", action="store_true", help="compress event streams too (the hosted APIs do not)"
    )
    args = parser.parse_args(argv)
    if args.compress_streams and args.compress is False:
        parser.error("--compress-streams and --no-compress exclude each other")
    try:
        plan = FaultPlan(
            latency_s=args.latency,
            chunk_delay_s=args.chunk_delay,
            error_rate=dict(args.error_rate),
            reset_rate=args.reset_rate,
            seed=args.seed,
            max_concurrency=args.max_concurrency,
            tokens_per_minute=args.tokens_per_minute,
            retry_after_s=args.retry_after,
            output_tokens=args.output_tokens,
        )
    except ValueError as exc:
        parser.error(str(exc))
    # A long benchmark must not grow the request log without bound.
    try:
        fake = FakeProvider(
            plan,
            port=args.port,
            max_recorded=1000,
            compress=args.compress,
            compress_streams=args.compress_streams,
        )
    except ImportError as exc:
        parser.error(str(exc))
    with fake:
        print(
            f"fake provider on {fake.base_url} (OpenAI base URL {fake.openai_base_url}); Ctrl-C stops it",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            stop = threading.Event()
            # Wake now and then: Ctrl-C may be delivered to the server's thread,
            # and only the main thread runs Python's signal handlers, when it wakes.
            while not stop.wait(0.2):
                pass
    return 0
