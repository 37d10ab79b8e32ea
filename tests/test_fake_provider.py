"""The fake provider, seen through the real SDKs over real HTTP: endpoints, formats, faults, capacity."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import enum
import json
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anthropic
import brotli
import httpx2
import openai
import pydantic
import pytest

from conftest import http_errors
from llmpulse.testing._fake_encoding import ENCODINGS, ContentEncoding, negotiate
from llmpulse.testing._fake_provider import FakeProvider, Fault, FaultPlan, main

if sys.version_info >= (3, 14):
    from compression.zstd import ZstdDecompressor
else:
    from backports.zstd import ZstdDecompressor

PROMPT = "Summarise the incident for the on-call."  # 39 chars: 9 prompt tokens
MESSAGES: list[Any] = [{"role": "user", "content": PROMPT}]
PROMPT_TOKENS = len(PROMPT) // 4


@pytest.fixture(name="oai")
def _oai(fake: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        api_key="sk-test", base_url=fake.openai_base_url, _strict_response_validation=True, max_retries=0
    ) as client:
        yield client


@pytest.fixture(name="aoai")
async def _aoai(fake: FakeProvider) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        api_key="sk-test", base_url=fake.openai_base_url, _strict_response_validation=True, max_retries=0
    ) as client:
        yield client


@pytest.fixture(name="ant")
def _ant(fake: FakeProvider) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        api_key="sk-ant-test",
        base_url=fake.anthropic_base_url,
        _strict_response_validation=True,
        max_retries=0,
    ) as client:
        yield client


@pytest.fixture(name="aant")
async def _aant(fake: FakeProvider) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        api_key="sk-ant-test",
        base_url=fake.anthropic_base_url,
        _strict_response_validation=True,
        max_retries=0,
    ) as client:
        yield client


LOREM = (
    "the on-call engineer reads the dashboard and sees latency rising across every region while the "
    "provider status page stays green so the team checks"
)


def words(n: int) -> str:
    """The first ``n`` words the fake generates."""
    return " ".join(LOREM.split(" ")[:n])


class Severity(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Action(pydantic.BaseModel):
    owner: str
    due: dt.datetime


class Incident(pydantic.BaseModel):
    title: str
    severity: Severity
    affected_regions: list[str]
    error_rate: float
    retries: int
    paging: bool
    note: str | None
    actions: list[Action]


# -- lifecycle -------------------------------------------------------------------


def test_start_listens_and_stop_closes() -> None:
    """start() returns with the port accepting connections; stop() closes it and open connections."""
    fp = FakeProvider().start()
    assert fp.openai_base_url == f"http://127.0.0.1:{fp.port}/v1"
    assert fp.anthropic_base_url == fp.base_url == f"http://127.0.0.1:{fp.port}"
    idle = socket.create_connection(("127.0.0.1", fp.port))
    with pytest.raises(RuntimeError):
        fp.start()
    fp.stop()
    # Reset rather than closed if the server had not accepted it yet.
    with contextlib.suppress(ConnectionResetError):
        assert idle.recv(1) == b""
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", fp.port)).close()
    fp.stop()


async def test_stop_ends_requests_that_are_still_waiting() -> None:
    """stop() answers a request stuck in a long latency fault with a closed connection, at once."""
    fp = FakeProvider(plan=FaultPlan(latency_s=30)).start()
    async with openai.AsyncOpenAI(api_key="sk-test", base_url=fp.openai_base_url, max_retries=0) as client:
        pending = asyncio.create_task(client.chat.completions.create(model="gpt-4o", messages=MESSAGES))
        assert await asyncio.to_thread(fp.wait_for_requests, 1)
        started = time.monotonic()
        await asyncio.to_thread(fp.stop)
        assert time.monotonic() - started < 2
        with pytest.raises(openai.APIConnectionError):
            await pending


async def test_async_context_manager() -> None:
    """`async with FakeProvider()` serves an async client on its own thread."""
    async with (
        FakeProvider(plan=FaultPlan(output_tokens=3)) as fp,
        openai.AsyncOpenAI(api_key="sk-test", base_url=fp.openai_base_url, max_retries=0) as client,
    ):
        completion = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert completion.choices[0].message.content == words(3)


# -- OpenAI ------------------------------------------------------------------------


def test_chat_completion(oai: openai.OpenAI, fake: FakeProvider) -> None:
    """A chat completion echoes the model, has 20 words and exact usage, and realistic headers."""
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    completion = raw.parse()
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == words(20)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (PROMPT_TOKENS, 20)
    assert completion.usage.total_tokens == PROMPT_TOKENS + 20
    assert raw.headers["x-request-id"].startswith("req_")
    assert completion._request_id == raw.headers["x-request-id"]
    assert raw.headers["content-type"] == "application/json"
    for name in ("openai-processing-ms", "openai-version", "x-ratelimit-reset-requests"):
        assert raw.headers[name]
    assert int(raw.headers["x-ratelimit-remaining-requests"]) < int(raw.headers["x-ratelimit-limit-requests"])
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) < int(raw.headers["x-ratelimit-limit-tokens"])
    assert raw.headers["x-ratelimit-reset-tokens"].endswith("s")


def test_chat_usage_details_come_from_the_plan(oai: openai.OpenAI, fake: FakeProvider) -> None:
    """Cached and reasoning tokens are the plan's; max_tokens caps the reply with finish_reason length."""
    fake.plan = FaultPlan(output_tokens=50, cached_input_tokens=30, reasoning_tokens=7)
    completion = oai.chat.completions.create(model="o4-mini", messages=MESSAGES, max_completion_tokens=5)
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens_details is not None
    assert usage.completion_tokens_details is not None
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == words(5)
    assert usage.prompt_tokens == PROMPT_TOKENS + 30
    assert usage.prompt_tokens_details.cached_tokens == 30
    assert usage.completion_tokens == 5 + 7
    assert usage.completion_tokens_details.reasoning_tokens == 7


def test_chat_stream_without_usage(oai: openai.OpenAI) -> None:
    """A chat stream sends one chunk per word, then the finish reason; no chunk carries usage."""
    chunks = list(oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=4, stream=True))
    assert all(c.usage is None for c in chunks)
    assert len(chunks) == 1 + 4 + 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == words(4)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_include_usage_on_the_wire(fake: FakeProvider) -> None:
    """With include_usage every chunk has "usage": null and a last choices-less chunk has the usage."""
    body = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 3, "stream": True}
    body["stream_options"] = {"include_usage": True}
    response = httpx2.post(fake.openai_base_url + "/chat/completions", json=body)
    assert response.headers["content-type"] == "text/event-stream"
    lines = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert chunks[-1]["usage"]["prompt_tokens"] == PROMPT_TOKENS


def test_chat_stream_helper_and_include_usage(oai: openai.OpenAI, fake: FakeProvider) -> None:
    """The stream() helper yields the final completion, with usage when include_usage is set."""
    fake.plan = FaultPlan(output_tokens=6)  # not max_tokens: the helper refuses finish_reason "length"
    with oai.chat.completions.stream(
        model="gpt-4o", messages=MESSAGES, stream_options={"include_usage": True}
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(deltas) == words(6) == final.choices[0].message.content
    assert final.usage is not None
    assert final.usage.completion_tokens == 6


def test_chat_parse_fills_a_pydantic_schema(oai: openai.OpenAI) -> None:
    """parse() with a nested pydantic model gets JSON that validates against it."""
    completion = oai.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=Incident)
    incident = completion.choices[0].message.parsed
    assert isinstance(incident, Incident)
    assert incident.severity is Severity.LOW
    assert isinstance(incident.actions[0].due, dt.datetime)


def test_chat_stream_helper_parses_structured_output(oai: openai.OpenAI) -> None:
    """Streamed structured output arrives in small pieces and parses at the end."""
    with oai.chat.completions.stream(model="gpt-4o", messages=MESSAGES, response_format=Incident) as stream:
        n_deltas = sum(e.type == "content.delta" for e in stream)
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, Incident)
    assert n_deltas > 10


def test_responses_create(oai: openai.OpenAI, fake: FakeProvider) -> None:
    """A Responses API reply has output_text and the full usage block."""
    fake.plan = FaultPlan(cached_input_tokens=4, reasoning_tokens=2)
    response = oai.responses.create(model="gpt-5", input=PROMPT, max_output_tokens=8)
    assert response.output_text == words(8)
    assert response.model == "gpt-5"
    assert response.usage is not None
    assert response.usage.input_tokens == PROMPT_TOKENS + 4
    assert response.usage.input_tokens_details.cached_tokens == 4
    assert (response.usage.output_tokens, response.usage.output_tokens_details.reasoning_tokens) == (10, 2)
    assert response.usage.total_tokens == PROMPT_TOKENS + 4 + 10


def test_responses_stream(oai: openai.OpenAI) -> None:
    """A Responses stream sends the documented events in order, numbered, ending with the usage."""
    with oai.responses.stream(model="gpt-5", input=PROMPT, max_output_tokens=3) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text == words(3)
    assert final.usage is not None
    assert final.usage.output_tokens == 3


def test_responses_parse(oai: openai.OpenAI) -> None:
    """responses.parse() with a pydantic text_format gets a parsed object."""
    response = oai.responses.parse(model="gpt-5", input=PROMPT, text_format=Incident)
    assert isinstance(response.output_parsed, Incident)


def test_embeddings(oai: openai.OpenAI) -> None:
    """Embeddings: one deterministic vector per input, of the requested dimensions."""
    first = oai.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"], dimensions=16)
    again = oai.embeddings.create(model="text-embedding-3-small", input="alpha", encoding_format="float")
    assert [len(d.embedding) for d in first.data] == [16, 16]
    assert first.data[0].embedding[:8] == again.data[0].embedding
    assert first.data[0].embedding != first.data[1].embedding
    assert first.usage.prompt_tokens == first.usage.total_tokens >= 1


def test_legacy_completions(oai: openai.OpenAI, fake: FakeProvider) -> None:
    """The legacy completions endpoint answers whole and streamed, with usage when asked."""
    whole = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt=PROMPT, max_tokens=5)
    assert (whole.choices[0].text, whole.choices[0].finish_reason) == (words(5), "length")
    assert whole.usage is not None
    assert whole.usage.completion_tokens == 5
    # Like the real API, chunks before the last have "finish_reason": null, which the SDK's
    # Completion model rejects under strict validation.
    with openai.OpenAI(api_key="sk-test", base_url=fake.openai_base_url, max_retries=0) as lenient:
        chunks = list(
            lenient.completions.create(
                model="gpt-3.5-turbo-instruct",
                prompt=PROMPT,
                max_tokens=5,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == words(5)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


def test_models_and_batches(oai: openai.OpenAI) -> None:
    """GET /v1/models lists models; a batch can be created and retrieved."""
    assert "gpt-4o-mini" in [m.id for m in oai.models.list()]
    batch = oai.batches.create(
        completion_window="24h", endpoint="/v1/chat/completions", input_file_id="file-abc"
    )
    assert (batch.status, batch.input_file_id) == ("validating", "file-abc")
    assert oai.batches.retrieve(batch.id).id == batch.id


def test_azure_deployment_path(fake: FakeProvider) -> None:
    """Azure's deployment path answers with the deployment as the model."""
    with openai.AzureOpenAI(
        api_key="azure-key", api_version="2024-10-21", azure_endpoint=fake.base_url, max_retries=0
    ) as client:
        completion = client.chat.completions.create(model="prod-gpt4o", messages=MESSAGES)
    assert completion.model == "prod-gpt4o"
    request = fake.requests[-1]
    assert request.path == "/openai/deployments/prod-gpt4o/chat/completions"
    assert request.query == "api-version=2024-10-21"
    assert request.headers["api-key"] == "azure-key"


async def test_async_openai_chat_and_stream(aoai: openai.AsyncOpenAI, fake: FakeProvider) -> None:
    """The async client gets the same chat completion and stream, and reuses its connection."""
    completion = await aoai.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=4)
    assert completion.choices[0].message.content == words(4)
    stream = await aoai.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=4, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    fake.plan = FaultPlan(output_tokens=2)
    async with aoai.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as helper:
        final = await helper.get_final_completion()
    assert final.choices[0].message.content == words(2)
    assert fake.stats().connections == 1


async def test_async_responses(aoai: openai.AsyncOpenAI) -> None:
    """The async client gets Responses API replies, whole and streamed."""
    response = await aoai.responses.create(model="gpt-5", input=PROMPT, max_output_tokens=2)
    assert response.output_text == words(2)
    async with aoai.responses.stream(model="gpt-5", input=PROMPT, max_output_tokens=2) as stream:
        kinds = [e.type async for e in stream]
        final = await stream.get_final_response()
    assert kinds[-1] == "response.completed"
    assert final.usage is not None
    assert final.usage.output_tokens == 2


# -- Anthropic ---------------------------------------------------------------------


def test_messages_create(ant: anthropic.Anthropic, fake: FakeProvider) -> None:
    """A message has uncached input_tokens, the plan's cache and thinking numbers, and Anthropic's headers."""
    fake.plan = FaultPlan(cached_input_tokens=30, cache_write_input_tokens=20, reasoning_tokens=3)
    raw = ant.messages.with_raw_response.create(model="claude-sonnet-4-6", max_tokens=100, messages=MESSAGES)
    message = raw.parse()
    assert message.model == "claude-sonnet-4-6"
    assert message.content[0].type == "text"
    assert message.content[0].text == words(20)
    assert message.stop_reason == "end_turn"
    usage = message.usage
    assert (usage.input_tokens, usage.output_tokens) == (PROMPT_TOKENS, 20 + 3)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (30, 20)
    assert usage.output_tokens_details is not None
    assert usage.output_tokens_details.thinking_tokens == 3
    assert raw.headers["request-id"].startswith("req_")
    assert message._request_id == raw.headers["request-id"]
    reset = dt.datetime.fromisoformat(raw.headers["anthropic-ratelimit-requests-reset"])
    assert reset.tzinfo is not None
    for name in ("tokens-limit", "tokens-remaining", "tokens-reset", "requests-limit", "requests-remaining"):
        assert raw.headers[f"anthropic-ratelimit-{name}"]


def test_messages_capped_by_max_tokens(ant: anthropic.Anthropic) -> None:
    """max_tokens below the reply length stops with "max_tokens"."""
    message = ant.messages.create(model="claude-haiku-4-5", max_tokens=3, messages=MESSAGES)
    assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 3)


def test_messages_raw_stream(ant: anthropic.Anthropic, fake: FakeProvider) -> None:
    """A raw message stream has Anthropic's event sequence and cumulative output usage."""
    fake.plan = FaultPlan(cached_input_tokens=5)
    events = list(ant.messages.create(model="claude-haiku-4-5", max_tokens=4, messages=MESSAGES, stream=True))
    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start, delta = events[0], events[-2]
    assert start.type == "message_start"
    assert delta.type == "message_delta"
    assert (start.message.usage.input_tokens, start.message.usage.output_tokens) == (PROMPT_TOKENS, 1)
    assert start.message.usage.cache_read_input_tokens == 5
    assert (delta.usage.output_tokens, delta.delta.stop_reason) == (4, "max_tokens")


def test_messages_sse_has_event_lines(fake: FakeProvider) -> None:
    """Every Anthropic SSE event names itself in an event: line, ping included."""
    body = {"model": "claude-haiku-4-5", "max_tokens": 2, "messages": MESSAGES, "stream": True}
    response = httpx2.post(
        fake.base_url + "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}
    )
    blocks = [b.splitlines() for b in response.text.strip().split("\n\n")]
    assert all(
        lines[0] == f"event: {json.loads(lines[1].removeprefix('data: '))['type']}" for lines in blocks
    )
    assert "event: ping" in response.text


def test_messages_stream_helper(ant: anthropic.Anthropic) -> None:
    """The stream() helper's final message merges start and delta usage."""
    with ant.messages.stream(model="claude-sonnet-4-6", max_tokens=50, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == words(20)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (PROMPT_TOKENS, 20)


def test_messages_parse(ant: anthropic.Anthropic) -> None:
    """messages.parse() with a pydantic output_format gets a parsed object."""
    message = ant.messages.parse(
        model="claude-sonnet-4-6", max_tokens=1000, messages=MESSAGES, output_format=Incident
    )
    assert isinstance(message.parsed_output, Incident)


def test_count_tokens_models_and_batches(ant: anthropic.Anthropic) -> None:
    """count_tokens, models.list and message batches answer in Anthropic's shapes."""
    count = ant.messages.count_tokens(model="claude-sonnet-4-6", messages=MESSAGES)
    assert count.input_tokens == PROMPT_TOKENS
    assert "claude-haiku-4-5" in [m.id for m in ant.models.list()]
    request = {
        "custom_id": "a",
        "params": {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": MESSAGES},
    }
    batch = ant.messages.batches.create(requests=[request, {**request, "custom_id": "b"}])
    assert (batch.processing_status, batch.request_counts.processing) == ("in_progress", 2)
    assert ant.messages.batches.retrieve(batch.id).id == batch.id


async def test_async_anthropic(aant: anthropic.AsyncAnthropic) -> None:
    """The async client gets messages, raw streams and the stream helper."""
    message = await aant.messages.create(model="claude-haiku-4-5", max_tokens=3, messages=MESSAGES)
    assert message.content[0].type == "text"
    assert message.content[0].text == words(3)
    stream = await aant.messages.create(
        model="claude-haiku-4-5", max_tokens=3, messages=MESSAGES, stream=True
    )
    assert [e.type async for e in stream][-1] == "message_stop"
    async with aant.messages.stream(model="claude-haiku-4-5", max_tokens=3, messages=MESSAGES) as helper:
        final = await helper.get_final_message()
    assert final.usage.output_tokens == 3


# -- faults ------------------------------------------------------------------------


def test_status_fault_openai(oai: openai.OpenAI, fake: FakeProvider) -> None:
    """Fault.status gives the SDK's exception, OpenAI's error body and the asked-for retry headers."""
    fake.enqueue(
        Fault.status(500),
        Fault.status(429, retry_after=0.01, retry_after_ms=10, should_retry=True),
        Fault.status(429, error_code="insufficient_quota", message="You exceeded your current quota"),
    )
    with pytest.raises(openai.InternalServerError) as server_error:
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert server_error.value.type == "server_error"
    assert server_error.value.request_id is not None
    assert server_error.value.request_id.startswith("req_")
    with pytest.raises(openai.RateLimitError) as limited:
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    headers = limited.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"], headers["x-should-retry"]) == (
        "0.01",
        "10",
        "true",
    )
    assert (limited.value.code, limited.value.type) == ("rate_limit_exceeded", "requests")
    with pytest.raises(openai.RateLimitError) as quota:
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert quota.value.body == {
        "message": "You exceeded your current quota",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }


def test_overloaded_anthropic(ant: anthropic.Anthropic, fake: FakeProvider) -> None:
    """A 529 reaches anthropic as OverloadedError with Anthropic's error body and matching request id."""
    fake.enqueue(Fault.status(529, retry_after=2))
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        ant.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=MESSAGES)
    body = overloaded.value.body
    assert isinstance(body, dict)
    assert body["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert body["request_id"] == overloaded.value.response.headers["request-id"]
    assert overloaded.value.response.headers["retry-after"] == "2"


def test_resets(oai: openai.OpenAI, ant: anthropic.Anthropic, fake: FakeProvider) -> None:
    """A reset before the headers, or in the middle of a JSON body, is a connection error."""
    fake.enqueue(Fault.reset_before_headers(), Fault.reset_before_headers(), Fault.reset_mid_stream())
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with pytest.raises(anthropic.APIConnectionError):
        ant.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=MESSAGES)
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert fake.stats().by_status == {200: 1}  # the half-sent body


def test_reset_mid_stream(oai: openai.OpenAI, fake: FakeProvider) -> None:
    """A stream reset after two events delivers exactly those two, then fails."""
    fake.enqueue(Fault.reset_mid_stream(after_events=2))
    received = []
    with pytest.raises((*http_errors(), openai.APIError)):  # noqa: PT012 - the error comes mid-iteration
        for chunk in oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True):
            received.append(chunk)
    assert len(received) == 2
    assert received[1].choices[0].delta.content == "the"


def test_malformed_and_truncated_bodies(raw_openai: openai.OpenAI, fake: FakeProvider) -> None:
    """A 200 whose body is not JSON, or is cut short of its Content-Length, fails in the bare SDK."""
    fake.enqueue(Fault.malformed_json(), Fault.truncated())
    client = raw_openai.with_options(max_retries=0)
    with pytest.raises(json.JSONDecodeError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with pytest.raises(openai.APIConnectionError) as truncated:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert type(truncated.value.__cause__).__name__ == "RemoteProtocolError"


def test_broken_streams(oai: openai.OpenAI, ant: anthropic.Anthropic, fake: FakeProvider) -> None:
    """On a stream, malformed_json garbles one event and truncated ends it halfway, without its last chunk."""
    fake.enqueue(Fault.malformed_json(), Fault.truncated(), Fault.truncated())
    with pytest.raises(json.JSONDecodeError):
        list(oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    with pytest.raises((*http_errors(), openai.APIError)):
        list(oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    with pytest.raises((*http_errors(), anthropic.APIError)):
        list(ant.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=MESSAGES, stream=True))


def test_latency_and_timeouts(oai: openai.OpenAI, fake: FakeProvider) -> None:
    """Latency delays the answer; a client timeout shorter than it is an APITimeoutError."""
    fake.enqueue(Fault.latency(0.15), Fault.latency(5))
    started = time.monotonic()
    oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert time.monotonic() - started >= 0.15
    with pytest.raises(openai.APITimeoutError):
        oai.with_options(timeout=0.1).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert fake.wait_idle(2.0)  # the abandoned request does not stay in flight for 5 s


def test_plan_latency_range(oai: openai.OpenAI, fake: FakeProvider) -> None:
    """A (low, high) latency delays every request by an amount in that range."""
    fake.plan = FaultPlan(latency_s=(0.05, 0.1))
    started = time.monotonic()
    for _ in range(2):
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert 0.1 <= time.monotonic() - started < 1.0


def test_slow_stream(oai: openai.OpenAI, fake: FakeProvider) -> None:
    """slow_stream waits before each event: role, 3 words, finish and [DONE] take 6 delays."""
    fake.enqueue(Fault.slow_stream(0.03))
    started = time.monotonic()
    chunks = list(oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=3, stream=True))
    assert len(chunks) == 5
    assert time.monotonic() - started >= 6 * 0.03


def test_generation_speed_delays_answers_and_paces_streams(oai: openai.OpenAI, fake: FakeProvider) -> None:
    """tokens_per_s: a whole answer waits for all its tokens; a stream's words come as they are made."""
    fake.plan = FaultPlan(tokens_per_s=20.0)  # 10 tokens: 0.5 s
    started = time.monotonic()
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, max_tokens=10)
    assert time.monotonic() - started >= 0.5
    assert int(raw.headers["openai-processing-ms"]) >= 500  # the provider's own clock includes it
    usage = raw.parse().usage
    assert usage is not None
    assert usage.completion_tokens == 10
    started = time.monotonic()
    arrivals = []
    for chunk in oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=10, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 10
    # 13 events (role, 10 words, finish, [DONE]) share the 0.5 s: the last word is sent 11 shares
    # in, the first 2 shares in, long before a whole answer would be.
    assert arrivals[-1] >= 11 * 0.5 / 13
    assert arrivals[0] < 0.5
    assert time.monotonic() - started >= 0.5


def test_generation_speed_must_be_positive() -> None:
    """A zero or negative tokens_per_s is refused, naming the field."""
    for bad in (0.0, -5.0):
        with pytest.raises(ValueError, match="tokens_per_s"):
            FaultPlan(tokens_per_s=bad)


def test_huge_replies(oai: openai.OpenAI, ant: anthropic.Anthropic, fake: FakeProvider) -> None:
    """A huge fault gives a valid reply whose text has exactly the asked-for length, whole or streamed."""
    fake.enqueue(Fault.huge(200_000), Fault.huge(50_000))
    completion = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(completion.choices[0].message.content or "") == 200_000
    with ant.messages.stream(model="claude-haiku-4-5", max_tokens=10, messages=MESSAGES) as stream:
        assert len("".join(stream.text_stream)) == 50_000


def test_queued_faults_apply_in_order(oai: openai.OpenAI, fake: FakeProvider) -> None:
    """Queued faults hit the next requests one each, in order, then requests succeed."""
    fake.enqueue(Fault.status(503), Fault.status(429, retry_after=0.01))
    outcomes = []
    for _ in range(3):
        try:
            oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            outcomes.append(200)
        except openai.APIStatusError as exc:
            outcomes.append(exc.status_code)
    assert outcomes == [503, 429, 200]
    assert fake.stats().by_status == {503: 1, 429: 1, 200: 1}


def test_random_faults_are_seeded(oai: openai.OpenAI, fake: FakeProvider) -> None:
    """Random errors and resets follow the plan's rates, and the same seed replays the same ones."""

    def run() -> list[str]:
        fake.plan = FaultPlan(error_rate={500: 0.3, 429: 0.2}, reset_rate=0.1, seed=7, retry_after_s=0.5)
        outcomes = []
        for _ in range(40):
            try:
                oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=1)
                outcomes.append("ok")
            except openai.APIStatusError as exc:
                outcomes.append(f"{exc.status_code} {exc.response.headers.get('retry-after')}")
            except openai.APIConnectionError:
                outcomes.append("reset")
        return outcomes

    first = run()
    assert first == run()
    assert {"ok", "500 None", "429 0.5", "reset"} == set(first)


def test_fault_plan_is_validated() -> None:
    """Rates that cannot be probabilities, inverted ranges and non-error statuses are refused."""
    with pytest.raises(ValueError, match="rates"):
        FaultPlan(error_rate={500: 0.8}, reset_rate=0.5)
    with pytest.raises(ValueError, match="delays"):
        FaultPlan(latency_s=(0.5, 0.1))
    with pytest.raises(ValueError, match="statuses"):
        FaultPlan(error_rate={200: 0.1})
    with pytest.raises(ValueError, match="status"):
        Fault.status(302)


# -- capacity --------------------------------------------------------------------


async def test_max_concurrency_rejects_the_excess(aoai: openai.AsyncOpenAI, fake: FakeProvider) -> None:
    """With max_concurrency=2, of 8 simultaneous slow requests 2 succeed and 6 get 429 with retry-after."""
    latency = 0.3
    fake.plan = FaultPlan(latency_s=latency, max_concurrency=2, retry_after_s=0.25)

    async def call() -> int | str:
        try:
            await aoai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        except openai.RateLimitError as exc:
            return exc.response.headers["retry-after"]
        return 200

    results = collections.Counter(await asyncio.gather(*(call() for _ in range(8))))
    assert results[200] + results["0.25"] == 8
    assert fake.stats().by_status == {200: results[200], 429: results["0.25"]}
    assert fake.stats().rejected == results["0.25"]
    arrivals = [r.received_at for r in fake.requests]
    # Exactly two when all arrived while the first two were served, as usual; on a loaded
    # machine arrivals may spread out, and then later ones find room.
    all_at_once = max(arrivals) - min(arrivals) < latency
    assert results[200] == 2 or (not all_at_once and results[200] > 2)
    # Load-dependent, not scripted: once the two are done, there is room again.
    assert await call() == 200


async def test_tokens_per_minute(aoai: openai.AsyncOpenAI, fake: FakeProvider) -> None:
    """Requests whose prompt plus max output exceed the per-minute token budget get 429."""
    fake.plan = FaultPlan(tokens_per_minute=110)  # each request below: 9 prompt + max_tokens
    await aoai.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=40)
    await aoai.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=40)
    with pytest.raises(openai.RateLimitError):
        await aoai.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=40)
    await aoai.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=1)
    assert fake.stats().rejected == 1


async def test_hundreds_of_concurrent_connections(fake: FakeProvider) -> None:
    """Three hundred concurrent requests, on as many connections, all succeed."""
    fake.plan = FaultPlan(latency_s=0.3, output_tokens=2)
    body = {"model": "gpt-4o", "messages": MESSAGES}
    limits = httpx2.Limits(max_connections=1000)
    async with httpx2.AsyncClient(base_url=fake.openai_base_url, limits=limits) as http:
        replies = await asyncio.gather(*(http.post("/chat/completions", json=body) for _ in range(300)))
    assert all(r.json()["choices"][0]["message"]["content"] == words(2) for r in replies)
    stats = fake.stats()
    assert stats.requests == 300
    assert stats.peak_concurrency >= 100  # far more than the thread pool of a typical test server


# -- recording and HTTP ----------------------------------------------------------


def test_recorded_requests_and_keep_alive(oai: openai.OpenAI, fake: FakeProvider) -> None:
    """Requests are recorded with lower-cased headers and parsed JSON, on one kept-alive connection."""
    before = time.monotonic()
    for n in (1, 2, 3):
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=n)
    assert fake.wait_for_requests(3, timeout=0)
    first, *_, last = fake.requests
    assert (first.method, first.path) == ("POST", "/v1/chat/completions")
    assert first.headers["authorization"] == "Bearer sk-test"
    assert first.json == {"messages": MESSAGES, "model": "gpt-4o", "max_tokens": 1}
    assert before <= first.received_at <= last.received_at
    # The client has its answer before the server's bookkeeping of it ends: wait for that.
    assert fake.wait_idle(5)
    stats = fake.stats()
    assert (stats.requests, stats.connections, stats.in_flight, stats.peak_concurrency) == (3, 1, 0, 1)


def test_unknown_path_is_a_provider_shaped_404(fake: FakeProvider, oai: openai.OpenAI) -> None:
    """An unknown path is a 404 in OpenAI's shape, or Anthropic's for Anthropic clients."""
    with pytest.raises(openai.NotFoundError) as missing:
        oai.get("/fine-tuning/nowhere", cast_to=object)
    assert missing.value.body == {
        "message": "Invalid URL (GET /v1/fine-tuning/nowhere)",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    response = httpx2.post(fake.base_url + "/v1/nowhere", headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_bad_http_is_refused(fake: FakeProvider) -> None:
    """A chunked request body gets 411, a garbled request line 400, and the connection closes."""
    cases = [
        (b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"411"),
        (b"HELLO\r\n\r\n", b"400"),
    ]
    for raw, status in cases:
        with socket.create_connection(("127.0.0.1", fake.port)) as sock:
            sock.sendall(raw)
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        assert reply.split(b" ")[1] == status


def test_connection_close_is_honoured(fake: FakeProvider) -> None:
    """A request with Connection: close gets an answer and then the connection closes."""
    with socket.create_connection(("127.0.0.1", fake.port)) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"connection: close" in head
    assert json.loads(body)["object"] == "list"


# -- compression -----------------------------------------------------------------

CHAT = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 3}
ALL_CODINGS = "gzip, deflate, br, zstd"


def decoder(coding: str) -> Callable[[bytes], bytes]:
    """An incremental decoder of ``coding`` from the libraries themselves, not from httpx2."""
    if coding == "br":
        return brotli.Decompressor().process
    if coding == "zstd":
        return ZstdDecompressor().decompress
    return zlib.decompressobj(31 if coding == "gzip" else 15).decompress


@dataclasses.dataclass(frozen=True)
class Wire:
    """An answer as it came over the wire: its body undecoded."""

    status: int
    headers: httpx2.Headers
    body: bytes


def wire(fake: FakeProvider, method: str, path: str, accept_encoding: str | None, **kw: Any) -> Wire:
    """One request with this Accept-Encoding (None: no such header)."""
    with httpx2.Client() as client:
        request = client.build_request(method, fake.base_url + path, **kw)
        del request.headers["accept-encoding"]
        if accept_encoding is not None:
            request.headers["accept-encoding"] = accept_encoding
        response = client.send(request, stream=True)
        try:
            return Wire(response.status_code, response.headers, b"".join(response.iter_raw()))
        finally:
            response.close()


def chunks_of(fake: FakeProvider, body: dict[str, Any], accept_encoding: str) -> tuple[bytes, list[bytes]]:
    """POST to chat completions over a raw socket: the answer's head and its HTTP chunks, as framed."""
    payload = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", fake.port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nAccept-Encoding: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (accept_encoding.encode(), len(payload), payload)
        )
        reply = b""
        while data := sock.recv(65536):
            reply += data
    head, _, rest = reply.partition(b"\r\n\r\n")
    chunks = []
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        chunks.append(rest[: int(size, 16)])
        rest = rest[int(size, 16) + 2 :]
    return head, chunks


@pytest.mark.parametrize(
    ("accept_encoding", "coding", "expected"),
    [
        ("gzip, deflate", "gzip", True),
        ("gzip, deflate, br, zstd", "zstd", True),
        ("deflate, br", "gzip", False),
        ("gzip;q=0", "gzip", False),
        ("GZip ; Q=0.5", "gzip", True),
        ("x-gzip", "gzip", True),
        ("identity", "gzip", False),
        ("", "gzip", False),
        (None, "gzip", False),
        ("*", "br", True),
        ("*;q=0", "gzip", False),
        ("br, *;q=0", "gzip", False),
        ("gzip;q=0.5, identity", "gzip", False),
        ("gzip, identity;q=0.5", "gzip", True),
        ("gzip;q=0.5, *", "gzip", False),
        ("identity;q=0, deflate", "deflate", True),
        ("gzip;q=2", "gzip", False),
        ("gzip;q=0.3333", "gzip", False),
        ("gzip;level=1;q=0.2", "gzip", True),
    ],
)
def test_negotiation_weighs_codings_against_identity(
    accept_encoding: str | None, coding: ContentEncoding, expected: bool
) -> None:
    """A coding is used when accepted by name or *, with q > 0, and not less wanted than identity."""
    assert negotiate(accept_encoding, coding) is expected


@pytest.mark.parametrize(
    ("accept_encoding", "expected"),
    [
        ("gzip, deflate", "gzip"),
        ("gzip, deflate, br, zstd", "gzip"),
        ("*", "gzip"),
        ("deflate, br", None),
        ("gzip;q=0, deflate", None),
        ("identity", None),
        (None, None),
    ],
    ids=["sdk", "sdk-all", "star", "no-gzip", "q0", "identity", "none"],
)
def test_default_gzips_json_when_accepted(
    fake: FakeProvider, accept_encoding: str | None, expected: str | None
) -> None:
    """The default fake gzips a JSON answer only when accepted; Content-Length is what is sent."""
    response = wire(fake, "POST", "/v1/chat/completions", accept_encoding, json=CHAT)
    assert response.headers.get("content-encoding") == expected
    assert response.headers["vary"] == "Accept-Encoding"
    assert int(response.headers["content-length"]) == len(response.body)
    body = zlib.decompress(response.body, 31) if expected else response.body
    assert json.loads(body)["choices"][0]["message"]["content"] == words(3)


@pytest.mark.parametrize("coding", ENCODINGS)
def test_each_coding_decodes_to_the_same_json(coding: ContentEncoding) -> None:
    """compress=CODING answers in that coding; decoded, the body is the uncompressed one."""
    with FakeProvider(compress=coding) as fp:
        coded = wire(fp, "GET", "/v1/models", ALL_CODINGS)
        plain = wire(fp, "GET", "/v1/models", "identity")
        gzip_only = wire(fp, "GET", "/v1/models", "gzip")
    assert coded.headers["content-encoding"] == coding
    assert "content-encoding" not in plain.headers
    assert len(coded.body) < len(plain.body)
    assert decoder(coding)(coded.body) == plain.body
    assert json.loads(plain.body)["object"] == "list"
    assert gzip_only.headers.get("content-encoding") == ("gzip" if coding == "gzip" else None)


def test_compress_false_never_compresses() -> None:
    """compress=False sends plain bodies, without Vary, whatever the client accepts."""
    with FakeProvider(compress=False) as fp:
        response = wire(fp, "POST", "/v1/chat/completions", ALL_CODINGS, json=CHAT)
    assert "content-encoding" not in response.headers
    assert "vary" not in response.headers
    assert json.loads(response.body)["choices"][0]["message"]["content"] == words(3)


def test_error_bodies_are_compressed(fake: FakeProvider) -> None:
    """Error answers, scripted or a 404, are gzipped too, with their headers intact."""
    fake.enqueue(Fault.status(429, retry_after=2))
    limited = wire(fake, "POST", "/v1/chat/completions", "gzip", json=CHAT)
    missing = wire(fake, "POST", "/v1/nowhere", "gzip", headers={"anthropic-version": "2023-06-01"})
    assert (limited.status, limited.headers["content-encoding"]) == (429, "gzip")
    assert limited.headers["retry-after"] == "2"
    assert int(limited.headers["content-length"]) == len(limited.body)
    assert json.loads(zlib.decompress(limited.body, 31))["error"]["code"] == "rate_limit_exceeded"
    assert (missing.status, missing.headers["content-encoding"]) == (404, "gzip")
    assert json.loads(zlib.decompress(missing.body, 31))["error"]["type"] == "not_found_error"


def test_faults_apply_to_the_compressed_bytes(fake: FakeProvider) -> None:
    """malformed_json gzips a non-JSON body, truncated cuts the gzip bytes, huge compresses well."""
    fake.enqueue(Fault.malformed_json(), Fault.truncated(), Fault.huge(200_000))
    malformed = wire(fake, "POST", "/v1/chat/completions", "gzip", json=CHAT)
    assert malformed.headers["content-encoding"] == "gzip"
    assert int(malformed.headers["content-length"]) == len(malformed.body)
    with pytest.raises(json.JSONDecodeError):
        json.loads(zlib.decompress(malformed.body, 31))
    with pytest.raises(httpx2.RemoteProtocolError):
        wire(fake, "POST", "/v1/chat/completions", "gzip", json=CHAT)
    huge = wire(fake, "POST", "/v1/chat/completions", "gzip", json=CHAT)
    assert len(huge.body) < 20_000
    assert len(json.loads(zlib.decompress(huge.body, 31))["choices"][0]["message"]["content"]) == 200_000


def test_truncated_gzip_body_is_a_prefix(fake: FakeProvider) -> None:
    """A truncated compressed body is the first half of a valid gzip stream: it decodes, but never ends."""
    fake.enqueue(Fault.truncated())
    with socket.create_connection(("127.0.0.1", fake.port)) as sock:
        payload = json.dumps(CHAT).encode()
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
        )
        reply = b""
        while data := sock.recv(65536):
            reply += data
    head, _, body = reply.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    assert headers["content-encoding"] == "gzip"
    assert len(body) == int(headers["content-length"]) // 2
    partial = zlib.decompressobj(31)
    assert b'"choices"' in partial.decompress(body)
    assert not partial.eof


def test_streams_are_not_compressed_by_default(fake: FakeProvider) -> None:
    """Event streams stay plain by default, as the hosted APIs send them, and say no Vary."""
    head, chunks = chunks_of(fake, {**CHAT, "stream": True}, ALL_CODINGS)
    assert b"content-encoding" not in head
    assert b"vary" not in head
    assert chunks[0].startswith(b"data: ")


@pytest.mark.parametrize("coding", ENCODINGS)
def test_compressed_streams_flush_every_event(coding: ContentEncoding) -> None:
    """With compress_streams, each HTTP chunk decodes to whole events as it arrives; the last ends it."""
    with FakeProvider(compress=coding, compress_streams=True) as fp:
        head, chunks = chunks_of(fp, {**CHAT, "stream": True}, ALL_CODINGS)
    assert f"content-encoding: {coding}".encode() in head
    assert b"vary: Accept-Encoding" in head
    decode = decoder(coding)
    events = [decode(chunk) for chunk in chunks[:-1]]
    assert chunks[-1] == b""  # the chunked body's end
    assert all(e.endswith(b"\n\n") for e in events[:-1])
    text = b"".join(events).decode()
    assert text.count("data: ") == 1 + 3 + 1 + 1  # role, 3 words, finish, [DONE]
    assert text.endswith("data: [DONE]\n\n")


def test_faults_on_compressed_streams() -> None:
    """On a gzipped stream, reset_mid_stream delivers its events, malformed_json and truncated fail."""
    with (
        FakeProvider(compress_streams=True) as fp,
        openai.OpenAI(api_key="sk-test", base_url=fp.openai_base_url, max_retries=0) as client,
    ):
        fp.enqueue(Fault.reset_mid_stream(after_events=2), Fault.malformed_json(), Fault.truncated())
        received = []
        with pytest.raises((*http_errors(), openai.APIError)):  # noqa: PT012 - the error comes mid-iteration
            for chunk in client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True):
                received.append(chunk)
        assert [c.choices[0].delta.content for c in received] == ["", "the"]
        with pytest.raises(json.JSONDecodeError):
            list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
        with pytest.raises((*http_errors(), openai.APIError)):
            list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
        assert fp.stats().by_status == {200: 3}


def test_compression_options_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown coding, compress_streams without compress, or a missing library fail at once."""
    with pytest.raises(ValueError, match="compress must be"):
        FakeProvider(compress="lzma")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="compress_streams"):
        FakeProvider(compress=False, compress_streams=True)
    monkeypatch.setitem(sys.modules, "brotli", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install brotli"):
        FakeProvider(compress="br")
    monkeypatch.setitem(sys.modules, "backports.zstd", None)
    monkeypatch.setitem(sys.modules, "compression.zstd", None)
    with pytest.raises(ImportError, match="backports-zstd"):
        FakeProvider(compress="zstd")


@pytest.fixture(name="coded", scope="module", params=ENCODINGS)
def _coded(request: pytest.FixtureRequest) -> Iterator[tuple[FakeProvider, str]]:
    with FakeProvider(compress=request.param, compress_streams=True) as fp:
        yield fp, request.param


def test_bare_sync_sdks_read_every_coding(coded: tuple[FakeProvider, str]) -> None:
    """The bare sync openai and anthropic SDKs parse compressed answers, errors and streams."""
    coded_fake, coding = coded
    with (
        openai.OpenAI(api_key="sk-test", base_url=coded_fake.openai_base_url, max_retries=0) as oai,
        anthropic.Anthropic(
            api_key="sk-ant-test", base_url=coded_fake.anthropic_base_url, max_retries=0
        ) as ant,
    ):
        raw = oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, max_tokens=3)
        assert raw.headers["content-encoding"] == coding
        assert raw.parse().choices[0].message.content == words(3)
        stream = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=3, stream=True)
        assert stream.response.headers["content-encoding"] == coding
        assert "".join(c.choices[0].delta.content or "" for c in stream) == words(3)
        message = ant.messages.with_raw_response.create(
            model="claude-haiku-4-5", max_tokens=3, messages=MESSAGES
        )
        assert message.headers["content-encoding"] == coding
        assert message.parse().content[0].text == words(3)  # type: ignore[union-attr]
        with ant.messages.stream(model="claude-haiku-4-5", max_tokens=3, messages=MESSAGES) as helper:
            assert "".join(helper.text_stream) == words(3)
        coded_fake.enqueue(Fault.status(400, message="bad model"))
        with pytest.raises(openai.BadRequestError) as bad:
            oai.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert bad.value.response.headers["content-encoding"] == coding
        assert isinstance(bad.value.body, dict)
        assert bad.value.body["message"] == "bad model"


async def test_bare_async_sdks_read_every_coding(coded: tuple[FakeProvider, str]) -> None:
    """The bare async openai and anthropic SDKs parse compressed answers, errors and streams."""
    coded_fake, coding = coded
    async with (
        openai.AsyncOpenAI(api_key="sk-test", base_url=coded_fake.openai_base_url, max_retries=0) as oai,
        anthropic.AsyncAnthropic(
            api_key="sk-ant-test", base_url=coded_fake.anthropic_base_url, max_retries=0
        ) as ant,
    ):
        raw = await oai.responses.with_raw_response.create(model="gpt-5", input=PROMPT, max_output_tokens=2)
        assert raw.headers["content-encoding"] == coding
        assert raw.parse().output_text == words(2)
        stream = await oai.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=3, stream=True
        )
        assert "".join([c.choices[0].delta.content or "" async for c in stream]) == words(3)
        message = await ant.messages.with_raw_response.create(
            model="claude-haiku-4-5", max_tokens=3, messages=MESSAGES
        )
        assert message.headers["content-encoding"] == coding
        assert (await message.parse()).usage.output_tokens == 3
        events = await ant.messages.create(
            model="claude-haiku-4-5", max_tokens=3, messages=MESSAGES, stream=True
        )
        assert [e.type async for e in events][-1] == "message_stop"
        coded_fake.enqueue(Fault.status(529))
        with pytest.raises(anthropic.OverloadedError) as overloaded:
            await ant.messages.create(model="claude-haiku-4-5", max_tokens=3, messages=MESSAGES)
        assert overloaded.value.response.headers["content-encoding"] == coding
        assert isinstance(overloaded.value.body, dict)
        assert overloaded.value.body["error"]["type"] == "overloaded_error"


# -- command line ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "json_coding", "stream_coding"),
    [
        ([], "gzip", None),
        (["--no-compress"], None, None),
        (["--compress", "br", "--compress-streams"], "br", "br"),
    ],
    ids=["default", "no-compress", "br-streams"],
)
def test_command_line_serves_until_interrupted(
    flags: list[str], json_coding: str | None, stream_coding: str | None
) -> None:
    """`llmpulse fake-provider` serves on the given port, compressing as told, and exits 0 on Ctrl-C."""
    code = "import sys; from llmpulse.testing._fake_provider import main; sys.exit(main(sys.argv[1:]))"
    args = ["--port", "0", "--latency", "0.01", "--error-rate", "500=0.0", "--max-concurrency", "5", *flags]
    with subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            base_url = line.split()[3]
            headers = {"accept-encoding": ALL_CODINGS}
            models = httpx2.get(base_url + "/v1/models", headers=headers)
            assert (models.status_code, models.headers.get("content-encoding")) == (200, json_coding)
            assert models.json()["object"] == "list"
            chat = httpx2.post(
                base_url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers
            )
            assert chat.headers.get("content-encoding") == stream_coding
            assert chat.text.endswith("data: [DONE]\n\n")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0
        finally:
            proc.kill()  # a failed assertion must not leave the test waiting for the server forever


def test_command_line_rejects_bad_rates(capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed --error-rate is a usage error."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--error-rate", "500:0.1"])
    assert exit_info.value.code == 2
    assert "STATUS=PROBABILITY" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--compress", "lzma"], "invalid choice"),
        (["--compress", "gzip", "--no-compress"], "not allowed with"),
        (["--no-compress", "--compress-streams"], "exclude each other"),
    ],
)
def test_command_line_rejects_bad_compression(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    """An unknown coding, or contradictory compression flags, are usage errors."""
    with pytest.raises(SystemExit) as exit_info:
        main(flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_command_line_names_a_missing_library(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--compress br without brotli installed is a usage error that says what to install."""
    monkeypatch.setitem(sys.modules, "brotli", None)  # as if not installed
    with pytest.raises(SystemExit) as exit_info:
        main(["--compress", "br"])
    assert exit_info.value.code == 2
    assert "pip install brotli" in capsys.readouterr().err
