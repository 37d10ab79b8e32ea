"""instructor on a wrapped OpenAI or Anthropic client gives the structured objects it gives on a bare one.

Runs in its own virtualenv (requirements/frameworks-instructor.txt): instructor 1.17 needs
jiter<0.15, which openai 3.4 and later exclude, so there it runs on openai 3.3.0.
"""

from __future__ import annotations

from typing import Any

import _harness as h
import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from llmpulse.testing import CapturingSink, FakeProvider

instructor = pytest.importorskip("instructor", reason=h.OWN_VENV)


class Incident(BaseModel):
    service: str
    severity: int


def runner(kit: h.Kit, provider: str, stream: bool, sync: bool) -> Any:
    messages = [{"role": "user", "content": h.PROMPT}]
    if provider == "openai":
        args: dict[str, Any] = {"model": h.OPENAI_MODEL, "messages": messages, "response_model": Incident}
    else:
        args = {
            "model": h.ANTHROPIC_MODEL,
            "max_tokens": 1024,
            "messages": messages,
            "response_model": Incident,
        }

    def api(client: Any) -> Any:
        return client.chat.completions if provider == "openai" else client.messages

    def usage(raw: Any) -> Any:
        return raw.usage.model_dump()

    def run_sync(wrapped: bool) -> Any:
        sdk = kit.openai(wrapped) if provider == "openai" else kit.anthropic(wrapped)
        client = instructor.from_openai(sdk) if provider == "openai" else instructor.from_anthropic(sdk)
        if stream:
            return [p.model_dump() for p in api(client).create_partial(**args)]
        result, raw = api(client).create_with_completion(**args)
        # The fields: pydantic's == would compare instructor's private _raw_response (ids) too.
        return isinstance(result, Incident), result.model_dump(), usage(raw)

    async def run_async(wrapped: bool) -> Any:
        sdk = kit.async_openai(wrapped) if provider == "openai" else kit.async_anthropic(wrapped)
        client = instructor.from_openai(sdk) if provider == "openai" else instructor.from_anthropic(sdk)
        if stream:
            return [p.model_dump() async for p in api(client).create_partial(**args)]
        result, raw = await api(client).create_with_completion(**args)
        return isinstance(result, Incident), result.model_dump(), usage(raw)

    return run_sync if sync else run_async


@pytest.mark.parametrize("sync", [pytest.param(True, id="sync"), pytest.param(False, id="async")])
@pytest.mark.parametrize(
    ("provider", "stream"),
    [
        pytest.param("openai", False, marks=h.CI, id="openai"),
        pytest.param("openai", True, marks=h.CI, id="openai-partial"),
        pytest.param("anthropic", False, id="anthropic"),
        pytest.param("anthropic", True, id="anthropic-partial"),
    ],
)
async def test_structured_output_is_the_same_through_a_wrapped_client(
    provider: str,
    stream: bool,
    sync: bool,
    fake: FakeProvider,
    sink: CapturingSink,
    registry: CollectorRegistry,
) -> None:
    """create (with its completion) and create_partial: same objects and usage, one event a request."""
    async with h.kit(fake, sink, registry) as kit:
        outcome, requests = await h.same_through_wrapped(
            kit, runner(kit, provider, stream, sync), sync=sync, streamed=stream
        )
    assert len(requests) == 1  # a valid answer first time: no validation retry
    [event] = sink.calls
    if stream:
        assert outcome[-1] == h.INCIDENT
        assert len(outcome) > 2  # partial objects, then the whole one
    else:
        kind, result, usage = outcome
        assert (kind, result) == (True, h.INCIDENT)  # an Incident (instructor subclasses it per call)
        output = usage["completion_tokens"] if provider == "openai" else usage["output_tokens"]
        assert output == event.output_tokens
