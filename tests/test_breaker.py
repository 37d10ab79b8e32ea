"""The circuit breaker as a pure decision object: a fake clock, no sleeps, no network."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from llmpulse import Policies
from llmpulse.policies._breaker import BreakerConfig, BreakerState, CircuitBreaker, Outcome, Permit
from llmpulse.testing import FakeClock

ALLOWED = {("closed", "open"), ("open", "half_open"), ("half_open", "open"), ("half_open", "closed")}


class Recorder:
    """An on_transition callback that keeps what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[BreakerState, BreakerState]] = []

    def __call__(self, old: BreakerState, new: BreakerState) -> None:
        self.calls.append((old, new))


def make(clock: FakeClock, recorder: Recorder | None = None, **config: Any) -> CircuitBreaker:
    return CircuitBreaker(BreakerConfig(**config), clock=clock, on_transition=recorder)


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """The state, read through a call so that mypy does not narrow the property between reads."""
    return breaker.state


def call(breaker: CircuitBreaker, outcome: Outcome, duration_s: float | None = None) -> None:
    """One admitted call, start to end."""
    permit = breaker.acquire()
    assert permit is not None
    breaker.release(permit, outcome, duration_s)


def tripped(clock: FakeClock, recorder: Recorder | None = None, **config: Any) -> CircuitBreaker:
    """A breaker (threshold 1, open 10 s) that just opened at clock.now."""
    config = {"failure_threshold": 1, "open_s": 10.0, **config}
    breaker = make(clock, recorder, **config)
    call(breaker, "failure")
    assert state_of(breaker) == "open"
    return breaker


def half_open(clock: FakeClock, recorder: Recorder | None = None, **config: Any) -> CircuitBreaker:
    """A breaker that is half-open with no probe admitted yet."""
    breaker = tripped(clock, recorder, **config)
    clock.advance(breaker.config.open_s)
    assert state_of(breaker) == "half_open"
    return breaker


# --- the transition table --------------------------------------------------------

# (clock advance, action, acquire result or "-", state after). Actions: "acquire";
# "success" / "failure" / "ignored" release the oldest permit still held, or the
# one at index k of the held permits with "failure@k".
Step = tuple[float, str, str, BreakerState]

TABLES: dict[str, list[Step]] = {
    "trip_and_recover": [
        (0, "acquire", "call", "closed"),
        (0, "acquire", "call", "closed"),
        (0, "acquire", "call", "closed"),
        (0, "failure", "-", "closed"),
        (0, "failure", "-", "closed"),
        (0, "failure", "-", "open"),
        (0, "acquire", "refused", "open"),
        (9.5, "acquire", "refused", "open"),
        (0.5, "acquire", "probe", "half_open"),
        (0, "acquire", "probe", "half_open"),
        (0, "acquire", "refused", "half_open"),
        (0, "success", "-", "half_open"),
        (0, "acquire", "refused", "half_open"),  # one success is not enough to admit more
        (0, "success", "-", "closed"),
        (0, "acquire", "call", "closed"),
    ],
    "probe_failure_reopens": [
        (0, "acquire", "call", "closed"),
        (0, "acquire", "call", "closed"),
        (0, "acquire", "call", "closed"),
        (0, "failure", "-", "closed"),
        (0, "failure", "-", "closed"),
        (0, "failure", "-", "open"),
        (10, "acquire", "probe", "half_open"),
        (0, "acquire", "probe", "half_open"),
        (0, "success", "-", "half_open"),
        (0, "failure", "-", "open"),
        (0, "acquire", "refused", "open"),
        (9.5, "acquire", "refused", "open"),  # the re-open waits open_s again
        (0.5, "acquire", "probe", "half_open"),
    ],
    "ignored_never_decides": [
        (0, "acquire", "call", "closed"),
        (0, "acquire", "call", "closed"),
        (0, "acquire", "call", "closed"),
        (0, "acquire", "call", "closed"),
        (0, "failure", "-", "closed"),
        (0, "failure", "-", "closed"),
        (0, "ignored", "-", "closed"),  # neither resets nor adds
        (0, "failure", "-", "open"),
        (10, "acquire", "probe", "half_open"),
        (0, "acquire", "probe", "half_open"),
        (0, "acquire", "refused", "half_open"),
        (0, "ignored", "-", "half_open"),  # frees its slot ...
        (0, "acquire", "probe", "half_open"),  # ... for another probe
        (0, "success", "-", "half_open"),
        (0, "success", "-", "closed"),
    ],
    "stale_permits_change_nothing": [
        (0, "acquire", "call", "closed"),
        (0, "acquire", "call", "closed"),
        (0, "acquire", "call", "closed"),
        (0, "acquire", "call", "closed"),
        (0, "acquire", "call", "closed"),
        (0, "failure", "-", "closed"),
        (0, "failure", "-", "closed"),
        (0, "failure", "-", "open"),
        (0, "success", "-", "open"),  # admitted while closed: changes nothing now
        (10, "acquire", "probe", "half_open"),
        (0, "failure@0", "-", "half_open"),  # the last call from the closed period
        (0, "acquire", "probe", "half_open"),
        (0, "success", "-", "half_open"),
        (0, "success", "-", "closed"),
    ],
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_transition_table(name: str) -> None:
    """Every step of each table gives the expected acquire result and state."""
    clock = FakeClock()
    breaker = make(clock, failure_threshold=3, open_s=10.0, half_open_probes=2)
    held: list[Permit] = []
    for i, (advance, action, result, state) in enumerate(TABLES[name]):
        clock.advance(advance)
        where = f"{name} step {i}: {action}"
        if action == "acquire":
            permit = breaker.acquire()
            got = "refused" if permit is None else "probe" if permit.probe else "call"
            assert got == result, where
            if permit is not None:
                held.append(permit)
        else:
            outcome, _, index = action.partition("@")
            breaker.release(held.pop(int(index or 0)), outcome)  # type: ignore[arg-type]
        assert state_of(breaker) == state, where


# --- closed ----------------------------------------------------------------------


def test_nine_failures_stay_closed_tenth_opens() -> None:
    """With the default threshold of 10, the 10th consecutive failure opens it."""
    breaker = make(FakeClock())
    for _ in range(9):
        call(breaker, "failure")
    assert state_of(breaker) == "closed"
    assert breaker.snapshot()["consecutive_failures"] == 9
    call(breaker, "failure")
    assert state_of(breaker) == "open"
    assert breaker.acquire() is None


def test_a_success_resets_the_consecutive_count() -> None:
    """9 failures, a success, 9 failures: never 10 in a row, so still closed."""
    breaker = make(FakeClock())
    for _ in range(9):
        call(breaker, "failure")
    call(breaker, "success")
    assert breaker.snapshot()["consecutive_failures"] == 0
    for _ in range(9):
        call(breaker, "failure")
    assert state_of(breaker) == "closed"


def test_ignored_outcomes_never_open_it() -> None:
    """A thousand 4xx/cancellations open nothing and do not break a failure streak."""
    breaker = make(FakeClock(), failure_threshold=2)
    for _ in range(1000):
        call(breaker, "ignored")
    assert state_of(breaker) == "closed"
    call(breaker, "failure")
    call(breaker, "ignored")
    assert breaker.snapshot()["consecutive_failures"] == 1
    call(breaker, "failure")
    assert state_of(breaker) == "open"


def test_calls_in_flight_when_it_opens_do_not_count_later() -> None:
    """Failures of calls admitted before the breaker opened are not carried into the next period."""
    clock = FakeClock()
    breaker = make(clock, failure_threshold=3, open_s=10.0)
    old = [breaker.acquire() for _ in range(10)]
    for _ in range(3):
        call(breaker, "failure")
    for permit in old:
        assert permit is not None
        breaker.release(permit, "failure")
    snap = breaker.snapshot()
    assert snap["stale_releases"] == 10
    assert snap["opened_count"] == 1
    clock.advance(10)
    call(breaker, "success")  # the probe closes it
    assert state_of(breaker) == "closed"
    stale = [breaker.acquire() for _ in range(2)]
    # Re-open and recover again, then release permits from the first closed period.
    for _ in range(3):
        call(breaker, "failure")
    clock.advance(10)
    call(breaker, "success")
    for permit in stale:
        assert permit is not None
        breaker.release(permit, "failure")
    assert state_of(breaker) == "closed"
    assert breaker.snapshot()["consecutive_failures"] == 0


def test_unknown_outcome_raises_and_changes_nothing() -> None:
    """A misspelt outcome is a bug in the caller: ValueError, no count."""
    breaker = make(FakeClock(), failure_threshold=1)
    permit = breaker.acquire()
    assert permit is not None
    with pytest.raises(ValueError, match="outcome"):
        breaker.release(permit, "error")  # type: ignore[arg-type]
    assert state_of(breaker) == "closed"
    assert breaker.snapshot()["consecutive_failures"] == 0


# --- open ------------------------------------------------------------------------


@pytest.mark.parametrize("opened_at", [0.0, 1234.5678, 1e6 + 0.1])
def test_open_for_exactly_open_s(opened_at: float) -> None:
    """Just before open_s it refuses; at open_s it admits one probe."""
    clock = FakeClock(opened_at)
    breaker = tripped(clock, open_s=30.0)
    deadline = opened_at + 30.0
    clock.now = math.nextafter(deadline, -math.inf)
    assert breaker.acquire() is None
    assert state_of(breaker) == "open"
    assert 0 < breaker.retry_after_s() < 1e-6
    clock.now = deadline
    permit = breaker.acquire()
    assert permit is not None
    assert permit.probe
    assert state_of(breaker) == "half_open"


def test_retry_after_counts_down_to_zero() -> None:
    """retry_after_s is open_s at opening, then falls with the clock, and is 0 when not open."""
    clock = FakeClock(100.0)
    breaker = make(clock, failure_threshold=1, open_s=10.0)
    assert breaker.retry_after_s() == 0.0
    call(breaker, "failure")
    assert breaker.retry_after_s() == 10.0
    clock.advance(4.0)
    assert breaker.retry_after_s() == 6.0
    clock.advance(6.0)
    assert breaker.retry_after_s() == 0.0
    assert state_of(breaker) == "half_open"
    assert breaker.retry_after_s() == 0.0


def test_open_refusals_are_counted() -> None:
    """Each refused acquire is counted for telemetry."""
    breaker = tripped(FakeClock())
    for _ in range(7):
        assert breaker.acquire() is None
    assert breaker.snapshot()["rejected_count"] == 7


# --- half-open -------------------------------------------------------------------


@pytest.fixture(name="fast_switching")
def _fast_switching() -> Iterator[None]:
    # Switch threads as often as possible so that races get a chance to happen.
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@pytest.mark.usefixtures("fast_switching")
@pytest.mark.parametrize("probes", [1, 3])
def test_half_open_admits_exactly_n_of_200_threads(probes: int) -> None:
    """200 threads released together by a barrier get exactly N probes; one thread reports the move."""
    clock = FakeClock()
    recorder = Recorder()
    breaker = tripped(clock, recorder, half_open_probes=probes)
    clock.advance(10)  # open_s passed; nobody has looked yet
    barrier = threading.Barrier(200)
    results: list[Permit | None] = []

    def worker() -> None:
        barrier.wait(timeout=10)
        results.append(breaker.acquire())

    threads = [threading.Thread(target=worker) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(results) == 200
    granted = [p for p in results if p is not None]
    assert len(granted) == probes
    assert all(p.probe for p in granted)
    assert recorder.calls == [("closed", "open"), ("open", "half_open")]
    assert breaker.snapshot()["rejected_count"] == 200 - probes


@pytest.mark.parametrize("probes", [1, 3])
async def test_half_open_admits_exactly_n_of_200_tasks(probes: int) -> None:
    """200 asyncio tasks released together get exactly N probes."""
    clock = FakeClock()
    recorder = Recorder()
    breaker = tripped(clock, recorder, half_open_probes=probes)
    clock.advance(10)
    barrier = asyncio.Barrier(200)

    async def task() -> Permit | None:
        await barrier.wait()
        permit = breaker.acquire()
        await asyncio.sleep(0)  # hold the permit across a switch, as a real call would
        return permit

    results = await asyncio.gather(*(task() for _ in range(200)))
    granted = [p for p in results if p is not None]
    assert len(granted) == probes
    assert recorder.calls == [("closed", "open"), ("open", "half_open")]


@pytest.mark.parametrize("probes", [1, 3])
def test_half_open_admits_exactly_n_across_threads_and_tasks(probes: int) -> None:
    """4 threads, each running an event loop with 50 tasks, share N probes in all."""
    clock = FakeClock()
    breaker = tripped(clock, half_open_probes=probes)
    clock.advance(10)
    barrier = threading.Barrier(4)
    results: list[Permit | None] = []

    async def tasks() -> list[Permit | None]:
        gate = asyncio.Event()

        async def one() -> Permit | None:
            await gate.wait()
            return breaker.acquire()

        running = [asyncio.create_task(one()) for _ in range(50)]
        await asyncio.sleep(0)
        gate.set()
        return list(await asyncio.gather(*running))

    def worker() -> None:
        barrier.wait(timeout=10)
        results.extend(asyncio.run(tasks()))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(results) == 200
    assert sum(p is not None for p in results) == probes


class SpyLock:
    """A real lock that knows whether it is held, to check what runs under it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held = False
        self.entries = 0

    def __enter__(self) -> None:
        self.lock.acquire()
        self.held = True
        self.entries += 1

    def __exit__(self, *_: object) -> None:
        self.held = False
        self.lock.release()


def test_clock_is_read_under_the_lock_and_the_callback_outside_it() -> None:
    """Every decision reads the clock with the lock held; on_transition runs with it released.

    The 200-thread tests show the counts come out right, but CPython rarely
    switches threads inside a few bytecodes, so they would seldom catch a
    missing lock; this checks the locking itself, deterministically.
    """
    spy = SpyLock()
    fake = FakeClock()
    reads = 0

    def clock() -> float:
        nonlocal reads
        assert spy.held, "clock read outside the lock"
        reads += 1
        return fake.now

    def on_transition(old: BreakerState, new: BreakerState) -> None:
        assert not spy.held, "on_transition called with the lock held"

    breaker = CircuitBreaker(
        BreakerConfig(failure_threshold=2, open_s=5.0, window_s=10.0, min_calls=4, slow_call_s=1.0),
        clock=clock,
        on_transition=on_transition,
    )
    breaker._lock = spy  # type: ignore[assignment]  # the lock is the subject
    call(breaker, "success")
    call(breaker, "failure")
    call(breaker, "failure")
    breaker.retry_after_s()
    fake.advance(5.0)
    breaker.snapshot()
    call(breaker, "success")
    assert state_of(breaker) == "closed"
    assert reads >= 8
    assert spy.entries >= 10


@pytest.mark.usefixtures("fast_switching")
@pytest.mark.parametrize("probes", [1, 3])
def test_probes_in_flight_never_exceed_n_under_churn(probes: int) -> None:
    """Threads acquiring and releasing ('ignored') in a loop never hold more than N probes at once."""
    clock = FakeClock()
    breaker = half_open(clock, half_open_probes=probes)
    guard = threading.Lock()
    in_flight = peak = granted = 0

    def worker() -> None:
        nonlocal in_flight, peak, granted
        for _ in range(300):
            permit = breaker.acquire()
            if permit is None:
                continue
            with guard:
                in_flight += 1
                granted += 1
                peak = max(peak, in_flight)
            with guard:
                in_flight -= 1
            breaker.release(permit, "ignored")

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert 1 <= peak <= probes
    assert granted >= 1
    assert state_of(breaker) == "half_open"
    assert breaker.snapshot()["probes_in_flight"] == 0


def test_probe_successes_close_only_after_all_n() -> None:
    """With 3 probes, the breaker closes on the 3rd success and its counters are reset."""
    clock = FakeClock()
    breaker = half_open(clock, half_open_probes=3)
    permits = [breaker.acquire() for _ in range(3)]
    for i, permit in enumerate(permits):
        assert permit is not None
        assert state_of(breaker) == "half_open"
        assert breaker.snapshot()["probe_successes"] == i
        breaker.release(permit, "success")
    snap = breaker.snapshot()
    assert snap["state"] == "closed"
    assert snap["consecutive_failures"] == 0
    assert snap["probes_in_flight"] == 0
    assert snap["probe_successes"] == 0


def test_probe_failure_reopens_for_another_open_s() -> None:
    """A failed probe opens the breaker again for a full open_s, every time (constant wait)."""
    clock = FakeClock()
    breaker = half_open(clock, half_open_probes=2)
    for _ in range(3):
        first, second = breaker.acquire(), breaker.acquire()
        assert first is not None
        assert second is not None
        breaker.release(first, "failure")
        assert state_of(breaker) == "open"
        assert breaker.retry_after_s() == pytest.approx(10.0)
        breaker.release(second, "success")  # from the ended half-open period: ignored
        clock.advance(9.999)
        assert breaker.acquire() is None
        clock.advance(0.001)
        assert state_of(breaker) == "half_open"
        assert breaker.snapshot()["probe_successes"] == 0
    assert breaker.snapshot()["opened_count"] == 4  # the trip plus three re-opens


@pytest.mark.parametrize(("probe_timeout_s", "expected_wait"), [(None, 10.0), (2.5, 2.5)])
def test_stuck_probe_is_freed_after_probe_timeout(
    probe_timeout_s: float | None, expected_wait: float
) -> None:
    """A probe never released gives its slot back after probe_timeout_s (default: open_s)."""
    clock = FakeClock()
    breaker = half_open(clock, probe_timeout_s=probe_timeout_s)
    stuck = breaker.acquire()
    assert stuck is not None
    clock.advance(expected_wait - 0.5)
    assert breaker.acquire() is None
    clock.advance(0.5)
    fresh = breaker.acquire()
    assert fresh is not None
    assert fresh.probe
    snap = breaker.snapshot()
    assert snap["probes_expired"] == 1
    assert snap["probes_in_flight"] == 1
    assert state_of(breaker) == "half_open"
    breaker.release(fresh, "success")
    assert state_of(breaker) == "closed"


def test_late_release_of_an_expired_probe_changes_nothing() -> None:
    """The forgotten probe's success does not close it, nor its failure reopen it."""
    clock = FakeClock()
    breaker = half_open(clock, probe_timeout_s=1.0)
    stuck = breaker.acquire()
    assert stuck is not None
    clock.advance(1.0)
    fresh = breaker.acquire()
    assert fresh is not None
    breaker.release(stuck, "success")
    assert state_of(breaker) == "half_open"
    breaker.release(stuck, "failure")
    assert state_of(breaker) == "half_open"
    assert breaker.snapshot()["stale_releases"] == 2
    assert breaker.acquire() is None  # fresh still holds the only slot
    breaker.release(fresh, "failure")
    assert state_of(breaker) == "open"


def test_a_half_open_period_sends_at_most_n_probes() -> None:
    """A succeeded probe keeps its slot: N=3 admits 3 probes in all, however fast they succeed."""
    clock = FakeClock()
    breaker = half_open(clock, half_open_probes=3)
    for _ in range(2):
        call(breaker, "success")
    last = breaker.acquire()
    assert last is not None
    assert breaker.acquire() is None  # 2 succeeded + 1 in flight = 3
    breaker.release(last, "ignored")  # ... but an ignored one hands its slot back
    call(breaker, "success")
    assert state_of(breaker) == "closed"


def test_a_probe_released_twice_counts_once() -> None:
    """Releasing the same probe twice is the second time a no-op."""
    clock = FakeClock()
    breaker = half_open(clock, half_open_probes=2)
    probe = breaker.acquire()
    assert probe is not None
    breaker.release(probe, "success")
    breaker.release(probe, "success")
    assert state_of(breaker) == "half_open"
    assert breaker.snapshot()["probe_successes"] == 1


def test_equal_probes_are_told_apart() -> None:
    """Two probes admitted at the same instant are equal values but separate slots."""
    clock = FakeClock()
    breaker = half_open(clock, half_open_probes=2)
    a, b = breaker.acquire(), breaker.acquire()
    assert a is not None
    assert a == b
    breaker.release(a, "success")
    breaker.release(a, "success")  # a again, not b
    assert breaker.snapshot()["probes_in_flight"] == 1
    assert b is not None
    breaker.release(b, "success")
    assert state_of(breaker) == "closed"


# --- window mode -----------------------------------------------------------------


def window(clock: FakeClock, recorder: Recorder | None = None, **config: Any) -> CircuitBreaker:
    """A window-mode breaker whose consecutive rule will not fire first."""
    config = {"failure_threshold": 10_000, "window_s": 10.0, "min_calls": 20, "failure_rate": 0.5, **config}
    return make(clock, recorder, **config)


def test_window_never_opens_below_min_calls() -> None:
    """19 failures out of 19 calls: 100 %, but below min_calls; the 20th opens it."""
    breaker = window(FakeClock())
    for _ in range(19):
        call(breaker, "failure")
    assert state_of(breaker) == "closed"
    call(breaker, "failure")
    assert state_of(breaker) == "open"


def test_window_opens_when_the_rate_reaches_the_threshold() -> None:
    """11 failures of 20 calls opens at 0.5 only once the rate is >= 0.5, counted over the window."""
    breaker = window(FakeClock())
    for _ in range(11):
        call(breaker, "success")
    for _ in range(9):
        call(breaker, "failure")
    assert breaker.snapshot()["window_calls"] == 20
    assert state_of(breaker) == "closed"  # 9 / 20 = 0.45
    call(breaker, "failure")
    assert state_of(breaker) == "closed"  # 10 / 21 < 0.5
    call(breaker, "failure")
    assert state_of(breaker) == "open"  # 11 / 22 = 0.5


def test_window_rate_compares_as_a_fraction() -> None:
    """3 failures of 10 calls reach a 0.3 threshold (0.3 * 10 > 3 in floating point)."""
    breaker = window(FakeClock(), min_calls=10, failure_rate=0.3)
    for _ in range(7):
        call(breaker, "success")
    for _ in range(2):
        call(breaker, "failure")
    assert state_of(breaker) == "closed"
    call(breaker, "failure")
    assert state_of(breaker) == "open"


def test_window_slow_call_rate_opens() -> None:
    """Successes slower than slow_call_s open it at slow_call_rate; exactly slow_call_s is not slow."""
    clock = FakeClock()
    breaker = window(clock, min_calls=4, slow_call_s=2.0, slow_call_rate=0.5, failure_rate=1.0)
    call(breaker, "success", duration_s=2.0)  # not slower than 2 s
    call(breaker, "success", duration_s=0.1)
    call(breaker, "success", duration_s=2.5)
    assert breaker.snapshot()["window_slow_calls"] == 1
    permit = breaker.acquire()  # timed by the breaker's clock
    assert permit is not None
    clock.advance(3.0)
    breaker.release(permit, "success")
    assert state_of(breaker) == "open"  # 2 slow of 4 calls


def test_window_slow_failures_count_as_slow_too() -> None:
    """A slow failure counts towards both rates."""
    breaker = window(FakeClock(), min_calls=2, slow_call_s=1.0, slow_call_rate=1.0, failure_rate=1.0)
    call(breaker, "failure", duration_s=5.0)
    call(breaker, "success", duration_s=5.0)
    assert state_of(breaker) == "open"


def _old_failures_then_a_success(wait_s: float) -> CircuitBreaker:
    """3 failures at t=0, a success at t=5 (4 calls: below min_calls 5), another after wait_s more."""
    clock = FakeClock()
    breaker = window(clock, min_calls=5)
    for _ in range(3):
        call(breaker, "failure")
    clock.advance(5.0)
    call(breaker, "success")
    clock.advance(wait_s)
    call(breaker, "success")
    return breaker


def test_window_old_buckets_expire() -> None:
    """At t=10 the t=0 bucket has left the 10 s window: its failures no longer count."""
    breaker = _old_failures_then_a_success(5.0)
    snap = breaker.snapshot()
    assert snap["state"] == "closed"
    assert (snap["window_calls"], snap["window_failures"]) == (2, 0)
    for outcome in ("success", "success", "failure"):
        call(breaker, outcome)
    assert state_of(breaker) == "closed"  # 1 / 5, not 4 / 8


def test_window_still_counts_calls_younger_than_window_s() -> None:
    """Control: at t=9.5 the t=0 failures still count: 3 of 5 calls opens it."""
    breaker = _old_failures_then_a_success(4.5)
    assert state_of(breaker) == "open"


def test_window_forgets_everything_after_a_long_gap() -> None:
    """A quiet spell longer than the window drops every bucket, and counting starts afresh."""
    clock = FakeClock()
    breaker = window(clock, min_calls=3)
    call(breaker, "failure")
    call(breaker, "success")
    clock.advance(1000.0)
    assert breaker.snapshot()["window_calls"] == 0
    call(breaker, "failure")
    call(breaker, "success")
    assert state_of(breaker) == "closed"
    clock.advance(3.0)  # partly overlapping: the previous two still count
    call(breaker, "failure")
    assert state_of(breaker) == "open"  # 2 / 3


def test_window_tolerates_a_clock_that_steps_back() -> None:
    """A clock reading older than the newest bucket is counted in that bucket."""
    clock = FakeClock(50.0)
    breaker = window(clock, min_calls=3)
    call(breaker, "success")
    clock.now = 40.0
    call(breaker, "success")
    assert breaker.snapshot()["window_calls"] == 2
    call(breaker, "failure")
    assert state_of(breaker) == "closed"  # 1 / 3


def test_window_ignores_ignored_and_still_applies_the_consecutive_rule() -> None:
    """'ignored' never enters the window, and failure_threshold still opens in window mode."""
    breaker = window(FakeClock(), failure_threshold=3, min_calls=100)
    for _ in range(50):
        call(breaker, "ignored")
    assert breaker.snapshot()["window_calls"] == 0
    for _ in range(3):
        call(breaker, "failure")
    assert state_of(breaker) == "open"


def test_window_is_reset_on_close_and_probes_are_not_counted() -> None:
    """After a recovery the window starts empty; half-open probes never enter it."""
    clock = FakeClock()
    breaker = window(clock, min_calls=2, open_s=5.0, half_open_probes=2)
    call(breaker, "failure")
    call(breaker, "failure")
    assert state_of(breaker) == "open"
    clock.advance(5.0)
    call(breaker, "success")
    assert breaker.snapshot()["window_calls"] == 2  # the probe was not added
    call(breaker, "success")
    snap = breaker.snapshot()
    assert snap["state"] == "closed"
    assert snap["window_calls"] == 0
    call(breaker, "failure")
    assert state_of(breaker) == "closed"  # 1 call: below min_calls


@pytest.mark.parametrize(
    ("window_s", "buckets"), [(0.5, 10), (10.0, 10), (60.0, 60), (3600.0, 600), (1e9, 600)]
)
def test_window_memory_is_bounded(window_s: float, buckets: int) -> None:
    """1 s buckets from 10 s to 10 min, never fewer than 10 nor more than 600."""
    clock = FakeClock()
    breaker = window(clock, window_s=window_s, min_calls=1_000_000)
    for i in range(2000):
        clock.advance(window_s / 700 * (i % 3))
        call(breaker, "failure" if i % 2 else "success")
    ring = breaker._window  # private, but the bound is a property of the ring
    assert ring is not None
    assert len(ring._calls) == buckets
    snap = breaker.snapshot()
    assert 0 < int(snap["window_calls"]) <= 2000


def test_window_totals_match_a_brute_force_count() -> None:
    """Over a random walk, the ring's totals equal a recount of the calls inside the window."""
    rng = random.Random(7)
    clock = FakeClock()
    breaker = window(clock, min_calls=10**9, slow_call_s=1.0)
    ring = breaker._window
    assert ring is not None
    bucket_s = 1.0  # window_s = 10 -> 10 buckets of 1 s
    history: list[tuple[float, bool, bool]] = []
    for _ in range(3000):
        clock.advance(rng.choice([0.0, 0.0, 0.3, 1.0, 2.7, 12.0]))
        failed, duration = rng.random() < 0.4, rng.choice([0.5, 2.0])
        call(breaker, "failure" if failed else "success", duration_s=duration)
        history.append((clock.now, failed, duration > 1.0))
        epoch = math.floor(clock.now / bucket_s)
        inside = [h for h in history if math.floor(h[0] / bucket_s) > epoch - 10]
        snap = breaker.snapshot()
        assert snap["window_calls"] == len(inside)
        assert snap["window_failures"] == sum(h[1] for h in inside)
        assert snap["window_slow_calls"] == sum(h[2] for h in inside)
        history = inside


# --- on_transition ---------------------------------------------------------------


def test_on_transition_once_per_transition_in_order() -> None:
    """A full cycle reports each transition once, as (old, new)."""
    clock = FakeClock()
    recorder = Recorder()
    breaker = make(clock, recorder, failure_threshold=2, open_s=10.0)
    call(breaker, "failure")
    call(breaker, "failure")
    for _ in range(5):
        breaker.acquire()
        assert state_of(breaker) == "open"
    clock.advance(10)
    for _ in range(5):
        assert state_of(breaker) == "half_open"  # the lazy move is reported once
    call(breaker, "failure")
    clock.advance(10)
    call(breaker, "success")
    assert recorder.calls == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


LOOKS: dict[str, Callable[[CircuitBreaker], object]] = {
    "acquire": lambda b: b.acquire(),
    "state": lambda b: b.state,
    "snapshot": lambda b: b.snapshot(),
}


@pytest.mark.parametrize("look", sorted(LOOKS))
def test_the_lazy_move_to_half_open_is_reported_by_whoever_sees_it(look: str) -> None:
    """acquire, state and snapshot each make (and report) the move once open_s has passed."""
    clock = FakeClock()
    recorder = Recorder()
    breaker = tripped(clock, recorder)
    clock.advance(10)
    LOOKS[look](breaker)
    assert recorder.calls == [("closed", "open"), ("open", "half_open")]


def test_retry_after_does_not_transition() -> None:
    """retry_after_s only reads: it reports 0.0 but leaves the move to the next look."""
    clock = FakeClock()
    recorder = Recorder()
    breaker = tripped(clock, recorder)
    clock.advance(10)
    assert breaker.retry_after_s() == 0.0
    assert recorder.calls == [("closed", "open")]


def test_a_raising_callback_breaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """Exceptions from on_transition are swallowed and counted; the breaker works on."""
    clock = FakeClock()
    seen: list[tuple[str, str]] = []

    def boom(old: BreakerState, new: BreakerState) -> None:
        seen.append((old, new))
        raise RuntimeError("telemetry down")

    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, open_s=10.0), clock=clock, on_transition=boom)
    with caplog.at_level(logging.WARNING, logger="llmpulse"):
        for _ in range(2):
            call(breaker, "failure")
            clock.advance(10)
            call(breaker, "success")
            assert state_of(breaker) == "closed"
    assert seen == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")] * 2
    assert breaker.snapshot()["callback_errors"] == 6
    # Logged, with the traceback, but only the first few times: a broken sink must not flood the log.
    assert len(caplog.records) == 3
    assert "on_transition" in caplog.records[0].getMessage()
    assert "telemetry down" in caplog.text


def test_callback_runs_outside_the_lock() -> None:
    """A callback that reads the breaker does not deadlock (the lock is not reentrant)."""
    clock = FakeClock()
    snaps: list[dict[str, float | int | str]] = []
    breaker: CircuitBreaker

    def read_back(old: BreakerState, new: BreakerState) -> None:
        snaps.append(breaker.snapshot())

    breaker = CircuitBreaker(
        BreakerConfig(failure_threshold=1, open_s=10.0), clock=clock, on_transition=read_back
    )

    def cycle() -> None:
        call(breaker, "failure")
        clock.advance(10)
        call(breaker, "success")

    t = threading.Thread(target=cycle, daemon=True)
    t.start()
    t.join(timeout=5)
    assert not t.is_alive(), "deadlock: on_transition called with the lock held"
    assert [s["state"] for s in snaps] == ["open", "half_open", "closed"]


# --- config validation -----------------------------------------------------------

BAD_CONFIGS: list[tuple[dict[str, Any], str, str]] = [
    ({"failure_threshold": 0}, "failure_threshold", ">= 1"),
    ({"failure_threshold": -3}, "failure_threshold", ">= 1"),
    ({"failure_threshold": 2.5}, "failure_threshold", "int"),
    ({"failure_threshold": True}, "failure_threshold", "int"),
    ({"open_s": 0}, "open_s", "> 0"),
    ({"open_s": -1.0}, "open_s", "> 0"),
    ({"open_s": math.inf}, "open_s", "finite"),
    ({"open_s": math.nan}, "open_s", "finite"),
    ({"open_s": "60"}, "open_s", "seconds"),
    ({"half_open_probes": 0}, "half_open_probes", ">= 1"),
    ({"half_open_probes": 1.0}, "half_open_probes", "int"),
    ({"probe_timeout_s": 0.0}, "probe_timeout_s", "or None"),
    ({"probe_timeout_s": math.nan}, "probe_timeout_s", "or None"),
    ({"window_s": 0}, "window_s", "or None"),
    ({"window_s": math.inf}, "window_s", "or None"),
    ({"min_calls": 0}, "min_calls", ">= 1"),
    ({"failure_rate": 0.0}, "failure_rate", "(0, 1]"),
    ({"failure_rate": 1.01}, "failure_rate", "(0, 1]"),
    ({"failure_rate": math.nan}, "failure_rate", "(0, 1]"),
    ({"window_s": 10, "slow_call_s": -1}, "slow_call_s", "> 0"),
    ({"slow_call_s": 5.0}, "slow_call_s", "needs window_s"),
    ({"window_s": 10, "slow_call_s": 5, "slow_call_rate": 0}, "slow_call_rate", "(0, 1]"),
    ({"slow_call_rate": 2}, "slow_call_rate", "(0, 1]"),
]


@pytest.mark.parametrize(("kwargs", "field", "accepted"), BAD_CONFIGS)
def test_config_validation_names_the_field(kwargs: dict[str, Any], field: str, accepted: str) -> None:
    """Each invalid value raises a ValueError naming the field and what it accepts."""
    with pytest.raises(ValueError, match=rf"BreakerConfig\.{field} ") as info:
        BreakerConfig(**kwargs)
    assert accepted in str(info.value)


def test_config_accepts_the_edges() -> None:
    """The edges of each range are accepted; int seconds are fine."""
    config = BreakerConfig(
        failure_threshold=1,
        open_s=1,
        half_open_probes=1,
        probe_timeout_s=1e-9,
        window_s=1e-3,
        min_calls=1,
        failure_rate=1.0,
        slow_call_s=1,
        slow_call_rate=1,
    )
    CircuitBreaker(config)
    CircuitBreaker()


# --- snapshot, clock, invariants -------------------------------------------------


def test_snapshot_values_through_a_cycle() -> None:
    """snapshot reports the state and its counters at each stage."""
    clock = FakeClock()
    breaker = make(clock, failure_threshold=2, open_s=10.0, half_open_probes=2)
    assert breaker.snapshot() == {
        "state": "closed",
        "retry_after_s": 0.0,
        "consecutive_failures": 0,
        "window_calls": 0,
        "window_failures": 0,
        "window_slow_calls": 0,
        "probes_in_flight": 0,
        "probe_successes": 0,
        "opened_count": 0,
        "rejected_count": 0,
        "probes_expired": 0,
        "stale_releases": 0,
        "callback_errors": 0,
        "generation": 0,
    }
    call(breaker, "failure")
    call(breaker, "failure")
    breaker.acquire()
    clock.advance(2.5)
    snap = breaker.snapshot()
    assert {k: snap[k] for k in ("state", "retry_after_s", "consecutive_failures", "rejected_count")} == {
        "state": "open",
        "retry_after_s": 7.5,
        "consecutive_failures": 2,
        "rejected_count": 1,
    }
    assert snap["opened_count"] == 1
    clock.advance(7.5)
    probe = breaker.acquire()
    assert probe is not None
    breaker.release(probe, "success")
    breaker.acquire()
    snap = breaker.snapshot()
    assert (snap["state"], snap["probes_in_flight"], snap["probe_successes"]) == ("half_open", 1, 1)
    assert snap["generation"] == 2


def test_only_the_injected_clock_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full cycle in window mode runs with every time function of the time module broken."""

    def broken(*_: object) -> float:
        raise AssertionError("the breaker read or waited on real time")

    clock = FakeClock()
    breaker = window(clock, min_calls=2, slow_call_s=1.0, open_s=5.0, probe_timeout_s=1.0)
    for name in ("monotonic", "monotonic_ns", "time", "time_ns", "perf_counter", "sleep"):
        monkeypatch.setattr(time, name, broken)
    call(breaker, "failure")
    call(breaker, "failure")
    assert state_of(breaker) == "open"
    assert breaker.retry_after_s() == 5.0
    clock.advance(5.0)
    stuck = breaker.acquire()
    assert stuck is not None
    clock.advance(1.0)
    call(breaker, "success")
    breaker.snapshot()
    assert state_of(breaker) == "closed"


@pytest.mark.parametrize("seed", range(6))
def test_random_walk_keeps_the_invariants(seed: int) -> None:
    """Random acquires, releases and clock steps: only allowed transitions, each reported once, no leak."""
    rng = random.Random(seed)
    probes = rng.choice([1, 2, 3])
    extra: dict[str, Any] = {"window_s": 5.0, "min_calls": 5, "slow_call_s": 1.0} if seed % 2 else {}
    clock = FakeClock()
    recorder = Recorder()
    breaker = make(
        clock,
        recorder,
        failure_threshold=3,
        open_s=2.0,
        half_open_probes=probes,
        probe_timeout_s=1.5,
        **extra,
    )
    outcomes: list[Outcome] = ["success", "success", "failure", "ignored"]
    held: list[Permit] = []
    for _ in range(4000):
        roll = rng.random()
        if roll < 0.45:
            permit = breaker.acquire()
            if permit is not None:
                held.append(permit)
        elif roll < 0.85 and held:
            permit = held.pop(rng.randrange(len(held)))
            breaker.release(permit, rng.choice(outcomes), rng.choice([None, 0.1, 3.0]))
        else:
            clock.advance(rng.choice([0.1, 0.5, 1.0, 2.0]))
        snap = breaker.snapshot()
        assert int(snap["probes_in_flight"]) <= probes
        if recorder.calls:
            assert recorder.calls[-1][1] == snap["state"]
        assert snap["generation"] == len(recorder.calls)
    assert set(recorder.calls) <= ALLOWED
    for (_, new), (old, _) in zip(recorder.calls, recorder.calls[1:], strict=False):
        assert new == old
    assert {"closed", "open", "half_open"} <= {s for t in recorder.calls for s in t}
    # No leak: with every permit handed back and open_s passed, it admits a call again.
    for permit in held:
        breaker.release(permit, "ignored")
    clock.advance(2.0)
    assert breaker.acquire() is not None


@pytest.mark.usefixtures("fast_switching")
def test_threads_through_whole_cycles_never_block() -> None:
    """Many threads through whole cycles finish promptly: nothing waits on anything but the lock."""
    clock = FakeClock()
    breaker = make(clock, failure_threshold=5, open_s=1e-3, half_open_probes=2)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(500):
                permit = breaker.acquire()
                if permit is not None:
                    breaker.release(permit, rng.choice(["success", "failure", "ignored"]))
                if rng.random() < 0.05:
                    clock.advance(1e-3)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not errors
    assert not any(t.is_alive() for t in threads)
    assert time.perf_counter() - started < 5


def test_models_past_the_breaker_cap_share_one_breaker_that_no_real_model_joins() -> None:
    """Past 4,096 models per Policies the rest share the "__other__" breaker; a model "other" has its own."""
    policies = Policies()
    endpoint = ("openai", "api.example.com", "key-00000000")

    def ignore(*args: object) -> None:
        return None

    real_other = policies.circuit(endpoint, "other", ignore)
    for i in range(4095):
        policies.circuit(endpoint, f"m{i}", ignore)
    late = [policies.circuit(endpoint, f"late-{i}", ignore) for i in range(3)]
    assert late[0] is late[1] is late[2]
    assert late[0] is not real_other
    assert policies.circuit(endpoint, "other", ignore) is real_other
