"""Fidelity: with default settings, a wrapped client answers as the bare SDK does, after the same requests.

Every case runs twice on the same scripted server (`fidelity_server.py`, not
llmpulse's fake provider): once with the bare client, once with
``llmpulse.wrap(bare, sinks=[CapturingSink()])``, the script reset in between.
Each run is reduced to an `Observation`: what the caller got from each call
(``model_dump()`` of the result, the chunks of a stream and its final usage, or
the exception's class, ``status_code``, ``str()`` and ``body``), every request
the server saw (method, path, query, JSON body and the headers outside
`IGNORED_HEADERS`), ``retries_taken`` where the case uses ``with_raw_response``,
and, where the case records them, the timeouts handed to the user's transport.
Bare and wrapped must be equal but for the differences in `ALLOWED_DIFFERENCES`,
and the wrapped run must emit exactly one ``CallEvent`` per logical call.

The SDKs' backoff and llmpulse's are scaled down (`_fast_backoff`): the
comparison is of outcomes and requests, not of timing. Cases about slow answers
run in compressed time (`compressed`): server delays, the user's timeouts and
llmpulse's default deadlines all shrink by the same factor.

``FIDELITY_SCHEDULES`` (default 500) sets the number of random schedules,
``FIDELITY_SEED`` replays one, ``FIDELITY_TIME_SCALE`` sets the compression.
(A wrapped stream still open at interpreter exit is tested elsewhere.)
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import json
import os
import random
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import anthropic
import anthropic._base_client
import httpx2
import openai
import openai._base_client
import pytest

import llmpulse
from fidelity_server import FidelityServer, RecordedRequest, Step
from llmpulse._config import get_settings
from llmpulse.testing import CapturingSink

# -- what may differ ---------------------------------------------------------------------

IGNORED_HEADERS = frozenset({"content-length"})
"""Request headers left out of the comparison, each for a reason.

- ``content-length`` follows the body, which is compared as JSON (and differs
  by allowance (a) below).

Nothing else: the SDKs send no per-run header (no idempotency key, no
timestamps; ``x-stainless-read-timeout`` / ``x-stainless-timeout`` are the
user's timeout and ``x-stainless-retry-count`` the attempt number, both of
which must match).
"""

ALLOWED_DIFFERENCES = (
    "(a) On the wire, llmpulse may add stream_options.include_usage=true to an OpenAI chat stream "
    "(POST .../chat/completions with stream=true) whose caller did not ask for usage; what the "
    "caller gets from the stream must still be identical, chunk by chunk (model_dump()). The "
    '"usage": null that OpenAI then adds to every chunk shows only in dumps of the fields set '
    "(to_dict(), to_json(), model_dump(exclude_unset=True)), which are therefore not compared.",
    "(b) Once per endpoint (method and path), when the server answers that request with a 400 or "
    "422 whose body names stream_options, llmpulse may send one extra request: the same request "
    "with the same headers (the same x-stainless-retry-count: not a retry) without the added field. "
    "After it, requests to that endpoint must be the bare ones exactly (allowance (a) no longer holds).",
    "(c) A stream event the server sends garbled is garbled elsewhere when the request differs by (a) "
    '(every chunk then carries "usage": null), so of a json.JSONDecodeError raised while iterating a '
    "stream only the class is compared, not the position in its message.",
)
"""The only differences between a bare and a wrapped run; `wire_differences` implements them."""

# -- time ------------------------------------------------------------------------------

SDK_BACKOFF_S = (0.002, 0.01)
"""The SDKs' INITIAL_RETRY_DELAY and MAX_RETRY_DELAY in these tests (0.5 and 8 s by default)."""
LLMPULSE_BACKOFF_S = (0.002, 0.01)
"""llmpulse's ``backoff_base_s`` and ``backoff_max_s`` in these tests."""
TIME_SCALE = float(os.environ.get("FIDELITY_TIME_SCALE", "0.05"))
"""The factor of compressed time: a 25 s answer takes 1.25 s."""
LLMPULSE_DEADLINES = (
    "connect_timeout_s",
    "read_timeout_s",
    "read_timeout_per_token_s",
    "stream_first_byte_timeout_s",
    "stream_idle_timeout_s",
    "total_timeout_s",
)
"""llmpulse settings that are durations: compressed time scales whichever exist and are set."""

OPENAI_KEY = "sk-fidelity-openai-0123456789"
ANTHROPIC_KEY = "sk-ant-fidelity-0123456789"
MESSAGES = [{"role": "user", "content": "Say hello to the on-call engineer."}]
CODINGS = ("gzip", "deflate", "br", "zstd")

Kind = Literal["openai", "async_openai", "anthropic", "async_anthropic"]
KINDS: tuple[Kind, ...] = ("openai", "async_openai", "anthropic", "async_anthropic")
Op = Literal["chat", "chat_stream_helper", "responses", "messages", "messages_stream_helper"]


def _is_async(kind: Kind) -> bool:
    return kind.startswith("async_")


def _is_anthropic(kind: Kind) -> bool:
    return kind.endswith("anthropic")


# -- cases -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One logical call, written once for sync and async clients.

    Attributes:
        op: The SDK method: ``chat`` (``chat.completions.create``), ``responses``,
            ``messages`` (anthropic), or a streaming helper (``*_stream_helper``).
        stream: Pass ``stream=True`` (``create`` methods).
        raw: Call it through ``with_raw_response`` (observes ``retries_taken`` and headers).
        kwargs: More arguments (``timeout=``, ``max_tokens=``, ``stream_options=``).
    """

    op: Op = "chat"
    stream: bool = False
    raw: bool = False
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """A script, a client and the calls the user makes with it.

    Attributes:
        kind: Which SDK client class.
        calls: The logical calls, in order (one ``CallEvent`` each).
        script: The server's steps (then ``default``).
        default: The step after the script (a 200 answer).
        modes: Server modes (``compression``, ``json_style``, ``sse_newline``, ``strict``).
        client: Constructor arguments (``timeout``, ``max_retries``).
        prepare: User code between construction and the calls, without I/O (it may
            return another client, e.g. ``with_options(...)``).
        record_timeouts: Give the client ``http_client=httpx2.Client(transport=Recorder(...))``
            and compare the ``timeout`` extension of every attempt.
        note: What a failure report should say about the case besides its script.
    """

    kind: Kind
    calls: tuple[Call, ...] = (Call(),)
    script: tuple[Step, ...] = ()
    default: Step | None = None
    modes: Mapping[str, Any] = field(default_factory=dict)
    client: Mapping[str, Any] = field(default_factory=dict)
    prepare: Callable[[Any], Any] | None = None
    record_timeouts: bool = False
    note: str = ""


@dataclass(frozen=True)
class Observation:
    """What one run of a case showed; everything but ``elapsed_s`` and ``events`` is compared.

    Attributes:
        outcomes: Per call: ``{"result": ...}``, ``{"chunks": ...}`` or ``{"error": ...}``.
        requests: The requests the server saw.
        timeouts: The ``timeout`` extension of each attempt at the user's transport, if recorded.
        elapsed_s: Wall time of the calls.
        events: The wrapped run's CallEvents (empty for the bare run).
    """

    outcomes: tuple[Any, ...]
    requests: tuple[RecordedRequest, ...]
    timeouts: tuple[Mapping[str, Any], ...] | None
    elapsed_s: float
    events: tuple[Any, ...] = ()


# -- running a case ------------------------------------------------------------------------


class Recorder(httpx2.BaseTransport):
    """A transport inside the user's http client that notes the timeout of every request."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self.inner = inner
        self.timeouts: list[dict[str, Any]] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.timeouts.append(dict(request.extensions.get("timeout") or {}))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class AsyncRecorder(httpx2.AsyncBaseTransport):
    """Async twin of `Recorder`."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner = inner
        self.timeouts: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.timeouts.append(dict(request.extensions.get("timeout") or {}))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


_CLASSES: dict[Kind, type[Any]] = {
    "openai": openai.OpenAI,
    "async_openai": openai.AsyncOpenAI,
    "anthropic": anthropic.Anthropic,
    "async_anthropic": anthropic.AsyncAnthropic,
}


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def _build(server: FidelityServer, case: Case) -> tuple[Any, Recorder | AsyncRecorder | None]:
    kwargs: dict[str, Any] = {"_strict_response_validation": True, **case.client}
    if _is_anthropic(case.kind):
        kwargs |= {"api_key": ANTHROPIC_KEY, "base_url": server.anthropic_base_url}
    else:
        kwargs |= {"api_key": OPENAI_KEY, "base_url": server.openai_base_url}
    recorder: Recorder | AsyncRecorder | None = None
    if case.record_timeouts:
        # One SSL context for all (the server is plain HTTP): building one costs ~40 ms.
        if _is_async(case.kind):
            recorder = AsyncRecorder(httpx2.AsyncHTTPTransport(verify=_ssl_context()))
            kwargs["http_client"] = httpx2.AsyncClient(transport=recorder)
        else:
            recorder = Recorder(httpx2.HTTPTransport(verify=_ssl_context()))
            kwargs["http_client"] = httpx2.Client(transport=recorder)
    return _CLASSES[case.kind](**kwargs), recorder


def _args(call: Call) -> dict[str, Any]:
    if call.op in ("chat", "chat_stream_helper"):
        args: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES}
    elif call.op == "responses":
        args = {"model": "gpt-4o-mini", "input": "Say hello to the on-call engineer."}
    else:
        args = {"model": "claude-sonnet-4-5", "max_tokens": 256, "messages": MESSAGES}
    if call.stream:
        args["stream"] = True
    return args | dict(call.kwargs)


def _error(exc: BaseException, phase: str) -> dict[str, Any]:
    cause = exc.__cause__
    garbled_event = phase == "iterate" and isinstance(exc, json.JSONDecodeError)  # allowance (c)
    return {
        "phase": phase,
        "class": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "status_code": getattr(exc, "status_code", None),
        "str": "(a garbled event: see allowance (c))" if garbled_event else str(exc),
        "body": getattr(exc, "body", None),
        "cause": None if cause is None else f"{type(cause).__module__}.{type(cause).__qualname__}",
    }


def _dump(model: Any) -> Any:
    return None if model is None else model.model_dump()


def _value(result: Any) -> dict[str, Any]:
    return {"result": result.model_dump(), "request_id": getattr(result, "_request_id", None)}


def _raw(raw: Any, parsed: Any) -> dict[str, Any]:
    return {
        "status": raw.status_code,
        "headers": sorted(raw.headers.multi_items()),
        "retries_taken": raw.retries_taken,
        "result": parsed.model_dump(),
    }


def _resource(client: Any, op: Op) -> Any:
    if op in ("chat", "chat_stream_helper"):
        return client.chat.completions
    if op == "responses":
        return client.responses
    return client.messages


def _perform_sync(client: Any, call: Call) -> dict[str, Any]:
    resource, args = _resource(client, call.op), _args(call)
    chunks: list[Any] = []
    phase = "create"
    try:
        if call.op.endswith("_stream_helper"):
            with resource.stream(**args) as stream:
                phase = "iterate"
                chunks.extend(event.model_dump() for event in stream)
                final = (
                    stream.get_final_completion()
                    if call.op == "chat_stream_helper"
                    else stream.get_final_message()
                )
            return {"chunks": chunks, "final_usage": _dump(final.usage), "error": None}
        if call.raw:
            raw = resource.with_raw_response.create(**args)
            return _raw(raw, raw.parse())
        result = resource.create(**args)
        if not call.stream:
            return _value(result)
        phase = "iterate"
        with result:
            chunks.extend(chunk.model_dump() for chunk in result)
    except Exception as exc:  # noqa: BLE001 - what the caller gets is the observation
        if phase == "create":
            return {"error": _error(exc, phase)}
        return {"chunks": chunks, "error": _error(exc, phase)}
    return {"chunks": chunks, "error": None}


async def _perform_async(client: Any, call: Call) -> dict[str, Any]:
    resource, args = _resource(client, call.op), _args(call)
    chunks: list[Any] = []
    phase = "create"
    try:
        if call.op.endswith("_stream_helper"):
            async with resource.stream(**args) as stream:
                phase = "iterate"
                chunks.extend([event.model_dump() async for event in stream])
                final = await (
                    stream.get_final_completion()
                    if call.op == "chat_stream_helper"
                    else stream.get_final_message()
                )
            return {"chunks": chunks, "final_usage": _dump(final.usage), "error": None}
        if call.raw:
            raw = await resource.with_raw_response.create(**args)
            return _raw(raw, await raw.parse())
        result = await resource.create(**args)
        if not call.stream:
            return _value(result)
        phase = "iterate"
        async with result:
            async for chunk in result:
                chunks.append(chunk.model_dump())
    except Exception as exc:  # noqa: BLE001 - what the caller gets is the observation
        if phase == "create":
            return {"error": _error(exc, phase)}
        return {"chunks": chunks, "error": _error(exc, phase)}
    return {"chunks": chunks, "error": None}


def _prepared(client: Any, case: Case) -> Any:
    if case.prepare is None:
        return client
    result = case.prepare(client)
    return client if result is None else result


def observe(server: FidelityServer, case: Case, *, wrapped: bool) -> Observation:
    """Run ``case`` once, bare or wrapped, on a freshly reset server."""
    server.reset(case.script, default=case.default, **case.modes)
    llmpulse.testing.reset()  # fresh policy state (breakers, retry budgets) for every run
    sink = CapturingSink()
    client, recorder = _build(server, case)
    user_client = llmpulse.wrap(client, sinks=[sink]) if wrapped else client
    started = time.perf_counter()
    if _is_async(case.kind):

        async def run() -> list[dict[str, Any]]:
            try:
                target = _prepared(user_client, case)
                return [await _perform_async(target, call) for call in case.calls]
            finally:
                await client.close()

        outcomes = asyncio.run(run())
    else:
        try:
            target = _prepared(user_client, case)
            outcomes = [_perform_sync(target, call) for call in case.calls]
        finally:
            client.close()
    elapsed = time.perf_counter() - started
    return Observation(
        outcomes=tuple(outcomes),
        requests=tuple(server.requests),
        timeouts=None if recorder is None else tuple(recorder.timeouts),
        elapsed_s=elapsed,
        events=tuple(sink.calls) if wrapped else (),
    )


# -- comparing -------------------------------------------------------------------------------


def _wire(request: RecordedRequest) -> dict[str, Any]:
    return {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "body": request.json if request.json is not None else request.body,
        "headers": dict(sorted((k, v) for k, v in request.headers if k not in IGNORED_HEADERS)),
    }


def _with_usage(body: Any) -> Any:
    """``body`` as llmpulse may send it under allowance (a)."""
    if not isinstance(body, dict):
        return body
    options = body.get("stream_options")
    return {
        **body,
        "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True},
    }


def _usage_injectable(wire: Mapping[str, Any]) -> bool:
    body = wire["body"]
    return (
        wire["method"] == "POST"
        and wire["path"].endswith("/chat/completions")
        and isinstance(body, dict)
        and body.get("stream") is True
    )


def _rejects_stream_options(request: RecordedRequest) -> bool:
    return request.status in (400, 422) and b"stream_options" in request.answer


def _drop_resends(wrapped: tuple[RecordedRequest, ...]) -> tuple[list[int], list[int], set[int]]:
    """Allowance (b): indexes of wrapped requests kept, those dropped, and kept ones past a resend."""
    kept: list[int] = []
    dropped: list[int] = []
    strict_after: set[int] = set()  # kept requests to an endpoint that already had its resend
    resent: set[tuple[str, str]] = set()
    index = 0
    while index < len(wrapped):
        request, wire = wrapped[index], _wire(wrapped[index])
        endpoint = (request.method, request.path)
        following = _wire(wrapped[index + 1]) if index + 1 < len(wrapped) else None
        if (
            endpoint not in resent
            and _rejects_stream_options(request)
            and following is not None
            and _usage_injectable(following)
            and (following["method"], following["path"]) == endpoint
            and wire["headers"] == following["headers"]
            and wire["body"] == _with_usage(following["body"])
            and wire["body"] != following["body"]
        ):
            dropped.append(index)
            resent.add(endpoint)
            index += 1
            continue
        if endpoint in resent:
            strict_after.add(index)
        kept.append(index)
        index += 1
    return kept, dropped, strict_after


def _short(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, default=repr, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shape(outcome: Mapping[str, Any]) -> str:
    """An outcome in a few words: ``ok``, ``stream``, an exception class, or a stream then one."""
    error = outcome.get("error")
    name = None if error is None else error["class"].removeprefix("openai.").removeprefix("anthropic.")
    if "chunks" in outcome:
        return "stream" if name is None else f"stream then {name}"
    return "ok" if name is None else name


def _chunk_difference(bare: list[Any], wrapped: list[Any]) -> str:
    first = next((i for i, (b, w) in enumerate(zip(bare, wrapped, strict=False)) if b != w), None)
    first = min(len(bare), len(wrapped)) if first is None else first
    extra = wrapped[first] if first < len(wrapped) else None
    return f"wrapped {len(wrapped)} chunks != bare {len(bare)}; wrapped chunk {first + 1}: {_short(extra)}"


@dataclass(frozen=True)
class Problem:
    """One difference: ``kind`` groups the random schedules' failures, ``detail`` says what it is."""

    kind: str
    detail: str


def wire_differences(bare: Observation, wrapped: Observation) -> list[Problem]:
    """How the wrapped run's requests (and transport timeouts) differ, beyond `ALLOWED_DIFFERENCES`."""
    kept, dropped, strict_after = _drop_resends(wrapped.requests)
    problems: list[Problem] = []
    if len(kept) != len(bare.requests):
        kind = "more requests" if len(kept) > len(bare.requests) else "fewer requests"
        resend = f" ({len(dropped)} allowed resend)" if dropped else ""
        problems.append(
            Problem(
                kind, f"requests: bare sent {len(bare.requests)}, wrapped {len(wrapped.requests)}{resend}"
            )
        )
    for n, (b, w_index) in enumerate(zip(bare.requests, kept, strict=False), start=1):
        want, got = _wire(b), _wire(wrapped.requests[w_index])
        if got["body"] != want["body"] and not (
            w_index not in strict_after
            and _usage_injectable(want)
            and got["body"] == _with_usage(want["body"])
        ):
            problems.append(
                Problem(
                    "request body", f"request {n}: body {_short(got['body'])} != bare {_short(want['body'])}"
                )
            )
        for name in ("method", "path", "query"):
            if got[name] != want[name]:
                problems.append(
                    Problem(f"request {name}", f"request {n}: {name} {got[name]!r} != bare {want[name]!r}")
                )
        for name in sorted(set(got["headers"]) | set(want["headers"])):
            if got["headers"].get(name) != want["headers"].get(name):
                theirs, ours = want["headers"].get(name), got["headers"].get(name)
                detail = f"request {n}: header {name} {ours!r} != bare {theirs!r}"
                problems.append(Problem(f"request header {name}", detail))
    if bare.timeouts is not None and wrapped.timeouts is not None:
        timeouts = [t for i, t in enumerate(wrapped.timeouts) if i not in dropped]
        if timeouts != list(bare.timeouts):
            problems.append(
                Problem(
                    "transport timeouts",
                    f"transport timeouts: wrapped {timeouts} != bare {list(bare.timeouts)}",
                )
            )
    return problems


def differences(bare: Observation, wrapped: Observation, calls: int) -> list[Problem]:
    """Every difference between a bare and a wrapped run that `ALLOWED_DIFFERENCES` does not allow."""
    problems: list[Problem] = []
    for n, (b, w) in enumerate(zip(bare.outcomes, wrapped.outcomes, strict=True), start=1):
        if b == w:
            continue
        same_shape = _shape(b) == _shape(w)
        for key in sorted(set(b) | set(w)):
            if b.get(key) != w.get(key):
                kind = f"outcome {key}" if same_shape else f"outcome: bare {_shape(b)}, wrapped {_shape(w)}"
                detail = f"call {n}: {key}: wrapped {_short(w.get(key))} != bare {_short(b.get(key))}"
                if key == "chunks" and isinstance(b.get(key), list) and isinstance(w.get(key), list):
                    detail = f"call {n}: {_chunk_difference(b[key], w[key])}"
                problems.append(Problem(kind, detail))
    problems += wire_differences(bare, wrapped)
    if len(wrapped.events) != calls:
        kind = f"{len(wrapped.events)} CallEvents for {calls} call(s)"
        problems.append(Problem(kind, f"events: {kind}"))
    return problems


@dataclass(frozen=True)
class Comparison:
    """A case's two runs and what differs between them."""

    bare: Observation
    wrapped: Observation
    problems: list[Problem]

    def report(self) -> str:
        """The two runs in a line each, then every difference."""
        lines = [
            f"bare: {[_shape(o) for o in self.bare.outcomes]}, {len(self.bare.requests)} request(s), "
            f"{self.bare.elapsed_s:.2f} s",
            f"wrapped: {[_shape(o) for o in self.wrapped.outcomes]}, "
            f"{len(self.wrapped.requests)} request(s), {self.wrapped.elapsed_s:.2f} s, "
            f"{len(self.wrapped.events)} CallEvent(s)",
        ]
        return "\n".join(lines + [p.detail for p in self.problems])


def compare(server: FidelityServer, case: Case) -> Comparison:
    """Run ``case`` bare, then wrapped, and list what differs."""
    bare = observe(server, case, wrapped=False)
    wrapped = observe(server, case, wrapped=True)
    return Comparison(bare, wrapped, differences(bare, wrapped, len(case.calls)))


def assert_fidelity(
    server: FidelityServer, case: Case, check: Callable[[Comparison], list[str]] | None = None
) -> Comparison:
    """Compare and fail with the full report unless the runs agree and ``check`` finds nothing."""
    comparison = compare(server, case)
    more = [] if check is None else check(comparison)
    if comparison.problems or more:
        pytest.fail("wrapped differs from bare:\n" + "\n".join([comparison.report(), *more]))
    return comparison


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(name="server", scope="module")
def _server() -> Iterator[FidelityServer]:
    with FidelityServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Both runs of a case sleep less between retries; neither sleeps differently.
    for module in (openai._base_client, anthropic._base_client):
        monkeypatch.setattr(module, "INITIAL_RETRY_DELAY", SDK_BACKOFF_S[0])
        monkeypatch.setattr(module, "MAX_RETRY_DELAY", SDK_BACKOFF_S[1])
    before = get_settings()
    backoff = {"backoff_base_s": LLMPULSE_BACKOFF_S[0], "backoff_max_s": LLMPULSE_BACKOFF_S[1]}
    # Only the settings llmpulse still has: a fix that leaves retries to the SDK may drop them.
    llmpulse.configure(before, **{k: v for k, v in backoff.items() if hasattr(before, k)})
    yield
    llmpulse.configure(before)
    llmpulse.testing.reset()


@pytest.fixture(name="compressed")
def _compressed() -> Iterator[float]:
    """Compressed time: llmpulse's default deadlines shrink by `TIME_SCALE`; the test scales the rest."""
    settings = get_settings()
    scaled = {
        name: getattr(settings, name) * TIME_SCALE
        for name in LLMPULSE_DEADLINES
        if isinstance(getattr(settings, name, None), int | float)
    }
    llmpulse.configure(settings, **scaled)
    yield TIME_SCALE
    llmpulse.configure(settings)


T = TIME_SCALE

# == the table: what users do that wrapped clients get wrong today ==================================


@pytest.mark.parametrize(
    ("kind", "words"),
    [("openai", 1), ("openai", 5000), ("anthropic", 1), ("anthropic", 5000)],
    ids=["openai-small", "openai-large", "anthropic-small", "anthropic-large"],
)
def test_gzip_json_answer_is_the_answer(server: FidelityServer, kind: Kind, words: int) -> None:
    """A non-streamed JSON answer sent with Content-Encoding: gzip, small or large, is the answer."""
    op: Op = "messages" if _is_anthropic(kind) else "chat"
    case = Case(kind, (Call(op),), (Step.answer(words=words),), modes={"compression": "gzip"})
    comparison = assert_fidelity(server, case)
    [request] = comparison.bare.requests
    assert (len(request.answer) < 700) == (words == 1)  # small really is a few hundred bytes


@pytest.mark.parametrize("client", [{}, {"timeout": 120 * T}], ids=["OpenAI()", "OpenAI(timeout=120)"])
def test_slow_answer_within_the_users_timeout(
    server: FidelityServer, compressed: float, client: dict[str, Any]
) -> None:
    """Every answer after 25 s (no max_tokens), within the user's timeout: one request and the answer."""
    case = Case("openai", default=Step.answer(delay_s=25 * compressed), client=client)
    comparison = assert_fidelity(server, case)
    assert len(comparison.bare.requests) == 1


def test_anthropic_long_answer_within_the_users_timeout(server: FidelityServer, compressed: float) -> None:
    """Anthropic(timeout=90), max_tokens=1024, every answer after 30 s: one request and the answer."""
    case = Case(
        "anthropic",
        (Call("messages", kwargs={"max_tokens": 1024}),),
        default=Step.answer(delay_s=30 * compressed),
        client={"timeout": 90 * compressed},
    )
    comparison = assert_fidelity(server, case)
    assert len(comparison.bare.requests) == 1


@pytest.mark.parametrize(("kind", "op"), [("openai", "chat"), ("anthropic", "messages")])
def test_stream_whose_headers_come_late(
    server: FidelityServer, compressed: float, kind: Kind, op: Op
) -> None:
    """A stream whose headers come after 12 s (every time) is the stream, after one request."""
    case = Case(kind, (Call(op, stream=True),), default=Step.answer(delay_s=12 * compressed))
    comparison = assert_fidelity(server, case)
    assert len(comparison.bare.requests) == 1


@pytest.mark.parametrize("kind", ["openai", "async_openai"])
def test_timed_out_attempt_is_retried_like_the_sdk(server: FidelityServer, kind: Kind) -> None:
    """OpenAI(timeout=0.25, max_retries=2): a 0.6 s first answer times out, the fast retry succeeds."""
    case = Case(kind, script=(Step.answer(delay_s=0.6),), client={"timeout": 0.25, "max_retries": 2})
    comparison = assert_fidelity(server, case)
    assert len(comparison.bare.requests) == 2
    assert "result" in comparison.bare.outcomes[0]


@pytest.mark.parametrize("kind", KINDS)
def test_2xx_body_that_is_not_json(server: FidelityServer, kind: Kind) -> None:
    """A 200 whose JSON body is cut raises the SDK's json.JSONDecodeError (a ValueError), unretried."""
    op: Op = "messages" if _is_anthropic(kind) else "chat"
    comparison = assert_fidelity(server, Case(kind, (Call(op),), (Step.malformed(),)))
    assert comparison.bare.outcomes[0]["error"]["class"] == "json.decoder.JSONDecodeError"


@pytest.mark.parametrize("kind", ["openai", "async_openai"])
def test_stream_from_a_server_writing_spaced_json(server: FidelityServer, kind: Kind) -> None:
    """Chunks written as '"choices": []' (Python's json.dumps) reach the caller as sent; TTFT is measured."""

    def ttft(comparison: Comparison) -> list[str]:
        return [
            f"CallEvent without ttft_s: {e.call_id}" for e in comparison.wrapped.events if e.ttft_s is None
        ]

    case = Case(kind, (Call(stream=True),), modes={"json_style": "spaced"})
    comparison = assert_fidelity(server, case, ttft)
    assert len(comparison.bare.outcomes[0]["chunks"]) == 8


@pytest.mark.parametrize(("kind", "status"), [("openai", 400), ("async_openai", 400), ("openai", 422)])
def test_stream_from_a_strict_server(server: FidelityServer, kind: Kind, status: int) -> None:
    """A server rejecting unknown fields (400, or 422) streams as for the bare SDK, first call and next."""
    case = Case(kind, (Call(stream=True), Call(stream=True)), modes={"strict": True, "strict_status": status})
    comparison = assert_fidelity(server, case)
    assert all(o["error"] is None for o in comparison.bare.outcomes)


@pytest.mark.parametrize("kind", KINDS)
def test_max_retries_assigned_on_a_wrapped_client(server: FidelityServer, kind: Kind) -> None:
    """``client.max_retries = 2`` on a wrapped client (as LiteLLM does): a failing call is 3 requests."""

    def assign(client: Any) -> None:
        client.max_retries = 2

    op: Op = "messages" if _is_anthropic(kind) else "chat"
    case = Case(kind, (Call(op),), default=Step.error(500), prepare=assign)
    comparison = assert_fidelity(server, case)
    assert len(comparison.bare.requests) == 3


# == timeouts handed to the transport, copies and options ==========================================


@pytest.mark.parametrize("kind", ["openai", "async_openai"])
def test_users_short_timeout_reaches_the_transport(server: FidelityServer, kind: Kind) -> None:
    """OpenAI(timeout=1, max_retries=0) on a slower server: one request, APITimeoutError, the user's 1 s."""
    case = Case(
        kind,
        script=(Step.answer(delay_s=3),),
        client={"timeout": 1, "max_retries": 0},
        record_timeouts=True,
    )
    comparison = assert_fidelity(server, case)
    assert comparison.bare.timeouts == ({"connect": 1, "read": 1, "write": 1, "pool": 1},)
    assert comparison.bare.outcomes[0]["error"]["class"] == "openai.APITimeoutError"
    assert comparison.wrapped.elapsed_s < 3  # a loose guard: the comparison is of outcomes


@pytest.mark.parametrize("kind", KINDS)
def test_with_options_max_retries(server: FidelityServer, kind: Kind) -> None:
    """``with_options(max_retries=1)`` makes a failing call two requests, as without llmpulse."""
    op: Op = "messages" if _is_anthropic(kind) else "chat"
    case = Case(
        kind,
        (Call(op),),
        default=Step.error(503, retry_after_ms=1),
        prepare=lambda c: c.with_options(max_retries=1),
    )
    comparison = assert_fidelity(server, case)
    assert len(comparison.bare.requests) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_copy_with_another_api_key(server: FidelityServer, kind: Kind) -> None:
    """``copy(api_key=...)`` sends the new key, and the event names the new key's fingerprint."""
    key = "sk-fidelity-another-key-42"
    fingerprint = "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]

    def key_id(comparison: Comparison) -> list[str]:
        ids = [e.api_key_id for e in comparison.wrapped.events]
        return (
            [] if ids == [fingerprint] else [f"CallEvent api_key_id {ids} != [{fingerprint!r}] (the new key)"]
        )

    op: Op = "messages" if _is_anthropic(kind) else "chat"
    case = Case(kind, (Call(op),), prepare=lambda c: c.copy(api_key=key))
    comparison = assert_fidelity(server, case, key_id)
    assert comparison.bare.requests[0].header("authorization") == f"Bearer {key}"


@pytest.mark.parametrize("kind", ["openai", "async_openai", "anthropic"])
def test_per_call_timeout(server: FidelityServer, kind: Kind) -> None:
    """A per-call ``timeout=0.2`` times out a stalled attempt, and the SDK's one retry succeeds."""
    op: Op = "messages" if _is_anthropic(kind) else "chat"
    case = Case(
        kind,
        (Call(op, kwargs={"timeout": 0.2}),),
        (Step.hang(),),
        client={"max_retries": 1},
        record_timeouts=True,
    )
    comparison = assert_fidelity(server, case)
    assert len(comparison.bare.requests) == 2
    assert "result" in comparison.bare.outcomes[0]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_timeout_per_phase(server: FidelityServer, kind: Kind) -> None:
    """An ``httpx2.Timeout`` with its own connect, read, write and pool reaches the transport as it is."""
    timeout = httpx2.Timeout(connect=2.0, read=0.2, write=3.0, pool=4.0)
    op: Op = "messages" if _is_anthropic(kind) else "chat"
    case = Case(
        kind,
        (Call(op),),
        (Step.stall(),),
        client={"timeout": timeout, "max_retries": 1},
        record_timeouts=True,
    )
    comparison = assert_fidelity(server, case)
    assert comparison.bare.timeouts == ({"connect": 2.0, "read": 0.2, "write": 3.0, "pool": 4.0},) * 2


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_raw_response_counts_the_sdks_retries(server: FidelityServer, kind: Kind) -> None:
    """``with_raw_response`` after a 429 and a 500 says ``retries_taken == 2``, with the answer's headers."""
    op: Op = "messages" if _is_anthropic(kind) else "chat"
    case = Case(kind, (Call(op, raw=True),), (Step.error(429, retry_after_ms=2), Step.error(500)))
    comparison = assert_fidelity(server, case)
    assert comparison.bare.outcomes[0]["retries_taken"] == 2


# == server modes: compression and JSON formatting ===================================================


@pytest.mark.parametrize("coding", CODINGS)
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_compressed_answer(server: FidelityServer, kind: Kind, coding: str) -> None:
    """Each Content-Encoding the client accepts (gzip, deflate, br, zstd) gives the same answer and errors."""
    op: Op = "messages" if _is_anthropic(kind) else "chat"
    case = Case(
        kind,
        (Call(op), Call(op, raw=True), Call("responses" if op == "chat" else op)),
        (Step.answer(), Step.error(429, retry_after_ms=1)),
        modes={"compression": coding},
    )
    comparison = assert_fidelity(server, case)
    assert comparison.bare.requests[0].header("accept-encoding") == "gzip, deflate, br, zstd"


FORMATS = {
    "compact": {},
    "spaced": {"json_style": "spaced"},
    "crlf": {"sse_newline": "\r\n"},
    "spaced-crlf": {"json_style": "spaced", "sse_newline": "\r\n"},
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("kind", "call"),
    [
        ("openai", Call()),
        ("openai", Call(stream=True)),
        ("async_openai", Call("chat_stream_helper")),
        ("openai", Call("responses", stream=True)),
        ("anthropic", Call("messages", stream=True)),
        ("async_anthropic", Call("messages_stream_helper")),
    ],
    ids=["chat", "chat-stream", "chat-helper", "responses-stream", "messages-stream", "messages-helper"],
)
def test_json_formatting(server: FidelityServer, fmt: str, kind: Kind, call: Call) -> None:
    """Compact JSON, spaced JSON and CRLF events give the same answer, chunk for chunk."""
    assert_fidelity(server, Case(kind, (call,), modes=FORMATS[fmt]))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["openai", "async_openai"])
def test_stream_reaches_the_caller_event_by_event(server: FidelityServer, kind: Kind, fmt: str) -> None:
    """A chat stream that stalls after three events has given the caller three chunks (nothing held back)."""
    script = (Step.stall(after_events=3),)
    case = Case(kind, (Call(stream=True),), script, modes=FORMATS[fmt], client={"timeout": 0.2})
    comparison = assert_fidelity(server, case)
    assert len(comparison.bare.outcomes[0]["chunks"]) == 3


# == the ordinary paths (these hold today: they show the harness is not the problem) ================


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_plain_call(server: FidelityServer, kind: Kind, stream: bool) -> None:
    """A plain call and a plain stream answer the same bare and wrapped."""
    op: Op = "messages" if _is_anthropic(kind) else "chat"
    assert_fidelity(server, Case(kind, (Call(op, stream=stream),)))


@pytest.mark.parametrize("kind", ["openai", "async_openai"])
def test_stream_that_asked_for_usage_keeps_its_usage_chunk(server: FidelityServer, kind: Kind) -> None:
    """A caller who asked for include_usage gets the usage-only chunk, bare and wrapped."""
    call = Call(stream=True, kwargs={"stream_options": {"include_usage": True}})
    comparison = assert_fidelity(server, Case(kind, (call,)))
    assert comparison.bare.outcomes[0]["chunks"][-1]["choices"] == []


@pytest.mark.parametrize("kind", KINDS)
def test_retried_failures_then_the_answer(server: FidelityServer, kind: Kind) -> None:
    """A 429, a 500 and a reset before headers are retried by the SDK; the fourth request answers."""
    op: Op = "messages" if _is_anthropic(kind) else "chat"
    script = (Step.error(429, retry_after_ms=3), Step.error(500), Step.reset())
    comparison = assert_fidelity(server, Case(kind, (Call(op),), script, client={"max_retries": 3}))
    assert len(comparison.bare.requests) == 4


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_server_steers_retries(server: FidelityServer, kind: Kind) -> None:
    """x-should-retry: true retries a 400 and x-should-retry: false stops at a 500, as the SDK decides."""
    op: Op = "messages" if _is_anthropic(kind) else "chat"
    script = (Step.error(400, should_retry=True), Step.error(500, should_retry=False))
    comparison = assert_fidelity(server, Case(kind, (Call(op),), script))
    assert len(comparison.bare.requests) == 2


@pytest.mark.parametrize("kind", ["openai", "async_anthropic"])
def test_stream_stalls_after_some_events(server: FidelityServer, kind: Kind) -> None:
    """A stream that stalls after three events raises a timeout mid-stream, unretried."""
    op: Op = "messages" if _is_anthropic(kind) else "chat"
    case = Case(kind, (Call(op, stream=True),), (Step.stall(after_events=3),), client={"timeout": 0.2})
    comparison = assert_fidelity(server, case)
    outcome = comparison.bare.outcomes[0]
    # openai maps the read timeout to its APITimeoutError even mid-stream, anthropic lets httpx2's
    # through; anthropic's SDK swallows the ping event.
    expected = (2, "httpx2.ReadTimeout") if _is_anthropic(kind) else (3, "openai.APITimeoutError")
    assert (len(outcome["chunks"]), outcome["error"]["class"]) == expected
    assert len(comparison.bare.requests) == 1


# == the comparison itself ==========================================================================


def _recorded(body: Any, *, status: int = 200, answer: bytes = b"", retry: str = "0") -> RecordedRequest:
    headers = (("x-stainless-retry-count", retry), ("content-length", str(len(json.dumps(body)))))
    return RecordedRequest(
        "POST", "/v1/chat/completions", "", headers, json.dumps(body).encode(), body, 0, status, answer
    )


def _observed(*requests: RecordedRequest) -> Observation:
    return Observation(outcomes=(), requests=requests, timeouts=None, elapsed_s=0.0)


STREAM = {"model": "m", "messages": [], "stream": True}
REJECTION = b'{"error":{"message":"Unrecognized request argument supplied: stream_options"}}'


def test_comparison_allows_the_injected_usage_option_on_chat_streams_only() -> None:
    """Allowance (a) covers stream_options.include_usage on chat streams, not on other requests or fields."""
    bare = _observed(_recorded(STREAM))
    assert wire_differences(bare, _observed(_recorded(_with_usage(STREAM)))) == []
    not_streamed = {**STREAM, "stream": False}
    assert wire_differences(
        _observed(_recorded(not_streamed)), _observed(_recorded(_with_usage(not_streamed)))
    )
    assert wire_differences(
        bare, _observed(_recorded({**STREAM, "stream_options": {"include_usage": False}}))
    )
    assert wire_differences(bare, _observed(_recorded({**STREAM, "temperature": 0})))


def test_comparison_allows_one_resend_per_endpoint_after_a_rejection() -> None:
    """Allowance (b): one resend after a 400 naming stream_options; not a second one, not after other 400s."""
    bare = _observed(_recorded(STREAM), _recorded(STREAM))
    rejected = _recorded(_with_usage(STREAM), status=400, answer=REJECTION)
    assert wire_differences(bare, _observed(rejected, _recorded(STREAM), _recorded(STREAM))) == []
    # After the resend the endpoint's requests must be the bare ones: no field, no second resend.
    assert wire_differences(bare, _observed(rejected, _recorded(STREAM), _recorded(_with_usage(STREAM))))
    assert wire_differences(bare, _observed(rejected, _recorded(STREAM), rejected, _recorded(STREAM)))
    other = _recorded(_with_usage(STREAM), status=400, answer=b'{"error":{"message":"bad"}}')
    assert wire_differences(bare, _observed(other, _recorded(STREAM), _recorded(STREAM)))
    # A resend that counts as a retry (x-stainless-retry-count moves on) is not allowed either.
    assert wire_differences(bare, _observed(rejected, _recorded(STREAM, retry="1"), _recorded(STREAM)))


def test_comparison_reports_outcomes_and_events() -> None:
    """A different result, error or number of CallEvents is a difference."""
    ok = Observation(({"result": 1},), (), None, 0.0, events=("event",))
    assert differences(ok, ok, 1) == []
    assert differences(ok, replace(ok, outcomes=({"result": 2},)), 1)
    assert differences(ok, replace(ok, events=()), 1)
    assert differences(ok, replace(ok, events=("event", "event")), 1)


# == random schedules ================================================================================

SCHEDULES = int(os.environ.get("FIDELITY_SCHEDULES", "500"))
BASE_SEED = int(os.environ.get("FIDELITY_BASE_SEED", "20261201"))
REPLAY = os.environ.get("FIDELITY_SEED")
RANDOM_TIMEOUT_S = 0.15
"""The user's timeout in schedules that set one: 3x the slowest answer, far below a stall."""


def _random_step(rng: random.Random, *, streamed: bool, timeout: bool) -> Step:
    roll = rng.random()
    if roll < 0.30:
        delays = (0.0, 0.0, 0.005, 0.02) if timeout else (0.0, 0.005, 0.02, 0.05)
        gap = rng.choice((0.0, 0.0, 0.002, 0.01)) if streamed else 0.0
        return Step.answer(delay_s=rng.choice(delays), gap_s=gap, words=rng.choice((1, 6, 40)))
    if roll < 0.45:
        return Step.error(429, retry_after_ms=rng.choice((1, 3, 5)))
    if roll < 0.62:
        return Step.error(rng.choice((500, 503, 529, 408, 409)), retry_after_ms=rng.choice((None, 1)))
    if roll < 0.68:
        return Step.error(rng.choice((400, 404, 422)))
    if roll < 0.72:
        return rng.choice((Step.error(400, should_retry=True), Step.error(500, should_retry=False)))
    if roll < 0.82:
        return Step.reset()
    if roll < 0.87:
        return Step.malformed()
    if timeout:
        return rng.choice((Step.hang(), Step.stall(), Step.stall(after_events=rng.randint(1, 3))))
    return Step.answer()


def random_case(seed: int) -> Case:
    """A schedule: a client, server modes and a script, all drawn from ``seed``."""
    rng = random.Random(seed)
    kind = rng.choice(KINDS)
    op: Op = "messages" if _is_anthropic(kind) else rng.choice(("chat", "chat", "chat", "responses"))
    streamed = rng.random() < 0.4
    max_retries = rng.choice((0, 1, 2, 2, 3))
    timeout = rng.random() < 0.3
    steps = tuple(
        _random_step(rng, streamed=streamed, timeout=timeout) for _ in range(rng.randint(0, max_retries + 2))
    )
    modes = {
        "compression": rng.choice((None, None, *CODINGS)),
        "json_style": rng.choice(("compact", "spaced")),
        "sse_newline": rng.choice(("\n", "\n", "\r\n")),
        "strict": rng.random() < 0.15,
    }
    how = rng.choice(("constructor", "constructor", "constructor", "with_options", "assigned"))
    client: dict[str, Any] = {"timeout": RANDOM_TIMEOUT_S} if timeout else {}
    prepare: Callable[[Any], Any] | None = None
    if how == "constructor":
        client["max_retries"] = max_retries
    elif how == "with_options":
        prepare = lambda c: c.with_options(max_retries=max_retries)  # noqa: E731
    else:

        def prepare(c: Any) -> None:
            c.max_retries = max_retries

    set_modes = {k: v for k, v in modes.items() if v not in (None, False, "compact", "\n")}
    note = f"max_retries={max_retries} ({how}), timeout={client.get('timeout')}, modes={set_modes}"
    return Case(
        kind,
        (Call(op, stream=streamed),),
        steps,
        modes=modes,
        client=client,
        prepare=prepare,
        record_timeouts=True,
        note=note,
    )


@pytest.mark.timeout(300 + SCHEDULES // 5)  # make fidelity-long runs 5,000
def test_random_schedules(server: FidelityServer) -> None:
    """Seeded random schedules of failures, slow answers and server modes: wrapped answers as bare."""
    seeds = [int(REPLAY)] if REPLAY else [BASE_SEED + n for n in range(SCHEDULES)]
    failures: dict[int, Comparison] = {}
    blips: list[int] = []
    started = time.perf_counter()
    for seed in seeds:
        comparison = compare(server, random_case(seed))
        if comparison.problems:
            # The server is scripted, so a real difference comes back on a replay. One that
            # does not is this machine's load: a 0.15 s timeout that fired in one client only
            # (a bare client under load did so too). Two clean replays clear it; a blip rate
            # that is not rare still fails, so a flaky difference cannot hide behind it.
            if any(compare(server, random_case(seed)).problems for _ in range(2)):
                failures[seed] = comparison
            else:
                blips.append(seed)
    elapsed = time.perf_counter() - started
    assert len(blips) <= max(2, len(seeds) // 100), f"{len(blips)} schedules differed once, then not: {blips}"
    if not failures:
        return
    kinds = collections.Counter(kind for c in failures.values() for kind in {p.kind for p in c.problems})
    beyond = [seed for seed, c in failures.items() if any(p.kind != "transport timeouts" for p in c.problems)]
    lines = [
        f"{len(failures)} of {len(seeds)} schedules differ ({elapsed:.0f} s), {len(beyond)} in more than "
        f"the transport timeouts ({len(blips)} more differed once and not on replay); "
        "schedules showing each difference:"
    ]
    lines += [f"  {count:4d}  {kind}" for kind, count in kinds.most_common(15)]
    shown = (beyond or list(failures))[:6]
    for seed in shown:
        case, comparison = random_case(seed), failures[seed]
        call = case.calls[0]
        lines.append(
            f"FIDELITY_SEED={seed}: {case.kind} {call.op}{' stream' if call.stream else ''}, {case.note}"
        )
        lines.append(f"    script: {', '.join(map(str, case.script)) or '(none)'}")
        lines += ["    " + line for line in comparison.report().splitlines()[:10]]
    pytest.fail("\n".join(lines), pytrace=False)


def test_random_schedules_are_deterministic_for_the_bare_sdks(server: FidelityServer) -> None:
    """A bare schedule run twice is observed the same: the schedules stay within what is deterministic."""
    seeds = [int(REPLAY)] if REPLAY else [BASE_SEED + n for n in range(0, SCHEDULES, 10)]
    for seed in seeds:
        case = random_case(seed)
        first, second = observe(server, case, wrapped=False), observe(server, case, wrapped=False)
        problems = differences(first, second, 0)
        assert not problems, f"FIDELITY_SEED={seed}: " + "; ".join(p.detail for p in problems)
