"""Cross-provider fallback: an overloaded or cut-off provider's calls served by the user's function."""

from __future__ import annotations

import logging
import os
import runpy
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from prometheus_client import CollectorRegistry

import llmpulse
from conftest import ANTHROPIC_KEY, MESSAGES, OPENAI_KEY
from llmpulse import BreakerConfig, ConcurrencyConfig, Policies, UnavailableCall
from llmpulse.testing import CapturingSink, FakeClock, FakeProvider, Fault

EXAMPLE = Path(__file__).parent.parent / "examples" / "cross_provider_fallback.py"
serve_on_openai = runpy.run_path(str(EXAMPLE))["serve_on_openai"]

OVERLOADED = (Fault.status(529), Fault.status(529), Fault.status(529))  # the first attempt and 2 retries


@pytest.fixture(name="gpt")
def _gpt(fake: FakeProvider, sink: CapturingSink) -> Iterator[openai.OpenAI]:
    raw = openai.OpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url)
    yield llmpulse.wrap(raw, sinks=[sink], registry=CollectorRegistry())
    raw.close()


@pytest.fixture(name="raw_claude")
def _raw_claude(fake: FakeProvider) -> Iterator[anthropic.Anthropic]:
    raw = anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=fake.anthropic_base_url)
    yield raw
    raw.close()


@pytest.fixture(name="make_claude")
def _make_claude(fake: FakeProvider, sink: CapturingSink) -> Iterator[Callable[..., Any]]:
    """Wrapped Anthropic clients with the given policies (on a fake clock), closed at the end."""
    raws: list[anthropic.Anthropic] = []

    def make(registry: CollectorRegistry, **policies: Any) -> Any:
        raws.append(anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=fake.anthropic_base_url))
        policy = Policies(clock=FakeClock(), **policies)
        return llmpulse.wrap(raws[-1], sinks=[sink], registry=registry, policies=policy)

    yield make
    for raw in raws:
        raw.close()


def _ask(client: Any) -> Any:
    return client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES)


def test_an_overloaded_provider_is_served_by_another(
    make_claude: Callable[..., Any], fake: FakeProvider, sink: CapturingSink, gpt: openai.OpenAI
) -> None:
    """529 through every retry: the function serves it on OpenAI; the caller gets an Anthropic Message."""
    registry = CollectorRegistry()
    claude = make_claude(registry, cross_provider=serve_on_openai(gpt))
    fake.enqueue(*OVERLOADED)
    with llmpulse.context(tenant="acme"):
        message = _ask(claude)
    assert isinstance(message, anthropic.types.Message)
    assert message.content[0].text  # type: ignore[union-attr]
    assert message.model.startswith("gpt-4o-mini")
    assert [r.path for r in fake.requests] == ["/v1/messages"] * 3 + ["/v1/chat/completions"]

    served, asked = sink.calls  # the serving call finishes first, inside the function
    assert (served.provider, served.model, served.outcome, served.tenant) == (
        "openai",
        "gpt-4o-mini",
        "ok",
        "acme",
    )
    assert served.cost_usd is not None
    assert served.cost_usd > 0
    assert served.correlation_id == asked.correlation_id
    assert (asked.provider, asked.outcome, asked.attempts, asked.http_status) == ("anthropic", "ok", 3, 200)
    assert (asked.served_provider, asked.served_model, asked.fallback_reason) == (
        "openai",
        "gpt-4o-mini",
        "overloaded",
    )
    # Billed once: on the call that served it.
    assert (asked.cost_usd, asked.input_tokens, asked.output_tokens) == (0.0, None, None)
    labels = {
        "gen_ai_provider_name": "anthropic",
        "gen_ai_request_model": "claude-sonnet-4-6",
        "served_provider": "openai",
        "served_model": "gpt-4o-mini",
        "reason": "overloaded",
    }
    assert registry.get_sample_value("llmpulse_fallbacks_total", labels) == 1


def test_fallback_models_come_first(
    make_claude: Callable[..., Any], fake: FakeProvider, sink: CapturingSink, gpt: openai.OpenAI
) -> None:
    """The same provider's fallback model is tried before another provider."""
    claude = make_claude(
        CollectorRegistry(),
        fallbacks={"claude-sonnet-4-6": ["claude-haiku-4-5"]},
        cross_provider=serve_on_openai(gpt),
    )
    fake.enqueue(Fault.status(529))
    assert _ask(claude).model.startswith("claude-haiku-4-5")
    assert len(fake.requests) == 2
    assert sink.calls[-1].served_provider == "anthropic"


def test_an_open_circuit_goes_straight_to_the_function(
    make_claude: Callable[..., Any], fake: FakeProvider, sink: CapturingSink, gpt: openai.OpenAI
) -> None:
    """With the breaker open nothing is sent to Anthropic: the call is served elsewhere at once."""
    offers: list[UnavailableCall] = []
    serve = serve_on_openai(gpt)

    def recording(call: UnavailableCall) -> Any:
        offers.append(call)
        return serve(call)

    claude = make_claude(
        CollectorRegistry(),
        max_retries=0,
        breaker=BreakerConfig(failure_threshold=1),
        cross_provider=recording,
    )
    fake.enqueue(Fault.status(500))
    with pytest.raises(anthropic.InternalServerError):
        _ask(claude)  # a 500 is not "overloaded": it opens the breaker and fails as it is
    assert offers == []
    fake.clear()
    with llmpulse.context(tenant="acme"):
        _ask(claude)
    assert [r.path for r in fake.requests] == ["/v1/chat/completions"]
    [offer] = offers
    assert (offer.provider, offer.model, offer.reason, offer.tenant) == (
        "anthropic",
        "claude-sonnet-4-6",
        "circuit_open",
        "acme",
    )
    assert offer.body["messages"] == MESSAGES
    asked = sink.calls[-1]
    assert (asked.outcome, asked.attempts, asked.rejected_reason) == ("ok", 0, None)
    assert (asked.served_provider, asked.fallback_reason) == ("openai", "circuit_open")


def test_a_full_queue_is_served_elsewhere(
    fake: FakeProvider, sink: CapturingSink, gpt: openai.OpenAI, raw_claude: anthropic.Anthropic
) -> None:
    """No free slot and no room to wait: instead of OverloadedError, the function serves the call."""
    policies = Policies(
        clock=FakeClock(),
        concurrency=ConcurrencyConfig(initial_limit=1, queue_factor=0.0),
        cross_provider=serve_on_openai(gpt),
    )
    claude = llmpulse.wrap(raw_claude, sinks=[sink], registry=CollectorRegistry(), policies=policies)
    _ask(claude)  # learns the endpoint's key id
    endpoint = ("anthropic", "127.0.0.1", sink.calls[0].api_key_id or "")
    limiter = policies.limiter(endpoint, lambda old, new: None)
    assert limiter is not None
    held = []  # other callers hold every slot (the first call's success grew the limit)
    while (slot := limiter.try_acquire()) is not None:
        held.append(slot)
    assert held
    _ask(claude)
    for slot in held:
        limiter.release(slot)
    assert (sink.calls[-1].served_provider, sink.calls[-1].fallback_reason) == ("openai", "queue_full")
    assert [r.path for r in fake.requests] == ["/v1/messages", "/v1/chat/completions"]


@pytest.mark.parametrize(
    ("answer", "logged"),
    [
        (None, None),  # declined: no warning, it is the function's choice
        (RuntimeError("openai is down too"), "RuntimeError: openai is down too"),
        ("not a body", "returned str; expected the answer's JSON body"),
    ],
)
def test_declined_or_failed_the_call_fails_as_it_would_have(
    make_claude: Callable[..., Any],
    fake: FakeProvider,
    sink: CapturingSink,
    caplog: pytest.LogCaptureFixture,
    answer: object,
    logged: str | None,
) -> None:
    """None, an exception or a bad answer: the caller gets the provider's own 529 error, one event."""

    def serve(call: UnavailableCall) -> object:
        if isinstance(answer, BaseException):
            raise answer
        return answer

    claude = make_claude(CollectorRegistry(), cross_provider=serve)
    fake.enqueue(*OVERLOADED)
    llmpulse._call._elsewhere_warned.clear()  # the warning is once a minute per provider
    with caplog.at_level(logging.WARNING, logger="llmpulse"), pytest.raises(anthropic.APIStatusError) as info:
        _ask(claude)
    assert info.value.status_code == 529
    [event] = sink.calls
    assert (event.outcome, event.http_status, event.attempts, event.served_provider) == (
        "error",
        529,
        3,
        "anthropic",
    )
    assert event.error_type == "OverloadedError"  # as without a function: anthropic.OverloadedError
    warnings = [r.getMessage() for r in caplog.records if "cross_provider" in r.getMessage()]
    if logged is None:
        assert warnings == []
    else:
        [warning] = warnings
        assert logged in warning


def test_declined_refusal_raises_the_policy_error(
    make_claude: Callable[..., Any], fake: FakeProvider, sink: CapturingSink
) -> None:
    """An open circuit whose function declines raises CircuitOpenError, as without a function."""
    claude = make_claude(
        CollectorRegistry(),
        max_retries=0,
        breaker=BreakerConfig(failure_threshold=1),
        cross_provider=lambda call: None,
    )
    fake.enqueue(Fault.status(500))
    with pytest.raises(anthropic.InternalServerError):
        _ask(claude)
    with pytest.raises(llmpulse.CircuitOpenError):
        _ask(claude)
    assert [e.outcome for e in sink.calls] == ["error", "rejected"]


def test_streams_are_never_offered(
    make_claude: Callable[..., Any], fake: FakeProvider, sink: CapturingSink
) -> None:
    """A stream would need the original event format: its 529 reaches the caller as it is."""
    offers: list[UnavailableCall] = []
    claude = make_claude(CollectorRegistry(), cross_provider=offers.append)
    fake.enqueue(*OVERLOADED)
    with pytest.raises(anthropic.APIStatusError):
        claude.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES, stream=True)
    assert offers == []


async def test_async_clients_await_an_async_function(fake: FakeProvider, sink: CapturingSink) -> None:
    """An async client awaits an ``async def`` function, in the caller's context."""
    raw_gpt = openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url)
    gpt = llmpulse.wrap(raw_gpt, sinks=[sink], registry=CollectorRegistry())

    async def serve(call: UnavailableCall) -> dict[str, Any]:
        completion = await gpt.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        return {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": completion.model,
            "content": [{"type": "text", "text": completion.choices[0].message.content}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }

    raw = anthropic.AsyncAnthropic(api_key=ANTHROPIC_KEY, base_url=fake.anthropic_base_url)
    claude = llmpulse.wrap(
        raw,
        sinks=[sink],
        registry=CollectorRegistry(),
        policies=Policies(clock=FakeClock(), cross_provider=serve),
    )
    fake.enqueue(*OVERLOADED)
    with llmpulse.context(tenant="acme"):
        message = await claude.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES)
    await raw.close()
    await raw_gpt.close()
    assert message.model.startswith("gpt-4o-mini")
    served, asked = sink.calls
    assert (served.provider, served.tenant, served.correlation_id) == ("openai", "acme", asked.correlation_id)
    assert (asked.served_provider, asked.outcome) == ("openai", "ok")


def test_a_sync_client_refuses_an_async_function(
    make_claude: Callable[..., Any], fake: FakeProvider, sink: CapturingSink, caplog: pytest.LogCaptureFixture
) -> None:
    """An ``async def`` function on a sync client cannot be awaited: declined, with a warning saying why."""

    async def serve(call: UnavailableCall) -> None:
        return None

    claude = make_claude(CollectorRegistry(), cross_provider=serve)
    fake.enqueue(*OVERLOADED)
    llmpulse._call._elsewhere_warned.clear()
    with caplog.at_level(logging.WARNING, logger="llmpulse"), pytest.raises(anthropic.APIStatusError):
        _ask(claude)
    assert any("needs a wrapped async client" in r.getMessage() for r in caplog.records)


def test_example_serves_claude_on_openai(fake: FakeProvider) -> None:
    """examples/cross_provider_fallback.py, with Anthropic overloaded, prints who served the call."""
    fake.enqueue(*OVERLOADED)
    env = {
        **os.environ,
        "OPENAI_BASE_URL": fake.openai_base_url,
        "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
        "OPENAI_API_KEY": "sk-example",
        "ANTHROPIC_API_KEY": "sk-ant-example",
        "LLMPULSE_SINKS": "none",
        "LLMPULSE_BACKOFF_BASE_S": "0.01",
    }
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert "asked anthropic claude-sonnet-4-6, served by openai gpt-4o-mini" in result.stdout


def test_the_overloaded_providers_slot_is_released_as_an_overload(
    fake: FakeProvider, sink: CapturingSink, gpt: openai.OpenAI, raw_claude: anthropic.Anthropic
) -> None:
    """Served elsewhere, the call still tells Anthropic's limiter its last answer was a 529, not a success."""
    policies = Policies(clock=FakeClock(), cross_provider=serve_on_openai(gpt))
    claude = llmpulse.wrap(raw_claude, sinks=[sink], registry=CollectorRegistry(), policies=policies)
    fake.enqueue(*OVERLOADED)
    _ask(claude)
    endpoint = ("anthropic", "127.0.0.1", sink.calls[-1].api_key_id or "")
    limiter = policies.limiter(endpoint, lambda old, new: None)
    assert limiter is not None
    snap = limiter.snapshot()
    assert (snap["overloads"], snap["grows"], snap["in_flight"]) == (3, 0, 0)
