"""Per-tenant rate limits, throttles, budgets and adaptive concurrency, through the real SDK."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator

import openai
import pytest
from prometheus_client import CollectorRegistry

import llmpulse
from conftest import MESSAGES
from llmpulse import BreakerConfig, Fallback, Policies
from llmpulse.policies import Budget, ConcurrencyConfig, RateLimit
from llmpulse.policies import _quota as quota_module
from llmpulse.policies import _shared as shared_module
from llmpulse.state import WRITE_BACK, RedisStore
from llmpulse.testing import CapturingSink, FakeClock, FakeProvider, Fault, FaultPlan
from redis_server import RedisServer


@pytest.fixture(autouse=True)
def _no_throttles() -> Iterator[None]:
    yield
    quota_module._throttles.clear()


def _client(
    raw: openai.OpenAI, policies: Policies, sink: CapturingSink, registry: CollectorRegistry | None = None
) -> openai.OpenAI:
    return llmpulse.wrap(raw, sinks=[sink], registry=registry or CollectorRegistry(), policies=policies)


def _call(client: openai.OpenAI, tenant: str, **kwargs: object) -> None:
    with llmpulse.context(tenant=tenant):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **kwargs)  # type: ignore[call-overload]


def test_tenant_requests_per_minute(
    raw_openai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider
) -> None:
    """A tenant over its limit is refused with RateLimitedError (an openai.APIError); others are not."""
    policies = Policies(rate_limit=RateLimit(requests_per_min=2), rate_limit_wait_s=0.0, clock=FakeClock())
    client = _client(raw_openai, policies, sink)
    _call(client, "acme")
    _call(client, "acme")
    with pytest.raises(llmpulse.RateLimitedError) as info:
        _call(client, "acme")
    assert isinstance(info.value, openai.APIConnectionError)
    assert info.value.retry_after_s == pytest.approx(30.0)
    assert "tenant requests limit for acme" in str(info.value)
    _call(client, "globex")
    assert len(fake.requests) == 3
    refused = sink.calls[2]
    assert (refused.outcome, refused.attempts, refused.rejected_reason) == ("rejected", 0, "rate_limited")


def test_a_limited_call_waits_its_turn_when_allowed(raw_openai: openai.OpenAI, sink: CapturingSink) -> None:
    """Within rate_limit_wait_s the call waits (on the policies' clock) instead of failing."""
    clock = FakeClock()
    policies = Policies(rate_limit=RateLimit(requests_per_min=2), rate_limit_wait_s=120.0, clock=clock)
    client = _client(raw_openai, policies, sink)
    for _ in range(3):
        _call(client, "acme")
    assert clock.slept == [pytest.approx(30.0)]  # within both the wait and the call's deadline
    assert [e.outcome for e in sink.calls] == ["ok", "ok", "ok"]
    assert [e.queue_wait_s for e in sink.calls] == [0.0, 0.0, pytest.approx(30.0)]


def test_tokens_are_reserved_then_settled(raw_openai: openai.OpenAI, sink: CapturingSink) -> None:
    """A call reserves estimate + max_tokens, and gets back what it did not use when it ends."""
    policies = Policies(rate_limit=RateLimit(tokens_per_min=1000), rate_limit_wait_s=0.0, clock=FakeClock())
    client = _client(raw_openai, policies, sink)
    _call(client, "acme", max_tokens=500)  # reserves ~530, uses ~35
    _call(client, "acme", max_tokens=900)  # fits only because the first gave its unused tokens back
    with pytest.raises(llmpulse.RateLimitedError):
        _call(client, "acme", max_tokens=990)


def test_emergency_throttle(raw_openai: openai.OpenAI, sink: CapturingSink) -> None:
    """llmpulse.throttle() limits one tenant at once, on top of any configured limit."""
    client = _client(raw_openai, Policies(rate_limit_wait_s=0.0, clock=FakeClock()), sink)
    llmpulse.throttle("acme", requests_per_min=1, for_s=60)
    _call(client, "acme")
    with pytest.raises(llmpulse.RateLimitedError):
        _call(client, "acme")
    _call(client, "globex")
    with pytest.raises(ValueError, match="requests_per_min"):
        llmpulse.throttle("acme", requests_per_min=0, for_s=60)


def test_budget_block(raw_openai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider) -> None:
    """A spent budget with action "block" refuses the tenant's calls with BudgetExceededError."""
    policies = Policies(budget=Budget(usd_per_hour=1e-9, action="block"), clock=FakeClock())
    client = _client(raw_openai, policies, sink)
    _call(client, "acme")  # under budget when it starts; its cost is charged when it ends
    with pytest.raises(llmpulse.BudgetExceededError) as info:
        _call(client, "acme")
    assert isinstance(info.value, openai.APIConnectionError)
    assert "budget usd per hour of acme is spent" in str(info.value)
    _call(client, "globex")
    assert len(fake.requests) == 2
    assert sink.calls[1].rejected_reason == "budget_exceeded"


def test_budget_downgrade_uses_the_fallback_chain(
    raw_openai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider
) -> None:
    """A spent budget with action "downgrade" sends the tenant's calls to the fallback model."""
    policies = Policies(
        budget=Budget(tokens_per_day=10, action="downgrade"),
        fallbacks={"gpt-4o-mini": [Fallback("gpt-4.1-nano", max_tokens=16)]},
        clock=FakeClock(),
    )
    client = _client(raw_openai, policies, sink)
    _call(client, "acme")
    _call(client, "acme")
    assert [r.json["model"] for r in fake.requests] == ["gpt-4o-mini", "gpt-4.1-nano"]
    assert (sink.calls[1].served_model, sink.calls[1].fallback_reason) == ("gpt-4.1-nano", "budget")


def test_budget_alert_warns_once_and_lets_calls_through(
    raw_openai: openai.OpenAI, sink: CapturingSink, caplog: pytest.LogCaptureFixture
) -> None:
    """The default action only alerts: one warning per tenant and window, and a metric per call."""
    registry = CollectorRegistry()
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    client = _client(
        raw_openai, Policies(budget=Budget(tokens_per_hour=1), clock=FakeClock()), sink, registry
    )
    with caplog.at_level(logging.WARNING, logger="llmpulse"):
        for _ in range(4):
            _call(client, tenant)
    assert [e.outcome for e in sink.calls] == ["ok"] * 4
    assert [e.budget_action for e in sink.calls] == [None, "alert", "alert", "alert"]
    assert len([r for r in caplog.records if f"budget tokens per hour of {tenant}" in r.message]) == 1
    labels = {"action": "alert", "budget": "tokens per hour"}
    assert registry.get_sample_value("llmpulse_budget_actions_total", labels) == 3


def test_full_pending_queue_sheds_at_once(
    raw_openai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider
) -> None:
    """With every slot taken and no room to wait, a call fails at once with OverloadedError."""
    policies = Policies(concurrency=ConcurrencyConfig(initial_limit=1, queue_factor=0.0), clock=FakeClock())
    client = _client(raw_openai, policies, sink)
    fake.plan = FaultPlan(latency_s=1.0)
    started = threading.Event()
    errors: list[BaseException] = []

    def slow() -> None:
        started.set()
        _call(client, "acme")

    first = threading.Thread(target=slow)
    first.start()
    assert started.wait(5)
    give_up = time.monotonic() + 10
    while not fake.requests:  # the first call holds the only slot, waiting at the provider
        assert time.monotonic() < give_up
        threading.Event().wait(0.01)
    try:
        _call(client, "acme")
    except llmpulse.OverloadedError as exc:
        errors.append(exc)
    first.join(10)
    assert len(errors) == 1
    assert isinstance(errors[0], openai.APIConnectionError)
    shed = [e for e in sink.calls if e.outcome == "rejected"]
    assert [(e.attempts, e.rejected_reason) for e in shed] == [(0, "overloaded")]


def test_a_429_cuts_the_concurrency_limit(
    raw_openai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider
) -> None:
    """AIMD: a 429 cuts the endpoint's limit by 40 %; the gauge shows it."""
    registry = CollectorRegistry()
    policies = Policies(concurrency=ConcurrencyConfig(initial_limit=10), clock=FakeClock())
    client = _client(raw_openai, policies, sink, registry)
    fake.enqueue(Fault.status(429, retry_after_ms=100))
    _call(client, "acme")
    limiter = policies.limiter(("openai", "127.0.0.1", sink.calls[0].api_key_id or ""), lambda old, new: None)
    assert limiter is not None
    assert limiter.limit == 6
    gauge = {"gen_ai_provider_name": "openai", "server_address": "127.0.0.1"}
    assert registry.get_sample_value("llmpulse_concurrency_limit", gauge) == 6


def test_replicas_share_a_tenant_limit_through_redis(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """Two clients with their own Policies (two replicas) share one tenant limit through Redis."""
    with RedisServer() as server:
        prefix = f"q-{uuid.uuid4().hex[:6]}:"
        stores = [RedisStore(server.url, prefix=prefix, timeout_s=2.0) for _ in range(2)]
        try:
            replicas = [
                _client(
                    raw_openai,
                    Policies(rate_limit=RateLimit(requests_per_min=3), rate_limit_wait_s=0.0, store=store),
                    sink,
                )
                for store in stores
            ]
            outcomes = []
            for i in range(6):
                try:
                    _call(replicas[i % 2], "acme")
                    outcomes.append("ok")
                except llmpulse.RateLimitedError:
                    outcomes.append("limited")
        finally:
            for store in stores:
                store.close()
    assert outcomes == ["ok", "ok", "ok", "limited", "limited", "limited"]
    assert len(fake.requests) == 3


def test_a_429_storm_subsides_as_concurrency_adapts(raw_openai: openai.OpenAI, fake: FakeProvider) -> None:
    """Chaos: 24 callers against a provider that takes 3 at a time and answers 429 + Retry-After beyond.

    The limit is cut on the 429s, everybody pauses on Retry-After, and the
    limit then holds one below the limit that overloaded, so the share of
    attempts answered 429 falls under the issue's 1 %. Measured on 2 cores:
    0.60 in the first third of the run, 0.0 in the last two thirds (plain AIMD,
    ``probe_interval_s=0``: 0.15-0.32; no adaptive concurrency: 0.63-0.65).
    Every call still yields exactly one event.
    """
    sink = CapturingSink()
    policies = Policies(concurrency=ConcurrencyConfig(initial_limit=24, cut_cooldown_s=0.05))
    client = _client(raw_openai, policies, sink)
    fake.plan = FaultPlan(latency_s=0.02, max_concurrency=3, retry_after_s=0.05)
    callers, calls_each = 24, 5

    def caller() -> None:
        for _ in range(calls_each):
            with contextlib.suppress(openai.RateLimitError):  # retries spent: still one event
                _call(client, "acme", max_tokens=4)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(sink.calls) == callers * calls_each  # exactly one event per call
    ordered = [a.http_status for a in sink.attempts]  # in the order the attempts ended
    third = len(ordered) // 3
    first, last = ordered[:third], ordered[-third:]

    def share(part: list[int | None]) -> float:
        return sum(status == 429 for status in part) / len(part)

    assert share(last) < 0.01  # adapted; plain AIMD stays at 0.15-0.32, no limiter above 0.6
    assert share(last) < share(first)
    limiter = policies.limiter(("openai", "127.0.0.1", sink.calls[0].api_key_id or ""), lambda old, new: None)
    assert limiter is not None
    assert limiter.limit < 24


def test_background_calls_give_way_under_pressure(raw_openai: openai.OpenAI, sink: CapturingSink) -> None:
    """Background calls stop at 90 % of a budget; interactive ones may spend the rest."""
    policies = Policies(budget=Budget(tokens_per_hour=100, action="block"), clock=FakeClock())
    client = _client(raw_openai, policies, sink)
    store = policies.state_store()
    store.add("budget:tokens:3600:acme", 95, window_s=3600)  # 95 % spent
    with llmpulse.context(tenant="acme", priority="background"), pytest.raises(llmpulse.BudgetExceededError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    _call(client, "acme")  # interactive: still within budget


def test_a_half_open_breaker_is_probed_by_interactive_calls_only(
    raw_openai: openai.OpenAI, sink: CapturingSink, fake: FakeProvider
) -> None:
    """While half-open, a background call fails fast; an interactive one is the probe."""
    clock = FakeClock()
    policies = Policies(max_retries=0, breaker=BreakerConfig(failure_threshold=1, open_s=10.0), clock=clock)
    client = _client(raw_openai, policies, sink)
    fake.enqueue(Fault.status(500))
    with pytest.raises(openai.InternalServerError):
        _call(client, "acme")
    clock.advance(10.0)
    with llmpulse.context(priority="background"), pytest.raises(llmpulse.CircuitOpenError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    _call(client, "acme")  # the interactive probe closes it
    with llmpulse.context(priority="background"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert [e.outcome for e in sink.calls] == ["error", "rejected", "ok", "ok"]


def _replica(
    raw: openai.OpenAI, sink: CapturingSink, url: str, prefix: str
) -> tuple[openai.OpenAI, FakeClock]:
    clock = FakeClock()
    store = RedisStore(url, prefix=prefix, timeout_s=2.0)
    policies = Policies(rate_limit_wait_s=0.0, store=store, clock=clock)
    return _client(raw, policies, sink), clock


def _outcome(client: openai.OpenAI, tenant: str = "acme") -> str:
    try:
        _call(client, tenant)
    except llmpulse.RateLimitedError:
        return "limited"
    return "ok"


def test_a_throttle_applied_by_another_replica_reaches_this_one(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """llmpulse.throttle() in another process, on the shared store, limits this one within a refresh."""
    with RedisServer() as server:
        prefix = f"t-{uuid.uuid4().hex[:6]}:"
        client, clock = _replica(raw_openai, sink, server.url, prefix)
        outcomes = [_outcome(client)]
        operator = (
            "import llmpulse, sys; from llmpulse.state import RedisStore;"
            "policies = llmpulse.Policies(store=RedisStore(sys.argv[1], prefix=sys.argv[2]));"
            "llmpulse.throttle('acme', requests_per_min=1, for_s=60)"
        )
        subprocess.run([sys.executable, "-c", operator, server.url, prefix], check=True, timeout=60)
        assert quota_module.throttles() == {}  # not applied in this process
        clock.advance(shared_module.REFRESH_S)
        outcomes.append(_outcome(client))  # the snapshot is a second old: refreshed after this call
        assert WRITE_BACK.join(10)
        outcomes += [_outcome(client), _outcome(client), _outcome(client, "globex")]
    assert outcomes == ["ok", "ok", "ok", "limited", "ok"]
    assert sink.calls[3].rejected_reason == "rate_limited"


def test_a_retry_after_pauses_every_replica(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """A 429's Retry-After seen by one replica pauses new calls to that endpoint on the others too."""
    with RedisServer() as server:
        prefix = f"p-{uuid.uuid4().hex[:6]}:"
        first, _ = _replica(raw_openai, sink, server.url, prefix)
        second, clock = _replica(raw_openai, sink, server.url, prefix)
        _call(second, "acme")
        fake.enqueue(Fault.status(429, retry_after=60))
        with pytest.raises(openai.RateLimitError):
            _call(first.with_options(max_retries=0), "acme")
        assert WRITE_BACK.join(10)
        clock.advance(shared_module.REFRESH_S)
        _call(second, "acme")  # the snapshot is a second old: refreshed after this call
        assert WRITE_BACK.join(10)
        sent = len(fake.requests)
        # 60 s is past what the call may wait for a slot (its pool timeout): refused at once.
        with pytest.raises(llmpulse.RateLimitedError, match="asked every caller to wait") as info:
            _call(second, "acme", timeout=5.0)
    assert len(fake.requests) == sent  # nothing sent while paused
    assert info.value.retry_after_s is not None
    assert 50 < info.value.retry_after_s <= 60


def test_settings_redis_fail_open_is_a_metric(fake: FakeProvider, free_tcp_port: int) -> None:
    """LLMPULSE_REDIS_URL pointing at nothing: quotas are decided locally at limit / replicas, and counted."""
    script = textwrap.dedent(
        """
        import llmpulse, openai, sys
        from prometheus_client import REGISTRY
        client = llmpulse.wrap(openai.OpenAI(api_key="sk-x", base_url=sys.argv[1], max_retries=0))
        hi = [{"role": "user", "content": "hi"}]
        outcomes = []
        for _ in range(3):
            try:
                with llmpulse.context(tenant="acme"):
                    client.chat.completions.create(model="gpt-4o-mini", messages=hi)
                outcomes.append("ok")
            except llmpulse.RateLimitedError:
                outcomes.append("limited")
        print(outcomes)
        print(REGISTRY.get_sample_value("llmpulse_state_store_fallbacks_total", {"reason": "unreachable"}))
        """
    )
    env = {
        **os.environ,
        "LLMPULSE_SINKS": "none",
        "LLMPULSE_REDIS_URL": f"redis://127.0.0.1:{free_tcp_port}/0",
        "LLMPULSE_REPLICAS": "2",
        "LLMPULSE_TENANT_REQUESTS_PER_MIN": "4",
        "LLMPULSE_RATE_LIMIT_WAIT_S": "0",
    }
    result = subprocess.run(
        [sys.executable, "-c", script, fake.openai_base_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    outcomes, fallbacks = result.stdout.splitlines()
    assert outcomes == "['ok', 'ok', 'limited']"  # 4 per minute / 2 replicas, decided here
    assert float(fallbacks) >= 3  # every quota decision (and each background read of the shared signals)
    assert result.stderr.count("Redis") >= 1  # logged once, never per call
    assert result.stderr.count("Redis") <= 2
