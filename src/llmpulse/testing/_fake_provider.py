"""A fake OpenAI/Anthropic server on 127.0.0.1, with a scriptable fault plan and a capacity model.

A real HTTP/1.1 server (asyncio, its own thread and loop), so the SDKs run
unmodified over real sockets: timeouts, resets, keep-alive and slow streams
behave as they do in production. Usable from sync and async tests alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from . import _fake_formats as fmt

__all__ = ["FakeProvider", "Fault", "FaultPlan", "RecordedRequest", "main"]

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}


@dataclass(frozen=True, slots=True)
class Fault:
    """One scripted misbehaviour for one request (see `FakeProvider.enqueue`)."""

    kind: str
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
        """An error response in the provider's shape.

        E.g. 429 with ``error_code="insufficient_quota"``, or 529 (Anthropic's "overloaded").
        """
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
        """Reset the connection without answering."""
        return cls("reset_before_headers")

    @classmethod
    def reset_mid_stream(cls, after_events: int = 2) -> Fault:
        """Send part of the body (``after_events`` SSE events, or half a JSON body), then reset."""
        return cls("reset_mid_stream", after_events=after_events)

    @classmethod
    def malformed_json(cls) -> Fault:
        """A 200 whose JSON body is not JSON."""
        return cls("malformed_json")

    @classmethod
    def truncated(cls) -> Fault:
        """A 200 whose body ends before its Content-Length."""
        return cls("truncated")

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        """Wait this long before answering."""
        return cls("latency", seconds=seconds)

    @classmethod
    def slow_stream(cls, chunk_delay_s: float) -> Fault:
        """Wait this long between stream events."""
        return cls("slow_stream", seconds=chunk_delay_s)

    @classmethod
    def huge(cls, n_bytes: int) -> Fault:
        """A valid response whose text is about ``n_bytes`` long."""
        return cls("huge", n_bytes=n_bytes)


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """How the fake behaves for every request not given a queued `Fault`.

    Attributes:
        latency_s: Delay before headers: fixed, or uniform in (low, high).
        chunk_delay_s: Delay between stream events.
        error_rate: Probability of each error status per request, e.g. ``{500: 0.05}``.
        reset_rate: Probability of a reset before headers.
        seed: RNG seed (None: random).
        max_concurrency: Requests in flight beyond which it answers 429.
        tokens_per_minute: Tokens (prompt + max output) admitted per rolling minute before 429.
        retry_after_s: Retry-After of capacity 429s.
        output_tokens: Words (= tokens) generated per reply (default 20, capped by max_tokens).
        cached_input_tokens: Cache-read input tokens reported per call.
        cache_write_input_tokens: Cache-write input tokens reported per call.
        reasoning_tokens: Reasoning tokens reported per call.
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
    reasoning_tokens: int = 0


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    received_at: float


class _Reset(Exception):
    """Abort the connection with a TCP reset."""


class FakeProvider:
    """The fake provider server. Use as a (async) context manager, or `start`/`stop`.

    Args:
        plan: Default behaviour (see `FaultPlan`).
        host: Address to listen on (loopback only).
        port: Port (0 picks a free one).
    """

    def __init__(self, plan: FaultPlan | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._plan = plan or FaultPlan()
        self._rng = random.Random(self._plan.seed)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._queue: deque[Fault] = deque()
        self._requests: list[RecordedRequest] = []
        self._inflight = 0
        self._peak = 0
        self._by_status: dict[int, int] = {}
        self._admitted: deque[tuple[float, int]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> FakeProvider:
        """Start serving; returns once the port is listening."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, self.host, self.port, backlog=1024)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="llmpulse-fake-provider", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close every connection and stop the server thread."""
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def shutdown() -> None:
            server.close()
            for writer in list(self._writers):
                writer.close()
            # Handlers may be sleeping (latency faults): end them, not leave them pending.
            handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = self._server = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
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
        """What ``OpenAI(base_url=...)`` wants."""
        return self.base_url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """What ``Anthropic(base_url=...)`` wants."""
        return self.base_url

    @property
    def plan(self) -> FaultPlan:
        """The active fault plan (replaceable at run time)."""
        return self._plan

    @plan.setter
    def plan(self, plan: FaultPlan) -> None:
        with self._lock:
            self._plan = plan
            self._rng = random.Random(plan.seed)
            self._admitted.clear()

    def enqueue(self, *faults: Fault) -> None:
        """Give the next requests these faults, one each, in order."""
        with self._lock:
            self._queue.extend(faults)

    def clear(self) -> None:
        """Forget recorded requests, queued faults and counts."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._by_status.clear()
            self._peak = self._inflight

    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Block until ``n`` requests have arrived (True) or ``timeout`` passed (False)."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self._requests) >= n, timeout)

    def stats(self) -> dict[str, Any]:
        """Counts: requests, responses by status, peak concurrency."""
        with self._lock:
            return {
                "requests": len(self._requests),
                "by_status": dict(self._by_status),
                "peak_concurrency": self._peak,
            }

    # -- serving --------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._writers.add(writer)
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    break
                keep_alive = await self._respond(request, writer)
                if not keep_alive:
                    break
        except _Reset:
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_request(
        self, reader: asyncio.StreamReader
    ) -> tuple[str, str, dict[str, str], bytes] | None:
        line = await reader.readline()
        if not line:
            return None
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        body = await reader.readexactly(length) if length else b""
        return method, target, headers, body

    def _record(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        try:
            parsed = (
                json.loads(body)
                if body and headers.get("content-type", "").startswith("application/json")
                else None
            )
        except ValueError:
            parsed = None
        with self._arrived:
            self._requests.append(RecordedRequest(method, path, headers, parsed, time.monotonic()))
            self._arrived.notify_all()

    def _choose_fault(self, tokens: int) -> Fault | None:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            plan = self._plan
            if plan.max_concurrency is not None and self._inflight > plan.max_concurrency:
                return Fault.status(429, retry_after=plan.retry_after_s, error_code="rate_limit_exceeded")
            if plan.tokens_per_minute is not None:
                now = time.monotonic()
                while self._admitted and now - self._admitted[0][0] > 60:
                    self._admitted.popleft()
                if sum(t for _, t in self._admitted) + tokens > plan.tokens_per_minute:
                    return Fault.status(429, retry_after=plan.retry_after_s, error_code="rate_limit_exceeded")
                self._admitted.append((now, tokens))
            draw = self._rng.random()
            if draw < plan.reset_rate:
                return Fault.reset_before_headers()
            draw -= plan.reset_rate
            for status, rate in sorted(plan.error_rate.items()):
                if draw < rate:
                    return Fault.status(status, retry_after=plan.retry_after_s if status == 429 else None)
                draw -= rate
            return None

    def _latency(self) -> float:
        latency = self._plan.latency_s
        if isinstance(latency, tuple):
            with self._lock:
                return self._rng.uniform(*latency)
        return latency

    async def _respond(
        self, request: tuple[str, str, dict[str, str], bytes], writer: asyncio.StreamWriter
    ) -> bool:
        method, target, headers, body = request
        path = urlsplit(target).path
        self._record(method, path, headers, body)
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            data = {}
        data = data if isinstance(data, dict) else {}
        with self._lock:
            self._inflight += 1
            self._peak = max(self._peak, self._inflight)
        try:
            budget = fmt.prompt_tokens(data) + int(
                data.get("max_tokens") or data.get("max_completion_tokens") or 0
            )
            fault = self._choose_fault(budget)
            delay = self._latency() + (fault.seconds if fault and fault.kind == "latency" else 0.0)
            if delay > 0:
                await asyncio.sleep(delay)
            anthropic = path.startswith("/v1/messages")
            if fault is not None and fault.kind == "reset_before_headers":
                raise _Reset
            if fault is not None and fault.kind == "status":
                await self._send_error(writer, fault, anthropic=anthropic)
                return True
            return await self._send_ok(writer, method, path, data, fault, anthropic=anthropic)
        finally:
            with self._lock:
                self._inflight -= 1

    def _headers(self, anthropic: bool, status: int, content_type: str) -> dict[str, str]:
        request_id = f"req_{secrets.token_hex(12)}"
        headers = {"content-type": content_type}
        if anthropic:
            reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
            headers |= {
                "request-id": request_id,
                "anthropic-ratelimit-requests-limit": "4000",
                "anthropic-ratelimit-requests-remaining": "3999",
                "anthropic-ratelimit-requests-reset": reset,
                "anthropic-ratelimit-tokens-limit": "400000",
                "anthropic-ratelimit-tokens-remaining": "398000",
                "anthropic-ratelimit-tokens-reset": reset,
            }
        else:
            headers |= {
                "x-request-id": request_id,
                "openai-processing-ms": "12",
                "openai-version": "2020-10-01",
                "x-ratelimit-limit-requests": "10000",
                "x-ratelimit-remaining-requests": "9999",
                "x-ratelimit-reset-requests": "6ms",
                "x-ratelimit-limit-tokens": "2000000",
                "x-ratelimit-remaining-tokens": "1999000",
                "x-ratelimit-reset-tokens": "30ms",
            }
        with self._lock:
            self._by_status[status] = self._by_status.get(status, 0) + 1
        return headers

    async def _write_head(
        self, writer: asyncio.StreamWriter, status: int, headers: Mapping[str, str], body: bytes = b""
    ) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()

    async def _send_error(self, writer: asyncio.StreamWriter, fault: Fault, *, anthropic: bool) -> None:
        status = fault.http_status or 500
        headers = self._headers(anthropic, status, "application/json")
        message = fault.message or {429: "Rate limit reached", 529: "Overloaded"}.get(
            status, f"fake error {status}"
        )
        if anthropic:
            body = fmt.anthropic_error(status, message, fault.error_code, headers["request-id"])
        else:
            body = fmt.openai_error(status, message, fault.error_code)
        if fault.retry_after is not None:
            headers["retry-after"] = f"{fault.retry_after:g}"
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = str(fault.retry_after_ms)
        if fault.should_retry is not None:
            headers["x-should-retry"] = "true" if fault.should_retry else "false"
        payload = json.dumps(body).encode()
        headers["content-length"] = str(len(payload))
        await self._write_head(writer, status, headers, payload)

    async def _send_ok(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        path: str,
        data: dict[str, Any],
        fault: Fault | None,
        *,
        anthropic: bool,
    ) -> bool:
        plan = self._plan
        generation = fmt.Generation.for_request(
            data,
            model=_azure_deployment(path),
            output_tokens=plan.output_tokens,
            cached=plan.cached_input_tokens,
            cache_write=plan.cache_write_input_tokens,
            reasoning=plan.reasoning_tokens,
            huge_bytes=fault.n_bytes if fault is not None and fault.kind == "huge" else 0,
        )
        stream = data.get("stream") is True
        events = self._stream_for(path, data, generation) if stream else None
        if events is not None:
            await self._send_stream(writer, events, fault, anthropic=anthropic)
            return False  # close after a stream, like many proxies: keeps the server simple
        found, body = self._body_for(method, path, data, generation)
        status = 200 if found else 404
        if not found:
            body = (
                fmt.anthropic_error(404, f"no route {path}", None, "req_fake")
                if anthropic
                else fmt.openai_error(404, f"Unknown path {path}", None)
            )
        payload = json.dumps(body, separators=(",", ":")).encode()
        headers = self._headers(anthropic, status, "application/json")
        if fault is not None and fault.kind == "malformed_json":
            payload = b'{"id": "broken", "choices": [' + b"}"
        if fault is not None and fault.kind == "truncated":
            headers["content-length"] = str(len(payload))
            await self._write_head(writer, status, headers, payload[: len(payload) // 2])
            return False
        if fault is not None and fault.kind == "reset_mid_stream":
            headers["content-length"] = str(len(payload))
            await self._write_head(writer, status, headers, payload[: len(payload) // 2])
            raise _Reset
        headers["content-length"] = str(len(payload))
        await self._write_head(writer, status, headers, payload)
        return True

    def _stream_for(self, path: str, data: dict[str, Any], g: fmt.Generation) -> Iterator[bytes] | None:
        include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
        if path.endswith("/chat/completions"):
            return g.chat_chunks(include_usage)
        if path == "/v1/completions":
            return g.completion_chunks(include_usage)
        if path == "/v1/responses":
            return g.response_events()
        if path == "/v1/messages":
            return g.message_events()
        return None

    def _body_for(self, method: str, path: str, data: dict[str, Any], g: fmt.Generation) -> tuple[bool, Any]:
        if path.endswith("/chat/completions"):
            return True, g.chat_completion(data)
        routes: dict[str, Any] = {
            "/v1/responses": g.response,
            "/v1/embeddings": lambda: fmt.embeddings(data),
            "/v1/completions": g.completion,
            "/v1/models": fmt.models_list,
            "/v1/messages": g.message,
            "/v1/messages/count_tokens": lambda: {"input_tokens": g.prompt_tokens},
            "/v1/batches": lambda: fmt.openai_batch("batch_fake", data),
            "/v1/messages/batches": lambda: fmt.anthropic_batch("msgbatch_fake"),
        }
        if path in routes:
            return True, routes[path]()
        if path.startswith("/v1/messages/batches/"):
            return True, fmt.anthropic_batch(path.rsplit("/", 1)[1])
        if path.startswith("/v1/batches/"):
            return True, fmt.openai_batch(path.rsplit("/", 1)[1], None)
        return False, None

    async def _send_stream(
        self, writer: asyncio.StreamWriter, events: Iterable[bytes], fault: Fault | None, *, anthropic: bool
    ) -> None:
        headers = self._headers(anthropic, 200, "text/event-stream")
        headers |= {"transfer-encoding": "chunked", "cache-control": "no-cache", "connection": "close"}
        await self._write_head(writer, 200, headers)
        delay = self._plan.chunk_delay_s
        if fault is not None and fault.kind == "slow_stream":
            delay = fault.seconds
        for i, event in enumerate(events):
            if fault is not None and fault.kind == "reset_mid_stream" and i >= fault.after_events:
                raise _Reset
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()


def _azure_deployment(path: str) -> str | None:
    if path.startswith("/openai/deployments/"):
        return path.split("/")[3]
    return None


def main(argv: list[str] | None = None) -> int:
    """``llmpulse fake-provider``: serve until interrupted."""
    parser = argparse.ArgumentParser(prog="llmpulse fake-provider")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between stream events")
    parser.add_argument("--error-rate", action="append", default=[], metavar="STATUS=P", help="e.g. 500=0.05")
    parser.add_argument("--max-concurrency", type=int, default=None)
    args = parser.parse_args(argv)
    rates = {}
    for item in args.error_rate:
        status, _, prob = item.partition("=")
        rates[int(status)] = float(prob)
    plan = FaultPlan(
        latency_s=args.latency,
        chunk_delay_s=args.chunk_delay,
        error_rate=rates,
        max_concurrency=args.max_concurrency,
    )
    with FakeProvider(plan, port=args.port) as fake:
        print(
            f"fake provider on {fake.base_url} (OpenAI: {fake.openai_base_url}); Ctrl-C stops it", flush=True
        )
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0
