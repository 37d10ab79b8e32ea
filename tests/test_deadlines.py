"""Deadlines learned from healthy calls: the estimator's maths, its bounds, and what it changes (or not)."""

from __future__ import annotations

import threading

import anthropic
import openai
import pytest
from prometheus_client import CollectorRegistry

import llmpulse
from conftest import ANTHROPIC_KEY, MESSAGES, OPENAI_KEY, http_errors
from llmpulse import BreakerConfig, ConfigError, Policies, Timeouts
from llmpulse._config import Settings
from llmpulse._deadlines import (
    MIN_SAMPLES,
    AttemptDeadlines,
    DeadlineEstimator,
    DeadlineKey,
    capped_read,
)
from llmpulse._wrap import default_policies
from llmpulse.policies import CircuitBreaker
from llmpulse.providers import AnthropicProvider, OpenAIProvider
from llmpulse.testing import CapturingSink, FakeClock, FakeProvider, Fault

STREAM: DeadlineKey = ("openai", "h", "k", "m", True, "")
ANSWER: DeadlineKey = ("openai", "h", "k", "m", False, "")

# -- the estimator ------------------------------------------------------------


def test_rfc_6298_first_and_second_sample() -> None:
    """SRTT = R, RTTVAR = R/2; then RTTVAR from the old SRTT, and SRTT; allowance SRTT + 4 RTTVAR."""
    est = DeadlineEstimator(min_samples=1)
    est.observe(STREAM, "headers", 1.0)
    assert est.state(STREAM, "headers") == (1, 1.0, 0.5)
    assert est.allowed(STREAM, "headers") == pytest.approx(3.0)  # RFC 6298 2.2: RTO = SRTT + 4 RTTVAR
    est.observe(STREAM, "headers", 2.0)
    # RTTVAR = 3/4 * 0.5 + 1/4 * |1 - 2| = 0.625; SRTT = 7/8 * 1 + 1/8 * 2 = 1.125
    n, srtt, rttvar = est.state(STREAM, "headers") or (0, 0.0, 0.0)
    assert (n, srtt, rttvar) == (2, pytest.approx(1.125), pytest.approx(0.625))
    assert est.allowed(STREAM, "headers") == pytest.approx(1.125 + 4 * 0.625)


def test_steady_samples_converge_on_the_mean() -> None:
    """A constant latency drives RTTVAR to nothing: the allowance approaches the latency itself."""
    est = DeadlineEstimator()
    for _ in range(200):
        est.observe(STREAM, "headers", 0.8)
    allowed = est.allowed(STREAM, "headers")
    assert allowed is not None
    assert 0.8 <= allowed < 0.8001


def test_one_slow_sample_widens_the_margin_at_once() -> None:
    """After a steady 1 s, one 3 s sample lifts the allowance past 3 s: a lasting slowdown is followed."""
    est = DeadlineEstimator()
    for _ in range(100):
        est.observe(STREAM, "headers", 1.0)
    est.observe(STREAM, "headers", 3.0)
    allowed = est.allowed(STREAM, "headers")
    assert allowed is not None
    assert allowed == pytest.approx(1.25 + 4 * 0.5, abs=1e-3)  # RTTVAR ~ 1/4 * 2; SRTT 1 + 2/8


def test_nothing_is_claimed_before_min_samples() -> None:
    est = DeadlineEstimator()
    for _ in range(MIN_SAMPLES - 1):
        est.observe(STREAM, "headers", 1.0)
    assert est.allowed(STREAM, "headers") is None
    est.observe(STREAM, "headers", 1.0)
    assert est.allowed(STREAM, "headers") is not None
    assert est.allowed(STREAM, "gap") is None  # phases are learned apart


def test_keys_are_bounded_least_recently_taught_first() -> None:
    est = DeadlineEstimator(max_keys=3, min_samples=1)
    keys = [("openai", "h", "k", f"m{i}", True, "") for i in range(4)]
    for key in keys[:3]:
        est.observe(key, "headers", 1.0)
    est.observe(keys[0], "headers", 1.0)  # taught again: now the most recent
    est.observe(keys[3], "headers", 1.0)  # a fourth key: the least recently taught (m1) goes
    assert len(est) == 3
    assert est.taught_keys() == [keys[2], keys[0], keys[3]]
    assert est.allowed(keys[1], "headers") is None


def test_a_clock_gone_back_teaches_nothing() -> None:
    est = DeadlineEstimator(min_samples=1)
    est.observe(STREAM, "headers", -0.5)
    est.observe(STREAM, "headers", float("nan"))
    assert est.state(STREAM, "headers") is None


def test_threads_share_one_estimator() -> None:
    """Every sample of every thread is counted once (the lock guards read-modify-write)."""
    est = DeadlineEstimator()
    barrier = threading.Barrier(8)

    def teach() -> None:
        barrier.wait()
        for _ in range(2000):
            est.observe(STREAM, "headers", 0.5)

    threads = [threading.Thread(target=teach) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = est.state(STREAM, "headers")
    assert state is not None
    assert state[0] == 16_000


# -- one call's view, on a fake clock ----------------------------------------------


def _after_min_samples(r: float) -> float:
    # MIN_SAMPLES equal samples: SRTT = r, and RTTVAR is the first sample's r/2, shrunk by 3/4 per later one.
    return r + 4 * (r / 2) * 0.75 ** (MIN_SAMPLES - 1)


def _taught(key: DeadlineKey, phase: str, seconds: float) -> DeadlineEstimator:
    est = DeadlineEstimator()
    for _ in range(MIN_SAMPLES):
        est.observe(key, phase, seconds)  # type: ignore[arg-type]
    return est


def test_a_stream_attempt_is_judged_on_its_headers_then_its_gaps() -> None:
    est = _taught(STREAM, "headers", 1.0)
    for _ in range(MIN_SAMPLES):
        est.observe(STREAM, "gap", 0.2)
    clock = FakeClock()
    dl = AttemptDeadlines(est, learned=False, floor_s=5.0)
    assert dl.begin(STREAM, clock.monotonic(), tokens=500) is None  # evidence only: no limit
    assert (dl.phase, dl.allowed_s) == ("headers", pytest.approx(_after_min_samples(1.0)))
    clock.advance(1.5)
    dl.headers(clock.monotonic())
    assert dl.exceeded
    assert dl.body_started() is None
    assert (dl.phase, dl.allowed_s) == ("gap", pytest.approx(_after_min_samples(0.2)))
    dl.body_gap(0.1)
    assert not dl.exceeded
    dl.teach(None)
    rttvar = 0.5 * 0.75 ** (MIN_SAMPLES - 1)
    assert est.state(STREAM, "headers") == (
        MIN_SAMPLES + 1,
        pytest.approx(1.0 + 0.5 / 8),
        pytest.approx(0.75 * rttvar + 0.25 * 0.5),
    )
    state = est.state(STREAM, "gap")
    assert state is not None
    assert state[0] == MIN_SAMPLES + 1


def test_a_non_streamed_answer_is_learned_per_output_token() -> None:
    """20 ms a token, taught; a request for 400 tokens is allowed 400 x that; the answer teaches s / token."""
    est = _taught(ANSWER, "answer", 0.02)
    clock = FakeClock()
    dl = AttemptDeadlines(est, learned=False, floor_s=5.0)
    dl.begin(ANSWER, clock.monotonic(), tokens=400)
    assert (dl.phase, dl.allowed_s) == ("answer", pytest.approx(400 * _after_min_samples(0.02)))
    clock.advance(3.0)
    dl.headers(clock.monotonic())
    assert not dl.exceeded
    dl.teach(100)  # 3 s for 100 tokens: 30 ms a token
    state = est.state(ANSWER, "answer")
    assert state is not None
    assert state[1] == pytest.approx(0.02 * 7 / 8 + 0.03 / 8)
    dl.teach(None)  # no output tokens (an embedding): nothing to learn per token
    dl.teach(0)
    assert (est.state(ANSWER, "answer") or (0,))[0] == MIN_SAMPLES + 1


def test_learned_mode_limits_are_floored() -> None:
    est = _taught(STREAM, "headers", 0.1)
    dl = AttemptDeadlines(est, learned=True, floor_s=5.0)
    assert dl.begin(STREAM, 0.0, tokens=500) == 5.0  # 0.1 s learned; never below the floor
    assert dl.allowed_s == pytest.approx(_after_min_samples(0.1))  # the evidence is the estimator's own
    slow = AttemptDeadlines(_taught(STREAM, "headers", 9.0), learned=True, floor_s=5.0)
    assert slow.begin(STREAM, 0.0, tokens=500) == pytest.approx(_after_min_samples(9.0))
    untaught = AttemptDeadlines(DeadlineEstimator(), learned=True, floor_s=5.0)
    assert untaught.begin(STREAM, 0.0, tokens=1) is None


def test_the_users_shorter_read_timeout_stays() -> None:
    sdk = {"connect": 5.0, "read": 3.0, "write": 5.0, "pool": 5.0}
    assert capped_read(sdk, 10.0)["read"] == 3.0
    assert capped_read(sdk, 2.0) == {**sdk, "read": 2.0}
    assert sdk["read"] == 3.0  # the SDK's own dict is never changed
    assert capped_read(None, 2.0)["read"] == 2.0  # no timeout of theirs: ours


def test_the_preset_and_its_floor() -> None:
    policies = default_policies(Settings(deadlines="learned"))
    assert policies.timeouts.learned
    assert policies.timeouts.learned_floor_s == 5.0
    assert not default_policies(Settings()).timeouts.learned
    with pytest.raises(ValueError, match="learned_floor_s"):
        Timeouts(learned=True, learned_floor_s=0.0)


# -- reasoning makes its own key -------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reasoning"),
    [
        (b'{"model": "o3", "messages": [], "reasoning_effort": "high"}', "high"),
        (b'{"model": "o3", "input": "x", "reasoning": {"effort": "low"}}', "low"),
        (b'{"model": "gpt-4o", "messages": []}', ""),
    ],
)
def test_openai_reasoning_effort_is_read(body: bytes, reasoning: str) -> None:
    info = OpenAIProvider().describe("POST", "/v1/chat/completions", body, inject_usage=False)
    assert info.reasoning == reasoning


def test_anthropic_thinking_is_read() -> None:
    body = b'{"model": "claude", "max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 1024}}'
    assert (
        AnthropicProvider().describe("POST", "/v1/messages", body, inject_usage=False).reasoning == "thinking"
    )
    off = b'{"model": "claude", "max_tokens": 2000, "thinking": {"type": "disabled"}}'
    assert AnthropicProvider().describe("POST", "/v1/messages", off, inject_usage=False).reasoning == ""


# -- the breaker's slow-call rule ---------------------------------------------------


def test_breaker_counts_calls_past_their_learned_deadline_as_slow() -> None:
    clock = FakeClock()
    config = BreakerConfig(window_s=60.0, min_calls=3, slow_call_rate=1.0, slow_call_learned=True)
    breaker = CircuitBreaker(config, clock=clock)
    for _ in range(2):
        breaker.release(breaker.acquire() or pytest.fail("refused"), "success", 2.0, slow_s=1.0)
    breaker.release(
        breaker.acquire() or pytest.fail("refused"), "success", 2.0, slow_s=None
    )  # no deadline yet
    assert breaker.snapshot()["window_slow_calls"] == 2
    assert breaker.state == "closed"
    breaker.release(breaker.acquire() or pytest.fail("refused"), "success", 2.0, slow_s=1.0)
    breaker.release(breaker.acquire() or pytest.fail("refused"), "success", 2.0, slow_s=1.0)
    assert breaker.snapshot()["window_slow_calls"] == 4
    assert breaker.state == "closed"  # 4 of 5: the rate is 1.0


def test_breaker_opens_when_every_call_is_past_its_learned_deadline() -> None:
    config = BreakerConfig(window_s=60.0, min_calls=3, slow_call_rate=1.0, slow_call_learned=True)
    breaker = CircuitBreaker(config, clock=FakeClock())
    for _ in range(3):
        breaker.release(breaker.acquire() or pytest.fail("refused"), "success", 2.0, slow_s=1.0)
    assert breaker.state == "open"
    # A fixed threshold wins over the learned one.
    fixed = CircuitBreaker(
        BreakerConfig(window_s=60.0, min_calls=3, slow_call_s=5.0, slow_call_learned=True), clock=FakeClock()
    )
    for _ in range(3):
        fixed.release(fixed.acquire() or pytest.fail("refused"), "success", 2.0, slow_s=1.0)
    assert fixed.state == "closed"


def test_slow_call_learned_needs_a_window() -> None:
    with pytest.raises(ConfigError, match="slow_call_learned needs window_s"):
        BreakerConfig(slow_call_learned=True)


# -- through the SDKs, against the fake provider --------------------------------------


def _wrap(raw: openai.OpenAI, policies: Policies, sink: CapturingSink) -> openai.OpenAI:
    return llmpulse.wrap(raw, sinks=[sink], registry=CollectorRegistry(), policies=policies)


def _stream(client: openai.OpenAI) -> str:
    parts = []
    for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
    return "".join(parts)


def test_only_the_answering_attempt_of_an_ok_call_teaches(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    policies = Policies(max_retries=1, breaker=None, clock=FakeClock())
    client = _wrap(raw_openai, policies, sink)
    fake.enqueue(Fault.status(500), Fault.status(500))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(policies.deadlines()) == 0  # a failed call teaches nothing
    fake.enqueue(Fault.status(503))
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # a 503, then the answer
    [key] = policies.deadlines().taught_keys()
    assert key[3:] == ("gpt-4o-mini", False, "")
    assert (policies.deadlines().state(key, "answer") or (0,))[0] == 1
    assert sink.calls[-1].attempts == 2


def test_a_failed_stream_teaches_nothing(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    policies = Policies(breaker=None, clock=FakeClock())
    client = _wrap(raw_openai, policies, sink)
    fake.enqueue(Fault.reset_mid_stream(after_events=2))
    with pytest.raises((openai.APIError, *http_errors())):
        _stream(client)
    assert len(policies.deadlines()) == 0
    _stream(client)
    [key] = policies.deadlines().taught_keys()
    assert policies.deadlines().state(key, "headers") is not None
    assert policies.deadlines().state(key, "gap") is not None


def test_reasoning_calls_are_learned_apart(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    policies = Policies(breaker=None, clock=FakeClock())
    client = _wrap(raw_openai, policies, sink)
    client.chat.completions.create(model="o3", messages=MESSAGES)
    client.chat.completions.create(model="o3", messages=MESSAGES, reasoning_effort="high")
    assert sorted(k[5] for k in policies.deadlines().taught_keys()) == ["", "high"]


def test_anthropic_thinking_is_learned_apart(fake: FakeProvider, sink: CapturingSink) -> None:
    raw = anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=fake.anthropic_base_url)
    policies = Policies(breaker=None, clock=FakeClock())
    client = llmpulse.wrap(raw, sinks=[sink], registry=CollectorRegistry(), policies=policies)
    client.messages.create(model="claude-sonnet-4-5", max_tokens=2000, messages=MESSAGES)
    client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=2000,
        messages=MESSAGES,
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    raw.close()
    assert sorted(k[5] for k in policies.deadlines().taught_keys()) == ["", "thinking"]


def test_events_carry_the_evidence(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """None before enough samples; then the last attempt's phase's allowance, and whether it passed it."""
    clock = FakeClock()
    policies = Policies(breaker=None, clock=clock)
    client = _wrap(raw_openai, policies, sink)
    for _ in range(MIN_SAMPLES):
        _stream(client)
    first = sink.calls[0]
    assert (first.deadline_phase, first.deadline_learned_s, first.deadline_exceeded) == ("gap", None, False)
    _stream(client)
    last = sink.calls[-1]
    assert last.deadline_phase == "gap"
    assert last.deadline_learned_s == 0.0  # the fake clock never moved: every gap took 0 s
    assert not last.deadline_exceeded
    assert last.to_dict()["deadline_learned_s"] == 0.0


def _teach_real(client: openai.OpenAI, *, streamed: bool) -> None:
    for _ in range(MIN_SAMPLES):
        if streamed:
            _stream(client)
        else:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50)


def _learned_policies(**kwargs: object) -> Policies:
    # The real clock: httpcore's timeouts are real. A 1 s floor keeps a busy machine's healthy calls uncut.
    return Policies(
        timeouts=Timeouts(learned=True, learned_floor_s=1.0),
        breaker=None,
        backoff_base_s=0.001,
        backoff_max_s=0.001,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "answer"])
def test_learned_mode_cuts_a_stalled_attempt_and_retries_it(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI, streamed: bool
) -> None:
    """Healthy calls answer at once; one stalled 5 s before its headers is cut at the 1 s floor, retried."""
    client = _wrap(raw_openai, _learned_policies(max_retries=2), sink)
    _teach_real(client, streamed=streamed)
    fake.enqueue(Fault.latency(5.0))
    if streamed:
        assert _stream(client)
    else:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50)
    event = sink.calls[-1]
    assert (event.outcome, event.attempts, event.retries) == ("ok", 2, 1)
    assert event.latency_s < 4.0  # cut after about 1 s, not the 5 s stall
    assert event.deadline_learned_s is not None


def test_learned_mode_cuts_a_stalled_stream_body(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """Headers in time, then 5 s between events: the read is cut at the learned gap (floored)."""
    client = _wrap(raw_openai, _learned_policies(), sink)
    _teach_real(client, streamed=True)
    fake.enqueue(Fault.slow_stream(5.0))
    with pytest.raises((openai.APITimeoutError, *http_errors())):
        _stream(client)
    event = sink.calls[-1]
    assert (event.outcome, event.attempts, event.deadline_phase) == ("error", 1, "gap")
    assert event.latency_s < 4.0


def test_learned_mode_never_lengthens_the_users_timeout(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """The client's own 0.5 s read timeout stays, though the learned deadline (floored) is 1 s."""
    client = _wrap(raw_openai.with_options(timeout=0.5, max_retries=0), _learned_policies(), sink)
    _teach_real(client, streamed=False)
    fake.enqueue(Fault.latency(0.8))
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50)


def test_learned_mode_keeps_a_shorter_stream_idle_limit(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """stream_idle_s=0.5 stays the limit between reads, though the learned gap (floored) allows 1 s."""
    policies = Policies(timeouts=Timeouts(learned=True, learned_floor_s=1.0, stream_idle_s=0.5), breaker=None)
    client = _wrap(raw_openai, policies, sink)
    _teach_real(client, streamed=True)
    fake.enqueue(Fault.slow_stream(0.8))
    with pytest.raises((openai.APITimeoutError, *http_errors())):
        _stream(client)
    assert sink.calls[-1].outcome == "error"


async def test_learned_mode_cuts_async_attempts_too(fake: FakeProvider, sink: CapturingSink) -> None:
    raw = openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url)
    client = llmpulse.wrap(raw, sinks=[sink], registry=CollectorRegistry(), policies=_learned_policies())
    for _ in range(MIN_SAMPLES):
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50)
    fake.enqueue(Fault.latency(5.0))
    await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50)
    await raw.close()
    event = sink.calls[-1]
    assert (event.outcome, event.attempts) == ("ok", 2)
    assert event.latency_s < 4.0


def test_by_default_a_slow_healthy_call_is_only_reported(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """Evidence only: a call stalled 2.5 s, past its learned deadline, still ends as the bare SDK's does."""
    policies = Policies(breaker=None)
    client = _wrap(raw_openai, policies, sink)
    _teach_real(client, streamed=False)
    fake.enqueue(Fault.latency(2.5))
    wrapped = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50)
    fake.enqueue(Fault.latency(2.5))
    bare = raw_openai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50)
    assert wrapped.choices[0].message.content == bare.choices[0].message.content
    assert wrapped.usage == bare.usage
    event = sink.calls[-1]
    assert (event.outcome, event.attempts) == ("ok", 1)
    assert event.deadline_learned_s is not None
    assert event.deadline_learned_s < 2.5
    assert event.deadline_exceeded


def test_by_default_a_slow_healthy_stream_is_only_reported(
    fake: FakeProvider, sink: CapturingSink, raw_openai: openai.OpenAI
) -> None:
    """Evidence only: a stream whose every gap is far past the learned one reads as the bare SDK's does."""
    client = _wrap(raw_openai, Policies(breaker=None), sink)
    _teach_real(client, streamed=True)
    fake.enqueue(Fault.slow_stream(0.05))
    wrapped = _stream(client)
    fake.enqueue(Fault.slow_stream(0.05))
    bare = _stream(raw_openai)
    assert wrapped == bare
    assert wrapped
    event = sink.calls[-1]
    assert (event.outcome, event.attempts, event.deadline_phase) == ("ok", 1, "gap")
    assert event.deadline_learned_s is not None
