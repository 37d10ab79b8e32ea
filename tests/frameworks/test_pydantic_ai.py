"""pydantic-ai agents (OpenAI chat and Responses, Anthropic): on a wrapped client as on a bare one."""

from __future__ import annotations

from typing import Any

import _harness as h
import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from llmpulse.testing import CapturingSink, FakeProvider

pydantic_ai = pytest.importorskip("pydantic_ai", reason=h.OWN_VENV)
from pydantic_ai.messages import ModelRequest, ModelResponse  # noqa: E402
from pydantic_ai.models.anthropic import AnthropicModel  # noqa: E402
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel  # noqa: E402
from pydantic_ai.providers.anthropic import AnthropicProvider  # noqa: E402
from pydantic_ai.providers.openai import OpenAIProvider  # noqa: E402


class Incident(BaseModel):
    service: str
    severity: int


def model(kit: h.Kit, api: str, wrapped: bool) -> Any:
    """pydantic-ai's model on the kit's async client (its sync runs drive the async one)."""
    if api == "anthropic":
        return AnthropicModel(
            h.ANTHROPIC_MODEL, provider=AnthropicProvider(anthropic_client=kit.async_anthropic(wrapped))
        )
    kind = OpenAIChatModel if api == "chat" else OpenAIResponsesModel
    return kind(h.OPENAI_MODEL, provider=OpenAIProvider(openai_client=kit.async_openai(wrapped)))


def agent(kit: h.Kit, api: str, case: str, wrapped: bool) -> Any:
    if case == "structured":
        return pydantic_ai.Agent(model(kit, api, wrapped), output_type=Incident)
    return pydantic_ai.Agent(model(kit, api, wrapped), tools=[h.lookup_runbook])


def _part(part: Any) -> Any:
    """A message part less what differs between runs (timestamps, ids, provider details)."""
    fields = ("part_kind", "content", "tool_name", "args")
    return tuple(getattr(part, name, None) for name in fields)


def history(messages: list[Any]) -> list[Any]:
    """The run's messages as the caller reads them: parts, and each response's model and usage."""
    out: list[Any] = []
    for msg in messages:
        if isinstance(msg, ModelResponse):
            out.append(
                ("response", [_part(p) for p in msg.parts], msg.model_name, msg.usage, msg.finish_reason)
            )
        elif isinstance(msg, ModelRequest):
            out.append(("request", [_part(p) for p in msg.parts]))
    return out


def outcome(output: Any, usage: Any, messages: list[Any], deltas: list[str] | None = None) -> Any:
    return output, usage, history(messages), deltas


def runner(kit: h.Kit, api: str, case: str, sync: bool) -> Any:
    def run_sync(wrapped: bool) -> Any:
        the_agent = agent(kit, api, case, wrapped)
        if case == "stream":
            result = the_agent.run_stream_sync(h.PROMPT)
            deltas = list(result.stream_text(delta=True))
            return outcome(result.get_output(), result.usage, result.all_messages(), deltas)
        result = the_agent.run_sync(h.PROMPT)
        return outcome(result.output, result.usage, result.all_messages())

    async def run_async(wrapped: bool) -> Any:
        the_agent = agent(kit, api, case, wrapped)
        if case == "stream":
            async with the_agent.run_stream(h.PROMPT) as result:
                deltas = [d async for d in result.stream_text(delta=True)]
                return outcome(await result.get_output(), result.usage, result.all_messages(), deltas)
        result = await the_agent.run(h.PROMPT)
        return outcome(result.output, result.usage, result.all_messages())

    return run_sync if sync else run_async


@pytest.mark.parametrize("sync", [pytest.param(True, id="sync"), pytest.param(False, id="async")])
@pytest.mark.parametrize(
    ("api", "case"),
    [
        pytest.param("chat", "run", marks=h.CI),
        pytest.param("chat", "stream", marks=h.CI),
        pytest.param("anthropic", "run", marks=h.CI),
        pytest.param("anthropic", "stream", marks=h.CI),
        ("chat", "structured"),
        ("responses", "run"),
        ("responses", "stream"),
        ("responses", "structured"),
        ("anthropic", "structured"),
    ],
)
async def test_agent_is_the_same_through_a_wrapped_client(
    api: str, case: str, sync: bool, fake: FakeProvider, sink: CapturingSink, registry: CollectorRegistry
) -> None:
    """run/run_stream (sync and async), with a tool or an output type: same output, messages and usage."""
    async with h.kit(fake, sink, registry) as kit:
        # pydantic-ai streams Anthropic's answers even for run(): only stream cases are checked.
        streamed = True if case == "stream" else None
        (output, usage, _messages, deltas), requests = await h.same_through_wrapped(
            kit, runner(kit, api, case, sync), sync=sync, streamed=streamed
        )
    if case == "structured":
        assert output == Incident(**h.INCIDENT)
        assert usage.requests == len(requests) == 1
    else:
        # The tool loop: the model calls the runbook tool, then answers from its result.
        assert output == h.FINAL
        assert usage.requests == len(requests) == 2
        assert usage.tool_calls == 1
    assert usage.output_tokens == sum(event.output_tokens for event in sink.calls)
    assert usage.input_tokens == sum(event.input_tokens for event in sink.calls)
    if case == "stream":
        assert "".join(deltas) == h.FINAL
