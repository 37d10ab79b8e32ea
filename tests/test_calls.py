"""Non-streaming calls through the real SDKs: one CallEvent per call, SDK behaviour unchanged."""

from __future__ import annotations

import asyncio

import anthropic
import openai
import pytest
from prometheus_client import CollectorRegistry

import llmpulse
from conftest import ANTHROPIC_KEY, MESSAGES, OPENAI_KEY
from llmpulse.testing import CapturingSink, FakeProvider, Fault


@pytest.fixture(name="fake", params=["gzip", "plain"])
def _fake(request: pytest.FixtureRequest, fake: FakeProvider, plain_fake: FakeProvider) -> FakeProvider:
    # Every test runs on the default fake, which gzips answers as the hosted APIs do, and on one
    # that does not; the clients of conftest.py use whichever this picks.
    return fake if request.param == "gzip" else plain_fake


def test_openai_chat_event_has_usage_cost_and_ids(oai: openai.OpenAI, sink: CapturingSink) -> None:
    """A chat completion yields one ok CallEvent with the provider's usage, cost and request id."""
    with llmpulse.context(tenant="acme", route="/chat", feature="summarize", tags={"plan": "pro"}):
        completion = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50)
    [event] = sink.calls
    assert event.outcome == "ok"
    assert (event.provider, event.operation, event.model) == ("openai", "chat", "gpt-4o-mini")
    assert event.response_model == completion.model
    assert event.input_tokens == completion.usage.prompt_tokens
    assert event.output_tokens == completion.usage.completion_tokens
    assert event.request_id == completion._request_id
    assert event.http_status == 200
    assert event.attempts == 1
    assert event.retries == 0
    assert event.max_tokens == 50
    assert event.finish_reason == completion.choices[0].finish_reason
    assert event.cost_usd is not None
    assert event.cost_usd > 0
    assert event.prompt_tokens_estimate is not None
    assert event.prompt_tokens_estimate > 0
    assert (event.tenant, event.route, event.feature, event.tags) == (
        "acme",
        "/chat",
        "summarize",
        {"plan": "pro"},
    )
    assert event.latency_s > 0
    assert event.provider_latency_s is not None
    assert event.ratelimit is not None
    assert event.ratelimit.remaining_requests is not None
    assert event.network is not None
    assert event.network.time_to_headers_s is not None
    assert event.api_key_id is not None
    assert OPENAI_KEY not in repr(event)
    assert len(event.correlation_id) == 16


def test_every_attempt_is_an_attempt_event(
    oai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider
) -> None:
    """A 500 then a 200 gives two AttemptEvents, one CallEvent with attempts=2 and the SDK's retry header."""
    fake.enqueue(Fault.status(500, retry_after_ms=5))
    oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    [event] = sink.calls
    assert event.outcome == "ok"
    assert event.attempts == 2
    assert event.retries == 1
    assert event.backoff_s == (0.005,)
    assert [(a.attempt, a.http_status, a.will_retry) for a in sink.attempts] == [
        (1, 500, True),
        (2, 200, False),
    ]
    assert [r.headers.get("x-stainless-retry-count") for r in fake.requests] == ["0", "1"]


def test_sdk_exception_reaches_caller_unchanged(
    oai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider
) -> None:
    """A 400 raises the SDK's BadRequestError with its attributes; the event names it."""
    fake.enqueue(Fault.status(400))
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert info.value.status_code == 400
    [event] = sink.calls
    assert event.outcome == "error"
    assert event.error_type == "BadRequestError"
    assert event.http_status == 400
    assert event.attempts == 1
    assert event.request_id == info.value.request_id
    assert event.prompt_tokens_estimate is not None
    assert event.cost_usd == 0.0


def test_retries_exhausted_like_the_sdk(oai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider) -> None:
    """Three 503s exhaust the default two retries and raise InternalServerError, as the bare SDK would."""
    fake.enqueue(*[Fault.status(503, retry_after_ms=1)] * 3)
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    [event] = sink.calls
    assert (event.attempts, event.http_status, event.error_type) == (3, 503, "InternalServerError")
    assert len(fake.requests) == 3


def test_x_should_retry_false_is_obeyed(oai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider) -> None:
    """A 500 marked x-should-retry: false is not retried."""
    fake.enqueue(Fault.status(500, should_retry=False))
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert sink.calls[0].attempts == 1


def test_connection_reset_is_retried_then_raised(
    oai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider
) -> None:
    """Resets before headers are retried; the caller gets APIConnectionError and the event says so."""
    fake.enqueue(*[Fault.reset_before_headers()] * 2)
    with pytest.raises(openai.APIConnectionError):
        oai.with_options(max_retries=1).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    [event] = sink.calls
    assert event.outcome == "error"
    assert event.error_type == "APIConnectionError"
    assert event.http_status is None
    assert event.attempts == 2
    assert event.cost_usd is None


def test_with_options_max_retries_is_llmpulse_retry_count(
    oai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider
) -> None:
    """with_options(max_retries=4) reads 4, as bare, and gives llmpulse's loop four retries."""
    fake.enqueue(*[Fault.status(500, retry_after_ms=1)] * 4)
    client = oai.with_options(max_retries=4)
    assert client.max_retries == 4
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert sink.calls[0].attempts == 5
    assert len(fake.requests) == 5


def test_anthropic_message_counts_cache_in_input(
    ant: anthropic.Anthropic, sink: CapturingSink, fake: FakeProvider
) -> None:
    """Anthropic input_tokens in the event include cache reads and writes (the OpenTelemetry rule)."""
    fake.plan = fake.plan.__class__(cached_input_tokens=30, cache_write_input_tokens=20)
    message = ant.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES)
    [event] = sink.calls
    usage = message.usage
    assert (event.provider, event.operation) == ("anthropic", "messages")
    assert event.input_tokens == usage.input_tokens + 30 + 20
    assert event.cached_input_tokens == 30
    assert event.cache_write_tokens == 20
    assert event.output_tokens == usage.output_tokens
    assert event.request_id == message._request_id
    assert event.finish_reason == message.stop_reason
    assert event.cost_usd is not None
    assert ANTHROPIC_KEY not in repr(event)


def test_anthropic_one_hour_cache_writes_are_priced_higher(
    ant: anthropic.Anthropic, sink: CapturingSink, fake: FakeProvider
) -> None:
    """The same cache writes cost more when written for an hour: Anthropic's 2x vs 1.25x input rate."""
    fake.plan = fake.plan.__class__(cache_write_input_tokens=4_000)
    ant.messages.create(model="claude-sonnet-4-6", max_tokens=16, messages=MESSAGES)
    fake.plan = fake.plan.__class__(cache_write_input_tokens=4_000, cache_write_1h_input_tokens=4_000)
    ant.messages.create(model="claude-sonnet-4-6", max_tokens=16, messages=MESSAGES)
    five_minutes, one_hour = sink.calls
    assert (five_minutes.input_tokens, five_minutes.output_tokens) == (
        one_hour.input_tokens,
        one_hour.output_tokens,
    )
    assert five_minutes.cost_usd is not None
    assert one_hour.cost_usd is not None
    # claude-sonnet-4-6: 3.75 vs 6 $/MTok for the 4,000 written tokens.
    assert one_hour.cost_usd - five_minutes.cost_usd == pytest.approx(4_000 * (6 - 3.75) / 1e6)


def test_anthropic_overloaded_is_overloaded_error(
    ant: anthropic.Anthropic, sink: CapturingSink, fake: FakeProvider
) -> None:
    """529 raises anthropic.OverloadedError after the SDK's retries; the event names that class."""
    fake.enqueue(*[Fault.status(529, retry_after_ms=1)] * 3)
    with pytest.raises(anthropic.OverloadedError):
        ant.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES)
    [event] = sink.calls
    assert (event.error_type, event.http_status, event.attempts) == ("OverloadedError", 529, 3)


async def test_async_clients_record_the_same_events(
    aoai: openai.AsyncOpenAI,
    aant: anthropic.AsyncAnthropic,
    sink: CapturingSink,
    fake: FakeProvider,
) -> None:
    """Async clients share the implementation: same fields, retries included."""
    fake.enqueue(Fault.status(429, retry_after_ms=2))
    completion = await aoai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    message = await aant.messages.create(model="claude-haiku-4-5", max_tokens=32, messages=MESSAGES)
    first, second = sink.calls
    assert (first.attempts, first.backoff_s, first.output_tokens) == (
        2,
        (0.002,),
        completion.usage.completion_tokens,
    )
    assert (second.provider, second.output_tokens) == ("anthropic", message.usage.output_tokens)


async def test_async_cancellation_is_an_event(
    aoai: openai.AsyncOpenAI, sink: CapturingSink, fake: FakeProvider
) -> None:
    """A task cancelled while waiting for the provider yields outcome 'cancelled'."""
    fake.enqueue(Fault.latency(30))
    task = asyncio.create_task(aoai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    assert await asyncio.to_thread(fake.wait_for_requests, 1, 5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [event] = sink.calls
    assert event.outcome == "cancelled"
    assert event.error_type == "CancelledError"


def test_other_endpoints_are_observed(
    oai: openai.OpenAI, ant: anthropic.Anthropic, sink: CapturingSink
) -> None:
    """Embeddings, Responses, legacy completions, count_tokens, batches and lists each yield an event."""
    emb = oai.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    resp = oai.responses.create(model="gpt-4o-mini", input="hello")
    oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi", max_tokens=5)
    ant.messages.count_tokens(model="claude-sonnet-4-6", messages=MESSAGES)
    oai.models.list()
    ops = [e.operation for e in sink.calls]
    assert ops == ["embeddings", "responses", "text_completion", "count_tokens", "/models"]
    assert sink.calls[0].input_tokens == emb.usage.prompt_tokens
    assert sink.calls[0].output_tokens == 0
    assert sink.calls[1].input_tokens == resp.usage.input_tokens
    assert sink.calls[1].output_tokens == resp.usage.output_tokens
    assert all(e.outcome == "ok" for e in sink.calls)


def test_raw_and_streaming_response_wrappers_keep_working(oai: openai.OpenAI, sink: CapturingSink) -> None:
    """with_raw_response and with_streaming_response give headers and .parse() as without llmpulse."""
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raw.headers["x-request-id"] == sink.calls[0].request_id
    assert raw.parse().usage is not None
    with oai.chat.completions.with_streaming_response.create(model="gpt-4o-mini", messages=MESSAGES) as resp:
        assert resp.headers["x-request-id"]
        assert resp.parse().choices
    assert [e.outcome for e in sink.calls] == ["ok", "ok"]


def test_azure_reports_the_deployment(
    fake: FakeProvider, sink: CapturingSink, registry: CollectorRegistry
) -> None:
    """An AzureOpenAI client stays AzureOpenAI; its events say provider 'azure' and the deployment."""
    client = openai.AzureOpenAI(
        api_key="azure-key-0123456789",
        api_version="2024-10-21",
        azure_endpoint=fake.base_url,
        azure_deployment="prod-gpt4o",
    )
    wrapped = llmpulse.wrap(client, sinks=[sink], registry=registry)
    assert type(wrapped) is openai.AzureOpenAI
    with client:
        wrapped.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    [event] = sink.calls
    assert (event.provider, event.model, event.server_address) == (
        "azure",
        "prod-gpt4o",
        "127.0.0.1",
    )
    assert "api-version" not in event.path


def test_unknown_model_has_no_cost(oai: openai.OpenAI, sink: CapturingSink) -> None:
    """A model without a known price gets cost_usd=None, never a silent zero."""
    oai.chat.completions.create(model="my-private-finetune-xyz", messages=MESSAGES)
    assert sink.calls[0].cost_usd is None
    assert sink.calls[0].input_tokens is not None


def test_metrics_count_every_call(
    oai: openai.OpenAI, registry: CollectorRegistry, fake: FakeProvider
) -> None:
    """Calls land in the client's Prometheus registry: requests, attempts, tokens, duration."""
    fake.enqueue(Fault.status(500, retry_after_ms=1))
    with llmpulse.context(tenant="acme", route="/chat"):
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    labels = {
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "gpt-4o-mini",
        "gen_ai_operation_name": "chat",
        "tenant": "acme",
        "route": "/chat",
    }
    ok = {**labels, "outcome": "ok", "status_class": "2xx", "error_type": ""}
    assert registry.get_sample_value("llmpulse_requests_total", ok) == 1
    attempts = {
        k: labels[k] for k in ("gen_ai_provider_name", "gen_ai_request_model", "gen_ai_operation_name")
    }
    assert registry.get_sample_value("llmpulse_attempts_total", {**attempts, "status_class": "5xx"}) == 1
    assert registry.get_sample_value("llmpulse_attempts_total", {**attempts, "status_class": "2xx"}) == 1
    assert registry.get_sample_value("llmpulse_tokens_total", {**labels, "token_type": "input"}) > 0
    # The histograms carry the GenAI conventions' attributes: the server's, no tenant or route.
    server = {"server_address": oai.base_url.host, "server_port": str(oai.base_url.port)}
    duration = {**attempts, **server, "error_type": ""}
    assert registry.get_sample_value("gen_ai_client_operation_duration_seconds_count", duration) == 1
    assert registry.get_sample_value("llmpulse_inflight_requests", {"gen_ai_provider_name": "openai"}) == 0
