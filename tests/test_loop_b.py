"""Design (b): llmpulse's loop above the SDK's preparation, so every attempt is prepared as bare."""

from __future__ import annotations

import itertools

import anthropic
import openai
import pytest
from prometheus_client import CollectorRegistry

import llmpulse
from conftest import ANTHROPIC_KEY, MESSAGES
from llmpulse.testing import CapturingSink, FakeProvider, Fault


def test_callable_api_key_is_asked_per_attempt(
    fake: FakeProvider, sink: CapturingSink, registry: CollectorRegistry
) -> None:
    """A callable key runs for each attempt, as the bare SDK runs it, and the event counts them all."""
    keys = (f"sk-test-{n}" for n in itertools.count(1))
    client = llmpulse.wrap(
        openai.OpenAI(api_key=lambda: next(keys), base_url=fake.openai_base_url),
        sinks=[sink],
        registry=registry,
    )
    fake.enqueue(Fault.status(500, retry_after_ms=1), Fault.status(503, retry_after_ms=1))
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    sent = [r.headers["authorization"] for r in fake.requests]
    assert sent == ["Bearer sk-test-1", "Bearer sk-test-2", "Bearer sk-test-3"]
    [event] = sink.calls
    assert (event.attempts, event.retries, event.outcome) == (3, 2, "ok")


def test_retry_count_header_and_retries_taken_are_the_sdks(oai: openai.OpenAI, fake: FakeProvider) -> None:
    """The SDK numbers each attempt itself, and with_raw_response reports the retries taken."""
    fake.enqueue(Fault.status(500, retry_after_ms=1), Fault.status(500, retry_after_ms=1))
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raw.retries_taken == 2
    assert [r.headers["x-stainless-retry-count"] for r in fake.requests] == ["0", "1", "2"]


def test_per_request_max_retries_is_obeyed(
    oai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider
) -> None:
    """options={'max_retries': 0} makes one attempt, as bare; the client's own setting reads as given."""
    fake.enqueue(Fault.status(500, retry_after_ms=1))
    with pytest.raises(openai.InternalServerError):
        oai.post(
            "/chat/completions",
            body={"model": "gpt-4o-mini", "messages": MESSAGES},
            cast_to=object,
            options={"max_retries": 0},
        )
    assert len(fake.requests) == 1
    assert oai.max_retries == 2
    assert oai.with_options(max_retries=7).max_retries == 7


def test_anthropic_middleware_runs_per_attempt(
    fake: FakeProvider, sink: CapturingSink, registry: CollectorRegistry
) -> None:
    """Anthropic middleware sees every attempt with the SDK's retries_taken."""
    seen: list[tuple[int, int]] = []

    def middleware(
        request: anthropic.APIRequest, call_next: anthropic.CallNext
    ) -> anthropic.APIResponse[object]:
        response = call_next(request)
        seen.append((request.retries_taken, response.http_response.status_code))
        return response

    client = llmpulse.wrap(
        anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=fake.anthropic_base_url).with_middleware(
            middleware
        ),
        sinks=[sink],
        registry=registry,
    )
    fake.enqueue(Fault.status(529, retry_after_ms=1))
    client.messages.create(model="claude-sonnet-4-6", max_tokens=16, messages=MESSAGES)
    assert seen == [(0, 529), (1, 200)]
    [event] = sink.calls
    assert event.attempts == 2
