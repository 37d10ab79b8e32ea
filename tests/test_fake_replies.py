"""The fake provider's reply script: text, tool calls and JSON in both APIs' formats, streamed and not.

Each reply is read back through the real SDKs with strict response validation, so a
wire-format mistake in a scripted reply fails here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from conftest import ANTHROPIC_KEY
from llmpulse.testing import FakeProvider, Fault, RecordedRequest, Reply, ToolCall

MESSAGES: list[Any] = [{"role": "user", "content": "Which service is paging?"}]
TWO_CALLS = Reply.tools(
    ToolCall("lookup_runbook", {"service": "checkout"}),
    ToolCall("page", {"team": "payments", "urgent": True}),
    text="Let me check.",
)


@pytest.fixture(autouse=True)
def _no_script(fake: FakeProvider) -> Iterator[None]:
    yield
    fake.replies = None


@pytest.fixture(name="raw_anthropic")
def _raw_anthropic(fake: FakeProvider) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(
        api_key=ANTHROPIC_KEY, base_url=fake.anthropic_base_url, _strict_response_validation=True
    )
    yield client
    client.close()


def test_reply_counts_a_token_per_word_and_per_argument_piece() -> None:
    assert Reply.message("restart checkout  now").text_pieces() == ("restart", " checkout", "  now")
    assert Reply.message("").output_tokens == 0
    call = ToolCall("page", {"team": "payments"})  # {"team":"payments"}: 20 chars, 5 pieces
    assert "".join(call.argument_pieces()) == call.arguments_json == '{"team":"payments"}'
    assert Reply.tools(call, text="on it").output_tokens == 2 + 5
    assert json.loads(Reply.json({"severity": 2}).text) == {"severity": 2}


def test_call_ids_are_stable_and_distinct() -> None:
    a, b = ToolCall("page", {"team": "payments"}), ToolCall("page", {"team": "payments"})
    assert a.call_id(0, "call_") == b.call_id(0, "call_")  # the same on every run
    assert a.call_id(0, "call_") != a.call_id(1, "call_")  # not the same twice in one reply
    assert ToolCall("page", id="call_given").call_id(3, "toolu_") == "call_given"


def test_chat_tool_calls(raw_openai: openai.OpenAI, fake: FakeProvider) -> None:
    fake.replies = lambda request: TWO_CALLS
    reply = raw_openai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    [choice] = reply.choices
    assert (choice.finish_reason, choice.message.content) == ("tool_calls", "Let me check.")
    calls = choice.message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
        (call.name, call.arguments) for call in TWO_CALLS.tool_calls
    ]
    assert reply.usage is not None
    assert reply.usage.completion_tokens == TWO_CALLS.output_tokens
    with raw_openai.chat.completions.stream(
        model="gpt-4o-mini", messages=MESSAGES, stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "Let me check."
    assert [
        (c.id, c.function.name, c.function.arguments) for c in final.choices[0].message.tool_calls or []
    ] == [
        (c.id, c.function.name, c.function.arguments)  # type: ignore[union-attr]
        for c in calls
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage == reply.usage


def test_chat_tool_call_alone_has_no_content(raw_openai: openai.OpenAI, fake: FakeProvider) -> None:
    fake.replies = lambda request: Reply.tool_call("page", {"team": "payments"})
    reply = raw_openai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.choices[0].message.content is None
    chunks = list(raw_openai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas) == ""
    assert "".join(
        tc.function.arguments or "" for d in deltas for tc in d.tool_calls or [] if tc.function
    ) == ('{"team":"payments"}')


def test_responses_function_calls(raw_openai: openai.OpenAI, fake: FakeProvider) -> None:
    fake.replies = lambda request: TWO_CALLS
    response = raw_openai.responses.create(model="gpt-4o-mini", input="Which service is paging?")
    assert response.output_text == "Let me check."
    calls = [item for item in response.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        (call.name, call.arguments) for call in TWO_CALLS.tool_calls
    ]
    assert response.usage is not None
    assert response.usage.output_tokens == TWO_CALLS.output_tokens
    with raw_openai.responses.stream(model="gpt-4o-mini", input="Which service is paging?") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds.count("response.function_call_arguments.delta") == sum(
        len(call.argument_pieces()) for call in TWO_CALLS.tool_calls
    )
    assert [(c.call_id, c.name, c.arguments) for c in final.output if c.type == "function_call"] == [
        (c.call_id, c.name, c.arguments) for c in calls
    ]


def test_messages_tool_use(raw_anthropic: anthropic.Anthropic, fake: FakeProvider) -> None:
    fake.replies = lambda request: TWO_CALLS
    args: dict[str, Any] = {"model": "claude-haiku-4-5", "max_tokens": 1024, "messages": MESSAGES}
    message = raw_anthropic.messages.create(**args)
    assert message.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "name", None), getattr(b, "input", None)) for b in message.content] == [
        ("text", None, None),
        *[("tool_use", call.name, call.arguments) for call in TWO_CALLS.tool_calls],
    ]
    assert message.usage.output_tokens == TWO_CALLS.output_tokens
    with raw_anthropic.messages.stream(**args) as stream:
        final = stream.get_final_message()
    assert [b.model_dump() for b in final.content] == [b.model_dump() for b in message.content]
    assert (final.stop_reason, final.usage.output_tokens) == ("tool_use", TWO_CALLS.output_tokens)


def test_script_sees_each_request_and_none_leaves_the_reply_generated(
    raw_openai: openai.OpenAI, fake: FakeProvider
) -> None:
    seen: list[RecordedRequest] = []

    def script(request: RecordedRequest) -> Reply | None:
        seen.append(request)
        return Reply.json({"severity": 2}) if request.json.get("response_format") else None

    fake.replies = script
    generated = raw_openai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    json_mode = raw_openai.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, response_format={"type": "json_object"}
    )
    assert len((generated.choices[0].message.content or "").split()) == 20  # the fake's default reply
    assert json.loads(json_mode.choices[0].message.content or "") == {"severity": 2}
    assert [(r.path, r.json["messages"]) for r in seen] == [("/v1/chat/completions", MESSAGES)] * 2


def test_faults_come_first_and_a_failing_script_aborts_its_request(
    raw_openai: openai.OpenAI, fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def script(request: RecordedRequest) -> Reply:
        calls.append(request.path)
        raise RuntimeError("script broke")

    fake.replies = script
    client = raw_openai.with_options(max_retries=0)
    fake.enqueue(Fault.status(503))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert calls == []  # the fault answered; the script was not asked
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert calls == ["/v1/chat/completions"]
    assert any("request handler failed" in r.getMessage() for r in caplog.records)
