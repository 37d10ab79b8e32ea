"""Chaos: cancellation at every point of a call, and a shared store that goes away, through the real SDKs.

Each scenario checks what the call gives back (concurrency slots, breaker
permits, retry budget, rate-limit reservations) and that it makes exactly one
`CallEvent`. Nothing here sleeps to wait for something: the tests wait on the
fake provider's request count, on events set where a call blocks (a fake
clock's sleep, the limiter's queue), or on the call itself.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import openai
import pytest
from prometheus_client import CollectorRegistry

import llmpulse
from conftest import ANTHROPIC_KEY, MESSAGES, OPENAI_KEY
from llmpulse import BreakerConfig, Policies
from llmpulse.events import CallEvent
from llmpulse.policies import AdaptiveLimiter, CircuitBreaker, ConcurrencyConfig, RateLimit, RetryBudget
from llmpulse.policies import _concurrency as concurrency_module
from llmpulse.state import RedisStore, StateStore
from llmpulse.testing import CapturingSink, FakeClock, FakeProvider, Fault
from redis_server import RedisServer

# Long enough that only a cancellation ends the call: no test waits for it.
SLOW_S = 30.0
# The bound on any wait in these tests; a scenario that needs it has failed.
WAIT_S = 5.0


class GatedClock(FakeClock):
    """A FakeClock whose async sleeps block until `gate` is set; `sleeping` says one has begun.

    The backoff and the rate-limit wait then really are awaited, so a task
    can be cancelled inside them, and no real time passes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sleeping = asyncio.Event()
        self.gate = asyncio.Event()

    async def asleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.sleeping.set()
        await self.gate.wait()
        self.now += seconds


Client = openai.AsyncOpenAI | anthropic.AsyncAnthropic


def _async_client(fake: FakeProvider, provider: str, policies: Policies, sink: CapturingSink) -> Client:
    raw: Client
    if provider == "openai":
        raw = openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url)
    else:
        raw = anthropic.AsyncAnthropic(api_key=ANTHROPIC_KEY, base_url=fake.anthropic_base_url)
    return llmpulse.wrap(raw, sinks=[sink], registry=CollectorRegistry(), policies=policies)


async def _create(client: Client, model: str | None = None) -> Any:
    if isinstance(client, openai.AsyncOpenAI):
        return await client.chat.completions.create(model=model or "gpt-4o-mini", messages=MESSAGES)
    return await client.messages.create(model=model or "claude-haiku-4-5", max_tokens=16, messages=MESSAGES)


def _endpoint(event: CallEvent) -> tuple[str, str, str]:
    return (event.provider, "127.0.0.1", event.api_key_id or "")


def _breaker(policies: Policies, event: CallEvent) -> CircuitBreaker:
    breaker = policies.circuit(_endpoint(event), event.model, lambda *_: None)
    assert breaker is not None
    return breaker


def _limiter(policies: Policies, event: CallEvent) -> AdaptiveLimiter:
    limiter = policies.limiter(_endpoint(event), lambda old, new: None)
    assert limiter is not None
    return limiter


def _budget(policies: Policies, event: CallEvent) -> RetryBudget:
    return policies.retry_budget(_endpoint(event))


def _one_event_each(sink: CapturingSink, n_calls: int) -> None:
    """Exactly one CallEvent per logical call."""
    ids = [e.call_id for e in sink.calls]
    assert len(ids) == n_calls
    assert len(set(ids)) == n_calls


async def _in_flight(fake: FakeProvider, n: int) -> None:
    """Wait until the provider has received ``n`` requests (it signals a condition; nothing polls)."""
    assert await asyncio.to_thread(fake.wait_for_requests, n, WAIT_S), f"request {n} never arrived"


@pytest.fixture(name="queued")
def _queued(monkeypatch: pytest.MonkeyPatch) -> asyncio.Queue[None]:
    """One item each time a task finds no free slot and joins the limiter's queue.

    The item is put just before `AdaptiveLimiter.aacquire` runs; a task that
    gets it runs again only once the queuing task blocked, i.e. once it is in
    the queue (one loop, one thread).
    """
    entered: asyncio.Queue[None] = asyncio.Queue()
    original = AdaptiveLimiter.aacquire

    async def aacquire(self: AdaptiveLimiter, *args: Any, **kwargs: Any) -> Any:
        entered.put_nowait(None)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(AdaptiveLimiter, "aacquire", aacquire)
    return entered


# ---------------------------------------------------------------- cancelled in flight


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_cancelled_in_flight_returns_everything_and_counts_nothing(
    fake: FakeProvider, sink: CapturingSink, provider: str
) -> None:
    """A breaker at 9 of 10 failures stays closed through a cancellation; the next failure opens it."""
    clock = FakeClock()
    policies = Policies(max_retries=0, breaker=BreakerConfig(failure_threshold=10), clock=clock)
    client = _async_client(fake, provider, policies, sink)
    fake.enqueue(*[Fault.status(500)] * 9)
    for _ in range(9):
        with pytest.raises((openai.InternalServerError, anthropic.InternalServerError)):
            await _create(client)
    first = sink.calls[0]
    breaker, limiter, budget = _breaker(policies, first), _limiter(policies, first), _budget(policies, first)
    assert breaker.snapshot()["consecutive_failures"] == 9
    balance, spent = budget.balance, budget.spent

    fake.enqueue(Fault.latency(SLOW_S))
    task = asyncio.create_task(_create(client))
    await _in_flight(fake, 10)
    assert limiter.snapshot()["in_flight"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert limiter.snapshot()["in_flight"] == 0
    snap = breaker.snapshot()
    assert (snap["state"], snap["consecutive_failures"], snap["stale_releases"]) == ("closed", 9, 0)
    assert (budget.balance, budget.spent) == (balance, spent)
    cancelled = sink.calls[-1]
    assert (cancelled.outcome, cancelled.error_type, cancelled.attempts) == ("cancelled", "CancelledError", 1)
    assert cancelled.http_status is None

    fake.enqueue(Fault.status(500))  # the tenth failure, not the cancellation, opens it
    with pytest.raises((openai.InternalServerError, anthropic.InternalServerError)):
        await _create(client)
    assert breaker.snapshot()["state"] == "open"
    assert [e.outcome for e in sink.calls] == ["error"] * 9 + ["cancelled", "error"]
    _one_event_each(sink, 11)
    await client.close()


async def test_a_cancelled_half_open_probe_frees_its_permit(fake: FakeProvider, sink: CapturingSink) -> None:
    """Anthropic: the one half-open probe is cancelled in flight; the next call may probe, and closes it."""
    clock = FakeClock()
    policies = Policies(max_retries=0, breaker=BreakerConfig(failure_threshold=1, open_s=10.0), clock=clock)
    client = _async_client(fake, "anthropic", policies, sink)
    fake.enqueue(Fault.status(529))
    with pytest.raises(anthropic.APIStatusError):
        await _create(client)
    breaker = _breaker(policies, sink.calls[0])
    clock.advance(10.0)

    fake.enqueue(Fault.latency(SLOW_S))
    probe = asyncio.create_task(_create(client))
    await _in_flight(fake, 2)
    assert breaker.snapshot()["probes_in_flight"] == 1
    with pytest.raises(llmpulse.CircuitOpenError):  # the one probe slot is taken
        await _create(client)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe

    snap = breaker.snapshot()
    assert (snap["state"], snap["probes_in_flight"], snap["probe_successes"]) == ("half_open", 0, 0)
    await _create(client)  # admitted as the probe; its success closes the breaker
    assert breaker.snapshot()["state"] == "closed"
    assert _limiter(policies, sink.calls[0]).snapshot()["in_flight"] == 0
    assert [e.outcome for e in sink.calls] == ["error", "rejected", "cancelled", "ok"]
    assert len(fake.requests) == 3
    _one_event_each(sink, 4)
    await client.close()


# ---------------------------------------------------------------- cancelled in backoff


@pytest.mark.parametrize(("status", "breaker_failures"), [(503, 1), (429, 0)])
async def test_cancelled_in_backoff_sends_nothing_more(
    fake: FakeProvider, sink: CapturingSink, status: int, breaker_failures: int
) -> None:
    """Cancelled while sleeping before a retry: no further attempt, nothing held, only the answer counted."""
    clock = GatedClock()
    policies = Policies(
        max_retries=3,
        breaker=BreakerConfig(failure_threshold=10),
        clock=clock,
        random=lambda: 0.5,
        backoff_base_s=0.5,  # llmpulse's full jitter, so the sleep is known (not the SDK's random)
    )
    client = _async_client(fake, "openai", policies, sink)
    fake.enqueue(Fault.status(status))
    task = asyncio.create_task(_create(client))
    async with asyncio.timeout(WAIT_S):
        await clock.sleeping.wait()
    assert clock.slept == [0.25]  # half of the 0.5 s first ceiling
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(fake.requests) == 1

    [event] = sink.calls
    assert (event.outcome, event.error_type, event.attempts) == ("cancelled", "CancelledError", 1)
    assert event.http_status == status
    assert event.backoff_s == (0.25,)
    assert _limiter(policies, event).snapshot()["in_flight"] == 0
    snap = _breaker(policies, event).snapshot()
    # The provider's answer counts (a 503 is its failure, a 429 is not); the cancellation adds nothing.
    assert (snap["state"], snap["consecutive_failures"], snap["stale_releases"]) == (
        "closed",
        breaker_failures,
        0,
    )
    # The retry was granted before the cancellation but never sent: the budget has it back.
    budget = _budget(policies, event)
    assert budget.spent == 0
    untouched = RetryBudget(policies.retry_budget_ratio, policies.retry_budget_reserve)
    untouched.on_request()  # what one call that never retried leaves
    assert budget.balance == untouched.balance

    clock.gate.set()
    await _create(client, "gpt-4o")  # a fresh call: the cancelled one does not come back to life
    assert len(fake.requests) == 2
    fresh = fake.requests[1]
    assert fresh.json["model"] == "gpt-4o"
    assert fresh.headers.get("x-stainless-retry-count") == "0"  # its first attempt, not a retry
    assert [e.outcome for e in sink.calls] == ["cancelled", "ok"]
    _one_event_each(sink, 2)
    await client.close()


async def test_a_probe_cancelled_in_backoff_frees_its_permit(fake: FakeProvider, sink: CapturingSink) -> None:
    """A half-open probe answered 429 (not a failure) is cancelled in its backoff: the next call probes."""
    clock = GatedClock()
    policies = Policies(
        max_retries=3,
        breaker=BreakerConfig(failure_threshold=1, open_s=10.0),
        clock=clock,
        random=lambda: 0.5,
    )
    client = _async_client(fake, "openai", policies, sink)
    fake.enqueue(Fault.status(500))
    with pytest.raises(openai.InternalServerError):  # opens the breaker: no retry once it is open
        await _create(client)
    breaker = _breaker(policies, sink.calls[0])
    assert breaker.snapshot()["state"] == "open"
    clock.advance(10.0)

    fake.enqueue(Fault.status(429))
    probe = asyncio.create_task(_create(client))
    async with asyncio.timeout(WAIT_S):
        await clock.sleeping.wait()
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    snap = breaker.snapshot()
    assert (snap["state"], snap["probes_in_flight"]) == ("half_open", 0)

    clock.gate.set()
    await _create(client)  # may probe; closes the breaker
    assert breaker.snapshot()["state"] == "closed"
    assert [e.outcome for e in sink.calls] == ["error", "cancelled", "ok"]
    assert len(fake.requests) == 3
    _one_event_each(sink, 3)
    await client.close()


# ---------------------------------------------------------------- cancelled waiting for a slot


async def test_cancelled_waiting_for_a_slot_leaves_the_queue(
    fake: FakeProvider, sink: CapturingSink, queued: asyncio.Queue[None]
) -> None:
    """Limit 1: B waits behind A, C behind B; B is cancelled; when A ends, its slot goes to C, not to B."""
    policies = Policies(
        max_retries=0, concurrency=ConcurrencyConfig(initial_limit=1, max_limit=1), clock=FakeClock()
    )
    client = _async_client(fake, "openai", policies, sink)
    fake.enqueue(Fault.latency(SLOW_S))
    with llmpulse.context(feature="a"):
        a = asyncio.create_task(_create(client))
    await _in_flight(fake, 1)
    with llmpulse.context(feature="b"):
        b = asyncio.create_task(_create(client))
    with llmpulse.context(feature="c"):
        c = asyncio.create_task(_create(client))
    async with asyncio.timeout(WAIT_S):
        await queued.get()
        await queued.get()

    b.cancel()
    with pytest.raises(asyncio.CancelledError):
        await b
    [b_event] = sink.calls
    assert (b_event.feature, b_event.outcome, b_event.attempts) == ("b", "cancelled", 0)
    assert b_event.error_type == "CancelledError"
    limiter = _limiter(policies, b_event)
    snap = limiter.snapshot()
    assert (snap["in_flight"], snap["queued"], snap["cancelled"]) == (1, 1, 1)  # A runs, C waits

    a.cancel()  # frees A's slot: C must get it
    with pytest.raises(asyncio.CancelledError):
        await a
    async with asyncio.timeout(WAIT_S):
        await c
    assert len(fake.requests) == 2  # A and C; B never sent
    snap = limiter.snapshot()
    assert (snap["in_flight"], snap["queued"], snap["cancelled_grants"]) == (0, 0, 0)
    assert [(e.feature, e.outcome) for e in sink.calls] == [
        ("b", "cancelled"),
        ("a", "cancelled"),
        ("c", "ok"),
    ]
    breaker = _breaker(policies, b_event).snapshot()
    assert (breaker["consecutive_failures"], breaker["rejected_count"]) == (0, 0)
    _one_event_each(sink, 3)
    await client.close()


async def test_cancelled_waiting_for_a_slot_gives_back_its_rate_reservation(
    fake: FakeProvider, sink: CapturingSink, queued: asyncio.Queue[None]
) -> None:
    """A call admitted by the tenant's rate limits, then cancelled before it was sent, reserved nothing."""
    policies = Policies(
        max_retries=0,
        concurrency=ConcurrencyConfig(initial_limit=1, max_limit=1),
        rate_limit=RateLimit(requests_per_min=60, tokens_per_min=100_000),
        clock=FakeClock(),
    )
    client = _async_client(fake, "openai", policies, sink)
    store = policies.state_store()
    fake.enqueue(Fault.latency(SLOW_S))
    with llmpulse.context(tenant="acme"):
        holder = asyncio.create_task(_create(client))
    await _in_flight(fake, 1)

    def peek() -> tuple[float, float]:
        return _buckets(store, requests_per_min=60, tokens_per_min=100_000)

    before = peek()
    with llmpulse.context(tenant="acme"):
        waiter = asyncio.create_task(_create(client))
    async with asyncio.timeout(WAIT_S):
        await queued.get()
    reserved = peek()  # admitted: one request and its tokens are held while it waits
    assert reserved[0] == before[0] - 1
    assert reserved[1] < before[1]
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert peek() == before  # nothing was sent: the whole reservation is back

    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    assert [(e.outcome, e.attempts) for e in sink.calls] == [("cancelled", 0), ("cancelled", 1)]
    _one_event_each(sink, 2)
    await client.close()


def _buckets(store: StateStore, *, requests_per_min: float, tokens_per_min: float) -> tuple[float, float]:
    """What acme's request and token buckets could admit now (a zero-cost decision changes nothing)."""
    requests = store.gcra(
        "rl:req:tenant:acme", rate_per_s=requests_per_min / 60, burst=requests_per_min, cost=0
    )
    tokens = store.gcra("rl:tok:tenant:acme", rate_per_s=tokens_per_min / 60, burst=tokens_per_min, cost=0)
    return (round(requests.remaining, 6), round(tokens.remaining, 6))


# ---------------------------------------------------------------- cancelled waiting on a rate limit


async def test_cancelled_waiting_on_a_rate_limit_refunds_what_it_took(
    fake: FakeProvider, sink: CapturingSink
) -> None:
    """Requests fit, tokens do not: the call waits its turn; cancelled there, both buckets are as before."""
    clock = GatedClock()
    policies = Policies(
        rate_limit=RateLimit(requests_per_min=60, tokens_per_min=1000), rate_limit_wait_s=120.0, clock=clock
    )
    client = _async_client(fake, "openai", policies, sink)
    assert isinstance(client, openai.AsyncOpenAI)
    store = policies.state_store()
    with llmpulse.context(tenant="acme"):
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=16)
    first = sink.calls[0]
    assert first.prompt_tokens_estimate is not None
    used = (first.input_tokens or 0) + (first.output_tokens or 0)
    assert used > 0

    def peek() -> tuple[float, float]:
        return _buckets(store, requests_per_min=60, tokens_per_min=1000)

    before = peek()
    assert before == (59.0, 1000.0 - used)
    # A full bucket's worth of tokens: it fits the burst, so it waits for the first call's to drain.
    with llmpulse.context(tenant="acme"):
        task = asyncio.create_task(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=1000 - first.prompt_tokens_estimate
            )
        )
    async with asyncio.timeout(WAIT_S):
        await clock.sleeping.wait()
    assert clock.slept == [pytest.approx(used * 60 / 1000)]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert peek() == before
    assert len(fake.requests) == 1
    waited = sink.calls[1]
    assert (waited.outcome, waited.attempts, waited.error_type) == ("cancelled", 0, "CancelledError")
    _one_event_each(sink, 2)
    await client.close()


# ---------------------------------------------------------------- sync: a deadline while queued


@pytest.fixture(name="thread_queued")
def _thread_queued(monkeypatch: pytest.MonkeyPatch) -> threading.Semaphore:
    """Released once each time a thread joins the limiter's queue (the limiter's event seam).

    The waiter's event is made under the limiter's lock as it is queued, so
    anything that takes the lock after this sees it in the queue.
    """
    joined = threading.Semaphore(0)

    def event() -> threading.Event:
        joined.release()
        return threading.Event()

    monkeypatch.setattr(concurrency_module, "_Event", event)
    return joined


def test_sync_calls_refused_while_queued_return_everything(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI, thread_queued: threading.Semaphore
) -> None:
    """Limit 1, queue 1: B's deadline passes in the queue, C finds it full; both hold nothing afterwards."""
    policies = Policies(
        max_retries=0,
        concurrency=ConcurrencyConfig(initial_limit=1, max_limit=1, queue_factor=1.0),
        clock=FakeClock(),
    )
    client = llmpulse.wrap(raw_openai, sinks=[sink], registry=CollectorRegistry(), policies=policies)

    def call(feature: str, **kwargs: Any) -> None:
        with llmpulse.context(feature=feature):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **kwargs)

    fake.enqueue(Fault.latency(1.5))  # A holds the only slot well past B's deadline
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(call, "a")
        assert fake.wait_for_requests(1, WAIT_S)
        b = pool.submit(call, "b", timeout=0.3)  # its pool timeout bounds its wait for a slot
        assert thread_queued.acquire(timeout=WAIT_S)
        with pytest.raises(llmpulse.OverloadedError):
            call("c")
        with pytest.raises(llmpulse.DeadlineExceededError):
            b.result(WAIT_S)
        a.result(WAIT_S)
    limiter = _limiter(policies, sink.calls[0])
    snap = limiter.snapshot()
    assert (snap["in_flight"], snap["queued"]) == (0, 0)
    assert (snap["rejected_queue_full"], snap["rejected_timeout"]) == (1, 1)

    call("d")  # the slot A gave back is there
    events = {e.feature: e for e in sink.calls}
    assert (events["a"].outcome, events["d"].outcome) == ("ok", "ok")
    assert (events["b"].outcome, events["b"].rejected_reason) == ("rejected", "deadline_exceeded")
    assert (events["c"].outcome, events["c"].rejected_reason) == ("rejected", "overloaded")
    breaker = _breaker(policies, sink.calls[0]).snapshot()
    assert (breaker["consecutive_failures"], breaker["rejected_count"]) == (0, 0)
    assert len(fake.requests) == 2
    _one_event_each(sink, 4)


# ---------------------------------------------------------------- Redis down: fail open


def _redis_records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "llmpulse" and text in r.getMessage()]


@pytest.fixture(name="redis_server")
def _redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def _back_on_redis(store: RedisStore) -> None:
    # retry_after_s=0: every decision tries Redis; the first one after a restart
    # may still meet the connection the old server closed.
    for _ in range(50):
        store.gcra("probe", rate_per_s=1.0, burst=1.0)
        if not store.degraded:
            return
    pytest.fail("RedisStore did not go back to Redis")


def test_redis_down_fails_open_through_the_sdk(
    fake: FakeProvider,
    sink: CapturingSink,
    raw_openai: openai.OpenAI,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Shared limit 4; Redis stops: 4 / 2 replicas locally, counted and logged once; Redis back: 4 again."""
    caplog.set_level(logging.INFO, logger="llmpulse")
    reasons: list[str] = []
    store = RedisStore(
        redis_server.url,
        prefix=f"chaos-{uuid.uuid4().hex[:8]}:",
        replicas=2,
        timeout_s=2.0,
        retry_after_s=0.0,
        on_fallback=reasons.append,
    )
    policies = Policies(
        rate_limit=RateLimit(requests_per_min=4), rate_limit_wait_s=0.0, store=store, clock=FakeClock()
    )
    client = llmpulse.wrap(raw_openai, sinks=[sink], registry=CollectorRegistry(), policies=policies)

    def burst(n: int) -> list[str]:
        outcomes = []
        for _ in range(n):
            try:
                with llmpulse.context(tenant="acme"):
                    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                outcomes.append("ok")
            except llmpulse.RateLimitedError:
                outcomes.append("limited")
        return outcomes

    try:
        assert burst(5) == ["ok"] * 4 + ["limited"]  # the shared limit
        assert (store.fallbacks, reasons) == (0, [])

        redis_server.stop()
        assert burst(4) == ["ok", "ok", "limited", "limited"]  # 4 / 2 replicas, decided here
        assert store.degraded
        assert reasons == ["unreachable"] * 4
        assert store.fallbacks == 4
        assert len(_redis_records(caplog, "failed (")) == 1  # one warning for the outage, not one per call

        redis_server.start()  # same port, empty: a fresh shared bucket
        _back_on_redis(store)
        fallbacks = store.fallbacks
        assert burst(5) == ["ok"] * 4 + ["limited"]  # Redis's 4, not what is left locally (0)
        assert store.fallbacks == fallbacks
    finally:
        store.close()
    assert len(_redis_records(caplog, "answers again")) == 1
    assert len(_redis_records(caplog, "failed (")) == 1
    assert len(fake.requests) == 10
    outcomes = [e.outcome for e in sink.calls]
    assert outcomes.count("ok") == 10
    assert outcomes.count("rejected") == 4
    assert {e.rejected_reason for e in sink.calls if e.outcome == "rejected"} == {"rate_limited"}
    _one_event_each(sink, 14)


async def test_redis_down_fails_open_through_the_async_sdk(
    fake: FakeProvider, sink: CapturingSink, redis_server: RedisServer
) -> None:
    """The async shell fails open the same way, and goes back to Redis when it restarts."""
    reasons: list[str] = []
    store = RedisStore(
        redis_server.url,
        prefix=f"chaos-{uuid.uuid4().hex[:8]}:",
        replicas=2,
        timeout_s=2.0,
        retry_after_s=0.0,
        on_fallback=reasons.append,
    )
    policies = Policies(
        rate_limit=RateLimit(requests_per_min=4), rate_limit_wait_s=0.0, store=store, clock=FakeClock()
    )
    client = _async_client(fake, "openai", policies, sink)

    async def burst(n: int) -> list[str]:
        outcomes = []
        for _ in range(n):
            try:
                with llmpulse.context(tenant="acme"):
                    await _create(client)
                outcomes.append("ok")
            except llmpulse.RateLimitedError:
                outcomes.append("limited")
        return outcomes

    try:
        assert await burst(5) == ["ok"] * 4 + ["limited"]
        assert reasons == []
        await asyncio.to_thread(redis_server.stop)
        assert await burst(3) == ["ok", "ok", "limited"]  # 4 / 2 replicas, decided here
        assert reasons == ["unreachable"] * 3
        await asyncio.to_thread(redis_server.start)
        for _ in range(50):  # see _back_on_redis
            await store.agcra("probe", rate_per_s=1.0, burst=1.0)
            if not store.degraded:
                break
        assert not store.degraded
        fallbacks = store.fallbacks
        assert await burst(5) == ["ok"] * 4 + ["limited"]  # Redis's 4 again
        assert store.fallbacks == fallbacks
    finally:
        await store.aclose()
        store.close()
    assert len(fake.requests) == 10
    _one_event_each(sink, 13)
    await client.close()
