"""Broken responses and broken llmpulse: the caller sees what the SDK would, the event says what happened."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest
from prometheus_client import CollectorRegistry

import llmpulse
from conftest import MESSAGES, http_errors
from llmpulse._registry import hook_of
from llmpulse.testing import CapturingSink, FakeProvider, Fault


def test_malformed_json_body_raises_what_the_sdk_raises(
    raw_openai: openai.OpenAI, oai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider
) -> None:
    """A 200 with a broken JSON body raises the SDK's own JSONDecodeError, as bare; the event says why."""
    fake.enqueue(Fault.malformed_json())
    with pytest.raises(json.JSONDecodeError) as bare:
        raw_openai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    fake.enqueue(Fault.malformed_json())
    with pytest.raises(json.JSONDecodeError) as wrapped:
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert str(wrapped.value) == str(bare.value)
    [event] = sink.calls
    assert (event.outcome, event.http_status, event.attempts) == ("error", 200, 1)
    assert (event.error_type, event.body_malformed) == ("JSONDecodeError", True)
    assert event.rejected_reason is None
    assert event.input_tokens is None
    assert event.cost_usd is None


async def test_malformed_json_through_async_anthropic(
    aant: anthropic.AsyncAnthropic, sink: CapturingSink, fake: FakeProvider
) -> None:
    """The async path and the Anthropic adapter hand the broken body to the SDK the same way."""
    fake.enqueue(Fault.malformed_json())
    with pytest.raises(json.JSONDecodeError):
        await aant.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=MESSAGES)
    assert sink.calls[0].body_malformed


def test_truncated_body_is_an_error(oai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider) -> None:
    """A body cut short of its Content-Length raises from the HTTP layer; the event records the failure."""
    fake.enqueue(Fault.truncated())
    with pytest.raises((*http_errors(), openai.APIError)):
        oai.with_options(max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    [event] = sink.calls
    assert event.outcome == "error"
    assert event.error_type is not None


def test_huge_response_is_counted(oai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider) -> None:
    """A 300 kB answer passes through whole; its wire size (gzip here) and its usage are on the event."""
    fake.enqueue(Fault.huge(300_000))
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(completion.choices[0].message.content or "") > 290_000
    [event] = sink.calls
    assert event.content_encoding == "gzip"
    assert 0 < event.response_bytes < 100_000  # the bytes that came over the network, compressed
    assert event.output_tokens == completion.usage.completion_tokens


def test_quota_429_message_is_kept(oai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider) -> None:
    """The provider's error code and message land on the event."""
    fake.enqueue(Fault.status(429, error_code="insufficient_quota", message="You exceeded your quota"))
    with pytest.raises(openai.RateLimitError):
        oai.with_options(max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    [event] = sink.calls
    assert event.error_message == "insufficient_quota: You exceeded your quota"
    assert event.error_type == "RateLimitError"


def test_anthropic_error_names_the_subclass(
    ant: anthropic.Anthropic, sink: CapturingSink, fake: FakeProvider
) -> None:
    """A 400 from Anthropic gives BadRequestError with its type and message."""
    fake.enqueue(Fault.status(400, message="max_tokens too large"))
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=MESSAGES)
    [event] = sink.calls
    assert event.error_type == "BadRequestError"
    assert event.error_message == "invalid_request_error: max_tokens too large"


def test_anthropic_stream_reset(ant: anthropic.Anthropic, sink: CapturingSink, fake: FakeProvider) -> None:
    """An Anthropic stream reset after content is an interrupted error with estimated output."""
    fake.enqueue(Fault.reset_mid_stream(after_events=5))
    with pytest.raises((*http_errors(), anthropic.APIError)):
        for _ in ant.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=MESSAGES, stream=True):
            pass
    [event] = sink.calls
    assert (event.outcome, event.stream_interrupted, event.tokens_estimated) == ("error", True, True)
    assert event.input_tokens is not None  # message_start arrived
    assert event.output_tokens is not None


async def test_async_stream_aclose_is_abandoned(aoai: openai.AsyncOpenAI, sink: CapturingSink) -> None:
    """Closing an async Responses stream early gives outcome 'abandoned'."""
    stream = await aoai.responses.create(
        model="gpt-4o-mini", input="hello", stream=True, max_output_tokens=50
    )
    async for event in stream:
        if event.type == "response.output_text.delta":
            break
    await stream.close()
    [event] = sink.calls
    assert event.outcome == "abandoned"
    assert event.operation == "responses"
    assert event.ttft_s is not None


def test_legacy_completion_stream(sink: CapturingSink, fake: FakeProvider) -> None:
    """Legacy completions streams get usage injected and stripped like chat."""
    # Not strict: the API sends finish_reason null mid-stream, which the SDK's type does not allow.
    with openai.OpenAI(api_key="sk-test-x", base_url=fake.openai_base_url) as raw:
        client = llmpulse.wrap(raw, sinks=[sink], registry=CollectorRegistry())
        chunks = list(
            client.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi", max_tokens=5, stream=True)
        )
    assert all(c.choices for c in chunks)
    assert sink.calls[0].output_tokens == 5
    assert fake.requests[-1].json["stream_options"] == {"include_usage": True}


def test_include_usage_can_be_turned_off(
    raw_openai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider
) -> None:
    """With include_stream_usage off, the request is untouched and output is estimated."""
    llmpulse.configure(sinks=("none",), include_stream_usage=False)
    try:
        client = llmpulse.wrap(raw_openai, sinks=[sink], registry=CollectorRegistry())
        list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    finally:
        llmpulse.configure(sinks=("none",))
    assert "stream_options" not in fake.requests[-1].json
    [event] = sink.calls
    assert event.outcome == "ok"
    assert event.tokens_estimated
    assert event.output_tokens is not None
    assert event.output_tokens > 0


def test_a_bug_in_llmpulse_never_breaks_the_call(
    oai: openai.OpenAI, sink: CapturingSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If describing the request raises inside llmpulse, the call goes through unobserved and is counted."""

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    hook = hook_of(oai)
    monkeypatch.setattr(type(hook.provider), "describe", boom)
    registry_errors = llmpulse._pipeline.get_pipeline()._internal_errors
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.choices
    assert sink.calls == []
    assert llmpulse._pipeline.get_pipeline()._internal_errors == registry_errors + 1


def test_failing_inline_sink_does_not_break_the_call(raw_openai: openai.OpenAI) -> None:
    """An inline sink that raises is counted as a drop; the call returns normally."""

    class Broken:
        name = "broken-inline"
        inline = True

        def emit(self, event: object) -> None:
            raise ValueError("nope")

    client = llmpulse.wrap(raw_openai, sinks=[Broken()], registry=CollectorRegistry())
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    [stats] = [s for s in llmpulse.sink_stats() if s.name == "broken-inline"]
    assert stats.dropped == stats.emitted == 2


def test_a_bug_while_reading_the_body_never_breaks_the_call(
    oai: openai.OpenAI, sink: CapturingSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If parsing the response inside llmpulse raises, the caller still gets its completion."""

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(type(hook_of(oai).provider), "parse_body", boom)
    errors = llmpulse._pipeline.get_pipeline()._internal_errors
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.choices
    assert sink.calls == []
    assert llmpulse._pipeline.get_pipeline()._internal_errors == errors + 1


def test_a_bug_in_the_retry_decision_hands_the_response_over(
    oai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the retry decision raises, the SDK gets the error response and raises its own exception."""

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(llmpulse._call, "decide_retry", boom)
    fake.enqueue(Fault.status(500))
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert [e.attempts for e in sink.calls] == [1]


def test_network_timings_can_be_turned_off(raw_openai: openai.OpenAI, sink: CapturingSink) -> None:
    """LLMPULSE_NETWORK_TIMINGS=off leaves the trace hook out and the network field empty."""
    llmpulse.configure(sinks=("none",), network_timings="off")
    try:
        client = llmpulse.wrap(raw_openai, sinks=[sink], registry=CollectorRegistry())
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    finally:
        llmpulse.configure(sinks=("none",))
    assert sink.calls[0].network is None
    assert sink.calls[0].outcome == "ok"


def test_network_timings_are_sampled_by_default(raw_openai: openai.OpenAI, sink: CapturingSink) -> None:
    """By default the first call and then one call in 1/rate is timed; the others carry no network."""
    llmpulse.configure(sinks=("none",), network_sample_rate=0.25)
    try:
        client = llmpulse.wrap(raw_openai, sinks=[sink], registry=CollectorRegistry())
        for _ in range(8):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    finally:
        llmpulse.configure(sinks=("none",))
    timed = [e.network is not None for e in sink.calls]
    assert timed == [True, False, False, False, True, False, False, False]
    assert sink.calls[0].network is not None
    assert sink.calls[0].network.connection_reused is False  # the first call opened the connection


def test_a_retried_call_is_timed_even_when_not_sampled(
    raw_openai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider
) -> None:
    """Retries get network timings: something already went wrong with the first attempt."""
    llmpulse.configure(sinks=("none",), network_sample_rate=0.01)
    try:
        client = llmpulse.wrap(
            raw_openai.with_options(max_retries=1), sinks=[sink], registry=CollectorRegistry()
        )
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # the sampled first call
        fake.enqueue(Fault.status(503, retry_after=0))
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    finally:
        llmpulse.configure(sinks=("none",))
    retried = sink.calls[1]
    assert retried.attempts == 2
    assert retried.network is not None
    assert retried.network.time_to_headers_s is not None
