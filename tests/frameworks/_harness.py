"""What every framework case shares: offline settings, clients on the fake, the reply script, the checks.

Each case runs one script twice on the session's (gzip) fake, once with bare SDK clients and
once with wrapped ones, and asserts the framework gave the same result, and that the wrapped
run emitted exactly one CallEvent per request the fake received from it, with that request's
model and the token counts the fake answered with.

Imported by each test module (not a conftest.py: a second ``conftest`` module would shadow the
suite's, which other modules import by that name). It sets the frameworks' offline switches
before any framework is imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

OWN_VENV = (
    "this framework is installed by `make frameworks` / `make frameworks-ci` (requirements/frameworks*.txt),"
    " which run this file; `make test` does not collect it"
)
"""Why a framework's module is skipped where its package is missing (a plain ``pytest tests``)."""

# Nothing a framework does may leave the machine: no telemetry, tracing or downloads. (Not
# OTEL_SDK_DISABLED: in `make test` these modules share a process with tests/test_otel.py.)
for _name, _value in {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # else litellm fetches its model-cost map on import
    "LITELLM_TELEMETRY": "False",
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
    "LANGSMITH_API_KEY": "",
    "LOGFIRE_IGNORE_NO_CONFIG": "1",
    "OPENAI_AGENTS_DISABLE_TRACING": "1",
    "INSTRUCTOR_TELEMETRY": "0",
}.items():
    os.environ.setdefault(_name, _value)

import anthropic  # noqa: E402
import openai  # noqa: E402
import pytest  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

import llmpulse  # noqa: E402
from llmpulse.testing import CapturingSink, FakeProvider, RecordedRequest, Reply  # noqa: E402
from llmpulse.testing._fake_formats import prompt_tokens  # noqa: E402

OPENAI_KEY = "sk-test-abcdefghijklmnop"
ANTHROPIC_KEY = "sk-ant-test-abcdefghijklmnop"
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-haiku-4-5"

# The case `make frameworks-ci` runs (in CI, after `make test`).
CI = pytest.mark.frameworks_ci

PROMPT = "Which service is paging, and how bad is it?"
ANSWER = "Checkout is paging at severity two."
FINAL = "The runbook says: restart checkout, then watch the error rate."
TOOL = "lookup_runbook"
TOOL_ARGS = {"service": "checkout"}
INCIDENT = {"service": "checkout", "severity": 2}
"""The structured answer: what a model of `Incident` fields gets back (instructor, pydantic-ai...)."""

T = TypeVar("T")


# -- the reply script ------------------------------------------------------------


def _tool_names(body: dict[str, Any]) -> list[str]:
    names = []
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        if isinstance(name := function.get("name"), str):
            names.append(name)
    return names


def _has_tool_result(body: dict[str, Any]) -> bool:
    """A chat ``tool`` message, a Responses ``function_call_output`` or an Anthropic ``tool_result``."""
    items = [
        *(body.get("messages") or []),
        *(body.get("input") or [] if isinstance(body.get("input"), list) else []),
    ]
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("role") == "tool" or item.get("type") == "function_call_output":
            return True
        content = item.get("content")
        if isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in content
        ):
            return True
    return False


def _wants_json(body: dict[str, Any]) -> bool:
    formats = (
        (body.get("response_format") or {}).get("type"),
        ((body.get("text") or {}).get("format") or {}).get("type"),
        ((body.get("output_config") or {}).get("format") or {}).get("type"),
    )
    return any(kind in ("json_schema", "json_object") for kind in formats)


def script(request: RecordedRequest) -> Reply:
    """The reply to any framework request, by what it asks for.

    ``lookup_runbook`` offered and not yet answered: call it. Another tool offered (a
    framework's structured-output tool): call it with `INCIDENT`. A JSON format asked for:
    `INCIDENT` as text. Otherwise text: `FINAL` once a tool answered, else `ANSWER`.
    """
    body = request.json if isinstance(request.json, dict) else {}
    names, answered = _tool_names(body), _has_tool_result(body)
    if TOOL in names and not answered:
        return Reply.tool_call(TOOL, TOOL_ARGS)
    if others := [name for name in names if name != TOOL]:
        return Reply.tool_call(others[0], INCIDENT)
    if _wants_json(body):
        return Reply.json(INCIDENT)
    return Reply.message(FINAL if answered else ANSWER)


def lookup_runbook(service: str) -> str:
    """Look up the runbook of a service."""
    return f"restart {service}, then watch the error rate"


# -- clients -------------------------------------------------------------------


@dataclass
class Kit:
    """Clients on the fake, bare or wrapped (onto one sink), closed at the end of the test."""

    fake: FakeProvider
    sink: CapturingSink
    registry: CollectorRegistry
    _sync: list[Any] = field(default_factory=list)
    _async: list[Any] = field(default_factory=list)

    def _wrap(self, client: T, wrapped: bool) -> T:
        return llmpulse.wrap(client, sinks=[self.sink], registry=self.registry) if wrapped else client

    def openai(self, wrapped: bool) -> openai.OpenAI:
        client = openai.OpenAI(api_key=OPENAI_KEY, base_url=self.fake.openai_base_url)
        self._sync.append(client)
        return self._wrap(client, wrapped)

    def async_openai(self, wrapped: bool) -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=self.fake.openai_base_url)
        self._async.append(client)
        return self._wrap(client, wrapped)

    def anthropic(self, wrapped: bool) -> anthropic.Anthropic:
        client = anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=self.fake.anthropic_base_url)
        self._sync.append(client)
        return self._wrap(client, wrapped)

    def async_anthropic(self, wrapped: bool) -> anthropic.AsyncAnthropic:
        client = anthropic.AsyncAnthropic(api_key=ANTHROPIC_KEY, base_url=self.fake.anthropic_base_url)
        self._async.append(client)
        return self._wrap(client, wrapped)

    async def close_async(self) -> None:
        """Close the async clients made so far (on the running loop: the one they ran on)."""
        clients, self._async = self._async, []
        for client in clients:
            await client.close()

    async def aclose(self) -> None:
        for client in self._sync:
            client.close()
        await self.close_async()


@contextlib.asynccontextmanager
async def kit(fake: FakeProvider, sink: CapturingSink, registry: CollectorRegistry) -> AsyncIterator[Kit]:
    """A `Kit` with the reply script on the fake for the duration."""
    fake.replies = script
    the_kit = Kit(fake, sink, registry)
    try:
        yield the_kit
    finally:
        fake.replies = None
        await the_kit.aclose()


# -- the comparison --------------------------------------------------------------

# The ids the fake draws for each reply, which a framework may send back in its next request.
_REPLY_ID = re.compile(r"\b(msg_|fc_|resp_|chatcmpl-)[0-9a-f]{24}[0-9]*")


def masked(value: Any) -> Any:
    """``value`` with the fake's per-reply ids (in strings, lists, tuples and dicts) made ``<id>``."""
    if isinstance(value, str):
        return _REPLY_ID.sub(r"\1<id>", value)
    if isinstance(value, list | tuple):
        return type(value)(masked(v) for v in value)
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    return value


def _sent(bare: Any, wrapped: Any) -> tuple[str, str]:
    """Both request bodies, comparable: reply ids masked, and llmpulse's stream-usage request undone.

    On an OpenAI stream that does not ask for usage, llmpulse asks for it
    (``stream_options.include_usage``) and takes the usage chunk out of what the caller reads
    (docs/resilience.md, "What llmpulse changes on the wire"); that is the only change seen here.
    """
    wrapped = dict(wrapped)
    asked = isinstance(bare, dict) and (bare.get("stream_options") or {}).get("include_usage")
    options = wrapped.get("stream_options")
    if not asked and isinstance(options, dict) and options.get("include_usage") is True:
        rest = {k: v for k, v in options.items() if k != "include_usage"}
        if rest or (isinstance(bare, dict) and "stream_options" in bare):
            wrapped["stream_options"] = rest
        else:
            del wrapped["stream_options"]
    return tuple(_REPLY_ID.sub(r"\1<id>", json.dumps(body, sort_keys=True)) for body in (bare, wrapped))  # type: ignore[return-value]


def _in_own_loop(kit_: Kit, run: Callable[[bool], Any], wrapped: bool) -> Any:
    # A framework's sync API may drive its async client on the thread's loop: give it one, and
    # close the clients made on it there before closing it.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return run(wrapped)
    finally:
        loop.run_until_complete(kit_.close_async())
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()


async def call(kit_: Kit, run: Callable[[bool], Any], sync: bool, wrapped: bool) -> Any:
    """``run(wrapped)``: awaited if async, else on a worker thread with a loop of its own."""
    if sync:
        return await asyncio.to_thread(_in_own_loop, kit_, run, wrapped)
    result = run(wrapped)
    return await result if isinstance(result, Awaitable) else result


async def same_through_wrapped(
    kit_: Kit, run: Callable[[bool], Any], *, sync: bool, streamed: bool | None = None
) -> tuple[Any, list[RecordedRequest]]:
    """Run ``run`` bare then wrapped; assert the same outcome and one right event per wrapped request.

    Args:
        kit_: The clients' kit.
        run: Builds the framework on bare (False) or wrapped (True) clients, runs it and returns
            what the caller gets, reduced to comparable values (no ids the fake draws at random).
        sync: Whether ``run`` is synchronous.
        streamed: Whether every request must be a streamed one (None: not checked).

    Returns:
        The outcome, and the wrapped run's requests.
    """
    expected = await call(kit_, run, sync, wrapped=False)
    assert not kit_.sink.calls, "the bare run emitted events"
    before = len(kit_.fake.requests)
    outcome = await call(kit_, run, sync, wrapped=True)
    requests = kit_.fake.requests[before:]
    assert outcome == expected, (outcome, expected)
    assert requests, "the framework sent nothing"
    assert len(kit_.fake.requests) == 2 * before, "bare and wrapped runs sent different numbers of requests"
    for bare_request, request in zip(kit_.fake.requests[:before], requests, strict=True):
        assert request.path == bare_request.path
        sent_bare, sent_wrapped = _sent(bare_request.json, request.json)
        assert sent_wrapped == sent_bare
    events = kit_.sink.calls
    assert len(events) == len(requests), [e.operation for e in events]
    for event, request in zip(events, requests, strict=True):
        body = request.json
        reply = script(request)
        assert (event.outcome, event.attempts) == ("ok", 1)
        assert event.model == body["model"]
        assert event.streamed is (body.get("stream") is True)
        if streamed is not None:
            assert event.streamed is streamed
        assert event.output_tokens == reply.output_tokens
        assert event.input_tokens == prompt_tokens(body)
        assert not event.tokens_estimated
    return outcome, requests
