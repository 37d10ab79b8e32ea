"""The adaptive concurrency limiter: AIMD on a fake clock, queue, priorities, pause, threads and tasks."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from llmpulse.exceptions import ConfigError
from llmpulse.policies import _concurrency
from llmpulse.policies._concurrency import (
    AdaptiveLimiter,
    ConcurrencyConfig,
    Priority,
    Refused,
    Signal,
    Slot,
)
from llmpulse.testing import FakeClock


class Recorder:
    """An on_change callback that keeps what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, old: int, new: int) -> None:
        self.calls.append((old, new))


def make(
    clock: Callable[[], float] | None = None, recorder: Recorder | None = None, **config: Any
) -> AdaptiveLimiter:
    return AdaptiveLimiter(ConcurrencyConfig(**config), clock=clock or FakeClock(0.0), on_change=recorder)


def take(limiter: AdaptiveLimiter, n: int, priority: Priority = "interactive") -> list[Slot]:
    """N slots that must be free right now."""
    slots = [limiter.try_acquire(priority) for _ in range(n)]
    assert all(s is not None for s in slots)
    return [s for s in slots if s is not None]


def snap(limiter: AdaptiveLimiter, key: str) -> float | int:
    return limiter.snapshot()[key]


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll (tests only) until the condition holds, failing after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


async def await_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll (tests only) from a task until the condition holds, failing after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


def grew(limiter: AdaptiveLimiter, key: str, before: float) -> Callable[[], bool]:
    """A condition: the snapshot's ``key`` went up by one from ``before``."""
    return lambda: snap(limiter, key) == before + 1


class Waiter:
    """One `acquire` on its own thread; started only once the previous one queued."""

    def __init__(
        self, limiter: AdaptiveLimiter, priority: Priority = "interactive", timeout_s: float | None = 5.0
    ):
        self.result: Slot | Refused | None = None
        self.done = threading.Event()
        self.priority = priority

        def run() -> None:
            try:
                self.result = limiter.acquire(priority, timeout_s)
            except Refused as exc:
                self.result = exc
            finally:
                self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)

    def slot(self) -> Slot:
        assert self.done.wait(5), "waiter still waiting"
        assert isinstance(self.result, Slot), self.result
        return self.result

    def refusal(self) -> Refused:
        assert self.done.wait(5), "waiter still waiting"
        assert isinstance(self.result, Refused), self.result
        return self.result


def queue_threads(
    limiter: AdaptiveLimiter, priorities: list[Priority], timeout_s: float | None = 5.0
) -> list[Waiter]:
    """Start one waiting thread per priority, in order: each is queued before the next starts.

    Progress is read per priority: an interactive arrival may displace a background waiter.
    """
    waiters = []
    for priority in priorities:
        key = f"queued_{priority}"
        before = snap(limiter, key)
        waiter = Waiter(limiter, priority, timeout_s)
        waiter.thread.start()
        wait_until(grew(limiter, key, before))
        waiters.append(waiter)
    return waiters


async def queue_tasks(
    limiter: AdaptiveLimiter, priorities: list[Priority], timeout_s: float | None = 5.0
) -> list[asyncio.Task[Slot]]:
    """Start one waiting task per priority, in order: each is queued before the next starts."""
    tasks = []
    for priority in priorities:
        key = f"queued_{priority}"
        before = snap(limiter, key)
        tasks.append(asyncio.create_task(limiter.aacquire(priority, timeout_s)))
        await await_until(grew(limiter, key, before))
    return tasks


def count_steps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record when any waiter looks at its limiter (one entry per look)."""
    steps: list[float] = []
    real_step = AdaptiveLimiter._step

    def counting_step(self: AdaptiveLimiter, waiter: Any, deadline: float | None) -> Any:
        steps.append(time.monotonic())
        return real_step(self, waiter, deadline)

    monkeypatch.setattr(AdaptiveLimiter, "_step", counting_step)
    return steps


@pytest.fixture(name="fast_switching")
def _fast_switching() -> Iterator[None]:
    # Switch threads as often as possible so that races get a chance to happen.
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


# --- AIMD ------------------------------------------------------------------------


def test_aimd_vector() -> None:
    """10 -> 11 on a success at full use; 429 -> 6; a 429 in the cooldown changes nothing; after it -> 3."""
    clock = FakeClock(0.0)
    recorder = Recorder()
    limiter = make(clock, recorder, initial_limit=10, min_limit=1, max_limit=100)
    slots = take(limiter, 10)
    limiter.release(slots.pop(), "success")
    assert limiter.limit == 11
    limiter.release(slots.pop(), "overload")
    assert limiter.limit == 6
    clock.advance(0.999)
    limiter.release(slots.pop(), "overload")
    assert limiter.limit == 6
    clock.advance(0.001)
    limiter.release(slots.pop(), "overload")
    assert limiter.limit == 3
    assert recorder.calls == [(10, 11), (11, 6), (6, 3)]
    s = limiter.snapshot()
    assert (s["overloads"], s["cuts"], s["grows"]) == (3, 2, 1)


def test_cut_floors_at_min_limit() -> None:
    """A cut never goes below min_limit, and one at the floor reports no change."""
    clock = FakeClock(0.0)
    recorder = Recorder()
    limiter = make(clock, recorder, initial_limit=4, min_limit=2, cut_cooldown_s=0.0)
    for _ in range(3):
        limiter.release(take(limiter, 1)[0], "overload")
    assert limiter.limit == 2
    assert recorder.calls == [(4, 2)]
    assert snap(limiter, "cuts") == 3


def test_cut_lowers_by_at_least_one() -> None:
    """With a factor close to 1 a cut still lowers the limit by one."""
    limiter = make(initial_limit=5, decrease_factor=0.99)
    limiter.release(take(limiter, 1)[0], "overload")
    assert limiter.limit == 4


@pytest.mark.parametrize(
    ("limit", "factor", "expected"), [(100, 0.6, 60), (15, 0.6, 9), (100, 0.3, 30), (7, 0.5, 3)]
)
def test_cut_rounds_down_without_float_noise(limit: int, factor: float, expected: int) -> None:
    """limit x factor is rounded down, and 0.3 x 100 = 30.000000000000004 still gives 30."""
    limiter = make(initial_limit=limit, decrease_factor=factor)
    limiter.release(take(limiter, 1)[0], "overload")
    assert limiter.limit == expected


def test_growth_stops_at_max_limit() -> None:
    """Successes at full use grow the limit up to max_limit and no further."""
    recorder = Recorder()
    limiter = make(initial_limit=3, max_limit=5, recorder=recorder)
    for _ in range(10):
        slots = take(limiter, limiter.limit)
        for slot in slots:
            limiter.release(slot, "success")
    assert limiter.limit == 5
    assert recorder.calls == [(3, 4), (4, 5)]


@pytest.mark.parametrize(("in_flight", "grows"), [(10, True), (9, True), (8, False), (1, False)])
def test_success_grows_only_when_the_limit_was_in_use(in_flight: int, grows: bool) -> None:
    """Counting the call released, at least limit - 1 calls in flight grow the limit; fewer do not."""
    limiter = make(initial_limit=10)
    slots = take(limiter, in_flight)
    limiter.release(slots[0], "success")
    assert limiter.limit == (11 if grows else 10)


def test_under_used_successes_never_grow() -> None:
    """A process that keeps 5 calls in flight under a limit of 10 keeps the limit at 10."""
    limiter = make(initial_limit=10)
    slots = take(limiter, 5)
    for _ in range(1000):
        limiter.release(slots.pop(0), "success")
        slots.extend(take(limiter, 1))
    assert limiter.limit == 10


def test_successes_of_calls_admitted_before_a_cut_do_not_grow() -> None:
    """Calls sent into the surge that then succeed do not undo the cut; calls admitted after it do grow."""
    clock = FakeClock(0.0)
    limiter = make(clock, initial_limit=10)
    old = take(limiter, 10)
    limiter.release(old.pop(), "overload")
    assert limiter.limit == 6
    for slot in old:  # 9 in flight, over the new limit of 6
        limiter.release(slot, "success")
    assert limiter.limit == 6
    fresh = take(limiter, 6)
    limiter.release(fresh.pop(), "success")
    assert limiter.limit == 7


def test_a_cut_at_the_floor_still_starts_a_new_generation() -> None:
    """Even when the limit cannot go lower, successes admitted before that overload do not grow it."""
    limiter = make(initial_limit=2, min_limit=2)
    a, b = take(limiter, 2)
    limiter.release(a, "overload")
    limiter.release(b, "success")
    assert limiter.limit == 2


def test_ignored_changes_nothing() -> None:
    """An ignored release frees the slot and neither grows nor cuts."""
    limiter = make(initial_limit=3)
    for slot in take(limiter, 3):
        limiter.release(slot, "ignored")
    s = limiter.snapshot()
    assert (s["limit"], s["in_flight"], s["overloads"], s["grows"]) == (3, 0, 0, 0)


def test_cooldown_zero_cuts_on_every_overload() -> None:
    """cut_cooldown_s=0: each overload cuts."""
    limiter = make(initial_limit=100, cut_cooldown_s=0.0)
    for slot in take(limiter, 3):
        limiter.release(slot, "overload")
    assert limiter.limit == 21  # 100 -> 60 -> 36 -> 21


def test_a_cut_keeps_calls_in_flight_and_blocks_new_ones() -> None:
    """After a cut below the calls in flight, new calls wait until they drained under the new limit."""
    limiter = make(initial_limit=10)
    slots = take(limiter, 10)
    limiter.release(slots.pop(), "overload")
    assert snap(limiter, "in_flight") == 9
    for _ in range(3):
        assert limiter.try_acquire() is None
        limiter.release(slots.pop(), "ignored")
    assert snap(limiter, "in_flight") == 6
    assert limiter.try_acquire() is None
    limiter.release(slots.pop(), "ignored")
    assert limiter.try_acquire() is not None


def test_growth_serves_the_extra_slot_to_a_waiter() -> None:
    """A success that grows the limit frees two slots, and two waiters get them."""
    limiter = make(initial_limit=2, max_limit=3)
    a, _ = take(limiter, 2)
    waiters = queue_threads(limiter, ["interactive", "interactive"])
    limiter.release(a, "success")
    assert limiter.limit == 3
    for waiter in waiters:
        waiter.slot()
    assert snap(limiter, "in_flight") == 3


def test_release_rejects_unknown_signals() -> None:
    """A signal that is none of the three raises and leaves the slot held."""
    limiter = make(initial_limit=2)
    slot = take(limiter, 1)[0]
    with pytest.raises(ValueError, match="signal"):
        limiter.release(slot, "failure")  # type: ignore[arg-type]
    assert snap(limiter, "in_flight") == 1


def test_a_slot_released_twice_counts_once() -> None:
    """A second release, or a slot this limiter never issued, changes nothing and is counted."""
    limiter = make(initial_limit=2)
    a, b = take(limiter, 2)
    limiter.release(a, "overload")
    limiter.release(a, "overload")
    limiter.release(Slot("interactive", 0.0), "success")
    s = limiter.snapshot()
    assert (s["in_flight"], s["overloads"], s["stale_releases"]) == (1, 1, 2)
    limiter.release(b)
    assert snap(limiter, "in_flight") == 0


def test_equal_slots_are_told_apart() -> None:
    """Two slots admitted at the same clock value are equal as values but released separately."""
    limiter = make(initial_limit=2)
    a, b = take(limiter, 2)
    assert a == b
    assert a is not b
    limiter.release(a)
    limiter.release(b)
    s = limiter.snapshot()
    assert (s["in_flight"], s["stale_releases"]) == (0, 0)


def test_unknown_priority_raises() -> None:
    """A priority that is neither of the two raises ValueError, in every acquire."""
    limiter = make(initial_limit=2)
    for call in (limiter.try_acquire, limiter.acquire):
        with pytest.raises(ValueError, match="priority"):
            call("batch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="priority"):
        asyncio.run(limiter.aacquire("batch"))  # type: ignore[arg-type]
    assert snap(limiter, "in_flight") == 0


def test_nan_timeout_raises() -> None:
    """timeout_s=nan is a mistake, not a wait."""
    limiter = make(initial_limit=1)
    take(limiter, 1)
    with pytest.raises(ValueError, match="timeout_s"):
        limiter.acquire(timeout_s=math.nan)
    assert snap(limiter, "queued") == 0


# --- the queue -------------------------------------------------------------------


def test_queue_cap_and_fifo_threads() -> None:
    """Limit 2, queue_factor 2: four threads queue, the fifth is refused at once; grants are FIFO."""
    limiter = make(initial_limit=2, queue_factor=2.0)
    held = take(limiter, 2)
    waiters = queue_threads(limiter, ["interactive"] * 4)
    assert snap(limiter, "queue_capacity") == 4
    start = time.monotonic()
    with pytest.raises(Refused) as info:
        limiter.acquire(timeout_s=5.0)
    assert time.monotonic() - start < 0.5
    assert info.value.reason == "queue_full"
    assert info.value.retry_after_s is None
    for i, waiter in enumerate(waiters):
        limiter.release(held.pop(0) if held else waiters[i - 2].slot(), "ignored")
        waiter.slot()
        assert all(not w.done.is_set() for w in waiters[i + 1 :])
    s = limiter.snapshot()
    assert (s["rejected_queue_full"], s["queued"], s["in_flight"]) == (1, 0, 2)


async def test_queue_cap_and_fifo_tasks() -> None:
    """The same with asyncio tasks: four queue, the fifth is refused, grants go in arrival order."""
    limiter = make(initial_limit=2, queue_factor=2.0)
    held = take(limiter, 2)
    tasks = await queue_tasks(limiter, ["interactive"] * 4)
    with pytest.raises(Refused, match="queue_full"):
        await limiter.aacquire(timeout_s=5.0)
    for i, task in enumerate(tasks):
        limiter.release(held.pop(0) if held else tasks[i - 2].result(), "ignored")
        await asyncio.wait_for(asyncio.shield(task), 5)
        assert all(not t.done() for t in tasks[i + 1 :])
    assert snap(limiter, "in_flight") == 2


def test_queue_factor_zero_never_queues() -> None:
    """queue_factor=0: a call that finds no free slot is refused at once."""
    limiter = make(initial_limit=1, queue_factor=0.0)
    take(limiter, 1)
    with pytest.raises(Refused, match="queue_full"):
        limiter.acquire(timeout_s=5.0)
    with pytest.raises(Refused, match="queue_full"):
        limiter.acquire(timeout_s=None)


def test_queue_capacity_follows_the_baseline_not_the_current_limit() -> None:
    """The queue is sized from initial_limit and does not shrink when the limit is cut."""
    limiter = make(initial_limit=10, queue_factor=1.5)
    limiter.release(take(limiter, 1)[0], "overload")
    assert limiter.limit == 6
    assert snap(limiter, "queue_capacity") == 15


def test_zero_timeout_takes_a_free_slot_and_never_waits() -> None:
    """timeout_s=0 (or less) gets a free slot, and is refused with "timeout" at once otherwise."""
    limiter = make(initial_limit=1)
    slot = limiter.acquire(timeout_s=0)
    for timeout_s in (0.0, -1.0):
        with pytest.raises(Refused, match="timeout"):
            limiter.acquire(timeout_s=timeout_s)
    s = limiter.snapshot()
    assert (s["queued"], s["rejected_timeout"]) == (0, 2)
    limiter.release(slot)


def test_a_new_arrival_does_not_pass_a_waiter() -> None:
    """try_acquire and acquire never take a slot ahead of a queued waiter of the same priority."""
    clock = FakeClock(0.0)
    limiter = make(clock, initial_limit=1)
    limiter.pause(1.0)
    (waiter,) = queue_threads(limiter, ["interactive"])
    clock.advance(1.0)  # the pause is over, nobody has looked yet
    assert limiter.try_acquire() is None  # the waiter is served first
    slot = waiter.slot()
    limiter.release(slot)


# --- priorities ------------------------------------------------------------------


def test_background_holds_at_most_its_share() -> None:
    """Limit 4, share 0.5: two background slots, the other two are for interactive calls only."""
    limiter = make(initial_limit=4)
    take(limiter, 2, "background")
    assert limiter.try_acquire("background") is None
    take(limiter, 2, "interactive")
    assert limiter.try_acquire("interactive") is None
    s = limiter.snapshot()
    assert (s["in_flight_background"], s["in_flight_interactive"], s["background_cap"]) == (2, 2, 2)


def test_interactive_may_use_the_whole_limit() -> None:
    """Interactive calls are not capped by the partition."""
    limiter = make(initial_limit=4)
    take(limiter, 4, "interactive")
    assert limiter.try_acquire("background") is None


@pytest.mark.parametrize(
    ("limit", "share", "cap"), [(1, 0.5, 1), (3, 0.5, 1), (10, 0.5, 5), (10, 0.3, 3), (8, 1.0, 8)]
)
def test_background_cap_follows_the_limit(limit: int, share: float, cap: int) -> None:
    """The cap is max(1, floor(limit x share)): background calls are never shut out completely."""
    limiter = make(initial_limit=limit, background_share=share)
    assert snap(limiter, "background_cap") == cap


def test_background_cap_moves_with_cuts_and_growth() -> None:
    """A cut lowers the background cap with the limit; growth raises it."""
    limiter = make(initial_limit=10, probe_interval_s=0.0)
    slots = take(limiter, 10)
    limiter.release(slots.pop(), "overload")
    assert snap(limiter, "background_cap") == 3
    for slot in slots:
        limiter.release(slot, "ignored")
    for _ in range(4):
        for slot in take(limiter, limiter.limit):
            limiter.release(slot, "success")
    assert limiter.limit == 10
    assert snap(limiter, "background_cap") == 5


def test_interactive_waiters_are_served_first() -> None:
    """With both waiting, every interactive waiter gets a slot before any background one; FIFO within each."""
    limiter = make(initial_limit=1, queue_factor=4.0)
    held = take(limiter, 1)[0]
    waiters = queue_threads(limiter, ["background", "interactive", "background", "interactive"])
    order = [waiters[1], waiters[3], waiters[0], waiters[2]]
    slot = held
    for waiter in order:
        limiter.release(slot, "ignored")
        slot = waiter.slot()
        assert sum(w.done.is_set() for w in waiters) == order.index(waiter) + 1
    limiter.release(slot, "ignored")
    assert snap(limiter, "in_flight") == 0


def test_a_background_waiter_waits_for_its_share_while_interactive_calls_pass() -> None:
    """A background waiter held back by its cap lets interactive calls pass, then gets the next one."""
    limiter = make(initial_limit=4)
    background = take(limiter, 2, "background")
    (waiter,) = queue_threads(limiter, ["background"])
    assert limiter.try_acquire("background") is None  # behind the waiter
    interactive = take(limiter, 1, "interactive")
    limiter.release(interactive[0])
    assert not waiter.done.is_set()
    limiter.release(background[0])
    assert waiter.slot().priority == "background"


def test_interactive_arrival_displaces_the_youngest_background_waiter() -> None:
    """Queue full: an interactive call takes the youngest background waiter's place; background is refused."""
    limiter = make(initial_limit=1, queue_factor=2.0)
    held = take(limiter, 1)[0]
    older, younger = queue_threads(limiter, ["background", "background"])
    (first,) = queue_threads(limiter, ["interactive"])  # displaces `younger`
    refusal = younger.refusal()
    assert refusal.reason == "queue_full"
    assert not older.done.is_set()
    with pytest.raises(Refused, match="queue_full"):
        limiter.acquire("background", timeout_s=5.0)
    (second,) = queue_threads(limiter, ["interactive"])  # displaces `older`
    assert older.refusal().reason == "queue_full"
    with pytest.raises(Refused, match="queue_full"):
        limiter.acquire("interactive", timeout_s=5.0)  # no background waiter left to displace
    s = limiter.snapshot()
    assert (s["displaced"], s["rejected_queue_full"], s["queued_interactive"]) == (2, 4, 2)
    limiter.release(held)
    limiter.release(first.slot())
    limiter.release(second.slot())
    assert snap(limiter, "in_flight") == 0


async def test_a_displaced_task_is_refused() -> None:
    """A background task displaced from the queue gets Refused("queue_full") and holds nothing."""
    limiter = make(initial_limit=1, queue_factor=1.0)
    held = take(limiter, 1)[0]
    (background,) = await queue_tasks(limiter, ["background"])
    (interactive,) = await queue_tasks(limiter, ["interactive"])
    with pytest.raises(Refused, match="queue_full"):
        await background
    limiter.release(held)
    limiter.release(await interactive)
    assert snap(limiter, "in_flight") == 0


# --- the pause -------------------------------------------------------------------


def test_pause_holds_new_calls_until_it_ends() -> None:
    """On a real clock, a call made during a pause waits for it and then goes through."""
    limiter = make(time.monotonic, initial_limit=4)
    start = time.monotonic()
    limiter.pause(start + 0.15)
    slot = limiter.acquire(timeout_s=5.0)
    assert time.monotonic() - start >= 0.15
    assert slot.started >= start + 0.15
    limiter.release(slot)


async def test_pause_holds_new_tasks_until_it_ends() -> None:
    """The same from asyncio tasks, several at once."""
    limiter = make(time.monotonic, initial_limit=4)
    start = time.monotonic()
    limiter.pause(start + 0.1)
    slots = await asyncio.gather(*(limiter.aacquire(timeout_s=5.0) for _ in range(3)))
    assert all(s.started >= start + 0.1 for s in slots)
    for slot in slots:
        limiter.release(slot)


def test_a_pause_longer_than_the_budget_refuses_at_once() -> None:
    """A call whose timeout ends before the pause is refused immediately with "paused" and the time left."""
    clock = FakeClock(0.0)
    limiter = make(clock, initial_limit=4)
    limiter.pause(10.0)
    clock.advance(2.5)
    start = time.monotonic()
    with pytest.raises(Refused) as info:
        limiter.acquire(timeout_s=0.05)
    assert time.monotonic() - start < 0.05
    assert info.value.reason == "paused"
    assert info.value.retry_after_s == pytest.approx(7.5)
    assert "7.500 s" in str(info.value)
    with pytest.raises(Refused, match="paused"):
        asyncio.run(limiter.aacquire(timeout_s=7.4))
    s = limiter.snapshot()
    assert (s["rejected_paused"], s["queued"], s["in_flight"]) == (2, 0, 0)


def test_try_acquire_gets_nothing_during_a_pause() -> None:
    """try_acquire returns None until the clock passes the pause."""
    clock = FakeClock(0.0)
    limiter = make(clock, initial_limit=4)
    limiter.pause(1.0)
    assert limiter.try_acquire() is None
    assert limiter.try_acquire("background") is None
    clock.advance(1.0)
    assert limiter.try_acquire() is not None
    assert snap(limiter, "try_refused") == 2


def test_pause_keeps_the_later_end() -> None:
    """A shorter pause never shortens the current one; a longer one extends it."""
    clock = FakeClock(0.0)
    limiter = make(clock)
    limiter.pause(5.0)
    limiter.pause(3.0)
    assert snap(limiter, "paused_until") == 5.0
    limiter.pause(8.0)
    s = limiter.snapshot()
    assert (s["paused_until"], s["pause_remaining_s"], s["pauses"]) == (8.0, 8.0, 2)
    with pytest.raises(ValueError, match="nan"):
        limiter.pause(math.nan)


def test_waiters_queued_before_a_pause_go_through_after_it() -> None:
    """Waiters queued on a full limit, whose slots free up during a pause, get them once the pause ends."""
    clock = FakeClock(0.0)
    limiter = make(clock, initial_limit=2)
    held = take(limiter, 2)
    waiters = queue_threads(limiter, ["interactive", "background"], timeout_s=None)
    limiter.pause(0.05)
    for slot in held:
        limiter.release(slot)  # nothing is handed out during the pause
    assert not any(w.done.is_set() for w in waiters)
    assert snap(limiter, "in_flight") == 0
    clock.advance(0.05)  # the waiters see it at their next look, within 0.05 s
    for waiter in waiters:
        waiter.slot()
    assert snap(limiter, "in_flight") == 2


async def test_tasks_queued_before_a_pause_go_through_after_it() -> None:
    """The same with asyncio tasks."""
    clock = FakeClock(0.0)
    limiter = make(clock, initial_limit=1)
    held = take(limiter, 1)[0]
    (task,) = await queue_tasks(limiter, ["interactive"], timeout_s=None)
    limiter.pause(0.05)
    limiter.release(held)
    await asyncio.sleep(0)
    assert not task.done()
    clock.advance(0.05)
    limiter.release(await asyncio.wait_for(task, 5))


async def test_a_task_woken_by_a_pause_waits_it_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A queued task woken by a new pause waits again on a fresh future, and gets through after it."""
    steps = count_steps(monkeypatch)
    clock = FakeClock(0.0)
    limiter = make(clock, initial_limit=1)
    held = take(limiter, 1)[0]
    (task,) = await queue_tasks(limiter, ["interactive"], timeout_s=None)
    assert len(steps) == 1
    limiter.pause(0.05)
    await await_until(lambda: len(steps) == 2)  # woken by the pause, not granted
    assert not task.done()
    limiter.release(held, "ignored")
    clock.advance(0.05)
    limiter.release(await asyncio.wait_for(task, 5))


def test_a_pause_that_outlasts_a_waiters_budget_refuses_it() -> None:
    """A waiter already queued is refused with "paused" as soon as a pause longer than its budget starts."""
    clock = FakeClock(0.0)
    limiter = make(clock, initial_limit=1, queue_factor=3.0)
    take(limiter, 1)
    patient = queue_threads(limiter, ["interactive", "background"], timeout_s=None)
    (hurried,) = queue_threads(limiter, ["interactive"], timeout_s=1.0)
    limiter.pause(30.0)
    refusal = hurried.refusal()
    assert refusal.reason == "paused"
    assert refusal.retry_after_s == pytest.approx(30.0)
    assert snap(limiter, "queued") == 2
    assert not any(w.done.is_set() for w in patient)


def test_refusals_during_a_pause_carry_its_remaining_time() -> None:
    """A queue_full refusal during a pause says how long the pause still lasts."""
    clock = FakeClock(0.0)
    limiter = make(clock, initial_limit=1, queue_factor=1.0)
    limiter.pause(0.2)
    queue_threads(limiter, ["interactive"], timeout_s=None)
    with pytest.raises(Refused) as info:
        limiter.acquire(timeout_s=10.0)
    assert info.value.reason == "queue_full"
    assert info.value.retry_after_s == pytest.approx(0.2)
    clock.advance(0.2)  # the waiter sees it at its next look, within 0.2 s
    wait_until(lambda: snap(limiter, "in_flight") == 1)


# --- timeouts --------------------------------------------------------------------


def test_a_thread_waiter_gives_up_after_timeout_and_frees_its_place() -> None:
    """A waiter refused with "timeout" after timeout_s has left the queue; the next waiter gets the slot."""
    limiter = make(initial_limit=1, queue_factor=1.0)
    held = take(limiter, 1)[0]
    start = time.monotonic()
    with pytest.raises(Refused) as info:
        limiter.acquire(timeout_s=0.1)
    elapsed = time.monotonic() - start
    assert 0.1 <= elapsed < 5.0  # gave up after its timeout, not never (slack for a loaded machine)
    assert info.value.reason == "timeout"
    assert info.value.retry_after_s is None
    assert snap(limiter, "queued") == 0
    (waiter,) = queue_threads(limiter, ["interactive"])  # the place is free again
    limiter.release(held)
    limiter.release(waiter.slot())
    s = limiter.snapshot()
    assert (s["rejected_timeout"], s["in_flight"], s["queued"]) == (1, 0, 0)


async def test_a_task_waiter_gives_up_after_timeout_and_frees_its_place() -> None:
    """The same from an asyncio task; the slot released later goes to the next task, not the one that left."""
    limiter = make(initial_limit=1, queue_factor=1.0)
    held = take(limiter, 1)[0]
    start = time.monotonic()
    with pytest.raises(Refused, match="timeout"):
        await limiter.aacquire(timeout_s=0.1)
    assert time.monotonic() - start >= 0.1
    (task,) = await queue_tasks(limiter, ["interactive"])
    limiter.release(held)
    limiter.release(await asyncio.wait_for(task, 5))
    assert snap(limiter, "in_flight") == 0


def test_a_grant_wins_over_a_timeout_that_has_just_passed() -> None:
    """A waiter granted a slot before it noticed its timeout passed takes the slot."""
    limiter = make(initial_limit=1)
    held = take(limiter, 1)[0]
    waiter = _concurrency._Waiter("interactive", None)
    limiter._interactive.append(waiter)  # queued by hand, to step it by hand
    limiter.release(held)
    step = limiter._step(waiter, deadline=time.monotonic() - 1.0)
    assert isinstance(step, Slot)
    limiter.release(step)
    assert snap(limiter, "in_flight") == 0


def test_a_waiter_without_timeout_sleeps_until_woken(monkeypatch: pytest.MonkeyPatch) -> None:
    """No busy polling: a waiter with nothing to wait for but a slot looks at the limiter once per wake."""
    steps = count_steps(monkeypatch)
    limiter = make(initial_limit=1)
    held = take(limiter, 1)[0]
    (waiter,) = queue_threads(limiter, ["interactive"], timeout_s=None)
    time.sleep(0.2)  # a stretch of nothing happening, to count wake-ups in
    assert len(steps) == 1
    limiter.release(held)
    waiter.slot()
    assert len(steps) == 2


# --- cancellation ----------------------------------------------------------------


async def test_a_cancelled_task_leaves_the_queue() -> None:
    """Cancelling a waiting task removes it from the queue; the slot released later is not given to it."""
    limiter = make(initial_limit=1)
    held = take(limiter, 1)[0]
    (task,) = await queue_tasks(limiter, ["interactive"])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    s = limiter.snapshot()
    assert (s["queued"], s["cancelled"]) == (0, 1)
    limiter.release(held)
    assert snap(limiter, "in_flight") == 0


async def test_a_slot_granted_to_a_task_cancelled_before_it_ran_is_handed_on() -> None:
    """Grant, then cancel before the task runs: it raises CancelledError, the slot goes to the next waiter."""
    limiter = make(initial_limit=1)
    held = take(limiter, 1)[0]
    first, second = await queue_tasks(limiter, ["interactive", "interactive"])
    limiter.release(held, "ignored")  # grants `first` (it has not run since)...
    assert (snap(limiter, "in_flight"), snap(limiter, "queued")) == (1, 1)
    first.cancel()  # ...which is cancelled before it sees its slot
    with pytest.raises(asyncio.CancelledError):
        await first
    slot = await asyncio.wait_for(second, 5)
    s = limiter.snapshot()
    assert (s["cancelled_grants"], s["in_flight"], s["queued"]) == (1, 1, 0)
    limiter.release(slot)
    assert snap(limiter, "in_flight") == 0


async def test_a_slot_granted_to_the_last_cancelled_task_is_freed() -> None:
    """Grant then cancel with nobody else waiting: the slot is simply free again."""
    limiter = make(initial_limit=1)
    held = take(limiter, 1)[0]
    (task,) = await queue_tasks(limiter, ["background"])
    limiter.release(held)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    s = limiter.snapshot()
    assert (s["in_flight"], s["in_flight_background"], s["cancelled_grants"]) == (0, 0, 1)
    assert limiter._held == {}


async def test_a_task_displaced_and_cancelled_at_once_changes_nothing_more() -> None:
    """A background task displaced from the queue and cancelled before it ran just raises CancelledError."""
    limiter = make(initial_limit=1, queue_factor=1.0)
    held = take(limiter, 1)[0]
    (background,) = await queue_tasks(limiter, ["background"])
    interactive = Waiter(limiter, "interactive")
    interactive.thread.start()  # refuses `background`...
    wait_until(lambda: snap(limiter, "displaced") == 1)  # blocking the loop: `background` cannot run
    background.cancel()  # ...which is cancelled before it sees the refusal
    with pytest.raises(asyncio.CancelledError):
        await background
    s = limiter.snapshot()
    assert (s["cancelled"], s["queued_interactive"], s["queued_background"]) == (0, 1, 0)
    limiter.release(held)
    limiter.release(interactive.slot())
    assert snap(limiter, "in_flight") == 0


@pytest.fixture(name="interrupt_main")
def _interrupt_main() -> Iterator[Callable[[], None]]:
    """A function that raises KeyboardInterrupt in the main thread, even inside a blocking wait."""

    fired: list[int] = []

    def handler(signum: int, frame: object) -> None:
        # One-shot: a signal sent again (in case one was lost) must not raise elsewhere.
        if not fired:
            fired.append(signum)
            raise KeyboardInterrupt

    old = signal.signal(signal.SIGUSR1, handler)
    main = threading.get_ident()
    yield lambda: signal.pthread_kill(main, signal.SIGUSR1)
    signal.signal(signal.SIGUSR1, old)


@pytest.mark.skipif(sys.platform == "win32", reason="needs pthread_kill")
def test_keyboard_interrupt_leaves_the_queue(interrupt_main: Callable[[], None]) -> None:
    """A thread interrupted while queued leaves the queue and holds no slot."""
    limiter = make(initial_limit=1)
    held = take(limiter, 1)[0]

    def poke() -> None:
        wait_until(lambda: snap(limiter, "queued") == 1)
        # A signal that lands before the main thread blocks can be lost under
        # load: send again until the waiter has left the queue.
        deadline = time.monotonic() + 10
        while snap(limiter, "queued") == 1 and time.monotonic() < deadline:
            interrupt_main()
            time.sleep(0.05)

    threading.Thread(target=poke, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        limiter.acquire(timeout_s=20)  # bounded: a lost interrupt fails the test instead of hanging it
    s = limiter.snapshot()
    assert (s["queued"], s["cancelled"], s["in_flight"]) == (0, 1, 1)
    limiter.release(held)
    assert snap(limiter, "in_flight") == 0


def test_a_slot_granted_to_an_interrupted_thread_is_handed_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Grant then KeyboardInterrupt before the thread sees its slot: the slot is handed back."""
    limiter = make(initial_limit=1)
    held = take(limiter, 1)[0]

    class GrantThenInterrupt(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            limiter.release(held)  # grants this very waiter...
            raise KeyboardInterrupt  # ...which is interrupted before it looks

    monkeypatch.setattr(_concurrency, "_Event", GrantThenInterrupt)
    with pytest.raises(KeyboardInterrupt):
        limiter.acquire(timeout_s=5.0)
    s = limiter.snapshot()
    assert (s["in_flight"], s["queued"], s["cancelled_grants"], s["granted"]) == (0, 0, 1, 2)
    assert limiter.try_acquire() is not None


def test_a_closed_loop_does_not_break_a_grant() -> None:
    """Waking a task whose loop is closed is skipped, not raised into the releasing thread."""
    loop = asyncio.new_event_loop()
    future: asyncio.Future[None] = loop.create_future()
    loop.close()
    _concurrency._deliver([(loop, future)])


# --- threads and tasks together --------------------------------------------------


@pytest.mark.usefixtures("fast_switching")
@pytest.mark.parametrize("aimd", [False, True], ids=["fixed", "aimd"])
def test_200_threads_and_200_tasks_share_one_limit(aimd: bool) -> None:
    """400 callers, 3 calls each, limit 8: never more than 8 in flight, every call settled, no slot leaked."""
    config = ConcurrencyConfig(
        initial_limit=8, min_limit=2 if aimd else 8, max_limit=8, queue_factor=30.0, cut_cooldown_s=0.0
    )
    limiter = AdaptiveLimiter(config)
    guard = threading.Lock()
    counts = {"now": 0, "peak": 0, "bg_now": 0, "bg_peak": 0, "ok": 0, "refused": 0}
    signals: list[Signal] = ["success", "success", "ignored"]
    if aimd:
        signals.append("overload")
    timeouts = [None, 5.0, 0.02, 0.0]

    def enter(slot: Slot) -> None:
        with guard:
            counts["ok"] += 1
            counts["now"] += 1
            counts["peak"] = max(counts["peak"], counts["now"])
            if slot.priority == "background":
                counts["bg_now"] += 1
                counts["bg_peak"] = max(counts["bg_peak"], counts["bg_now"])

    def leave(slot: Slot) -> None:
        with guard:
            counts["now"] -= 1
            if slot.priority == "background":
                counts["bg_now"] -= 1

    def refused() -> None:
        with guard:
            counts["refused"] += 1

    go = threading.Event()

    def thread_worker(seed: int) -> None:
        rng = random.Random(seed)
        go.wait(10)
        for _ in range(3):
            priority: Priority = rng.choice(["interactive", "background"])
            try:
                slot = limiter.acquire(priority, rng.choice(timeouts))
            except Refused:
                refused()
                continue
            enter(slot)
            time.sleep(0.0005)
            leave(slot)
            limiter.release(slot, rng.choice(signals))

    async def task_worker(seed: int, start: asyncio.Event) -> None:
        rng = random.Random(seed)
        await start.wait()
        for _ in range(3):
            priority: Priority = rng.choice(["interactive", "background"])
            try:
                slot = await limiter.aacquire(priority, rng.choice(timeouts))
            except Refused:
                refused()
                continue
            enter(slot)
            await asyncio.sleep(0.0005)
            leave(slot)
            limiter.release(slot, rng.choice(signals))

    async def tasks() -> None:
        start = asyncio.Event()
        running = [asyncio.create_task(task_worker(1000 + i, start)) for i in range(200)]
        await asyncio.sleep(0)
        start.set()
        go.set()
        await asyncio.wait_for(asyncio.gather(*running), 30)

    threads = [threading.Thread(target=thread_worker, args=(i,), daemon=True) for i in range(200)]
    for t in threads:
        t.start()
    asyncio.run(tasks())
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert counts["ok"] + counts["refused"] == 1200
    assert counts["peak"] <= 8
    if not aimd:
        assert counts["peak"] == 8
        assert counts["bg_peak"] <= 4
    s = limiter.snapshot()
    assert (s["in_flight"], s["queued"]) == (0, 0)
    assert limiter._held == {}
    assert s["granted"] == counts["ok"]
    assert s["rejected"] == counts["refused"]
    assert counts["ok"] > 100


def test_threads_and_tasks_wake_each_other() -> None:
    """A slot released by a thread reaches a task on another thread's loop, and the other way round."""
    limiter = make(initial_limit=1)
    held = take(limiter, 1)[0]
    got: list[Slot] = []

    async def in_loop() -> None:
        got.append(await limiter.aacquire(timeout_s=5.0))

    runner = threading.Thread(target=lambda: asyncio.run(in_loop()), daemon=True)
    runner.start()
    wait_until(lambda: snap(limiter, "queued") == 1)
    limiter.release(held, "ignored")  # from this thread, into the other thread's loop
    runner.join(5)
    assert len(got) == 1
    (waiter,) = queue_threads(limiter, ["interactive"])

    async def release_from_a_task() -> None:
        limiter.release(got[0])

    asyncio.run(release_from_a_task())
    limiter.release(waiter.slot())
    assert snap(limiter, "in_flight") == 0


# --- on_change -------------------------------------------------------------------


def test_on_change_once_per_change() -> None:
    """Each limit change is reported once as (old, new); no-ops (floor, ceiling, cooldown) are not."""
    clock = FakeClock(0.0)
    recorder = Recorder()
    limiter = make(clock, recorder, initial_limit=2, min_limit=1, max_limit=3)
    for _ in range(3):
        for slot in take(limiter, limiter.limit):
            limiter.release(slot, "success")
    slots = take(limiter, 3)
    for slot in slots:
        limiter.release(slot, "overload")  # one cut, then the cooldown
    clock.advance(1.0)
    for _ in range(3):
        limiter.release(take(limiter, 1)[0], "overload")
        clock.advance(1.0)
    assert recorder.calls == [(2, 3), (3, 1)]


def test_on_change_runs_outside_the_lock() -> None:
    """A callback that reads the limiter does not deadlock (the lock is not reentrant)."""
    seen: list[int | float] = []
    limiter: AdaptiveLimiter

    def read_back(old: int, new: int) -> None:
        seen.append(limiter.snapshot()["limit"])

    limiter = AdaptiveLimiter(ConcurrencyConfig(initial_limit=2), clock=FakeClock(0.0), on_change=read_back)

    def cycle() -> None:
        for slot in take(limiter, 2):
            limiter.release(slot, "success")
        limiter.release(take(limiter, 1)[0], "overload")

    t = threading.Thread(target=cycle, daemon=True)
    t.start()
    t.join(timeout=5)
    assert not t.is_alive(), "deadlock: on_change called with the lock held"
    assert seen == [3, 1]


def test_a_raising_callback_breaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """A callback that raises is logged and counted; limits, slots and waiters carry on."""

    def boom(old: int, new: int) -> None:
        raise RuntimeError("sink down")

    limiter = AdaptiveLimiter(
        ConcurrencyConfig(initial_limit=2, max_limit=3), clock=FakeClock(0.0), on_change=boom
    )
    a, b = take(limiter, 2)
    (waiter,) = queue_threads(limiter, ["interactive"])
    with caplog.at_level(logging.WARNING, logger="llmpulse"):
        limiter.release(a, "success")  # grows to 3 and wakes the waiter
    assert limiter.limit == 3
    limiter.release(waiter.slot())
    limiter.release(b, "overload")
    s = limiter.snapshot()
    assert (s["limit"], s["in_flight"], s["callback_errors"]) == (1, 0, 2)
    assert "on_change" in caplog.text


def test_callback_errors_are_logged_sparingly(caplog: pytest.LogCaptureFixture) -> None:
    """A callback that keeps raising is logged the first 3 times (then every 1000th), always counted."""

    def boom(old: int, new: int) -> None:
        raise RuntimeError("sink down")

    config = ConcurrencyConfig(initial_limit=1, max_limit=2, cut_cooldown_s=0.0, probe_interval_s=0.0)
    limiter = AdaptiveLimiter(config, clock=FakeClock(0.0), on_change=boom)
    with caplog.at_level(logging.WARNING, logger="llmpulse"):
        for _ in range(5):
            limiter.release(take(limiter, 1)[0], "success")  # 1 -> 2
            limiter.release(take(limiter, 1)[0], "overload")  # 2 -> 1
    assert snap(limiter, "callback_errors") == 10
    assert caplog.text.count("on_change") == 3


# --- config ----------------------------------------------------------------------

BAD_CONFIGS: list[tuple[dict[str, Any], str, str]] = [
    ({"probe_interval_s": -1.0}, "probe_interval_s", ">= 0"),
    ({"initial_limit": 0}, "initial_limit", ">= 1"),
    ({"initial_limit": 2.5}, "initial_limit", "int"),
    ({"initial_limit": True}, "initial_limit", "int"),
    ({"min_limit": 0}, "min_limit", ">= 1"),
    ({"max_limit": 0}, "max_limit", ">= 1"),
    ({"min_limit": 5, "max_limit": 4, "initial_limit": 4}, "max_limit", ">= min_limit (5)"),
    ({"initial_limit": 2000}, "initial_limit", "between min_limit (1) and max_limit (1024)"),
    ({"initial_limit": 1, "min_limit": 2}, "initial_limit", "between min_limit (2)"),
    ({"decrease_factor": 1.0}, "decrease_factor", "(0, 1)"),
    ({"decrease_factor": 0}, "decrease_factor", "(0, 1)"),
    ({"decrease_factor": math.nan}, "decrease_factor", "(0, 1)"),
    ({"decrease_factor": "0.5"}, "decrease_factor", "(0, 1)"),
    ({"cut_cooldown_s": -1}, "cut_cooldown_s", ">= 0"),
    ({"cut_cooldown_s": math.inf}, "cut_cooldown_s", "finite"),
    ({"queue_factor": -0.5}, "queue_factor", ">= 0"),
    ({"queue_factor": math.inf}, "queue_factor", "finite"),
    ({"background_share": 0}, "background_share", "(0, 1]"),
    ({"background_share": 1.5}, "background_share", "(0, 1]"),
    ({"background_share": False}, "background_share", "(0, 1]"),
]


@pytest.mark.parametrize(("kwargs", "field", "accepted"), BAD_CONFIGS)
def test_config_validation_names_the_field(kwargs: dict[str, Any], field: str, accepted: str) -> None:
    """An invalid field raises a ValueError naming the field and what it accepts."""
    with pytest.raises(ConfigError) as info:
        ConcurrencyConfig(**kwargs)
    assert isinstance(info.value, ValueError)
    assert f"ConcurrencyConfig.{field}" in str(info.value)
    assert accepted in str(info.value)


def test_config_accepts_the_edges() -> None:
    """The edges of every range are accepted."""
    ConcurrencyConfig(initial_limit=1, min_limit=1, max_limit=1)
    ConcurrencyConfig(initial_limit=5, min_limit=5, max_limit=5)
    ConcurrencyConfig(decrease_factor=0.01, cut_cooldown_s=0, queue_factor=0, background_share=1.0)
    ConcurrencyConfig(decrease_factor=0.99, cut_cooldown_s=3600, queue_factor=100, background_share=0.01)


def test_config_defaults() -> None:
    """The defaults from the issue."""
    c = ConcurrencyConfig()
    assert (c.initial_limit, c.min_limit, c.max_limit) == (64, 1, 1024)
    assert (c.decrease_factor, c.cut_cooldown_s, c.queue_factor, c.background_share) == (0.6, 1.0, 2.0, 0.5)
    limiter = AdaptiveLimiter()
    assert limiter.config is not None
    assert (limiter.limit, snap(limiter, "queue_capacity"), snap(limiter, "background_cap")) == (64, 128, 32)


# --- snapshot and invariants -----------------------------------------------------


def test_snapshot_through_a_cycle() -> None:
    """The snapshot reports the state and every counter."""
    clock = FakeClock(0.0)
    limiter = make(clock, initial_limit=2, queue_factor=1.0)
    assert limiter.snapshot() == {
        "limit": 2,
        "background_cap": 1,
        "in_flight": 0,
        "in_flight_interactive": 0,
        "in_flight_background": 0,
        "queued": 0,
        "queued_interactive": 0,
        "queued_background": 0,
        "queue_capacity": 2,
        "paused_until": 0.0,
        "pause_remaining_s": 0.0,
        "granted": 0,
        "rejected": 0,
        "rejected_queue_full": 0,
        "rejected_timeout": 0,
        "rejected_paused": 0,
        "displaced": 0,
        "try_refused": 0,
        "cancelled": 0,
        "cancelled_grants": 0,
        "overloads": 0,
        "cuts": 0,
        "grows": 0,
        "pauses": 0,
        "stale_releases": 0,
        "callback_errors": 0,
    }
    i = limiter.try_acquire()
    b = limiter.try_acquire("background")
    assert i is not None
    assert b is not None
    (waiter,) = queue_threads(limiter, ["background"])
    s = limiter.snapshot()
    assert (s["in_flight_interactive"], s["in_flight_background"], s["queued_background"]) == (1, 1, 1)
    limiter.release(b, "success")  # 2 in flight: grows to 3, and the waiter gets b's place
    limiter.release(waiter.slot(), "overload")
    clock.advance(0.5)
    limiter.pause(2.0)
    s = limiter.snapshot()
    assert (s["limit"], s["granted"], s["grows"], s["cuts"]) == (1, 3, 1, 1)
    assert (s["paused_until"], s["pause_remaining_s"]) == (2.0, 1.5)


@pytest.mark.parametrize("seed", range(5))
def test_random_walk_keeps_the_invariants(seed: int) -> None:
    """Random acquires, releases, pauses and clock moves keep the limit in range and the counts exact."""
    rng = random.Random(seed)
    clock = FakeClock(0.0)
    limiter = make(
        clock, initial_limit=6, min_limit=2, max_limit=12, cut_cooldown_s=0.5, background_share=0.4
    )
    held: list[Slot] = []
    ops = ["acquire", "acquire", "acquire", "release", "release", "tick", "pause"]
    for _ in range(3000):
        op = rng.choice(ops)
        if op == "acquire":
            priority: Priority = rng.choice(["interactive", "background"])
            before = limiter.snapshot()
            slot = limiter.try_acquire(priority)
            free = before["in_flight"] < before["limit"] and before["pause_remaining_s"] == 0
            if priority == "background":
                free = free and before["in_flight_background"] < before["background_cap"]
            assert (slot is not None) == free
            if slot is not None:
                held.append(slot)
        elif op == "release" and held:
            signal_: Signal = rng.choice(["success", "overload", "ignored"])
            limiter.release(held.pop(rng.randrange(len(held))), signal_)
        elif op == "tick":
            clock.advance(rng.choice([0.1, 0.3, 1.0]))
        elif op == "pause" and rng.random() < 0.2:
            limiter.pause(clock.now + rng.choice([0.0, 0.2, 1.0]))
        s = limiter.snapshot()
        assert 2 <= s["limit"] <= 12
        assert s["in_flight"] == len(held)
        assert s["in_flight_background"] == sum(h.priority == "background" for h in held)
        assert s["background_cap"] == max(1, math.floor(s["limit"] * 0.4 + 1e-9))
    for slot in held:
        limiter.release(slot, "ignored")
    assert snap(limiter, "in_flight") == 0


def test_refused_carries_reason_and_retry_after() -> None:
    """Refused is an Exception with the reason and the pause's remaining time."""
    exc = Refused("timeout")
    assert isinstance(exc, Exception)
    assert (exc.reason, exc.retry_after_s, str(exc)) == ("timeout", None, "concurrency limit: timeout")
    assert Refused("paused", 1.25).retry_after_s == 1.25


async def test_aacquire_with_a_free_slot_does_not_wait() -> None:
    """A free slot is taken at once; acquire and aacquire share one count."""
    limiter = make(initial_limit=2)
    a = await limiter.aacquire()
    b = limiter.acquire()
    with pytest.raises(Refused, match="timeout"):
        await limiter.aacquire(timeout_s=0)
    limiter.release(a)
    limiter.release(b)
    assert snap(limiter, "in_flight") == 0


# --- holding below the ceiling ----------------------------------------------------


def _grow(limiter: AdaptiveLimiter, times: int) -> None:
    for _ in range(times):
        for slot in take(limiter, limiter.limit):
            limiter.release(slot, "success")


def test_after_a_cut_the_limit_holds_below_the_ceiling_until_the_probe_interval() -> None:
    """A cut from 10: quick regrowth to 9, 10 only after probe_interval_s; past 10 the ceiling is gone."""
    clock = FakeClock(0.0)
    limiter = make(clock, initial_limit=10, cut_cooldown_s=0.0, probe_interval_s=5.0)
    slots = take(limiter, 10)
    limiter.release(slots.pop(), "overload")  # 10 -> 6
    for slot in slots:
        limiter.release(slot, "ignored")
    assert limiter.limit == 6
    _grow(limiter, 10)
    assert limiter.limit == 9  # one below the limit that overloaded, and no further
    clock.advance(4.9)
    _grow(limiter, 3)
    assert limiter.limit == 9
    clock.advance(0.1)
    _grow(limiter, 1)
    assert limiter.limit == 10  # the probe
    _grow(limiter, 3)
    assert limiter.limit == 13  # the probe held: the ceiling is forgotten, growth is quick again


def test_a_failed_probe_doubles_the_hold() -> None:
    """Each probe that overloads again waits twice as long for the next one (up to 16x)."""
    clock = FakeClock(0.0)
    limiter = make(clock, initial_limit=5, cut_cooldown_s=0.0, probe_interval_s=1.0)
    waits = []
    for _ in range(6):
        wave = take(limiter, limiter.limit)
        limiter.release(wave[0], "overload")  # the probe at 5 fails
        for slot in wave[1:]:
            limiter.release(slot, "ignored")
        _grow(limiter, 5)
        assert limiter.limit == 4
        waited = 0.0
        while limiter.limit == 4:
            clock.advance(0.5)
            waited += 0.5
            _grow(limiter, 1)
        waits.append(waited)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 16.0]
