"""Prompt and completion text: never captured by default, captured in full when the user opts in."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import anthropic
import openai
import pytest
from prometheus_client import CollectorRegistry

import llmpulse
from conftest import MESSAGES
from llmpulse import StructlogSink
from llmpulse._content import MAX_CONTENT_CHARS
from llmpulse.testing import CapturingSink, FakeProvider

PROMPT = MESSAGES[0]["content"]


@pytest.fixture(name="capturing")
def _capturing() -> Iterator[None]:
    llmpulse.configure(sinks=("none",), capture_content=True)
    yield
    llmpulse.configure(sinks=("none",))


def test_content_is_not_captured_by_default(raw_openai: openai.OpenAI) -> None:
    """Without the opt-in, neither the event nor the log line holds prompt or completion text."""
    out, sink = io.StringIO(), CapturingSink()
    client = llmpulse.wrap(raw_openai, sinks=[sink, StructlogSink(out)], registry=CollectorRegistry())
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert llmpulse.flush()
    [event] = sink.calls
    assert (event.input_content, event.output_content) == (None, None)
    answer = reply.choices[0].message.content or ""
    assert PROMPT not in out.getvalue()
    assert answer not in out.getvalue()


@pytest.mark.usefixtures("capturing")
def test_chat_prompt_and_answer_are_captured_when_opted_in(raw_openai: openai.OpenAI) -> None:
    """input_content is the request's messages as JSON; output_content the text the SDK returned."""
    sink = CapturingSink()
    client = llmpulse.wrap(raw_openai, sinks=[sink], registry=CollectorRegistry())
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    [event] = sink.calls
    assert event.input_content is not None
    assert json.loads(event.input_content) == {"messages": MESSAGES}
    assert event.output_content == reply.choices[0].message.content


@pytest.mark.usefixtures("capturing")
def test_streamed_answer_is_captured_as_the_caller_read_it(raw_openai: openai.OpenAI) -> None:
    """For a stream, output_content is the concatenation of the deltas the caller received."""
    sink = CapturingSink()
    client = llmpulse.wrap(raw_openai, sinks=[sink], registry=CollectorRegistry())
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    [event] = sink.calls
    assert text
    assert event.output_content == text


@pytest.mark.usefixtures("capturing")
def test_responses_api_content_is_captured(raw_openai: openai.OpenAI) -> None:
    """Responses: instructions and input in, output text out."""
    sink = CapturingSink()
    client = llmpulse.wrap(raw_openai, sinks=[sink], registry=CollectorRegistry())
    response = client.responses.create(model="gpt-4o-mini", instructions="Be brief.", input=PROMPT)
    [event] = sink.calls
    assert event.input_content is not None
    assert json.loads(event.input_content) == {"instructions": "Be brief.", "input": PROMPT}
    assert event.output_content == response.output_text


@pytest.mark.usefixtures("capturing")
def test_anthropic_system_prompt_and_answer_are_captured(fake: FakeProvider) -> None:
    """Anthropic: system and messages in, text blocks out, streamed or not."""
    sink = CapturingSink()
    raw = anthropic.Anthropic(api_key="sk-ant-test", base_url=fake.anthropic_base_url)
    client = llmpulse.wrap(raw, sinks=[sink], registry=CollectorRegistry())
    message = client.messages.create(
        model="claude-haiku-4-5", max_tokens=64, system="You are terse.", messages=MESSAGES
    )
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=MESSAGES) as stream:
        streamed = "".join(stream.text_stream)
    raw.close()
    plain, streaming = sink.calls
    assert plain.input_content is not None
    assert json.loads(plain.input_content) == {"system": "You are terse.", "messages": MESSAGES}
    assert plain.output_content == "".join(b.text for b in message.content if b.type == "text")
    assert streaming.output_content == streamed


@pytest.mark.usefixtures("capturing")
def test_private_context_is_never_captured(raw_openai: openai.OpenAI) -> None:
    """llmpulse.context(private=True) overrides the opt-in for the calls made inside it."""
    sink = CapturingSink()
    client = llmpulse.wrap(raw_openai, sinks=[sink], registry=CollectorRegistry())
    with llmpulse.context(tenant="acme", private=True):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    private, public = sink.calls
    assert (private.input_content, private.output_content) == (None, None)
    assert public.input_content is not None
    assert public.output_content is not None


@pytest.mark.usefixtures("capturing")
def test_huge_prompt_is_cut_and_says_so(raw_openai: openai.OpenAI) -> None:
    """A prompt beyond the cap is cut at MAX_CONTENT_CHARS with the number of characters left out."""
    sink = CapturingSink()
    client = llmpulse.wrap(raw_openai, sinks=[sink], registry=CollectorRegistry())
    big = "x" * (MAX_CONTENT_CHARS * 2)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": big}])
    [event] = sink.calls
    assert event.input_content is not None
    head, _, tail = event.input_content.partition("…[truncated ")
    assert len(head) == MAX_CONTENT_CHARS
    left_out = len(json.dumps({"messages": [{"role": "user", "content": big}]}, separators=(",", ":")))
    assert tail == f"{left_out - MAX_CONTENT_CHARS} chars]"
