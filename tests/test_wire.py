"""What llmpulse sends, and when: stream usage asked only where it works, deadlines only when set."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import anthropic
import httpx2
import openai
import pytest
from prometheus_client import CollectorRegistry

import llmpulse
from conftest import MESSAGES
from llmpulse import Policies, Timeouts
from llmpulse.policies._stream_usage import StreamUsageMemory, ask_for_stream_usage, rejects_stream_options
from llmpulse.testing import CapturingSink, FakeClock, FakeProvider, Fault

_AZURE = ("azure", "x.openai.azure.com", "/openai/deployments/d/chat/completions")


@pytest.mark.parametrize(
    ("provider", "host", "path", "query", "ask"),
    [
        ("openai", "api.openai.com", "/v1/chat/completions", b"", True),
        ("openai", "localhost", "/v1/chat/completions", b"", None),  # learned from its first stream
        (*_AZURE, b"api-version=2024-06-01", False),
        (*_AZURE, b"api-version=2024-05-01-preview", False),
        (*_AZURE, b"api-version=2024-08-01-preview", True),
        (*_AZURE, b"a=1&api-version=2024-10-21", True),
        (*_AZURE, b"api-version=2025-04-01-preview", True),
        ("azure", "x.openai.azure.com", "/openai/v1/chat/completions", b"api-version=preview", True),
        (*_AZURE, b"", None),
    ],
)
def test_stream_usage_is_asked_where_it_is_known_to_work(
    provider: str, host: str, path: str, query: bytes, ask: bool | None
) -> None:
    """Azure API versions before 2024-08-01-preview refuse stream_options; elsewhere it is learned."""
    assert ask_for_stream_usage(provider, host, path, query) is ask
    assert ask_for_stream_usage("openai", "localhost", path, b"", frozenset({"localhost"})) is True


def test_an_unknown_endpoint_is_asked_only_after_a_stream_without_usage(
    fake: FakeProvider, sink: CapturingSink
) -> None:
    """The first stream goes as made (usage estimated); the next ones ask, and get exact usage."""
    url = fake.openai_base_url.replace("127.0.0.1", "localhost")
    with openai.OpenAI(api_key="sk-test-learn", base_url=url) as raw:
        client = llmpulse.wrap(raw, sinks=[sink], policies=Policies())
        for _ in range(2):
            chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
            assert all(chunk.choices for chunk in chunks)
    first, second = fake.requests[-2:]
    assert "stream_options" not in first.json
    assert second.json["stream_options"] == {"include_usage": True}
    assert [e.tokens_estimated for e in sink.calls] == [True, False]


def test_a_server_that_sends_usage_unasked_is_never_asked(sink: CapturingSink) -> None:
    """Its usage chunk reaches the caller as bare, on every call, and is read."""
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    frames = [
        {**chunk, "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]},
        {**chunk, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
    ]
    body = "".join(f"data: {json.dumps(f)}\n\n" for f in frames) + "data: [DONE]\n\n"
    sent: list[bytes] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        sent.append(request.content)
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    def client() -> openai.OpenAI:
        http = httpx2.Client(transport=httpx2.MockTransport(answer))
        return openai.OpenAI(api_key="sk-test-x", base_url="http://vllm.internal/v1", http_client=http)

    bare, wrapped = client(), llmpulse.wrap(client(), sinks=[sink], policies=Policies())
    with bare, wrapped:
        for _ in range(2):
            seen = [
                [c.to_dict() for c in c.chat.completions.create(model="m", messages=MESSAGES, stream=True)]
                for c in (bare, wrapped)
            ]
            assert seen[0] == seen[1]
    assert all(b"stream_options" not in content for content in sent)
    assert [(e.output_tokens, e.tokens_estimated) for e in sink.calls] == [(1, False), (1, False)]


def test_a_refusal_names_the_field() -> None:
    """Only a 400/422 whose body names stream_options is a refusal of it."""
    body = b'{"error": {"message": "Unrecognized request argument supplied: stream_options"}}'
    assert rejects_stream_options(400, body)
    assert rejects_stream_options(422, body)
    assert not rejects_stream_options(400, b'{"error": {"message": "messages is empty"}}')
    assert not rejects_stream_options(500, body)
    assert not rejects_stream_options(400, None)


def test_the_refusal_memory_is_bounded() -> None:
    """Past its size, new refusals are not remembered (each such call costs one resend, never a failure)."""
    memory = StreamUsageMemory()
    for port in range(5000):
        memory.remember("h", port, "/v1/chat/completions")
    assert memory.refused("h", 0, "/v1/chat/completions")
    assert not memory.refused("h", 4999, "/v1/chat/completions")


@pytest.mark.parametrize(("version", "asked"), [("2024-06-01", False), ("2024-10-21", True)])
def test_azure_streams_are_asked_for_usage_by_api_version(
    fake: FakeProvider, sink: CapturingSink, version: str, asked: bool
) -> None:
    """An AzureOpenAI stream on an old API version goes as the caller made it, and still gets tokens."""
    client = openai.AzureOpenAI(
        api_key="azure-key-0123456789",
        api_version=version,
        azure_endpoint=fake.base_url,
        azure_deployment="prod-gpt4o",
    )
    wrapped = llmpulse.wrap(client, sinks=[sink], registry=CollectorRegistry())
    with client:
        chunks = list(wrapped.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert ("stream_options" in fake.requests[-1].json) is asked
    assert all(chunk.choices for chunk in chunks)
    [event] = sink.calls
    assert event.outcome == "ok"
    assert event.output_tokens is not None
    assert event.tokens_estimated is not asked


def test_by_default_the_sdks_timeout_reaches_the_transport_unchanged(
    raw_openai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider
) -> None:
    """No llmpulse limit is set: an answer slower than the old 8 s default budget would be is awaited."""
    client = llmpulse.wrap(raw_openai.with_options(timeout=30.0), sinks=[sink], registry=CollectorRegistry())
    fake.enqueue(Fault.latency(0.3))
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=1)
    [event] = sink.calls
    assert (event.outcome, event.attempts) == ("ok", 1)
    assert len(fake.requests) == 1


def test_a_context_deadline_bounds_the_whole_call(
    raw_openai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider
) -> None:
    """context(total_timeout_s=...) caps every attempt at the time left; past it, no retry is made."""
    client = llmpulse.wrap(raw_openai, sinks=[sink], registry=CollectorRegistry())
    fake.enqueue(Fault.latency(5.0))
    started = time.monotonic()
    with llmpulse.context(total_timeout_s=0.3), pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert time.monotonic() - started < 4.0  # a loose guard: the 5 s answer was not awaited
    [event] = sink.calls
    assert (event.outcome, event.attempts, event.retry_stop_reason) == ("error", 1, "deadline")
    assert len(fake.requests) == 1


def test_a_context_deadline_must_be_positive() -> None:
    """A zero, negative or infinite total_timeout_s is refused where it is given."""
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="total_timeout_s"):
            llmpulse.context(total_timeout_s=bad)


def test_inner_context_deadline_wins(raw_openai: openai.OpenAI) -> None:
    """Nested contexts: the innermost deadline applies, unset inner ones inherit it."""
    with llmpulse.context(total_timeout_s=5.0) as outer:
        assert outer.total_timeout_s == 5.0
        with llmpulse.context(tenant="a") as inner:
            assert inner.total_timeout_s == 5.0
        with llmpulse.context(total_timeout_s=1.0) as tighter:
            assert tighter.total_timeout_s == 1.0


def test_the_fixed_preset_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """LLMPULSE_DEADLINES=fixed is the field's recipe with 2 retries; a variable set overrides its phase."""
    monkeypatch.setenv("LLMPULSE_DEADLINES", "fixed")
    monkeypatch.setenv("LLMPULSE_STREAM_IDLE_TIMEOUT_S", "90")
    settings = llmpulse.Settings.from_env()
    policies = llmpulse._wrap.default_policies(settings)
    assert policies.timeouts == Timeouts(**{**_fields(Timeouts.fixed()), "stream_idle_s": 90.0})
    assert policies.max_retries == 2
    monkeypatch.setenv("LLMPULSE_DEADLINES", "sdk")
    monkeypatch.delenv("LLMPULSE_STREAM_IDLE_TIMEOUT_S")
    default = llmpulse._wrap.default_policies(llmpulse.Settings.from_env())
    assert default.timeouts == Timeouts()
    assert default.max_retries is None


def _fields(timeouts: Timeouts) -> dict[str, object]:
    return {name: getattr(timeouts, name) for name in Timeouts.__dataclass_fields__}


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("LLMPULSE_DEADLINES", "strict", "LLMPULSE_DEADLINES=strict is not valid"),
        ("LLMPULSE_READ_TIMEOUT_S", "0", "LLMPULSE_READ_TIMEOUT_S=0.0 is not valid"),
        ("LLMPULSE_TOTAL_TIMEOUT_S", "inf", "LLMPULSE_TOTAL_TIMEOUT_S=inf is not valid"),
        ("LLMPULSE_READ_TIMEOUT_PER_TOKEN_S", "nan", "LLMPULSE_READ_TIMEOUT_PER_TOKEN_S=nan is not valid"),
    ],
)
def test_bad_deadline_settings_name_the_variable(variable: str, value: str, message: str) -> None:
    """A bad deadline setting fails at configure time, naming the variable."""
    with pytest.raises(llmpulse.ConfigError, match=message):
        llmpulse.Settings.from_env({variable: value})


def test_an_empty_timeout_variable_means_unset() -> None:
    """LLMPULSE_CONNECT_TIMEOUT_S= (empty) leaves the client's timeout in charge."""
    assert llmpulse.Settings.from_env({"LLMPULSE_CONNECT_TIMEOUT_S": ""}).connect_timeout_s is None


def test_a_spent_quota_is_retried_unless_asked(
    raw_openai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider
) -> None:
    """As the SDKs do, a 429 insufficient_quota is retried; LLMPULSE_RETRY_QUOTA_EXHAUSTED=0 spares it."""
    settings = llmpulse.Settings.from_env({"LLMPULSE_RETRY_QUOTA_EXHAUSTED": "0"})
    assert settings.retry_quota_exhausted is False
    client = llmpulse.wrap(
        raw_openai, sinks=[sink], registry=CollectorRegistry(), policies=Policies(clock=FakeClock())
    )
    fake.enqueue(Fault.status(429, error_code="insufficient_quota"))
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert [r.path for r in fake.requests] == ["/v1/chat/completions"] * 2
    assert sink.calls[0].retries == 1


async def test_assigned_max_retries_keeps_one_loop_async_anthropic(
    fake: FakeProvider, sink: CapturingSink
) -> None:
    """client.max_retries = 1 on a wrapped async Anthropic client: 2 requests for a failing call, 1 event."""
    raw = anthropic.AsyncAnthropic(api_key="sk-ant-test-abcdefghijklmnop", base_url=fake.anthropic_base_url)
    client = llmpulse.wrap(
        raw, sinks=[sink], registry=CollectorRegistry(), policies=Policies(clock=FakeClock(), breaker=None)
    )
    client.max_retries = 1
    fake.enqueue(*[Fault.reset_before_headers()] * 2)
    with pytest.raises(anthropic.APIConnectionError):
        await client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=MESSAGES)
    assert len(fake.requests) == 2
    [event] = sink.calls
    assert (event.attempts, event.retries) == (2, 1)
    await raw.close()


class _CountedEvents(httpx2.SyncByteStream):
    """An event stream that counts how much of it was read."""

    def __init__(self, events: int) -> None:
        self.events, self.read = events, 0

    def __iter__(self) -> Iterator[bytes]:
        for n in range(self.events):
            self.read += 1
            yield b'data: {"n": %d}\n\n' % n


def test_an_event_stream_without_stream_in_its_body_is_not_read_ahead() -> None:
    """A GET of an event stream (the SDK streams it; its request has no "stream": true) goes read by read."""
    body = _CountedEvents(50)

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=body)

    raw = openai.OpenAI(
        api_key="sk-test",
        base_url="http://127.0.0.1:9/v1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
    )
    client = llmpulse.wrap(raw, sinks=[CapturingSink()], registry=CollectorRegistry())
    stream = client.get("/events", cast_to=object, stream=True, stream_cls=openai.Stream[object])
    first = next(iter(stream))
    assert first == {"n": 0}
    assert body.read < 5  # not all 50 events before the caller read its first
    stream.close()


def test_copies_share_the_http_client_and_another_key_gets_its_own_hook(
    raw_openai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider
) -> None:
    """As in the SDK, every copy shares the caller's http client; one with another key is told apart."""
    wrapped = llmpulse.wrap(raw_openai, sinks=[sink], registry=CollectorRegistry())
    assert wrapped._client is raw_openai._client
    assert wrapped.with_options(timeout=5.0)._client is wrapped._client
    other = wrapped.with_options(api_key="sk-another-key-0123456789")
    assert other._client is wrapped._client
    retrying = wrapped.with_options(max_retries=0)
    fake.enqueue(Fault.status(500))
    with pytest.raises(openai.InternalServerError):
        retrying.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    other.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert [e.attempts for e in sink.calls] == [1, 1]
    assert sink.calls[1].api_key_id != sink.calls[0].api_key_id


def test_a_copy_with_another_base_url_shares_the_http_client_and_reports_its_own_address(
    raw_openai: openai.OpenAI, sink: CapturingSink, plain_fake: FakeProvider
) -> None:
    """with_options(base_url=...) shares the http client, as in the SDK; the event names the new address."""
    plain_fake.clear()  # a session server other tests use too
    wrapped = llmpulse.wrap(raw_openai, sinks=[sink], registry=CollectorRegistry())
    moved = wrapped.with_options(base_url=plain_fake.openai_base_url)
    assert moved._client is wrapped._client
    moved.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    [event] = sink.calls
    assert (event.server_address, event.server_port) == ("127.0.0.1", plain_fake.port)
    assert len(plain_fake.requests) == 1
