"""LiteLLM's OpenAI route with ``client=`` a wrapped client gives what it gives with a bare one.

LiteLLM calls an ``openai/...`` model through the OpenAI SDK client it is handed (``client=``:
an ``OpenAI`` for ``completion``, an ``AsyncOpenAI`` for ``acompletion``). Its other providers
(Anthropic among them) go through its own HTTP code, with no SDK client to wrap.
"""

from __future__ import annotations

from typing import Any

import _harness as h
import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from llmpulse.testing import CapturingSink, FakeProvider

litellm = pytest.importorskip("litellm", reason=h.OWN_VENV)

# LiteLLM's own code draws pydantic's warnings: on its types (ReadOnly items), and on its chunks
# (model_computed_fields read on an instance). Neither is about the client it is given.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Items? .* the `ReadOnly` qualifier:UserWarning"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211"),
]

MODEL = f"openai/{h.OPENAI_MODEL}"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": h.TOOL,
            "description": "Look up the runbook of a service.",
            "parameters": {"type": "object", "properties": {"service": {"type": "string"}}},
        },
    }
]


class Incident(BaseModel):
    service: str
    severity: int


def _plain(response: Any) -> Any:
    """A response or chunk as data, less the ids and times the fake draws per reply."""
    data = response.model_dump()
    for key in ("id", "created"):
        data.pop(key, None)
    return data


def kwargs_for(case: str) -> dict[str, Any]:
    if case.startswith("tools"):
        return {"tools": TOOLS}
    if case == "structured":
        return {"response_format": Incident}
    return {}


def runner(kit: h.Kit, case: str, sync: bool) -> Any:
    stream = "stream" in case
    messages = [{"role": "user", "content": h.PROMPT}]
    extra: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    if case == "text-stream-no-usage":
        extra = {"stream": True}  # llmpulse asks for the usage, and takes its chunk out

    def outcome(result: Any, chunks: list[Any] | None) -> Any:
        if chunks is None:
            return _plain(result)
        built = litellm.stream_chunk_builder(chunks, messages=messages)
        return [_plain(c) for c in chunks], _plain(built)

    def run_sync(wrapped: bool) -> Any:
        client = kit.openai(wrapped)
        result = litellm.completion(MODEL, messages, client=client, **kwargs_for(case), **extra)
        return outcome(result, list(result) if stream else None)

    async def run_async(wrapped: bool) -> Any:
        client = kit.async_openai(wrapped)
        result = await litellm.acompletion(MODEL, messages, client=client, **kwargs_for(case), **extra)
        return outcome(result, [c async for c in result] if stream else None)

    return run_sync if sync else run_async


@pytest.mark.parametrize("sync", [pytest.param(True, id="sync"), pytest.param(False, id="async")])
@pytest.mark.parametrize(
    "case",
    [
        pytest.param("text", marks=h.CI),
        pytest.param("text-stream", marks=h.CI),
        "text-stream-no-usage",
        "tools",
        "tools-stream",
        "structured",
    ],
)
async def test_completion_is_the_same_through_a_wrapped_client(
    case: str, sync: bool, fake: FakeProvider, sink: CapturingSink, registry: CollectorRegistry
) -> None:
    """completion/acompletion, streamed or not, text, tool call or JSON: same response, one event."""
    async with h.kit(fake, sink, registry) as kit:
        stream = "stream" in case
        result, requests = await h.same_through_wrapped(
            kit, runner(kit, case, sync), sync=sync, streamed=stream
        )
    assert len(requests) == 1
    response = result[1] if stream else result
    message = response["choices"][0]["message"]
    [event] = sink.calls
    assert response["usage"]["completion_tokens"] == event.output_tokens
    assert response["usage"]["prompt_tokens"] == event.input_tokens
    if case.startswith("tools"):
        [call] = message["tool_calls"]
        assert call["function"]["name"] == h.TOOL
    elif case == "structured":
        assert Incident.model_validate_json(message["content"]) == Incident(**h.INCIDENT)
    else:
        assert message["content"] == h.ANSWER
