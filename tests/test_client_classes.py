"""Every SDK client class wraps, on its own wire paths, with its ``gen_ai.provider.name``.

Each class runs against the fake provider with dummy credentials (AWS keys
given explicitly, Vertex's access token given, so no credential chain or
google-auth lookup runs and nothing leaves the machine), bare and wrapped:
the caller gets the same answer, and the wrapped client emits one event
with the provider name the SDK's own OpenTelemetry spans use, the model,
the tokens and, where the price table knows the model, the cost.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest
from anthropic import (
    AnthropicAWS,
    AnthropicBedrock,
    AnthropicBedrockMantle,
    AnthropicFoundry,
    AnthropicGoogleCloud,
    AnthropicVertex,
    AsyncAnthropicAWS,
    AsyncAnthropicBedrock,
    AsyncAnthropicBedrockMantle,
    AsyncAnthropicFoundry,
    AsyncAnthropicGoogleCloud,
    AsyncAnthropicVertex,
)
from openai import AsyncBedrockOpenAI, BedrockOpenAI

import llmpulse
from llmpulse.events import CallEvent
from llmpulse.policies import Policies
from llmpulse.providers import BedrockProvider, RequestInfo
from llmpulse.testing import CapturingSink, FakeClock, FakeProvider, Fault
from llmpulse.testing._fake_formats import bedrock_chunks, event_stream_frame

# Dummy credentials, long enough to be scrubbed from error messages (8+ characters).
AWS_KEY_ID = "AKIDEXAMPLEDUMMY"
AWS_SECRET = "wJalrXUtnFEMI-dummy-secret-key"
AWS_TOKEN = "FwoGZXIvYXdzEdummy-session-token"
GCP_TOKEN = "ya29.dummy-access-token"
AWS = {"aws_access_key": AWS_KEY_ID, "aws_secret_key": AWS_SECRET, "aws_session_token": AWS_TOKEN}
REGION = "us-east-1"
BEDROCK_MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"
PROMPT = [{"role": "user", "content": "Say hello to the on-call engineer."}]


@dataclass(frozen=True)
class Case:
    """One client class: how to build it (and its async twin) on the fake, what to expect."""

    name: str
    sync: Callable[[str], Any]
    async_: Callable[[str], Any]
    provider: str
    model: str
    path: str  # the path the fake sees, for a non-streamed call
    chat: bool = False  # OpenAI's chat API instead of Anthropic's Messages


def _bedrock(cls: type[Any]) -> Callable[[str], Any]:
    return lambda base: cls(**AWS, aws_region=REGION, base_url=base)


def _vertex(cls: type[Any]) -> Callable[[str], Any]:
    return lambda base: cls(
        region="us-east5", project_id="proj", access_token=GCP_TOKEN, base_url=base + "/v1"
    )


def _foundry(cls: type[Any]) -> Callable[[str], Any]:
    return lambda base: cls(api_key="foundry-dummy-key", base_url=base + "/anthropic")


def _mantle(cls: type[Any]) -> Callable[[str], Any]:
    return lambda base: cls(**AWS, aws_region=REGION, base_url=base + "/anthropic")


def _aws(cls: type[Any]) -> Callable[[str], Any]:
    return lambda base: cls(**AWS, aws_region=REGION, workspace_id="wrkspc_dummy", base_url=base)


def _google_cloud(cls: type[Any]) -> Callable[[str], Any]:
    return lambda base: cls(
        project="proj", workspace_id="wrk", token_provider=lambda: GCP_TOKEN, base_url=base
    )


def _bedrock_openai(cls: type[Any]) -> Callable[[str], Any]:
    return lambda base: cls(
        aws_access_key_id=AWS_KEY_ID,
        aws_secret_access_key=AWS_SECRET,
        aws_session_token=AWS_TOKEN,
        aws_region=REGION,
        base_url=base + "/openai/v1",
    )


def _azure(cls: type[Any]) -> Callable[[str], Any]:
    return lambda base: cls(api_key="azure-dummy-key", api_version="2024-10-21", azure_endpoint=base)


CASES = [
    Case(
        "bedrock",
        _bedrock(AnthropicBedrock),
        _bedrock(AsyncAnthropicBedrock),
        "aws.bedrock",
        BEDROCK_MODEL,
        f"/model/{BEDROCK_MODEL}/invoke",
    ),
    Case(
        "vertex",
        _vertex(AnthropicVertex),
        _vertex(AsyncAnthropicVertex),
        "gcp.vertex_ai",
        "claude-sonnet-4-5@20250929",
        "/v1/projects/proj/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict",
    ),
    Case(
        "foundry",
        _foundry(AnthropicFoundry),
        _foundry(AsyncAnthropicFoundry),
        "anthropic",
        "claude-sonnet-4-5",
        "/anthropic/v1/messages",
    ),
    Case(
        "mantle",
        _mantle(AnthropicBedrockMantle),
        _mantle(AsyncAnthropicBedrockMantle),
        "aws.bedrock",
        BEDROCK_MODEL,
        "/anthropic/v1/messages",
    ),
    Case(
        "aws", _aws(AnthropicAWS), _aws(AsyncAnthropicAWS), "anthropic", "claude-sonnet-4-5", "/v1/messages"
    ),
    Case(
        "google_cloud",
        _google_cloud(AnthropicGoogleCloud),
        _google_cloud(AsyncAnthropicGoogleCloud),
        "anthropic",
        "claude-sonnet-4-5",
        "/v1/messages",
    ),
    Case(
        "bedrock_openai",
        _bedrock_openai(BedrockOpenAI),
        _bedrock_openai(AsyncBedrockOpenAI),
        "aws.bedrock",
        "openai.gpt-oss-20b-1:0",
        "/openai/v1/chat/completions",
        chat=True,
    ),
    Case(
        "azure",
        _azure(openai.AzureOpenAI),
        _azure(openai.AsyncAzureOpenAI),
        "azure",
        "gpt-4o-mini",
        "/openai/deployments/gpt-4o-mini/chat/completions",
        chat=True,
    ),
]
IDS = [case.name for case in CASES]


def _call(client: Any, case: Case, *, stream: bool) -> Any:
    if case.chat:
        return client.chat.completions.create(model=case.model, messages=PROMPT, stream=stream)
    return client.messages.create(model=case.model, max_tokens=64, messages=PROMPT, stream=stream)


async def _acall(client: Any, case: Case, *, stream: bool) -> Any:
    if case.chat:
        return await client.chat.completions.create(model=case.model, messages=PROMPT, stream=stream)
    return await client.messages.create(model=case.model, max_tokens=64, messages=PROMPT, stream=stream)


def _answer(case: Case, result: Any) -> tuple[Any, ...]:
    # What the caller reads from a non-streamed answer (ids and timestamps differ per call).
    if case.chat:
        return (result.model, result.choices[0].message.content, result.usage.model_dump())
    return (result.model, [b.model_dump() for b in result.content], result.usage.model_dump())


def _stream_answer(case: Case, chunks: list[Any]) -> tuple[Any, ...]:
    # The text of a stream and the usage it reported, as the caller saw them.
    if case.chat:
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return (text, [c.usage for c in chunks if c.usage is not None])
    text = "".join(c.delta.text for c in chunks if c.type == "content_block_delta")
    usage = [c.message.usage.model_dump() for c in chunks if c.type == "message_start"]
    usage += [c.usage.model_dump() for c in chunks if c.type == "message_delta"]
    return (text, usage, [c.type for c in chunks])


def _check_event(event: CallEvent, case: Case, *, streamed: bool) -> None:
    assert (event.provider, event.model, event.streamed, event.outcome) == (
        case.provider,
        case.model,
        streamed,
        "ok",
    )
    assert event.error_type is None
    assert event.input_tokens is not None
    assert event.input_tokens > 0
    assert event.output_tokens is not None
    assert event.output_tokens > 0
    # Every model here is in genai-prices (Bedrock's under "aws", Vertex AI's under "google").
    assert event.cost_usd is not None
    assert event.cost_usd > 0


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_non_streamed_call_is_the_same_and_observed(fake: FakeProvider, case: Case) -> None:
    """Bare and wrapped give the caller the same answer; the wrapped one emits one event."""
    sink = CapturingSink()
    bare = case.sync(fake.base_url)
    wrapped = llmpulse.wrap(bare, sinks=[sink])
    assert type(wrapped) is type(bare)
    assert wrapped is not bare
    expected = _answer(case, _call(bare, case, stream=False))
    assert fake.requests[-1].path == case.path
    assert _answer(case, _call(wrapped, case, stream=False)) == expected
    assert fake.requests[-1].path == case.path
    (event,) = sink.calls
    _check_event(event, case, streamed=False)
    if not case.chat:
        assert (event.input_tokens, event.output_tokens) == (
            expected[2]["input_tokens"],
            expected[2]["output_tokens"],
        )
    bare.close()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_streamed_call_is_the_same_and_observed(fake: FakeProvider, case: Case) -> None:
    """Streams (Bedrock's AWS event-stream frames too) reach the caller unchanged, with usage and TTFT."""
    sink = CapturingSink()
    bare = case.sync(fake.base_url)
    wrapped = llmpulse.wrap(bare, sinks=[sink])
    expected = _stream_answer(case, list(_call(bare, case, stream=True)))
    bare_body = fake.requests[-1].json
    assert _stream_answer(case, list(_call(wrapped, case, stream=True))) == expected
    (event,) = sink.calls
    _check_event(event, case, streamed=True)
    assert event.ttft_s is not None
    assert event.ttft_s > 0
    if case.provider == "aws.bedrock" and case.chat:
        # SigV4 signs the body: llmpulse sends it as is (no stream_options), and estimates.
        assert fake.requests[-1].json == bare_body
        assert event.tokens_estimated
    elif not case.chat:
        assert not event.tokens_estimated
        assert event.output_tokens == expected[1][-1]["output_tokens"]
    bare.close()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_async_twin_is_the_same_and_observed(fake: FakeProvider, case: Case, stream: bool) -> None:
    """Each class's async twin wraps and reports as the sync one does."""
    sink = CapturingSink()
    bare = case.async_(fake.base_url)
    wrapped = llmpulse.wrap(bare, sinks=[sink])
    assert type(wrapped) is type(bare)
    if stream:
        expected = _stream_answer(case, [c async for c in await _acall(bare, case, stream=True)])
        got = _stream_answer(case, [c async for c in await _acall(wrapped, case, stream=True)])
    else:
        expected = _answer(case, await _acall(bare, case, stream=False))
        got = _answer(case, await _acall(wrapped, case, stream=False))
    assert got == expected
    (event,) = sink.calls
    _check_event(event, case, streamed=stream)
    await bare.close()


@pytest.mark.parametrize("case", [c for c in CASES if c.name in ("bedrock", "vertex", "mantle")], ids=str)
def test_errors_on_the_platform_paths_raise_as_bare(fake: FakeProvider, case: Case) -> None:
    """A 429 raises the same SDK exception bare and wrapped, and is reported under the class's provider."""
    sink = CapturingSink()
    bare = case.sync(fake.base_url).with_options(max_retries=0)
    wrapped = llmpulse.wrap(bare, sinks=[sink])
    fake.enqueue(Fault.status(429))
    with pytest.raises(anthropic.RateLimitError) as bare_error:
        _call(bare, case, stream=False)
    fake.enqueue(Fault.status(429))
    with pytest.raises(anthropic.RateLimitError) as wrapped_error:
        _call(wrapped, case, stream=False)
    assert (wrapped_error.value.status_code, wrapped_error.value.message) == (
        bare_error.value.status_code,
        bare_error.value.message.replace(
            bare_error.value.request_id or "-", wrapped_error.value.request_id or "-"
        ),
    )
    (event,) = sink.calls
    assert (event.provider, event.model, event.outcome, event.error_type, event.http_status) == (
        case.provider,
        case.model,
        "error",
        "RateLimitError",
        429,
    )
    bare.close()


def test_vertex_count_tokens_is_observed(fake: FakeProvider) -> None:
    """Vertex AI's count-tokens path is a count_tokens call (its model is in the body there)."""
    sink = CapturingSink()
    bare = CASES[1].sync(fake.base_url)
    wrapped = llmpulse.wrap(bare, sinks=[sink])
    expected = bare.messages.count_tokens(model="claude-sonnet-4-5@20250929", messages=PROMPT)
    got = wrapped.messages.count_tokens(model="claude-sonnet-4-5@20250929", messages=PROMPT)
    assert got.input_tokens == expected.input_tokens
    assert fake.requests[-1].path.endswith("/models/count-tokens:rawPredict")
    (event,) = sink.calls
    assert (event.provider, event.operation, event.model, event.input_tokens) == (
        "gcp.vertex_ai",
        "count_tokens",
        "claude-sonnet-4-5@20250929",
        expected.input_tokens,
    )
    bare.close()


def test_bedrock_stream_reset_midway_is_an_interrupted_stream(fake: FakeProvider) -> None:
    """A Bedrock stream cut after its first output frames is an error event, marked interrupted."""
    sink = CapturingSink()
    bare = CASES[0].sync(fake.base_url).with_options(max_retries=0)
    wrapped = llmpulse.wrap(bare, sinks=[sink])
    fake.enqueue(Fault.reset_mid_stream(after_events=3))
    with pytest.raises(Exception) as bare_error:  # noqa: PT011 - whatever the SDK raises, bare and wrapped alike
        list(_call(bare, CASES[0], stream=True))
    fake.enqueue(Fault.reset_mid_stream(after_events=3))
    with pytest.raises(type(bare_error.value)):
        list(_call(wrapped, CASES[0], stream=True))
    (event,) = sink.calls
    assert (event.provider, event.outcome, event.stream_interrupted) == ("aws.bedrock", "error", True)
    assert event.ttft_s is not None
    bare.close()


@pytest.mark.parametrize(
    ("case", "secret"),
    [(CASES[0], AWS_SECRET), (CASES[0], AWS_TOKEN), (CASES[1], GCP_TOKEN), (CASES[6], AWS_SECRET)],
    ids=["bedrock-secret-key", "bedrock-session-token", "vertex-access-token", "bedrock-openai-secret-key"],
)
def test_credentials_are_scrubbed_from_error_messages(fake: FakeProvider, case: Case, secret: str) -> None:
    """An error message quoting the client's AWS secret, session token or GCP token reaches sinks redacted."""
    sink = CapturingSink()
    wrapped = llmpulse.wrap(case.sync(fake.base_url).with_options(max_retries=0), sinks=[sink])
    fake.enqueue(Fault.status(400, message=f"credential {secret} was rejected"))
    with pytest.raises((anthropic.BadRequestError, openai.BadRequestError)):
        _call(wrapped, case, stream=False)
    (event,) = sink.calls
    assert event.error_message is not None
    assert "was rejected" in event.error_message
    assert secret not in event.error_message
    wrapped.close()


@pytest.mark.parametrize("case", [c for c in CASES if c.name in ("bedrock", "mantle", "aws")], ids=str)
def test_signed_or_path_model_bodies_never_switch_to_a_fallback(fake: FakeProvider, case: Case) -> None:
    """Where SigV4 signs the body or the URL names the model, a 529 is retried as sent, not re-modelled."""
    sink = CapturingSink()
    clock = FakeClock()
    policies = Policies(fallbacks={case.model: ["claude-haiku-4-5"]}, clock=clock)
    bare = case.sync(fake.base_url).with_options(max_retries=1)
    wrapped = llmpulse.wrap(bare, sinks=[sink], policies=policies)
    fake.enqueue(Fault.status(529))
    _call(wrapped, case, stream=False)
    first, second = fake.requests
    assert (second.path, second.json) == (first.path, first.json)
    assert second.headers["authorization"] != first.headers["authorization"]  # re-signed by the SDK
    (event,) = sink.calls
    assert (event.outcome, event.attempts, event.served_model) == ("ok", 2, case.model)
    bare.close()


class MyAnthropic(anthropic.Anthropic):
    """A user's own subclass, with a method of its own."""

    def greet(self) -> str:
        return "hello"


class MyOpenAI(openai.OpenAI):
    pass


def test_user_subclass_of_anthropic_wraps_as_its_base(fake: FakeProvider) -> None:
    """``class MyClient(Anthropic)`` wraps (no fallback warning: those are errors here), keeping its class."""
    sink = CapturingSink()
    ant = llmpulse.wrap(MyAnthropic(api_key="sk-ant-dummy-key", base_url=fake.base_url), sinks=[sink])
    assert type(ant) is MyAnthropic
    assert ant.greet() == "hello"
    ant.messages.create(model="claude-sonnet-4-5", max_tokens=32, messages=PROMPT)
    assert [(e.provider, e.model) for e in sink.calls] == [("anthropic", "claude-sonnet-4-5")]
    ant.close()


def test_user_subclass_of_openai_wraps_as_its_base(fake: FakeProvider) -> None:
    """``class MyClient(OpenAI)`` wraps as OpenAI does."""
    sink = CapturingSink()
    oai = llmpulse.wrap(MyOpenAI(api_key="sk-dummy-key", base_url=fake.openai_base_url), sinks=[sink])
    assert type(oai) is MyOpenAI
    oai.chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    assert [(e.provider, e.model) for e in sink.calls] == [("openai", "gpt-4o-mini")]
    oai.close()


def test_user_subclass_gets_its_base_provider() -> None:
    """Which adapter and provider name a subclass gets is its nearest known base's."""
    from llmpulse._wrap import _identify  # noqa: PLC0415 - the part of wrap() that picks the adapter

    class MyBedrock(AnthropicBedrock):
        pass

    assert _identify(object.__new__(MyAnthropic)).name == "anthropic"
    assert _identify(object.__new__(MyOpenAI)).name == "openai"
    assert isinstance(_identify(object.__new__(MyBedrock)), BedrockProvider)


def test_close_closes_what_the_bare_client_would(fake: FakeProvider) -> None:
    """Closing a wrapped Bedrock client closes the connection pool it shares with the bare one."""
    bare = CASES[0].sync(fake.base_url)
    wrapped = llmpulse.wrap(bare)
    _call(wrapped, CASES[0], stream=False)
    pool = bare._client._transport._pool
    assert pool.connections  # the call left a kept-alive connection
    wrapped.close()
    assert wrapped.is_closed()
    assert pool.connections == []


class _PrivateClient(anthropic._base_client.SyncAPIClient):  # type: ignore[type-arg]
    """An SDK client class llmpulse has no adapter for."""


def test_unsupported_sdk_client_names_the_class_and_what_is_needed() -> None:
    """An SDK client without a known wire format raises UnsupportedClientError, saying why."""
    client = object.__new__(_PrivateClient)
    with pytest.raises(llmpulse.UnsupportedClientError, match=r"_PrivateClient.*provider adapter") as info:
        llmpulse.wrap(client)
    assert isinstance(info.value, TypeError)
    assert "AnthropicBedrock" in str(info.value)  # and what is supported


# -- Bedrock's event stream, read from the bytes --------------------------------


def _frames(n_deltas: int) -> list[bytes]:
    def sse(obj: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    usage = {"input_tokens": 11, "output_tokens": 1, "cache_read_input_tokens": 4}
    events = [
        sse({"type": "message_start", "message": {"model": BEDROCK_MODEL, "usage": usage}}),
        *(
            sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "word "}})
            for _ in range(n_deltas)
        ),
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": n_deltas},
            }
        ),
        sse({"type": "message_stop"}),
    ]
    return list(bedrock_chunks(iter(events), 15, n_deltas))


def test_bedrock_stream_usage_survives_a_cut_middle() -> None:
    """The kept head and tail of a long stream are joined at a read boundary: frames are re-found by CRC."""
    data = b"".join(_frames(200))
    provider = BedrockProvider()
    info = RequestInfo("messages", model=BEDROCK_MODEL, streamed=True)
    for cut in (1000, 1001, 1013, 5555):  # anywhere, mid-frame included
        out = provider.parse_stream(info, data[:cut] + data[cut + 9000 :])
        assert (out.input_tokens, out.cached_input_tokens, out.output_tokens) == (15, 4, 200)
        assert (out.terminal, out.finish_reason, out.response_model) == (True, "end_turn", BEDROCK_MODEL)


def test_bedrock_exception_frame_is_a_stream_error() -> None:
    """An exception message mid-stream is the error the SDK raises, with its type and message."""
    exception = event_stream_frame(
        {
            ":message-type": "exception",
            ":exception-type": "throttlingException",
            ":content-type": "application/json",
        },
        json.dumps({"message": "Too many tokens"}).encode(),
    )
    start_and_one_delta = b"".join(_frames(3)[:2])
    out = BedrockProvider().parse_stream(
        RequestInfo("messages", streamed=True), start_and_one_delta + exception
    )
    assert out.terminal is False
    assert out.error_message == "throttlingException: Too many tokens"
    assert out.error_type is not None


def test_bedrock_stream_watch_sees_the_first_delta_across_reads() -> None:
    """TTFT: the watch finds the first content_block_delta however the frames are split into reads."""
    data = b"".join(_frames(2))
    first_delta = data.index(base64.b64encode(b'{"type":"content_block_delta"')[:36])
    for size in (1, 7, 64, len(data)):
        watch = BedrockProvider().stream_watch(RequestInfo("messages", streamed=True))
        seen_at = None
        for start in range(0, len(data), size):
            chunk = data[start : start + size]
            assert watch.feed(chunk) is chunk  # handed on unchanged
            if watch.content_seen and seen_at is None:
                seen_at = start + len(chunk)
        assert seen_at is not None
        assert seen_at > first_delta
