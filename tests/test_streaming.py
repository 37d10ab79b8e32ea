"""Streams: usage and TTFT captured, the caller's stream unchanged, every ending is one event."""

from __future__ import annotations

import gc

import anthropic
import openai
import pytest

import llmpulse
from conftest import MESSAGES, http_errors
from llmpulse.testing import CapturingSink, FakeProvider, Fault, FaultPlan


@pytest.fixture(name="fake", params=["gzip", "plain"])
def _fake(
    request: pytest.FixtureRequest, gzip_streams_fake: FakeProvider, plain_fake: FakeProvider
) -> FakeProvider:
    # Every test runs on a fake that gzips streams too (the hosted APIs gzip only JSON answers,
    # which would leave a stream nothing to decode) and on one that compresses nothing.
    return gzip_streams_fake if request.param == "gzip" else plain_fake


def _chunks(
    stream: openai.Stream[openai.types.chat.ChatCompletionChunk],
) -> list[tuple[int, str | None]]:
    return [(len(c.choices), c.choices[0].delta.content if c.choices else None) for c in stream]


def test_openai_stream_usage_without_changing_the_stream(
    oai: openai.OpenAI, raw_openai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider
) -> None:
    """llmpulse asks for usage and hides the extra chunk: the caller sees what the bare SDK sees."""
    bare = _chunks(raw_openai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    wrapped = _chunks(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert wrapped == bare
    assert all(n == 1 for n, _ in wrapped)
    assert fake.requests[-1].json["stream_options"] == {"include_usage": True}
    [event] = sink.calls
    assert event.outcome == "ok"
    assert event.streamed is True
    assert event.output_tokens == sum(1 for _, text in wrapped if text)
    assert event.input_tokens is not None
    assert event.tokens_estimated is False
    assert event.ttft_s is not None
    assert 0 < event.ttft_s <= event.latency_s
    assert event.finish_reason == "stop"
    assert event.cost_usd is not None


def test_caller_requested_usage_chunk_is_kept(oai: openai.OpenAI, sink: CapturingSink) -> None:
    """When the caller asked for include_usage themselves, the usage chunk reaches them."""
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert sink.calls[0].output_tokens == chunks[-1].usage.completion_tokens


def test_stream_closed_early_is_abandoned_with_estimated_tokens(
    oai: openai.OpenAI, sink: CapturingSink
) -> None:
    """Closing a stream after two chunks yields outcome 'abandoned' with an output estimate."""
    with oai.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, max_tokens=200
    ) as stream:
        for i, _ in enumerate(stream):
            if i == 2:
                break
    [event] = sink.calls
    assert event.outcome == "abandoned"
    assert event.tokens_estimated is True
    assert event.output_tokens is not None
    assert event.output_tokens >= 1
    assert event.stream_interrupted is False


def test_garbage_collected_stream_still_yields_one_event(oai: openai.OpenAI, sink: CapturingSink) -> None:
    """A sync openai stream dropped without close (a reference cycle) is reported once GC runs."""
    stream = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, max_tokens=100)
    next(iter(stream))
    del stream
    gc.collect()
    llmpulse.flush()
    assert [e.outcome for e in sink.calls] == ["abandoned"]


def test_stream_reset_midway_is_an_interrupted_error(
    oai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider
) -> None:
    """A reset after output reached the caller raises to it and marks stream_interrupted."""
    fake.enqueue(Fault.reset_mid_stream(after_events=3))
    received = []
    with pytest.raises((*http_errors(), openai.APIError)):  # noqa: PT012
        for chunk in oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
            received.append(chunk)
    [event] = sink.calls
    assert received
    assert event.outcome == "error"
    assert event.stream_interrupted is True
    assert event.attempts == 1
    assert event.tokens_estimated is True


def test_anthropic_raw_stream_merges_start_and_delta_usage(
    ant: anthropic.Anthropic, sink: CapturingSink, fake: FakeProvider
) -> None:
    """stream=True: input and cache usage from message_start, output from the last message_delta."""
    fake.plan = FaultPlan(cached_input_tokens=7)
    events = list(
        ant.messages.create(model="claude-sonnet-4-6", max_tokens=40, messages=MESSAGES, stream=True)
    )
    start = next(e for e in events if e.type == "message_start")
    delta = [e for e in events if e.type == "message_delta"][-1]
    [event] = sink.calls
    assert event.outcome == "ok"
    assert event.input_tokens == start.message.usage.input_tokens + 7
    assert event.cached_input_tokens == 7
    assert event.output_tokens == delta.usage.output_tokens
    assert event.finish_reason == delta.delta.stop_reason
    assert event.ttft_s is not None


def test_anthropic_stream_helper(ant: anthropic.Anthropic, sink: CapturingSink) -> None:
    """messages.stream() and get_final_message() work; the event matches the final usage."""
    with ant.messages.stream(model="claude-haiku-4-5", max_tokens=30, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text
    [event] = sink.calls
    assert event.output_tokens == final.usage.output_tokens
    assert event.request_id == stream.request_id


def test_openai_stream_helpers(oai: openai.OpenAI, sink: CapturingSink) -> None:
    """chat.completions.stream() and responses.stream() are observed with usage."""
    with oai.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
        final = stream.get_final_completion()
    with oai.responses.stream(model="gpt-4o-mini", input="hello") as rstream:
        response = rstream.get_final_response()
    chat, resp = sink.calls
    assert final.usage is None  # the helper does not ask for usage; what the caller sees is unchanged
    assert chat.output_tokens == len((final.choices[0].message.content or "").split())
    assert chat.tokens_estimated is False
    assert (resp.operation, resp.output_tokens, resp.outcome) == (
        "responses",
        response.usage.output_tokens,
        "ok",
    )
    assert resp.ttft_s is not None


async def test_async_streams(
    aoai: openai.AsyncOpenAI, aant: anthropic.AsyncAnthropic, sink: CapturingSink
) -> None:
    """Async streams read to the end, and one closed early, give ok and abandoned events."""
    stream = await aoai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    texts = [c.choices[0].delta.content async for c in stream]
    assert all(len(t or "") >= 0 for t in texts)
    async with aant.messages.stream(model="claude-haiku-4-5", max_tokens=50, messages=MESSAGES) as astream:
        async for _ in astream.text_stream:
            break
    first, second = sink.calls
    assert (first.outcome, first.streamed, first.tokens_estimated) == ("ok", True, False)
    assert second.outcome == "abandoned"
    assert second.input_tokens is not None  # message_start arrived before the close
