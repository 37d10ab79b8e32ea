"""langchain-openai and langchain-anthropic chat models: on a wrapped client as on a bare one."""

from __future__ import annotations

from typing import Any

import _harness as h
import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from llmpulse.testing import CapturingSink, FakeProvider

langchain_openai = pytest.importorskip("langchain_openai", reason=h.OWN_VENV)
langchain_anthropic = pytest.importorskip("langchain_anthropic", reason=h.OWN_VENV)
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage  # noqa: E402


class Incident(BaseModel):
    service: str
    severity: int


def chat_model(kit: h.Kit, provider: str, wrapped: bool) -> Any:
    """A chat model whose sync and async clients are the kit's, bare or wrapped."""
    if provider.startswith("openai"):
        sync, async_ = kit.openai(wrapped), kit.async_openai(wrapped)
        return langchain_openai.ChatOpenAI(
            model=h.OPENAI_MODEL,
            use_responses_api=provider == "openai-responses",
            api_key=h.OPENAI_KEY,
            root_client=sync,
            client=sync.chat.completions,
            root_async_client=async_,
            async_client=async_.chat.completions,
        )
    model = langchain_anthropic.ChatAnthropic(
        model=h.ANTHROPIC_MODEL, api_key=h.ANTHROPIC_KEY, max_tokens=1024
    )
    # ChatAnthropic takes no client: it builds them in cached properties, which these pre-empt.
    model.__dict__["_client"] = kit.anthropic(wrapped)
    model.__dict__["_async_client"] = kit.async_anthropic(wrapped)
    return model


def message(msg: AIMessage) -> tuple[Any, ...]:
    """What the caller reads of a reply: text, tool calls, usage and stop reason (not ids)."""
    meta = msg.response_metadata
    return (
        msg.content if isinstance(msg.content, str) else [_block(b) for b in msg.content],
        msg.tool_calls,
        msg.usage_metadata,
        meta.get("finish_reason") or meta.get("stop_reason"),
        meta.get("model_name"),
    )


def _block(block: Any) -> Any:
    return {k: v for k, v in block.items() if k != "id"} if isinstance(block, dict) else block


def _aggregate(chunks: list[AIMessageChunk]) -> tuple[Any, ...]:
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    return [c.content for c in chunks], *message(total)


def tool_loop_sync(model: Any, stream: bool) -> list[Any]:
    bound = model.bind_tools([h.lookup_runbook])
    history: list[Any] = [HumanMessage(h.PROMPT)]
    outcomes = []
    for _ in range(2):
        if stream:
            chunks = list(bound.stream(history))
            reply = sum(chunks[1:], chunks[0])
            outcomes.append(_aggregate(chunks))
        else:
            reply = bound.invoke(history)
            outcomes.append(message(reply))
        history.append(reply)
        for tc in reply.tool_calls:
            history.append(ToolMessage(h.lookup_runbook(**tc["args"]), tool_call_id=tc["id"]))
    return outcomes


async def tool_loop_async(model: Any, stream: bool) -> list[Any]:
    bound = model.bind_tools([h.lookup_runbook])
    history: list[Any] = [HumanMessage(h.PROMPT)]
    outcomes = []
    for _ in range(2):
        if stream:
            chunks = [c async for c in bound.astream(history)]
            reply = sum(chunks[1:], chunks[0])
            outcomes.append(_aggregate(chunks))
        else:
            reply = await bound.ainvoke(history)
            outcomes.append(message(reply))
        history.append(reply)
        for tc in reply.tool_calls:
            history.append(ToolMessage(h.lookup_runbook(**tc["args"]), tool_call_id=tc["id"]))
    return outcomes


PROVIDERS = ["openai", "openai-responses", "anthropic"]
SYNC = [pytest.param(True, id="sync"), pytest.param(False, id="async")]


def runner(kit: h.Kit, provider: str, case: str, sync: bool) -> Any:
    def run(wrapped: bool) -> Any:
        result = _run(wrapped)
        return _amasked(result) if hasattr(result, "__await__") else h.masked(result)

    def _run(wrapped: bool) -> Any:
        model = chat_model(kit, provider, wrapped)
        prompt = [HumanMessage(h.PROMPT)]
        if case.startswith("tools"):
            stream = case == "tools-stream"
            return tool_loop_sync(model, stream) if sync else tool_loop_async(model, stream)
        if case == "invoke":
            return message(model.invoke(prompt)) if sync else _amessage(model.ainvoke(prompt))
        if case == "structured":
            structured = model.with_structured_output(Incident)
            return structured.invoke(prompt) if sync else structured.ainvoke(prompt)
        if sync:
            return _aggregate(list(model.stream(prompt)))
        return _astream(model, prompt)

    return run


async def _amasked(coro: Any) -> Any:
    # The Responses API's streamed blocks carry the fake's item ids.
    return h.masked(await coro)


async def _amessage(coro: Any) -> tuple[Any, ...]:
    return message(await coro)


async def _astream(model: Any, prompt: Any) -> tuple[Any, ...]:
    return _aggregate([c async for c in model.astream(prompt)])


@pytest.mark.parametrize("sync", SYNC)
@pytest.mark.parametrize(
    ("provider", "case"),
    [
        pytest.param("openai", "invoke", marks=h.CI),
        pytest.param("openai", "stream", marks=h.CI),
        pytest.param("anthropic", "invoke", marks=h.CI),
        pytest.param("anthropic", "stream", marks=h.CI),
        *[(p, c) for p in PROVIDERS for c in ("structured", "tools", "tools-stream")],
    ],
)
async def test_chat_model_is_the_same_through_a_wrapped_client(
    provider: str, case: str, sync: bool, fake: FakeProvider, sink: CapturingSink, registry: CollectorRegistry
) -> None:
    """invoke/stream, structured output and the tool loop: same messages and usage, one event a request."""
    async with h.kit(fake, sink, registry) as kit:
        streamed = case in ("stream", "tools-stream")
        outcome, requests = await h.same_through_wrapped(
            kit, runner(kit, provider, case, sync), sync=sync, streamed=streamed
        )
    if case == "structured":
        assert outcome == Incident(**h.INCIDENT)
    elif case.startswith("tools"):
        assert len(requests) == 2  # the tool call, then the answer from its result
        first, last = outcome
        assert [call["name"] for call in first[-4]] == [h.TOOL]  # the tool calls
        assert h.FINAL in str(last)
    else:
        assert h.ANSWER in str(outcome)
