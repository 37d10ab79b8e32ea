"""Adaptive concurrency per provider endpoint: an AIMD limit, a bounded queue, priorities and a pause.

An `AdaptiveLimiter` caps the calls in flight to one endpoint. A call takes a
`Slot` before it is sent and hands it back with `AdaptiveLimiter.release`,
saying how it ended; the limit moves with those answers, calls that find no
free slot wait in a short queue, and a Retry-After answer can pause every new
call in the process at once.

**Why a concurrency limit, and why adaptive.** A provider that is overloaded
answers 429 or 529 ("overloaded"); sending more at that point only deepens the
surge. By Little's law (Netflix concurrency-limits) ``concurrency = rate x
latency``, so limiting calls in flight bounds the load without guessing a rate
for calls whose latency varies a hundredfold with output length. The limit is
loss-based, as Netflix's AIMDLimit (the one they recommend for clients):
latency-based limits (Gradient2, Vegas) mistake long answers for congestion.

**AIMD.** ``release(slot, "overload")`` multiplies the limit by
``decrease_factor`` (0.6 by default: -40 %), rounded down and never below
``min_limit``; it always goes down by at least one until then. At most one cut
happens per ``cut_cooldown_s`` (1 s): the 429s of one wave of calls are one
surge, not twenty, so they cut once. ``release(slot, "success")`` adds one, up
to ``max_limit``, but only when the limit was in use: counting the call being
released, at least ``limit - 1`` calls were in flight (Netflix grows when
``inflight * 2 >= limit``; the stricter rule here keeps a process that runs 5
calls at a time from growing its limit by one per call to ``max_limit``, a
limit it never tested). Nor does a success grow the limit if its call was
admitted before the last cut: calls sent into the surge that happen to succeed
say nothing about the new, lower limit, and would otherwise undo the cut as
they drain. "ignored" (a 4xx, a cancellation, a local error) changes nothing.
A cut does not stop calls already in flight; new ones wait until enough of
them ended.

**Holding below the ceiling.** Plain AIMD probes the ceiling again within a
few successes of every cut, so against a provider with a hard capacity a
steady share of calls (15-30 % in our 429-storm test) keeps getting 429s.
So a cut remembers the limit that overloaded (the ceiling): the limit grows
back quickly to one below it, then holds there for ``probe_interval_s``
before it tries the ceiling again (TCP's slow start and congestion
avoidance, with a timer instead of a window). A probe that overloads again
doubles the wait (up to 16x); once the limit grows past the ceiling the
provider had room after all, and the ceiling is forgotten.

**The pending queue** holds at most ``queue_factor x initial_limit`` waiters
(Envoy's ``max_pending_requests``, sized from the baseline so that it does not
shrink in a surge, when it matters most). A call that finds it full is refused
at once with reason "queue_full": waiting behind a full queue would only turn
an overload into timeouts. Waiters are served first in, first out within a
priority. A wait is bounded by ``timeout_s`` (the call's remaining deadline);
a waiter that times out or is cancelled leaves the queue and never holds a slot.

**Priorities partition the limit** ("interactive" and "background", like
Netflix's partitioned limiter and Envoy's per-priority thresholds):

- background calls may hold at most ``max(1, floor(limit x background_share))``
  slots; the rest of the limit is for interactive calls only. Unlike Netflix,
  background calls do not borrow idle interactive slots: an LLM call holds its
  slot for seconds to minutes, so a borrowed slot cannot be given back when an
  interactive call arrives. The cap follows the limit as it moves.
- interactive calls may use the whole limit;
- when both wait, every interactive waiter is served before any background one;
- when the queue is full, an interactive arrival refuses the youngest
  background waiter (reason "queue_full") and takes its place; a background
  arrival is refused.

With a limit of 1 the background cap is still 1, so background calls progress,
and an interactive call waits for at most the one background call in flight.

**The pause** (`AdaptiveLimiter.pause`) applies a Retry-After to the whole
process: until the given clock time no slot is handed out, to anyone. A call
whose wait budget outlasts the pause queues and goes through after it; one
whose budget is shorter is refused at once with reason "paused" and the
pause's remaining time as ``retry_after_s``, rather than waiting only to time
out. Pauses never shorten: the later of the current and a new pause is kept.

**Threads and tasks.** One object serves threads (`acquire`) and asyncio tasks
(`aacquire`) at once: every decision is taken under one `threading.Lock`, held
for about a microsecond and never across a wait. Only the waiting differs: a
thread waits on its own `threading.Event`, a task on its own future, completed
with ``loop.call_soon_threadsafe`` from whichever thread released the slot it
gets. Nothing polls: a waiter wakes when it is granted a slot, refused, its
timeout passes, a pause it is waiting out ends (it re-checks the clock then)
or a new pause starts. A slot granted to a waiter that was cancelled at the
same moment (CancelledError, KeyboardInterrupt) is handed on, never leaked.
Timeouts are measured in real time; the injected clock times the AIMD cooldown
and the pause, and a pause is waited out assuming that clock runs at the speed
of real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from ..exceptions import ConfigError

__all__ = ["AdaptiveLimiter", "ConcurrencyConfig", "Priority", "Refused", "RefusedReason", "Signal", "Slot"]

_log = logging.getLogger("llmpulse")

Priority = Literal["interactive", "background"]
"""Who a call is for: a user waiting ("interactive") or a batch job ("background")."""

Signal = Literal["success", "overload", "ignored"]
"""How a call ended, for the limit: see `AdaptiveLimiter.release`."""

RefusedReason = Literal["queue_full", "timeout", "paused"]
"""Why `AdaptiveLimiter.acquire` refused a call."""

_SIGNALS: Final = frozenset(("success", "overload", "ignored"))
# Products like 2.3 * 100 = 229.99999999999997 must floor to 230.
_EPSILON: Final = 1e-9
# A waiter sitting out a pause wakes at least this far apart, even if the
# injected clock stands still a hair before the pause ends.
_MIN_PAUSE_WAIT_S: Final = 0.001
# threading waits overflow beyond threading.TIMEOUT_MAX; waking once a day is not polling.
_MAX_WAIT_S: Final = 86_400.0
_NEVER: Final = -math.inf
# A probe that keeps failing waits at most this many probe intervals.
_MAX_PROBE_BACKOFF: Final = 16

# Waiter states.
_QUEUED: Final = 0
_GRANTED: Final = 1
_REFUSED: Final = 2
_LEFT: Final = 3

# How a thread waiter's event is made; a seam for tests of the grant/interrupt race.
_Event = threading.Event


def _floor(value: float) -> int:
    return math.floor(value + _EPSILON)


def _check_int(name: str, value: object, low: int) -> None:
    # bool is an int, but initial_limit=True is a mistake, not a 1.
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"ConcurrencyConfig.{name} must be an int >= {low}, got {value!r}")


def _check_float(name: str, value: object, accepted: str, ok: Callable[[float], bool]) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not ok(value)
    ):
        raise ConfigError(f"ConcurrencyConfig.{name} must be {accepted}, got {value!r}")


@dataclass(frozen=True, slots=True)
class ConcurrencyConfig:
    """How an `AdaptiveLimiter` sizes its limit, its queue and the background share.

    Attributes:
        initial_limit: The starting limit, also the baseline the queue is sized from.
        min_limit: The limit never goes below this.
        max_limit: The limit never goes above this.
        decrease_factor: An overload multiplies the limit by this (rounded down).
        cut_cooldown_s: Seconds after a cut during which overloads do not cut again
            (0: every overload cuts).
        queue_factor: The queue holds at most ``floor(queue_factor x initial_limit)``
            waiters (0: no queue, a call that finds no free slot is refused).
        background_share: Background calls hold at most
            ``max(1, floor(limit x background_share))`` slots.
        probe_interval_s: After a cut, how long the limit holds one below the
            limit that overloaded before trying it again (doubled after each
            probe that overloads, up to 16x; 0: plain AIMD, probe at once).

    Raises:
        ConfigError: A `ValueError` naming the first invalid field and what it accepts.

    """

    initial_limit: int = 64
    min_limit: int = 1
    max_limit: int = 1024
    decrease_factor: float = 0.6
    cut_cooldown_s: float = 1.0
    queue_factor: float = 2.0
    background_share: float = 0.5
    probe_interval_s: float = 10.0

    def __post_init__(self) -> None:
        _check_int("initial_limit", self.initial_limit, 1)
        _check_int("min_limit", self.min_limit, 1)
        _check_int("max_limit", self.max_limit, 1)
        if self.max_limit < self.min_limit:
            raise ConfigError(
                f"ConcurrencyConfig.max_limit must be >= min_limit ({self.min_limit}), got {self.max_limit!r}"
            )
        if not self.min_limit <= self.initial_limit <= self.max_limit:
            raise ConfigError(
                f"ConcurrencyConfig.initial_limit must be between min_limit ({self.min_limit}) and "
                f"max_limit ({self.max_limit}), got {self.initial_limit!r}"
            )
        _check_float("decrease_factor", self.decrease_factor, "a fraction in (0, 1)", lambda v: 0 < v < 1)
        _check_float(
            "cut_cooldown_s", self.cut_cooldown_s, "a finite number of seconds >= 0", lambda v: v >= 0
        )
        _check_float("queue_factor", self.queue_factor, "a finite number >= 0", lambda v: v >= 0)
        _check_float("background_share", self.background_share, "a fraction in (0, 1]", lambda v: 0 < v <= 1)
        _check_float(
            "probe_interval_s", self.probe_interval_s, "a finite number of seconds >= 0", lambda v: v >= 0
        )


_DEFAULT_CONFIG = ConcurrencyConfig()


@dataclass(frozen=True, slots=True)
class Slot:
    """A call admitted by `AdaptiveLimiter`, to hand back to `AdaptiveLimiter.release` exactly once.

    Attributes:
        priority: The priority it was admitted with.
        started: The limiter's clock when it was admitted.
        generation: Internal: the number of cuts before it was admitted; a success
            only grows the limit if no cut happened since.

    """

    priority: Priority
    started: float
    generation: int = 0


class Refused(Exception):
    """`AdaptiveLimiter.acquire` or `AdaptiveLimiter.aacquire` gave no slot.

    Attributes:
        reason: "queue_full" (the pending queue is full, or an interactive call
            took this background waiter's place), "timeout" (no slot within
            ``timeout_s``) or "paused" (a pause outlasts ``timeout_s``).
        retry_after_s: Seconds left of the current pause, if one is on; else None.

    """

    def __init__(self, reason: RefusedReason, retry_after_s: float | None = None) -> None:
        super().__init__(reason, retry_after_s)
        self.reason: RefusedReason = reason
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        if self.retry_after_s is None:
            return f"concurrency limit: {self.reason}"
        return f"concurrency limit: {self.reason} (paused for {self.retry_after_s:.3f} s more)"


_Wake: TypeAlias = "threading.Event | tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]"
_NO_WAKES: Final[list[_Wake]] = []  # never appended to: returned when nothing is to be woken


class _Waiter:
    """One queued `acquire` (event) or `aacquire` (loop and future); its fields change under the lock."""

    __slots__ = ("event", "future", "loop", "priority", "refusal", "slot", "state")

    def __init__(self, priority: Priority, loop: asyncio.AbstractEventLoop | None) -> None:
        self.priority: Priority = priority
        self.state = _QUEUED
        self.slot: Slot | None = None
        self.refusal: Refused | None = None
        self.loop = loop
        self.event = _Event() if loop is None else None
        self.future: asyncio.Future[None] | None = None if loop is None else loop.create_future()

    def waker(self) -> _Wake:
        """What wakes it; taken under the lock, used outside it."""
        if self.event is not None:
            return self.event
        assert self.loop is not None
        assert self.future is not None
        return (self.loop, self.future)

    def arm(self) -> None:
        """Make the next wait block until the next wake (under the lock)."""
        if self.event is not None:
            self.event.clear()
        elif self.future is not None and self.future.done():
            assert self.loop is not None
            self.future = self.loop.create_future()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _deliver(wakes: list[_Wake]) -> None:
    """Wake waiters, outside the lock."""
    for wake in wakes:
        if isinstance(wake, tuple):
            loop, future = wake
            # RuntimeError: the loop is closed, its tasks are gone; asyncio.run
            # cancelled them first, so their slots were handed back already.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future)
        else:
            wake.set()


def _wait_s(seconds: float) -> float | None:
    return None if seconds == math.inf else min(seconds, _MAX_WAIT_S)


class AdaptiveLimiter:
    """Caps the calls in flight to one endpoint with an AIMD limit, a bounded queue, priorities and a pause.

    Usage: ``slot = limiter.acquire(priority, timeout_s=remaining)`` (or ``await
    limiter.aacquire(...)``), which raises `Refused` when no slot can be had;
    make the call; then ``limiter.release(slot, signal)`` exactly once, with
    "overload" for a 429/529 or an overloaded error, "success" for an answer,
    and "ignored" for anything that says nothing about the provider's load. On
    a Retry-After, ``limiter.pause(clock() + retry_after)``. See the module
    docstring for the rules.

    One object serves any mix of threads and asyncio tasks. `aacquire` returns
    without yielding to the loop when a slot is free (as `asyncio.Semaphore`
    does). Do not call `acquire` from a coroutine: it blocks the loop.

    Args:
        config: Limits, queue size and background share.
        clock: Monotonic seconds for the cut cooldown and the pause; inject a fake
            one in tests.
        on_change: Called with ``(old_limit, new_limit)`` once per change of the
            limit, after the lock is released, on the thread that caused it (so
            two changes caused by different threads may be reported out of
            order). Exceptions from it are logged and swallowed.

    """

    __slots__ = (
        "_background",
        "_background_cap",
        "_callback_errors",
        "_cancelled",
        "_cancelled_grants",
        "_ceiling",
        "_clock",
        "_config",
        "_cuts",
        "_displaced",
        "_generation",
        "_granted",
        "_grows",
        "_held",
        "_in_flight",
        "_in_flight_background",
        "_interactive",
        "_last_cut",
        "_limit",
        "_lock",
        "_on_change",
        "_overloads",
        "_paused_until",
        "_pauses",
        "_probe_at",
        "_probe_backoff",
        "_queue_capacity",
        "_refused_paused",
        "_refused_queue_full",
        "_refused_timeout",
        "_stale_releases",
        "_try_refused",
    )

    def __init__(
        self,
        config: ConcurrencyConfig = _DEFAULT_CONFIG,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[int, int], None] | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._limit = config.initial_limit
        self._background_cap = self._cap(self._limit)
        self._queue_capacity = _floor(config.queue_factor * config.initial_limit)
        self._in_flight = 0
        self._in_flight_background = 0
        # The slots handed out and not yet released, by id: a slot released
        # twice, or one this limiter never issued, is told apart by identity (a
        # held slot is alive, so no other object can share its id meanwhile).
        self._held: dict[int, Slot] = {}
        self._interactive: deque[_Waiter] = deque()
        self._background: deque[_Waiter] = deque()
        self._generation = 0
        self._last_cut = _NEVER
        self._paused_until = _NEVER
        self._ceiling: int | None = None  # the limit that overloaded last, until it is passed
        self._probe_at = _NEVER  # when the limit may try the ceiling again
        self._probe_backoff = 1
        self._granted = 0
        self._try_refused = 0
        self._refused_queue_full = 0
        self._refused_timeout = 0
        self._refused_paused = 0
        self._displaced = 0
        self._cancelled = 0
        self._cancelled_grants = 0
        self._overloads = 0
        self._cuts = 0
        self._grows = 0
        self._pauses = 0
        self._stale_releases = 0
        self._callback_errors = 0

    @property
    def config(self) -> ConcurrencyConfig:
        """The limiter's configuration."""
        return self._config

    @property
    def limit(self) -> int:
        """The current limit on calls in flight."""
        return self._limit

    def try_acquire(self, priority: Priority = "interactive") -> Slot | None:
        """Take a slot if one is free for ``priority`` right now; never waits.

        A free slot is not taken past waiters of the same or a higher priority.

        Returns:
            A `Slot`, or None when none is free, or the limiter is paused.

        Raises:
            ValueError: If ``priority`` is neither "interactive" nor "background".

        """
        wakes = _NO_WAKES
        with self._lock:
            now = self._clock()
            if self._interactive or self._background:
                wakes = self._dispatch(now)
            slot = self._admit(priority, now)
            if slot is None:
                self._try_refused += 1
        if wakes:
            _deliver(wakes)
        return slot

    def acquire(self, priority: Priority = "interactive", timeout_s: float | None = None) -> Slot:
        """Take a slot, waiting in the queue for at most ``timeout_s`` seconds (threads).

        Args:
            priority: "interactive" or "background" (see the module docstring).
            timeout_s: Longest wait in real seconds, e.g. the call's remaining
                deadline; None waits as long as it takes; 0 or less never waits.

        Returns:
            A `Slot` to release once the call ended.

        Raises:
            Refused: With reason "queue_full", "timeout" or "paused".
            ValueError: If ``priority`` is unknown or ``timeout_s`` is NaN.

        """
        start = time.monotonic()
        entered = self._enter(priority, timeout_s, None)
        if not isinstance(entered, _Waiter):
            if isinstance(entered, Refused):
                raise entered
            return entered
        waiter = entered
        deadline = None if timeout_s is None else start + timeout_s
        event = waiter.event
        assert event is not None
        try:
            step = self._step(waiter, deadline)
            while isinstance(step, float):
                event.wait(_wait_s(step))
                step = self._step(waiter, deadline)
        except BaseException:
            # KeyboardInterrupt (or anything else) while queued: leave the queue,
            # or hand on a slot granted meanwhile.
            self._abandon(waiter)
            raise
        if isinstance(step, Refused):
            raise step
        return step

    async def aacquire(self, priority: Priority = "interactive", timeout_s: float | None = None) -> Slot:
        """Take a slot, waiting in the queue for at most ``timeout_s`` seconds (asyncio tasks).

        Args:
            priority: "interactive" or "background" (see the module docstring).
            timeout_s: Longest wait in real seconds, e.g. the call's remaining
                deadline; None waits as long as it takes; 0 or less never waits.

        Returns:
            A `Slot` to release once the call ended.

        Raises:
            Refused: With reason "queue_full", "timeout" or "paused".
            ValueError: If ``priority`` is unknown or ``timeout_s`` is NaN.
            asyncio.CancelledError: The task was cancelled while waiting; it left
                the queue and holds no slot.

        """
        start = time.monotonic()
        entered = self._enter(priority, timeout_s, asyncio.get_running_loop())
        if not isinstance(entered, _Waiter):
            if isinstance(entered, Refused):
                raise entered
            return entered
        waiter = entered
        deadline = None if timeout_s is None else start + timeout_s
        try:
            step = self._step(waiter, deadline)
            while isinstance(step, float):
                future = waiter.future
                assert future is not None
                # asyncio.wait, unlike wait_for, leaves the future alone on a timeout.
                await asyncio.wait((future,), timeout=_wait_s(step))
                step = self._step(waiter, deadline)
        except BaseException:
            # Cancelled while queued: leave the queue, or hand on a slot that was
            # granted after the cancellation but before this task ran again.
            self._abandon(waiter)
            raise
        if isinstance(step, Refused):
            raise step
        return step

    def release(self, slot: Slot, signal: Signal = "success") -> None:
        """Hand a slot back and tell the limit how its call ended.

        Args:
            slot: What `acquire`, `aacquire` or `try_acquire` returned.
            signal: "overload" (a 429 or 529 answer, an overloaded error) cuts the
                limit, at most once per ``cut_cooldown_s``; "success" grows it by
                one when the limit was in use and no cut happened since the slot
                was taken; "ignored" changes nothing. A slot released twice, or
                not issued by this limiter, is counted and changes nothing.

        Raises:
            ValueError: If ``signal`` is none of the three.

        """
        if signal not in _SIGNALS:
            raise ValueError(f"signal must be 'success', 'overload' or 'ignored', got {signal!r}")
        change: tuple[int, int] | None = None
        wakes = _NO_WAKES
        with self._lock:
            if self._held.pop(id(slot), None) is None:
                self._stale_releases += 1
                return
            busy = self._in_flight  # counting this call
            self._in_flight = busy - 1
            if slot.priority == "background":
                self._in_flight_background -= 1
            limit = self._limit
            if signal == "success":
                if (
                    slot.generation == self._generation
                    and busy >= limit - 1
                    and limit < self._config.max_limit
                    and self._may_grow(limit)
                ):
                    self._grows += 1
                    change = self._set_limit(limit + 1)
            elif signal == "overload":
                change = self._overload()
            if self._interactive or self._background:
                wakes = self._dispatch(self._clock())
        if wakes:
            _deliver(wakes)
        if change is not None:
            self._notify(change)

    def pause(self, until: float) -> None:
        """Hand out no slot before the clock reads ``until``, to any caller (a shared Retry-After).

        The later of the current pause and this one is kept. Waiters whose
        ``timeout_s`` ends before the pause are refused at once with reason
        "paused"; the others go through after it.

        Args:
            until: A time on the limiter's clock, e.g. ``clock() + retry_after_s``.

        Raises:
            ValueError: If ``until`` is NaN.

        """
        if math.isnan(until):
            raise ValueError("pause(until) needs a clock time, got nan")
        with self._lock:
            if until <= self._paused_until:
                return
            self._paused_until = until
            self._pauses += 1
            # Waiters compute how long to sleep when they go to sleep: wake them
            # to sit out the pause (or give up on it) instead.
            wakes = [w.waker() for w in self._interactive]
            wakes.extend(w.waker() for w in self._background)
        _deliver(wakes)

    def snapshot(self) -> dict[str, float | int]:
        """The limiter's state and counters, for telemetry and health endpoints.

        Returns:
            ``limit``; ``background_cap``; ``in_flight`` (and ``in_flight_interactive``,
            ``in_flight_background``); ``queued`` (and ``queued_interactive``,
            ``queued_background``); ``queue_capacity``; ``paused_until`` (0.0 if
            never paused) and ``pause_remaining_s``; and since creation: ``granted``
            slots, ``rejected`` (every `Refused` raised) split into
            ``rejected_queue_full`` (including ``displaced`` background waiters),
            ``rejected_timeout`` and ``rejected_paused``; ``try_refused`` (`try_acquire`
            returning None); ``cancelled`` (waiters that left by cancellation);
            ``cancelled_grants`` (slots granted to a cancelled waiter and handed
            on); ``overloads`` (overload signals), ``cuts`` (cuts applied),
            ``grows``; ``pauses``; ``stale_releases``; ``callback_errors``.

        """
        with self._lock:
            now = self._clock()
            paused_until = self._paused_until
            queued_i = len(self._interactive)
            queued_b = len(self._background)
            rejected = self._refused_queue_full + self._refused_timeout + self._refused_paused
            return {
                "limit": self._limit,
                "background_cap": self._background_cap,
                "in_flight": self._in_flight,
                "in_flight_interactive": self._in_flight - self._in_flight_background,
                "in_flight_background": self._in_flight_background,
                "queued": queued_i + queued_b,
                "queued_interactive": queued_i,
                "queued_background": queued_b,
                "queue_capacity": self._queue_capacity,
                "paused_until": 0.0 if paused_until == _NEVER else paused_until,
                "pause_remaining_s": max(0.0, paused_until - now),
                "granted": self._granted,
                "rejected": rejected,
                "rejected_queue_full": self._refused_queue_full,
                "rejected_timeout": self._refused_timeout,
                "rejected_paused": self._refused_paused,
                "displaced": self._displaced,
                "try_refused": self._try_refused,
                "cancelled": self._cancelled,
                "cancelled_grants": self._cancelled_grants,
                "overloads": self._overloads,
                "cuts": self._cuts,
                "grows": self._grows,
                "pauses": self._pauses,
                "stale_releases": self._stale_releases,
                "callback_errors": self._callback_errors,
            }

    # --- the shared core of acquire and aacquire ------------------------------------

    def _enter(
        self, priority: Priority, timeout_s: float | None, loop: asyncio.AbstractEventLoop | None
    ) -> Slot | Refused | _Waiter:
        """Admit, refuse or queue a new acquisition."""
        if timeout_s is not None and math.isnan(timeout_s):
            raise ValueError("timeout_s must be a number of seconds or None, got nan")
        wakes = _NO_WAKES
        with self._lock:
            now = self._clock()
            if self._interactive or self._background:
                wakes = self._dispatch(now)
            result: Slot | Refused | _Waiter | None = self._admit(priority, now)
            if result is None:
                if wakes is _NO_WAKES:
                    wakes = []
                result = self._enqueue(priority, timeout_s, now, loop, wakes)
        if wakes:
            _deliver(wakes)
        return result

    def _step(self, waiter: _Waiter, deadline: float | None) -> Slot | Refused | float:
        """Look at a queued waiter: its slot, its refusal, or how long to sleep (inf: until woken)."""
        result: Slot | Refused | float
        wakes = _NO_WAKES
        with self._lock:
            now = self._clock()
            if waiter.state == _QUEUED:
                wakes = self._dispatch(now)  # the pause may have ended
            if waiter.state == _GRANTED:
                assert waiter.slot is not None
                result = waiter.slot
            elif waiter.state == _REFUSED:
                assert waiter.refusal is not None
                result = waiter.refusal
            else:
                left = math.inf if deadline is None else deadline - time.monotonic()
                paused_s = self._paused_until - now
                if left <= 0:
                    self._remove(waiter)
                    result = self._refuse("timeout", paused_s if paused_s > 0 else None)
                elif paused_s > left:
                    self._remove(waiter)
                    result = self._refuse("paused", paused_s)
                else:
                    waiter.arm()
                    result = min(left, max(paused_s, _MIN_PAUSE_WAIT_S)) if paused_s > 0 else left
        if wakes:
            _deliver(wakes)
        return result

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiter was interrupted: take it out of the queue, or hand on the slot it was just granted."""
        wakes = _NO_WAKES
        with self._lock:
            if waiter.state == _GRANTED:
                assert waiter.slot is not None
                self._cancelled_grants += 1
                self._free(waiter.slot)
                waiter.state = _LEFT
                if self._interactive or self._background:
                    wakes = self._dispatch(self._clock())
            elif waiter.state == _QUEUED:
                self._cancelled += 1
                self._remove(waiter)
        if wakes:
            _deliver(wakes)

    # --- everything below runs with the lock held, except _notify --------------------

    def _admit(self, priority: Priority, now: float) -> Slot | None:
        """A slot for a new arrival if one is free to it and nobody it must not pass is waiting."""
        if priority == "interactive":
            if self._interactive or self._in_flight >= self._limit:
                return None
        elif priority == "background":
            if (
                self._interactive
                or self._background
                or self._in_flight >= self._limit
                or self._in_flight_background >= self._background_cap
            ):
                return None
        else:
            raise ValueError(f"priority must be 'interactive' or 'background', got {priority!r}")
        if now < self._paused_until:
            return None
        return self._grant(priority, now)

    def _enqueue(
        self,
        priority: Priority,
        timeout_s: float | None,
        now: float,
        loop: asyncio.AbstractEventLoop | None,
        wakes: list[_Wake],
    ) -> Refused | _Waiter:
        paused_s = self._paused_until - now
        retry_after_s = paused_s if paused_s > 0 else None
        if retry_after_s is not None and timeout_s is not None and paused_s > timeout_s:
            return self._refuse("paused", retry_after_s)
        background = self._background
        full = len(self._interactive) + len(background) >= self._queue_capacity
        can_displace = priority == "interactive" and bool(background)
        if full and not can_displace:
            return self._refuse("queue_full", retry_after_s)
        if timeout_s is not None and timeout_s <= 0:
            return self._refuse("timeout", retry_after_s)
        if full:
            victim = background.pop()  # the youngest background waiter
            victim.state = _REFUSED
            victim.refusal = self._refuse("queue_full", retry_after_s)
            self._displaced += 1
            wakes.append(victim.waker())
        waiter = _Waiter(priority, loop)
        (self._interactive if priority == "interactive" else background).append(waiter)
        return waiter

    def _dispatch(self, now: float) -> list[_Wake]:
        """Grant free slots to waiters, interactive first, FIFO within a priority."""
        if now < self._paused_until:
            return _NO_WAKES
        wakes: list[_Wake] = []
        interactive = self._interactive
        background = self._background
        while self._in_flight < self._limit:
            if interactive:
                waiter = interactive.popleft()
            elif background and self._in_flight_background < self._background_cap:
                waiter = background.popleft()
            else:
                break
            waiter.slot = self._grant(waiter.priority, now)
            waiter.state = _GRANTED
            wakes.append(waiter.waker())
        return wakes

    def _grant(self, priority: Priority, now: float) -> Slot:
        slot = Slot(priority, now, self._generation)
        self._in_flight += 1
        if priority == "background":
            self._in_flight_background += 1
        self._held[id(slot)] = slot
        self._granted += 1
        return slot

    def _free(self, slot: Slot) -> None:
        del self._held[id(slot)]
        self._in_flight -= 1
        if slot.priority == "background":
            self._in_flight_background -= 1

    def _remove(self, waiter: _Waiter) -> None:
        (self._interactive if waiter.priority == "interactive" else self._background).remove(waiter)
        waiter.state = _LEFT

    def _refuse(self, reason: RefusedReason, retry_after_s: float | None) -> Refused:
        if reason == "queue_full":
            self._refused_queue_full += 1
        elif reason == "timeout":
            self._refused_timeout += 1
        else:
            self._refused_paused += 1
        return Refused(reason, retry_after_s)

    def _may_grow(self, limit: int) -> bool:
        ceiling = self._ceiling
        if ceiling is None or limit + 1 < ceiling:
            return True
        if limit + 1 > ceiling:  # the ceiling held: the provider has room after all
            self._ceiling, self._probe_backoff = None, 1
            return True
        return self._clock() >= self._probe_at  # time to try the ceiling again

    def _overload(self) -> tuple[int, int] | None:
        self._overloads += 1
        now = self._clock()
        if now - self._last_cut < self._config.cut_cooldown_s:
            return None  # the same surge
        self._last_cut = now
        self._cuts += 1
        limit = self._limit
        if self._ceiling is not None and limit >= self._ceiling:
            self._probe_backoff = min(self._probe_backoff * 2, _MAX_PROBE_BACKOFF)  # a failed probe
        self._ceiling = limit
        self._probe_at = now + self._config.probe_interval_s * self._probe_backoff
        # Successes of calls admitted before this cut no longer grow the limit.
        self._generation += 1
        new = max(self._config.min_limit, min(limit - 1, _floor(limit * self._config.decrease_factor)))
        return None if new == limit else self._set_limit(new)

    def _set_limit(self, new: int) -> tuple[int, int]:
        old = self._limit
        self._limit = new
        self._background_cap = self._cap(new)
        return (old, new)

    def _cap(self, limit: int) -> int:
        return max(1, _floor(limit * self._config.background_share))

    def _notify(self, change: tuple[int, int]) -> None:
        """Report a limit change, outside the lock: the callback may be slow or call back in."""
        callback = self._on_change
        if callback is None:
            return
        try:
            callback(*change)
        except Exception:  # noqa: BLE001 - telemetry must never break a call
            with self._lock:
                self._callback_errors += 1
                errors = self._callback_errors
            if errors <= 3 or errors % 1000 == 0:
                _log.warning("llmpulse concurrency on_change%r raised", change, exc_info=True)
