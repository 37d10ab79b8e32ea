"""A framework on top of the SDK (openai-agents) sees the same results through a wrapped client.

The agents run against the session's compressing fake, offline: tracing (which would upload
to the hosted API) is off globally and in every run's config.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import agents
import openai
import pytest
from prometheus_client import CollectorRegistry

import llmpulse
from conftest import OPENAI_KEY
from llmpulse.testing import CapturingSink, FakeProvider

PROMPT = "Summarise the incident for the on-call."
NO_TRACING = agents.RunConfig(tracing_disabled=True)
MODELS = {"responses": agents.OpenAIResponsesModel, "chat": agents.OpenAIChatCompletionsModel}


@pytest.fixture(autouse=True, scope="module")
def _no_tracing() -> None:
    # Belt and braces with NO_TRACING: nothing the framework does may leave the machine, so no
    # trace is made and the default processor (a thread uploading to the hosted API) is dropped.
    agents.set_tracing_disabled(True)
    agents.set_trace_processors([])


@pytest.fixture(name="clients")
async def _clients(
    fake: FakeProvider, sink: CapturingSink, registry: CollectorRegistry
) -> AsyncIterator[tuple[openai.AsyncOpenAI, openai.AsyncOpenAI]]:
    """A bare client and a wrapped one, both on the session's (gzip) fake."""
    bare = openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url)
    client = openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url)
    yield bare, llmpulse.wrap(client, sinks=[sink], registry=registry)
    await bare.close()
    await client.close()


def agent(api: str, client: openai.AsyncOpenAI) -> agents.Agent[Any]:
    """An agent on the Responses or the Chat Completions API of ``client``."""
    model = MODELS[api](model="gpt-4o-mini", openai_client=client)
    return agents.Agent(name="on-call", instructions="Answer in one sentence.", model=model)


def outcome(result: agents.RunResult | agents.RunResultStreaming) -> tuple[Any, ...]:
    """What the framework gives the caller, less ids the fake draws at random."""
    usage = result.context_wrapper.usage
    items = [
        (item.type, agents.ItemHelpers.text_message_output(item))
        if isinstance(item, agents.MessageOutputItem)
        else (item.type,)
        for item in result.new_items
    ]
    return result.final_output, items, (usage.requests, usage.input_tokens, usage.output_tokens)


def event_kind(event: agents.StreamEvent) -> tuple[Any, ...]:
    """A stream event without its ids: its kind, and the text of a delta."""
    if isinstance(event, agents.RawResponsesStreamEvent):
        return event.type, event.data.type, getattr(event.data, "delta", None)
    if isinstance(event, agents.RunItemStreamEvent):
        return event.type, event.name, event.item.type
    return event.type, event.new_agent.name


@pytest.mark.parametrize("api", list(MODELS))
async def test_run_is_the_same_through_a_wrapped_client(
    api: str,
    clients: tuple[openai.AsyncOpenAI, openai.AsyncOpenAI],
    sink: CapturingSink,
    fake: FakeProvider,
) -> None:
    """Runner.run gives the same output and usage through a wrapped client, with one CallEvent."""
    bare, wrapped = clients
    expected = await agents.Runner.run(agent(api, bare), PROMPT, run_config=NO_TRACING)
    result = await agents.Runner.run(agent(api, wrapped), PROMPT, run_config=NO_TRACING)
    assert outcome(result) == outcome(expected)
    assert expected.final_output  # a reply, not an empty match
    assert len(fake.requests) == 2  # one HTTP call per run, both to the fake
    [event] = sink.calls
    assert (event.outcome, event.streamed) == ("ok", False)
    assert event.output_tokens == result.context_wrapper.usage.output_tokens


@pytest.mark.parametrize("api", list(MODELS))
async def test_streamed_run_is_the_same_through_a_wrapped_client(
    api: str,
    clients: tuple[openai.AsyncOpenAI, openai.AsyncOpenAI],
    sink: CapturingSink,
    fake: FakeProvider,
) -> None:
    """Runner.run_streamed gives the same events, output and usage through a wrapped client, one CallEvent."""
    runs = []
    for client in clients:
        run = agents.Runner.run_streamed(agent(api, client), PROMPT, run_config=NO_TRACING)
        runs.append(([event_kind(e) async for e in run.stream_events()], outcome(run)))
    (expected_events, expected), (events, result) = runs
    assert events == expected_events
    assert result == expected
    assert any(kind[1] == "response.output_text.delta" for kind in events)
    assert len(fake.requests) == 2
    [event] = sink.calls
    assert (event.outcome, event.streamed) == ("ok", True)


# -- the tool loop and structured output, sync and async, through the shared harness ------------

import _harness as h  # noqa: E402
from pydantic import BaseModel  # noqa: E402


class Incident(BaseModel):
    service: str
    severity: int


def _item(item: Any) -> tuple[Any, ...]:
    if isinstance(item, agents.MessageOutputItem):
        return item.type, agents.ItemHelpers.text_message_output(item)
    if isinstance(item, agents.ToolCallItem):
        return item.type, getattr(item.raw_item, "name", None), getattr(item.raw_item, "arguments", None)
    if isinstance(item, agents.ToolCallOutputItem):
        return item.type, item.output
    return (item.type,)


def tool_runner(kit: h.Kit, api: str, case: str, sync: bool, stream: bool) -> Any:
    def build(wrapped: bool) -> agents.Agent[Any]:
        model = MODELS[api](model=h.OPENAI_MODEL, openai_client=kit.async_openai(wrapped))
        if case == "structured":
            return agents.Agent(name="on-call", model=model, output_type=Incident)
        tool = agents.function_tool(h.lookup_runbook)
        return agents.Agent(name="on-call", instructions="Use the runbook.", model=model, tools=[tool])

    def result_of(result: Any, kinds: list[Any] | None = None) -> Any:
        usage = result.context_wrapper.usage
        items = [_item(item) for item in result.new_items]
        return result.final_output, items, (usage.requests, usage.input_tokens, usage.output_tokens), kinds

    def run_sync(wrapped: bool) -> Any:
        return result_of(agents.Runner.run_sync(build(wrapped), h.PROMPT, run_config=NO_TRACING))

    async def run_async(wrapped: bool) -> Any:
        if not stream:
            return result_of(await agents.Runner.run(build(wrapped), h.PROMPT, run_config=NO_TRACING))
        run = agents.Runner.run_streamed(build(wrapped), h.PROMPT, run_config=NO_TRACING)
        kinds = [event_kind(e) for e in [e async for e in run.stream_events()]]
        return result_of(run, kinds)

    return run_sync if sync else run_async


@pytest.mark.parametrize("api", list(MODELS))
@pytest.mark.parametrize(
    ("case", "sync", "stream"),
    [
        pytest.param("tools", False, False, marks=h.CI, id="tools-async"),
        pytest.param("tools", False, True, marks=h.CI, id="tools-stream"),
        pytest.param("tools", True, False, id="tools-sync"),
        pytest.param("structured", False, False, id="structured-async"),
        pytest.param("structured", False, True, id="structured-stream"),
        pytest.param("structured", True, False, id="structured-sync"),
    ],
)
async def test_tool_loop_and_output_type_are_the_same_through_a_wrapped_client(
    api: str,
    case: str,
    sync: bool,
    stream: bool,
    fake: FakeProvider,
    sink: CapturingSink,
    registry: CollectorRegistry,
) -> None:
    """A tool-using agent and one with an output type: same items, output and usage, one event a request."""
    async with h.kit(fake, sink, registry) as kit:
        runner = tool_runner(kit, api, case, sync, stream)
        (output, items, usage, _), requests = await h.same_through_wrapped(
            kit, runner, sync=sync, streamed=stream
        )
    if case == "structured":
        assert output == Incident(**h.INCIDENT)
    else:
        assert output == h.FINAL
        assert [kind for kind, *_ in items] == [
            "tool_call_item",
            "tool_call_output_item",
            "message_output_item",
        ]
    assert usage[0] == len(requests)
    if not (api == "chat" and stream):  # agents asks a chat stream for no usage (include_usage unset)
        assert usage[1:] == (
            sum(e.input_tokens for e in sink.calls),
            sum(e.output_tokens for e in sink.calls),
        )
