"""A local server that answers like the hosted OpenAI and Anthropic APIs, one scripted `Step` per request.

It is deliberately not llmpulse's fake provider (`llmpulse.testing.FakeProvider`):
``test_fidelity.py`` compares the bare SDKs with wrapped ones, and a server that
shared llmpulse's idea of the wire would share its mistakes. Everything here is
written from the providers' documented formats, and the bodies parse in the real
SDKs under ``_strict_response_validation=True``.

Real HTTP/1.1 on 127.0.0.1 (a free port), a thread per connection, keep-alive,
chunked SSE. One case is deterministic: each request takes the next step of the
script (then the default step); ids, timestamps, request ids and the answer text
are a function of the step's number since the last `FidelityServer.reset`, so the
bare and the wrapped run of a case see byte-identical answers.

Server-wide modes (set by `reset`):

- ``compression``: ``gzip``, ``deflate``, ``br`` or ``zstd`` for every JSON body
  (errors included, at any size, as hosted OpenAI does), when the request's
  ``Accept-Encoding`` allows it. Streams are not compressed.
- ``json_style``: ``"compact"`` (OpenAI's and Anthropic's ``{"a":1}``) or
  ``"spaced"`` (Python's default ``json.dumps``: ``{"a": 1}``), for bodies and
  stream events alike.
- ``sse_newline``: ``"\\n"`` or ``"\\r\\n"`` line endings in streams.
- ``strict``: reject request fields the endpoint does not know (an Azure or
  OpenAI-compatible server that predates ``stream_options``) with a 400 (or
  ``strict_status``) naming the first one. A rejected request does not take a
  step: validation comes before the script, as it would before the model runs.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlsplit

import brotli

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

__all__ = ["FidelityServer", "RecordedRequest", "Step"]

StepKind = Literal["answer", "error", "reset", "stall", "malformed"]
Compression = Literal["gzip", "deflate", "br", "zstd"]
JsonStyle = Literal["compact", "spaced"]

CREATED = 1_767_225_600
"""Every answer's timestamp (2026-01-01T00:00:00Z): answers must not depend on the clock."""

_STALL_LIMIT_S = 60.0
"""A stalled or delayed answer gives up after this (a reset or stop ends it sooner)."""

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Site Overloaded",
}


@dataclass(frozen=True, slots=True)
class Step:
    """What the server does with one request; build it with the class methods.

    Attributes:
        kind: ``"answer"`` (200, JSON or SSE as the request asks), ``"error"``,
            ``"reset"`` (TCP RST before any byte of the response),
            ``"stall"`` (headers, maybe some events, then nothing) or
            ``"malformed"`` (a 2xx whose JSON is cut in half).
        status: The status of an ``"error"``.
        delay_s: Wait before the headers.
        gap_s: Wait between stream events (a slow stream).
        after_events: Stream events a ``"stall"`` sends before it stalls.
        words: Words in the answer text.
        headers: Extra response headers.
        message: The error message (default: the provider's usual one).
        code: OpenAI's error ``code`` (Anthropic: the error ``type``).
    """

    kind: StepKind = "answer"
    status: int = 200
    delay_s: float = 0.0
    gap_s: float = 0.0
    after_events: int = 0
    words: int = 6
    headers: tuple[tuple[str, str], ...] = ()
    message: str | None = None
    code: str | None = None

    def __str__(self) -> str:
        """The step as its constructor call, without the defaults (for failure reports)."""
        if self.kind == "answer" and self.delay_s >= _STALL_LIMIT_S:
            return "hang()"
        args = [str(self.status)] if self.kind == "error" else []
        args += [f"{k}={v!r}" for k, v in self.headers]
        for key in ("delay_s", "gap_s", "after_events"):
            if getattr(self, key):
                args.append(f"{key}={getattr(self, key)}")
        if self.kind == "answer" and self.words != 6:
            args.append(f"words={self.words}")
        return f"{self.kind}({', '.join(args)})"

    @classmethod
    def answer(cls, *, delay_s: float = 0.0, gap_s: float = 0.0, words: int = 6) -> Step:
        """A 200: the endpoint's JSON answer, or its SSE stream when the request streams."""
        return cls("answer", delay_s=delay_s, gap_s=gap_s, words=words)

    @classmethod
    def error(
        cls,
        status: int,
        *,
        retry_after: float | str | None = None,
        retry_after_ms: int | None = None,
        should_retry: bool | None = None,
        delay_s: float = 0.0,
        message: str | None = None,
        code: str | None = None,
    ) -> Step:
        """An error status with the provider's error body and the given retry headers."""
        headers: list[tuple[str, str]] = []
        if retry_after is not None:
            headers.append(("retry-after", str(retry_after)))
        if retry_after_ms is not None:
            headers.append(("retry-after-ms", str(retry_after_ms)))
        if should_retry is not None:
            headers.append(("x-should-retry", "true" if should_retry else "false"))
        return cls("error", status, delay_s=delay_s, headers=tuple(headers), message=message, code=code)

    @classmethod
    def reset(cls) -> Step:
        """Read the request, then reset the connection (``SO_LINGER`` 0) before any response byte."""
        return cls("reset")

    @classmethod
    def stall(cls, *, delay_s: float = 0.0, after_events: int = 0) -> Step:
        """Send the headers (and ``after_events`` stream events), then nothing until a reset or stop."""
        return cls("stall", delay_s=delay_s, after_events=after_events)

    @classmethod
    def hang(cls) -> Step:
        """Send nothing at all until a reset or stop: the client's timeout decides."""
        return cls("answer", delay_s=_STALL_LIMIT_S)

    @classmethod
    def malformed(cls, *, delay_s: float = 0.0) -> Step:
        """A 200 ``application/json`` body cut in half (a stream: its first event's data cut)."""
        return cls("malformed", delay_s=delay_s)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the server read it, and what it answered.

    Attributes:
        method: The HTTP method.
        path: The URL path.
        query: The raw query string.
        headers: The headers in arrival order, names lower-cased.
        body: The raw body.
        json: The body parsed as JSON (None when it is not JSON).
        step: The script step's number (None: rejected by strict mode, no step taken).
        status: The status answered (None: reset or stalled before the headers).
        answer: The answer's body, uncompressed (b"" for streams, resets and stalls).
    """

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    json: Any
    step: int | None
    status: int | None
    answer: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)


# -- what the endpoints know (strict mode) ---------------------------------------

_CHAT_FIELDS = frozenset(
    {
        "messages", "model", "audio", "frequency_penalty", "function_call", "functions", "logit_bias",
        "logprobs", "max_completion_tokens", "max_tokens", "metadata", "modalities", "n",
        "parallel_tool_calls", "prediction", "presence_penalty", "reasoning_effort", "response_format",
        "seed", "service_tier", "stop", "store", "stream", "temperature", "tool_choice", "tools",
        "top_logprobs", "top_p", "user",
    }
)  # fmt: skip
_RESPONSES_FIELDS = frozenset(
    {
        "model", "input", "instructions", "max_output_tokens", "metadata", "parallel_tool_calls",
        "previous_response_id", "reasoning", "store", "stream", "temperature", "text", "tool_choice",
        "tools", "top_p", "truncation", "user", "include", "background", "service_tier",
    }
)  # fmt: skip
_MESSAGES_FIELDS = frozenset(
    {
        "model", "messages", "max_tokens", "metadata", "stop_sequences", "stream", "system",
        "temperature", "thinking", "tool_choice", "tools", "top_k", "top_p", "service_tier",
    }
)  # fmt: skip
_KNOWN_FIELDS = {"chat": _CHAT_FIELDS, "responses": _RESPONSES_FIELDS, "messages": _MESSAGES_FIELDS}


def _endpoint(path: str) -> str:
    if path.endswith("/chat/completions"):
        return "chat"
    if path.endswith("/responses"):
        return "responses"
    if path.endswith("/messages"):
        return "messages"
    return "unknown"


# -- bodies ---------------------------------------------------------------------

_TEXT = ("the", "fidelity", "server", "answers", "every", "request", "the", "same", "way", "each", "time")


def _words(n: int, step: int) -> list[str]:
    first = f"Answer{step}"
    return [first] + [" " + _TEXT[i % len(_TEXT)] for i in range(max(n - 1, 0))]


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    # From the prompt's text, not the body's bytes: llmpulse may add fields to the body.
    text = json.dumps([body.get(k) for k in ("messages", "input", "system", "instructions")])
    return max(1, len(text) // 4)


def _openai_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


@dataclass(frozen=True, slots=True)
class _Answer:
    """The answer to one request: its endpoint, step number and generated text."""

    endpoint: str
    step: int
    body: Mapping[str, Any]
    pieces: list[str]

    @property
    def model(self) -> str:
        return str(self.body.get("model") or "unknown-model")

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def prompt(self) -> int:
        return _prompt_tokens(self.body)

    def json(self) -> dict[str, Any]:
        if self.endpoint == "chat":
            return self._chat()
        if self.endpoint == "responses":
            return self._response(done=True)
        if self.endpoint == "messages":
            return self._message()
        return {"object": "list", "data": []}

    def events(self) -> list[tuple[str | None, Any]]:
        """The stream as (event name, data) pairs; data is JSON-encoded unless it is a str."""
        if self.endpoint == "chat":
            return self._chat_events()
        if self.endpoint == "responses":
            return self._response_events()
        if self.endpoint == "messages":
            return self._message_events()
        return [(None, "[DONE]")]

    # OpenAI chat completions

    def _chat(self) -> dict[str, Any]:
        message = {"role": "assistant", "content": self.text, "refusal": None, "annotations": []}
        return {
            "id": f"chatcmpl-fidelity{self.step:04d}",
            "object": "chat.completion",
            "created": CREATED,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
            "usage": _openai_usage(self.prompt, len(self.pieces)),
            "service_tier": "default",
            "system_fingerprint": "fp_fidelity",
        }

    def _chat_events(self) -> list[tuple[str | None, Any]]:
        options = self.body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        base = {
            "id": f"chatcmpl-fidelity{self.step:04d}",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fidelity",
        }
        # As OpenAI: every chunk says "usage": null only when usage was asked for.
        tail = {"usage": None} if include_usage else {}

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**base, "choices": [choice], **tail}

        events: list[tuple[str | None, Any]] = [
            (None, chunk({"role": "assistant", "content": "", "refusal": None}, None))
        ]
        events += [(None, chunk({"content": piece}, None)) for piece in self.pieces]
        events.append((None, chunk({}, "stop")))
        if include_usage:
            events.append(
                (None, {**base, "choices": [], "usage": _openai_usage(self.prompt, len(self.pieces))})
            )
        events.append((None, "[DONE]"))
        return events

    # OpenAI responses

    def _item(self, done: bool) -> dict[str, Any]:
        content = [{"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}]
        return {
            "id": f"msg_fidelity{self.step:04d}",
            "type": "message",
            "status": "completed" if done else "in_progress",
            "role": "assistant",
            "content": content if done else [],
        }

    def _response(self, *, done: bool) -> dict[str, Any]:
        usage = None
        if done:
            completion = len(self.pieces)
            usage = {
                "input_tokens": self.prompt,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": completion,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.prompt + completion,
            }
        return {
            "id": f"resp_fidelity{self.step:04d}",
            "object": "response",
            "created_at": float(CREATED),
            "status": "completed" if done else "in_progress",
            "error": None,
            "incomplete_details": None,
            "instructions": self.body.get("instructions"),
            "max_output_tokens": self.body.get("max_output_tokens"),
            "model": self.model,
            "output": [self._item(True)] if done else [],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "temperature": 1.0,
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "metadata": {},
            "usage": usage,
        }

    def _response_events(self) -> list[tuple[str | None, Any]]:
        ids = {"item_id": f"msg_fidelity{self.step:04d}", "output_index": 0, "content_index": 0}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        raw: list[tuple[str, dict[str, Any]]] = [
            ("response.created", {"response": self._response(done=False)}),
            ("response.in_progress", {"response": self._response(done=False)}),
            ("response.output_item.added", {"output_index": 0, "item": self._item(False)}),
            ("response.content_part.added", {**ids, "part": part}),
        ]
        raw += [("response.output_text.delta", {**ids, "delta": p, "logprobs": []}) for p in self.pieces]
        raw += [
            ("response.output_text.done", {**ids, "text": self.text, "logprobs": []}),
            ("response.content_part.done", {**ids, "part": {**part, "text": self.text}}),
            ("response.output_item.done", {"output_index": 0, "item": self._item(True)}),
            ("response.completed", {"response": self._response(done=True)}),
        ]
        return [(kind, {"type": kind, "sequence_number": n, **data}) for n, (kind, data) in enumerate(raw)]

    # Anthropic messages

    def _usage(self, output: int) -> dict[str, Any]:
        return {
            "input_tokens": self.prompt,
            "output_tokens": output,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "standard",
        }

    def _message(self) -> dict[str, Any]:
        return {
            "id": f"msg_fidelity{self.step:04d}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [{"type": "text", "text": self.text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": self._usage(len(self.pieces)),
        }

    def _message_events(self) -> list[tuple[str | None, Any]]:
        start = {**self._message(), "content": [], "stop_reason": None, "usage": self._usage(1)}
        events: list[tuple[str | None, Any]] = [
            ("message_start", {"type": "message_start", "message": start}),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
            ("ping", {"type": "ping"}),
        ]
        for piece in self.pieces:
            delta = {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            }
            events.append(("content_block_delta", delta))
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": len(self.pieces)},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        return events


# -- errors ------------------------------------------------------------------------

_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid value for 'messages': the conversation is empty."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: sk-fid***."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country not supported."),
    404: ("invalid_request_error", "model_not_found", "The model `gpt-none` does not exist."),
    408: ("invalid_request_error", None, "Request timed out."),
    409: ("invalid_request_error", None, "Another request is using this resource."),
    422: ("invalid_request_error", None, "Unprocessable Entity."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for gpt-4o-mini in organization org-fidelity on requests per min (RPM): "
        "Limit 3, Used 3, Requested 1. Please try again in 20s.",
    ),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}
_ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "messages: at least one message is required"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: claude-none"),
    408: ("timeout_error", "Request timed out."),
    409: ("invalid_request_error", "Conflict."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    422: ("invalid_request_error", "Unprocessable Entity."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service unavailable"),
    529: ("overloaded_error", "Overloaded"),
}


def _error_body(anthropic: bool, status: int, message: str | None, code: str | None, rid: str) -> Any:
    if anthropic:
        kind, text = _ANTHROPIC_ERRORS.get(status, ("api_error", f"Error {status}"))
        return {
            "type": "error",
            "error": {"type": code or kind, "message": message or text},
            "request_id": rid,
        }
    kind, default_code, text = _OPENAI_ERRORS.get(status, ("server_error", None, "The server had an error."))
    return {"error": {"message": message or text, "type": kind, "param": None, "code": code or default_code}}


def _strict_error(anthropic: bool, name: str, rid: str) -> Any:
    if anthropic:
        return _error_body(True, 400, f"{name}: Extra inputs are not permitted", None, rid)
    # Azure OpenAI's (and many OpenAI-compatible servers') answer to an unknown field.
    message = f"Unrecognized request argument supplied: {name}"
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}


# -- encoding ------------------------------------------------------------------------

_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: gzip.compress(data, mtime=0),
    "deflate": zlib.compress,  # HTTP "deflate" is the zlib format (RFC 9110 §8.4.1.2)
    "br": brotli.compress,
    "zstd": zstd.compress,
}


def _accepts(header: str | None, coding: str) -> bool:
    for item in (header or "").split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() == coding:
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


@dataclass(slots=True)
class _Modes:
    compression: Compression | None = None
    json_style: JsonStyle = "compact"
    sse_newline: str = "\n"
    strict: bool = False
    strict_status: int = 400

    def dumps(self, data: Any) -> bytes:
        if self.json_style == "spaced":
            return json.dumps(data).encode()
        return json.dumps(data, separators=(",", ":")).encode()

    def sse(self, event: str | None, data: Any) -> bytes:
        payload = data if isinstance(data, str) else self.dumps(data).decode()
        lines = ([f"event: {event}"] if event else []) + [f"data: {payload}"]
        nl = self.sse_newline
        return (nl.join(lines) + nl + nl).encode()


@dataclass(slots=True)
class _Script:
    steps: list[Step] = field(default_factory=list)
    default: Step = field(default_factory=Step.answer)
    taken: int = 0

    def next(self) -> tuple[int, Step]:
        number = self.taken
        self.taken += 1
        return number, (self.steps.pop(0) if self.steps else self.default)


# -- the server ------------------------------------------------------------------------


class _Abort(Exception):
    """The case is over (reset or stop) or the client went away: drop the connection."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and events go out when written, as from a real API
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the recorded requests are the log."""

    def do_GET(self) -> None:
        self.server.owner._serve(self)

    def do_POST(self) -> None:
        self.server.owner._serve(self)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: FidelityServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a reset, a closed stream) is part of the game; anything else is not."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class FidelityServer:
    """The scripted API server; a context manager that starts and stops it.

    ``openai_base_url`` and ``anthropic_base_url`` are what the SDK clients take.
    Thread-safe: handlers run on their own threads and record under one lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._script = _Script()
        self._modes = _Modes()
        self._cancel = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> None:
        """Listen on a free port of 127.0.0.1 and serve from a thread."""
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fidelity-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """End every answer in progress, close every connection and stop listening."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        with self._lock:
            self._cancel.set()
        self._close_connections()
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port it listens on."""
        assert self._httpd is not None, "the server is not started"
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """What ``openai.OpenAI(base_url=...)`` takes."""
        return self.base_url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """What ``anthropic.Anthropic(base_url=...)`` takes."""
        return self.base_url

    # -- the case

    def reset(
        self,
        script: list[Step] | tuple[Step, ...] = (),
        *,
        default: Step | None = None,
        compression: Compression | None = None,
        json_style: JsonStyle = "compact",
        sse_newline: Literal["\n", "\r\n"] = "\n",
        strict: bool = False,
        strict_status: int = 400,
    ) -> None:
        """Start a new case: end stalled answers and idle connections, forget requests, load a script.

        Args:
            script: The steps, one per request in arrival order.
            default: The step of every request after the script (a 200 answer).
            compression: Compress JSON bodies with this coding when the client accepts it.
            json_style: ``"compact"`` or ``"spaced"`` JSON.
            sse_newline: Line ending of stream events.
            strict: Reject unknown request fields before taking a step.
            strict_status: The status of that rejection (400, or 422 as some servers answer).
        """
        with self._lock:
            self._cancel.set()  # stalled and delayed answers of the last case end now
            self._cancel = threading.Event()
            self._requests = []
            self._script = _Script(list(script), default or Step.answer())
            self._modes = _Modes(compression, json_style, sse_newline, strict, strict_status)
        # Connections left from the last case (keep-alive, or a handler that stalled) go
        # too: each case starts with the same (empty) pool on both sides.
        self._close_connections()

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received since the last reset, in arrival order."""
        with self._lock:
            return list(self._requests)

    # -- internals

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _close_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _serve(self, h: _Handler) -> None:
        try:
            self._answer(h)
        except (_Abort, OSError):
            h.close_connection = True

    def _answer(self, h: _Handler) -> None:
        url = urlsplit(h.path)
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = tuple((k.lower(), v) for k, v in h.headers.items())
        endpoint = _endpoint(url.path)
        anthropic = endpoint == "messages" or any(k == "anthropic-version" for k, _ in headers)
        with self._lock:
            cancel, modes = self._cancel, self._modes
            unknown = self._unknown_field(endpoint, body) if modes.strict else None
            number, step = (None, None) if unknown is not None else self._script.next()
            index = len(self._requests)
            rid = f"req_fidelity{number:04d}" if number is not None else f"req_fidelity_strict{index:04d}"
            if unknown is not None:
                status: int | None = modes.strict_status
                answer: bytes = modes.dumps(_strict_error(anthropic, unknown, rid))
            else:
                assert step is not None
                assert number is not None
                status, answer = self._plan(step, number, endpoint, anthropic, body, rid, modes)
            record = RecordedRequest(
                h.command, url.path, url.query, headers, raw, body, number, status, answer
            )
            self._requests.append(record)
        common = self._headers(anthropic, rid)
        if unknown is not None:
            self._send_json(h, modes, status or 400, common, answer)
            return
        assert step is not None
        assert number is not None
        self._perform(h, step, number, endpoint, body, common, answer, cancel, modes)

    def _unknown_field(self, endpoint: str, body: Any) -> str | None:
        known = _KNOWN_FIELDS.get(endpoint)
        if known is None or not isinstance(body, dict):
            return None
        return next((name for name in body if name not in known), None)

    @staticmethod
    def _plan(
        step: Step, number: int, endpoint: str, anthropic: bool, body: Any, rid: str, modes: _Modes
    ) -> tuple[int | None, bytes]:
        """The status and (uncompressed) body this step will answer, for the record."""
        if step.kind == "reset":
            return None, b""
        if step.kind == "error":
            return step.status, modes.dumps(_error_body(anthropic, step.status, step.message, step.code, rid))
        streamed = isinstance(body, dict) and body.get("stream") is True
        if step.kind == "stall" or streamed:
            return 200, b""
        full = modes.dumps(_Answer(endpoint, number, body or {}, _words(step.words, number)).json())
        if step.kind == "malformed":
            return 200, full[: len(full) // 2]
        return 200, full

    @staticmethod
    def _headers(anthropic: bool, rid: str) -> list[tuple[str, str]]:
        if anthropic:
            return [
                ("request-id", rid),
                ("anthropic-organization-id", "00000000-0000-4000-8000-0000000f1de1"),
            ]
        return [
            ("x-request-id", rid),
            ("openai-organization", "org-fidelity"),
            ("openai-processing-ms", "7"),
            ("openai-version", "2020-10-01"),
        ]

    def _perform(
        self,
        h: _Handler,
        step: Step,
        number: int,
        endpoint: str,
        body: Any,
        headers: list[tuple[str, str]],
        answer: bytes,
        cancel: threading.Event,
        modes: _Modes,
    ) -> None:
        if step.kind == "reset":
            self._rst(h)
            return
        if step.delay_s and cancel.wait(step.delay_s):
            raise _Abort
        streamed = isinstance(body, dict) and body.get("stream") is True
        if step.kind == "error":
            self._send_json(h, modes, step.status, headers + list(step.headers), answer)
        elif streamed:
            events = _Answer(endpoint, number, body, _words(step.words, number)).events()
            if step.kind == "malformed":
                event, data = events[0]
                encoded = data if isinstance(data, str) else modes.dumps(data).decode()
                events = [(event, encoded[: len(encoded) // 2]), *events[1:]]
            stop_after = step.after_events if step.kind == "stall" else None
            self._send_stream(h, modes, headers, events, step.gap_s, stop_after, cancel)
        elif step.kind == "stall":
            head = self._head(
                200, [*headers, ("content-type", "application/json"), ("content-length", "400")]
            )
            h.wfile.write(head)
            self._stall(cancel)
        else:
            self._send_json(h, modes, 200, headers, answer)

    @staticmethod
    def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
        lines += [f"{k}: {v}" for k, v in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send_json(
        self, h: _Handler, modes: _Modes, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        out = [*headers, ("content-type", "application/json")]
        coding = modes.compression
        if coding is not None and _accepts(h.headers.get("accept-encoding"), coding):
            body = _COMPRESSORS[coding](body)
            out.append(("content-encoding", coding))
        out.append(("content-length", str(len(body))))
        h.wfile.write(self._head(status, out) + body)

    def _send_stream(
        self,
        h: _Handler,
        modes: _Modes,
        headers: list[tuple[str, str]],
        events: list[tuple[str | None, Any]],
        gap_s: float,
        stop_after: int | None,
        cancel: threading.Event,
    ) -> None:
        out = [
            *headers,
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
            ("transfer-encoding", "chunked"),
        ]
        h.wfile.write(self._head(200, out))
        for n, (event, data) in enumerate(events):
            if stop_after is not None and n >= stop_after:
                self._stall(cancel)
                return
            if n and gap_s and cancel.wait(gap_s):
                raise _Abort
            payload = modes.sse(event, data)
            h.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")

    @staticmethod
    def _stall(cancel: threading.Event) -> None:
        cancel.wait(_STALL_LIMIT_S)
        raise _Abort

    @staticmethod
    def _rst(h: _Handler) -> None:
        conn = h.connection
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.rfile.close()  # the socket closes only when its last file object does
        conn.close()
        raise _Abort
