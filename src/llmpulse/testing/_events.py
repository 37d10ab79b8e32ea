"""`make_call_event`: a complete `CallEvent` in one line, for testing sinks."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from ..events import CallEvent

__all__ = ["make_call_event"]

_BASE = CallEvent(
    call_id="call-1",
    correlation_id="corr-1",
    interaction_id=None,
    provider="openai",
    operation="chat",
    model="gpt-4o-mini",
    response_model="gpt-4o-mini-2024-07-18",
    tenant="acme",
    route="/chat",
    feature=None,
    tags={},
    priority="interactive",
    streamed=False,
    outcome="ok",
    stream_interrupted=False,
    http_status=200,
    error_type=None,
    attempts=1,
    retries=0,
    backoff_s=(),
    request_id=None,
    latency_s=0.5,
    provider_latency_s=None,
    ttft_s=None,
    input_tokens=100,
    output_tokens=20,
    cached_input_tokens=None,
    cache_write_tokens=None,
    reasoning_tokens=None,
    tokens_estimated=False,
    cost_usd=0.001,
    finish_reason="stop",
    max_tokens=None,
    prompt_tokens_estimate=None,
    response_bytes=100,
    api_key_id=None,
    network=None,
    ratelimit=None,
    started_at=datetime(2026, 1, 1, tzinfo=UTC),
)


def make_call_event(**changes: Any) -> CallEvent:
    """Return a finished, successful, non-streamed OpenAI chat `CallEvent`.

    Every field has a plausible value (tenant "acme", route "/chat",
    gpt-4o-mini, 100 input and 20 output tokens, $0.001, 0.5 s); keyword
    arguments override any of them, e.g. ``make_call_event(outcome="error",
    http_status=429)``.
    """
    return dataclasses.replace(_BASE, **changes)
