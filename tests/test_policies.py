"""Resilience policies in the call path, through the real SDKs against the fake provider."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import anthropic
import openai
import pytest
from prometheus_client import CollectorRegistry

import llmpulse
from conftest import ANTHROPIC_KEY, MESSAGES, OPENAI_KEY, http_errors
from llmpulse import BreakerConfig, Policies, Timeouts
from llmpulse.policies import Fallback
from llmpulse.testing import CapturingSink, FakeClock, FakeProvider, Fault, FaultPlan


def _openai(
    raw: openai.OpenAI, policies: Policies, sink: CapturingSink, registry: CollectorRegistry | None = None
) -> openai.OpenAI:
    return llmpulse.wrap(raw, sinks=[sink], registry=registry or CollectorRegistry(), policies=policies)


def _fail(client: openai.OpenAI) -> BaseException:
    with pytest.raises(Exception) as info:  # noqa: PT011 - each test checks the exact class
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    return info.value


def test_breaker_opens_then_fails_fast_without_sending(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """After N consecutive 5xx attempts, calls fail at once with CircuitOpenError, also an openai.APIError."""
    clock = FakeClock()
    policies = Policies(breaker=BreakerConfig(failure_threshold=3, open_s=30.0), clock=clock)
    client = _openai(raw_openai, policies, sink)
    fake.plan = FaultPlan(error_rate={500: 1.0})
    assert isinstance(_fail(client), openai.InternalServerError)  # 3 attempts: the third opens it
    sent = len(fake.requests)
    assert sent == 3

    error = _fail(client)
    assert isinstance(error, llmpulse.CircuitOpenError)
    assert isinstance(error, openai.APIConnectionError)
    assert isinstance(error, llmpulse.LLMPulseError)
    assert error.retry_after_s == pytest.approx(30.0)  # opened by the last attempt; no time passed since
    assert "circuit open for openai gpt-4o-mini" in str(error)
    assert len(fake.requests) == sent  # nothing sent
    rejected = sink.calls[-1]
    assert (rejected.outcome, rejected.attempts, rejected.http_status) == ("rejected", 0, None)
    assert rejected.rejected_reason == "circuit_open"
    assert rejected.error_type == "CircuitOpenError"


def test_half_open_probe_closes_the_breaker_on_success(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """After open_s the next call is a probe; its success closes the breaker for everyone."""
    clock = FakeClock()
    policies = Policies(max_retries=0, breaker=BreakerConfig(failure_threshold=2, open_s=10.0), clock=clock)
    client = _openai(raw_openai, policies, sink)
    fake.enqueue(Fault.status(503), Fault.status(503))
    _fail(client)
    _fail(client)
    assert isinstance(_fail(client), llmpulse.CircuitOpenError)
    clock.advance(10.0)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # the probe
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert [e.outcome for e in sink.calls] == ["error", "error", "rejected", "ok", "ok"]


def test_4xx_and_429_never_open_the_breaker(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """Only provider-side failures count: a run of 400s and 429s leaves the circuit closed."""
    policies = Policies(max_retries=0, breaker=BreakerConfig(failure_threshold=2), clock=FakeClock())
    client = _openai(raw_openai, policies, sink)
    fake.enqueue(*[Fault.status(400)] * 3, *[Fault.status(429)] * 3)
    for _ in range(6):
        _fail(client)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert sink.calls[-1].outcome == "ok"


def test_breakers_are_per_model(fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI) -> None:
    """One model's open breaker does not stop calls to another model on the same endpoint."""
    policies = Policies(max_retries=0, breaker=BreakerConfig(failure_threshold=1), clock=FakeClock())
    client = _openai(raw_openai, policies, sink)
    fake.enqueue(Fault.status(500))
    _fail(client)
    assert isinstance(_fail(client), llmpulse.CircuitOpenError)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert sink.calls[-1].outcome == "ok"


def test_anthropic_gets_its_own_connection_error_and_does_not_rewrap_it(
    fake: FakeProvider, sink: CapturingSink
) -> None:
    """Through an Anthropic client the error is an anthropic.APIConnectionError, raised as it is."""
    policies = Policies(max_retries=0, breaker=BreakerConfig(failure_threshold=1), clock=FakeClock())
    raw = anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=fake.anthropic_base_url)
    client = llmpulse.wrap(raw, sinks=[sink], registry=CollectorRegistry(), policies=policies)
    fake.enqueue(Fault.status(529))
    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=MESSAGES)
    with pytest.raises(llmpulse.CircuitOpenError) as info:
        client.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=MESSAGES)
    assert isinstance(info.value, anthropic.APIConnectionError)
    assert info.value.__cause__ is None  # not wrapped by the SDK
    assert len(fake.requests) == 1
    raw.close()


async def test_async_clients_fail_fast_too(fake: FakeProvider, sink: CapturingSink) -> None:
    """The async loop shares the decisions: an open breaker refuses without sending."""
    clock = FakeClock()
    policies = Policies(max_retries=1, breaker=BreakerConfig(failure_threshold=2), clock=clock)
    raw = openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url)
    client = llmpulse.wrap(raw, sinks=[sink], registry=CollectorRegistry(), policies=policies)
    fake.enqueue(Fault.status(500), Fault.status(500))
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with pytest.raises(llmpulse.CircuitOpenError):
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(fake.requests) == 2
    assert len(clock.slept) == 1  # the backoff slept on the fake clock
    await raw.close()


def test_retry_budget_refusal_is_recorded(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """With the budget spent, a retryable failure is not retried and the event says why."""
    policies = Policies(retry_budget_ratio=0.0, retry_budget_reserve=1, breaker=None, clock=FakeClock())
    client = _openai(raw_openai, policies, sink)
    fake.enqueue(Fault.status(500), Fault.status(500), Fault.status(500))
    _fail(client)  # attempt, retry (the one budgeted), retry refused
    assert sink.calls[0].attempts == 2
    assert sink.calls[0].retry_stop_reason == "budget"


def test_retry_after_beyond_the_deadline_fails_at_once(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """A Retry-After that would end after the call's deadline is not slept: the 429 reaches the caller now."""
    clock = FakeClock()
    policies = Policies(timeouts=Timeouts(total_s=5.0), breaker=None, clock=clock)
    client = _openai(raw_openai, policies, sink)
    fake.enqueue(Fault.status(429, retry_after=30))
    assert isinstance(_fail(client), openai.RateLimitError)
    assert clock.slept == []
    assert (sink.calls[0].attempts, sink.calls[0].retry_stop_reason) == (1, "deadline")


def test_spent_quota_is_not_retried(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """Asked to (retry_quota_exhausted=False), 429 insufficient_quota: one attempt, the SDK still raises."""
    policies = Policies(breaker=None, clock=FakeClock(), retry_quota_exhausted=False)
    client = _openai(raw_openai, policies, sink)
    fake.enqueue(Fault.status(429, error_code="insufficient_quota"))
    error = _fail(client)
    assert isinstance(error, openai.RateLimitError)
    assert error.code == "insufficient_quota"
    assert (sink.calls[0].attempts, sink.calls[0].retry_stop_reason) == (1, "quota_exhausted")


def test_a_rate_limited_429_is_retried_with_its_body_intact(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """A plain 429 is read for its code, then retried; the answer after it reaches the caller."""
    clock = FakeClock()
    client = _openai(raw_openai, Policies(breaker=None, clock=clock), sink)
    fake.enqueue(Fault.status(429, retry_after_ms=250))
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert clock.slept == [0.25]
    assert (sink.calls[0].outcome, sink.calls[0].attempts, sink.calls[0].backoff_s) == ("ok", 2, (0.25,))


def test_attempt_timeout_cuts_a_slow_provider(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """A provider slower than the read budget times out per attempt; the timeouts count as retryable."""
    policies = Policies(
        max_retries=1,
        timeouts=Timeouts(read_s=0.2, read_per_token_s=0.0, total_s=5.0),
        breaker=None,
        clock=FakeClock(),
    )
    client = _openai(raw_openai, policies, sink)
    fake.plan = FaultPlan(latency_s=2.0)
    assert isinstance(_fail(client), openai.APITimeoutError)
    assert sink.calls[0].attempts == 2
    assert sink.calls[0].retry_stop_reason == "max_retries"
    assert sink.calls[0].latency_s < 3.5  # two 0.2 s attempts, not two 2 s ones (4 s)


def test_stream_idle_gap_is_its_own_timeout(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """Headers arrive in time; a gap between chunks longer than stream_idle_s ends the stream."""
    policies = Policies(timeouts=Timeouts(stream_idle_s=0.2), breaker=None, clock=FakeClock())
    client = _openai(raw_openai, policies, sink)
    fake.enqueue(Fault.slow_stream(1.0))
    # openai 3 wraps a timeout during the body; openai 2 lets httpx's own through.
    with pytest.raises((openai.APITimeoutError, *http_errors())):
        for _ in client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
            pass
    [event] = sink.calls
    assert event.outcome == "error"
    assert event.attempts == 1  # never retried once the stream was handed over


def test_breaker_metrics(fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI) -> None:
    """State gauge, transitions and retries (made and refused) are in the metrics."""
    registry = CollectorRegistry()
    policies = Policies(max_retries=2, breaker=BreakerConfig(failure_threshold=2), clock=FakeClock())
    client = _openai(raw_openai, policies, sink, registry)
    fake.enqueue(Fault.status(500), Fault.status(500))
    _fail(client)
    labels = {
        "gen_ai_provider_name": "openai",
        "server_address": "127.0.0.1",
        "gen_ai_request_model": "gpt-4o-mini",
    }
    get = registry.get_sample_value
    assert get("llmpulse_circuit_state", labels) == 2
    assert (
        get("llmpulse_circuit_transitions_total", {**labels, "from_state": "closed", "to_state": "open"}) == 1
    )
    short = {"gen_ai_provider_name": "openai", "gen_ai_request_model": "gpt-4o-mini"}
    assert get("llmpulse_retries_total", {**short, "reason": "5xx"}) == 1
    # The second failure opened the breaker: the retry it would have earned is refused.
    assert get("llmpulse_retries_refused_total", {**short, "reason": "circuit_open"}) == 1
    assert sink.calls[0].retry_stop_reason == "circuit_open"


def test_the_retry_storm_incident_is_contained(fake: FakeProvider, raw_openai: openai.OpenAI) -> None:
    """The field's incident, scaled down: a provider slows down under 50 concurrent users.

    The incident's client (its own timeout, 5 retries) wrapped with llmpulse's
    defaults (retries and timeouts from the client, a 10 % retry budget + 10,
    the breaker at 10 consecutive failures): attempts stay <= 1.1 x requests +
    10, the breaker opens, the rest fail fast, and every call yields exactly
    one event. Only the client's timeout is scaled (0.2 s instead of 30 s).
    """
    sink = CapturingSink()
    policies = Policies(backoff_base_s=0.01, backoff_max_s=0.05)
    client = _openai(raw_openai.with_options(timeout=0.2, max_retries=5), policies, sink)
    fake.plan = FaultPlan(latency_s=1.0)  # slower than any attempt waits
    users, per_user = 50, 4

    def user(_: int) -> list[str]:
        outcomes = []
        for _ in range(per_user):
            try:
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=8)
                outcomes.append("ok")
            except llmpulse.CircuitOpenError:
                outcomes.append("fast")
            except openai.APITimeoutError:
                outcomes.append("timeout")
        return outcomes

    with ThreadPoolExecutor(max_workers=users) as pool:
        outcomes = [o for result in pool.map(user, range(users)) for o in result]
    requests = users * per_user
    attempts = sum(e.attempts for e in sink.calls)
    assert len(sink.calls) == requests  # exactly one event per call
    assert len(fake.requests) == attempts  # what the provider saw is what the events count
    assert attempts <= 1.1 * requests + 10
    assert outcomes.count("fast") >= requests // 2  # once open, calls fail at once
    rejected = [e for e in sink.calls if e.outcome == "rejected"]
    assert rejected
    assert all(e.attempts == 0 and e.rejected_reason == "circuit_open" for e in rejected)  # nothing sent
    # A failed call made at most the client's 6 attempts, each cut at the client's own 0.2 s,
    # unless the breaker opened before its next one.
    failed = [e for e in sink.calls if e.outcome == "error"]
    assert all(1 <= e.attempts <= 6 for e in failed)
    assert {e.error_type for e in failed} <= {"APITimeoutError", "CircuitOpenError"}


class OversleepingClock(FakeClock):
    """A process stalled during backoff (GC pause, CPU starvation): every sleep takes 10 s longer."""

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds + 10.0)


def test_a_deadline_spent_during_backoff_raises_deadline_exceeded(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """If the backoff overran the deadline, the next attempt is not sent: DeadlineExceededError."""
    policies = Policies(timeouts=Timeouts(total_s=5.0), breaker=None, clock=OversleepingClock())
    client = _openai(raw_openai, policies, sink)
    fake.enqueue(Fault.status(500))
    error = _fail(client)
    assert isinstance(error, llmpulse.DeadlineExceededError)
    assert isinstance(error, openai.APIConnectionError)
    assert len(fake.requests) == 1
    [event] = sink.calls
    assert (event.outcome, event.attempts, event.rejected_reason) == ("error", 1, "deadline_exceeded")
    assert event.error_type == "DeadlineExceededError"


async def test_a_cancelled_probe_gives_its_slot_back(fake: FakeProvider, sink: CapturingSink) -> None:
    """Cancelling the half-open probe in flight frees it: the next call probes, and closes the breaker."""
    clock = FakeClock()
    policies = Policies(max_retries=0, breaker=BreakerConfig(failure_threshold=1, open_s=10.0), clock=clock)
    raw = openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url)
    client = llmpulse.wrap(raw, sinks=[sink], registry=CollectorRegistry(), policies=policies)
    fake.enqueue(Fault.status(500))
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    clock.advance(10.0)
    fake.enqueue(Fault.latency(30.0))
    probe = asyncio.create_task(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    deadline = asyncio.get_running_loop().time() + 10
    while len(fake.requests) < 2:  # the probe is in flight at the provider
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    with pytest.raises(llmpulse.CircuitOpenError):  # the single probe slot is taken
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # probes, succeeds
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # closed again
    assert [e.outcome for e in sink.calls] == ["error", "rejected", "cancelled", "ok", "ok"]
    await raw.close()


def test_overloaded_model_falls_back_to_the_next_in_its_chain(
    fake: FakeProvider, sink: CapturingSink
) -> None:
    """A 529 on the requested model sends the call on to its fallback at once; the event says which served."""
    clock = FakeClock()
    policies = Policies(fallbacks={"claude-sonnet-4-6": ["claude-haiku-4-5"]}, clock=clock)
    raw = anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=fake.anthropic_base_url)
    registry = CollectorRegistry()
    client = llmpulse.wrap(raw, sinks=[sink], registry=registry, policies=policies)
    fake.enqueue(Fault.status(529))
    message = client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES)
    raw.close()
    assert message.model.startswith("claude-haiku-4-5")
    assert [r.json["model"] for r in fake.requests] == ["claude-sonnet-4-6", "claude-haiku-4-5"]
    assert clock.slept == [0.0]  # another model: no backoff
    [event] = sink.calls
    assert (event.model, event.served_model, event.fallback_reason) == (
        "claude-sonnet-4-6",
        "claude-haiku-4-5",
        "overloaded",
    )
    assert (event.outcome, event.attempts) == ("ok", 2)
    labels = {
        "gen_ai_provider_name": "anthropic",
        "gen_ai_request_model": "claude-sonnet-4-6",
        "served_provider": "anthropic",
        "served_model": "claude-haiku-4-5",
        "reason": "overloaded",
    }
    assert registry.get_sample_value("llmpulse_fallbacks_total", labels) == 1


def test_fallback_caps_max_tokens_and_serves_streams(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """A fallback with max_tokens lowers the request's cap; a stream falls back before any output."""
    policies = Policies(fallbacks={"gpt-4o": [Fallback("gpt-4o-mini", max_tokens=8)]}, clock=FakeClock())
    client = _openai(raw_openai, policies, sink)
    fake.enqueue(Fault.status(503))
    chunks = list(
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=500, stream=True)
    )
    assert chunks
    second = fake.requests[1].json
    assert (second["model"], second["max_tokens"]) == ("gpt-4o-mini", 8)
    assert sink.calls[0].served_model == "gpt-4o-mini"


def test_an_open_breaker_goes_straight_to_the_fallback(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """With the requested model's breaker open, nothing is sent to it: the fallback serves the call."""
    policies = Policies(
        max_retries=0,
        breaker=BreakerConfig(failure_threshold=1),
        fallbacks={"gpt-4o": ["gpt-4o-mini"]},
        clock=FakeClock(),
    )
    client = _openai(raw_openai, policies, sink)
    fake.enqueue(Fault.status(500))
    _fail_on(client, "gpt-4o")  # opens gpt-4o's breaker (a 500 is not "overloaded": no fallback)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert [r.json["model"] for r in fake.requests] == ["gpt-4o", "gpt-4o-mini"]
    event = sink.calls[-1]
    assert (event.outcome, event.attempts, event.served_model, event.fallback_reason) == (
        "ok",
        1,
        "gpt-4o-mini",
        "circuit_open",
    )


def test_without_a_fallback_an_overload_is_retried_on_the_same_model(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """No chain for the model: a 529 is an ordinary retryable failure."""
    policies = Policies(fallbacks={"gpt-4o": ["gpt-4o-mini"]}, clock=FakeClock())
    client = _openai(raw_openai, policies, sink)
    fake.enqueue(Fault.status(529))
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert [r.json["model"] for r in fake.requests] == ["gpt-4o-mini", "gpt-4o-mini"]
    assert sink.calls[0].fallback_reason is None


def _fail_on(client: openai.OpenAI, model: str) -> BaseException:
    with pytest.raises(Exception) as info:  # noqa: PT011 - the caller checks what it needs
        client.chat.completions.create(model=model, messages=MESSAGES)
    return info.value


def test_cacheable_calls_are_answered_from_the_cache(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """With context(cache=True) the same request is answered without a call, as the SDK's own type."""
    registry = CollectorRegistry()
    client = _openai(raw_openai, Policies(clock=FakeClock()), sink, registry)
    with llmpulse.context(tenant="acme", cache=True):
        first = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0)
        second = client.chat.completions.create(temperature=0, messages=MESSAGES, model="gpt-4o-mini")
    assert len(fake.requests) == 1  # key order does not matter: one request, one answer
    assert isinstance(second, type(first))
    assert second.choices[0].message.content == first.choices[0].message.content
    miss, hit = sink.calls
    assert (miss.cache_hit, hit.cache_hit) == (False, True)
    assert (hit.outcome, hit.attempts, hit.http_status) == ("ok", 0, 200)
    assert hit.cost_usd == 0.0
    assert hit.cost_saved_usd == miss.cost_usd
    assert hit.output_tokens == miss.output_tokens  # the tokens saved
    get = registry.get_sample_value
    assert get("llmpulse_cache_total", {"gen_ai_provider_name": "openai", "result": "hit"}) == 1
    assert get("llmpulse_cache_total", {"gen_ai_provider_name": "openai", "result": "store"}) == 1
    tokens = {
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "gpt-4o-mini",
        "gen_ai_operation_name": "chat",
        "tenant": "acme",
        "route": "",
        "token_type": "output",
    }
    assert get("llmpulse_tokens_total", tokens) == miss.output_tokens  # the hit used none


def test_nothing_is_cached_unless_asked_and_never_private(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """Without cache=True, inside private=True, for streams and for errors: every call goes out."""
    client = _openai(raw_openai, Policies(clock=FakeClock()), sink)
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with llmpulse.context(cache=True, private=True):
        for _ in range(2):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with llmpulse.context(cache=True):
        for _ in range(2):
            list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
        fake.enqueue(Fault.status(400))
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(fake.requests) == 8
    assert not any(e.cache_hit for e in sink.calls)


def test_a_private_call_never_reads_or_fills_the_cache(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """A private call sending a cached request goes out, and its own answer is not stored for later calls."""
    registry = CollectorRegistry()
    client = _openai(raw_openai, Policies(clock=FakeClock()), sink, registry)
    session = [{"role": "user", "content": "my account number is 1234"}]
    with llmpulse.context(cache=True):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # stored
        with llmpulse.context(private=True):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # the same request
            client.chat.completions.create(model="gpt-4o-mini", messages=session)
        client.chat.completions.create(model="gpt-4o-mini", messages=session)  # nothing stored for it
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # the batch's own entry
    assert [e.cache_hit for e in sink.calls] == [False, False, False, False, True]
    assert [e.attempts for e in sink.calls] == [1, 1, 1, 1, 0]
    assert len(fake.requests) == 4
    store = {"gen_ai_provider_name": "openai", "result": "store"}
    assert registry.get_sample_value("llmpulse_cache_total", store) == 2  # the two non-private misses


def test_cached_answers_expire_and_routes_can_opt_in(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """A cache_routes route is cacheable without cache=True; an answer older than the TTL is fetched again."""
    clock = FakeClock()
    policies = Policies(cache_ttl_s=60.0, cache_routes=frozenset({"/faq"}), clock=clock)
    client = _openai(raw_openai, policies, sink)
    with llmpulse.context(route="/faq"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        clock.advance(60.0)
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert [e.cache_hit for e in sink.calls] == [False, True, False]
    assert len(fake.requests) == 2


def test_half_open_admits_exactly_n_probes_across_threads_and_tasks(
    fake: FakeProvider, raw_openai: openai.OpenAI
) -> None:
    """Chaos: 200 threads and 200 asyncio tasks hit a half-open breaker at once; exactly 3 probes go out."""
    sink = CapturingSink()
    clock = FakeClock()
    policies = Policies(
        max_retries=0,
        breaker=BreakerConfig(failure_threshold=1, open_s=10.0, half_open_probes=3),
        clock=clock,
    )
    client = _openai(raw_openai, policies, sink)
    fake.enqueue(Fault.status(500))
    _fail(client)  # opens it
    clock.advance(10.0)  # half-open: 3 probes allowed
    fake.plan = FaultPlan(latency_s=2.0)  # probes stay in flight while the others arrive and are refused
    aclient_raw = openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url, max_retries=0)
    aclient = llmpulse.wrap(aclient_raw, sinks=[sink], registry=CollectorRegistry(), policies=policies)
    start = threading.Barrier(201)
    outcomes: list[str] = []
    lock = threading.Lock()

    def record(outcome: str) -> None:
        with lock:
            outcomes.append(outcome)

    def sync_caller() -> None:
        start.wait()
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            record("sent")
        except llmpulse.CircuitOpenError:
            record("refused")

    async def async_callers() -> None:
        async def one() -> None:
            try:
                await aclient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                record("sent")
            except llmpulse.CircuitOpenError:
                record("refused")

        await asyncio.gather(*(one() for _ in range(200)))
        await aclient_raw.close()

    def async_runner() -> None:
        start.wait()
        asyncio.run(async_callers())

    threads = [threading.Thread(target=sync_caller) for _ in range(200)]
    threads.append(threading.Thread(target=async_runner))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(outcomes) == 400
    assert outcomes.count("sent") == 3  # exactly N probes reached the provider
    assert len(fake.requests) == 1 + 3
    assert len(sink.calls) == 1 + 400  # one event per call, refused ones included
