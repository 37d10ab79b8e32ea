"""A circuit breaker as a pure decision object: it admits or refuses calls, it never waits.

The states and their transitions (resilience4j's, without its disabled and
forced states)::

                 failure_threshold failures in a row, or (window mode) the
                 failure or slow-call rate of the last window_s seconds
     +--------+ -----------------------------------------------> +------+
     | closed |                                                   | open | <---------+
     +--------+                                                   +------+           |
         ^                                                           |               |
         |                                      open_s passed (seen  |               | a probe
         |                                      at the next look)    v               | failed
         |      half_open_probes probes succeeded             +-----------+          |
         +--------------------------------------------------- | half_open | ---------+
                                                              +-----------+

- **closed** admits every call. A failure adds one to a consecutive count, a
  success resets it, and ``failure_threshold`` in a row opens the breaker. In
  window mode (``window_s`` set) the outcomes of the last ``window_s`` seconds
  are also counted, in a ring of time buckets, and the breaker opens when, over
  at least ``min_calls`` calls, the failure rate reaches ``failure_rate`` or the
  share of calls slower than ``slow_call_s`` reaches ``slow_call_rate``
  (with ``slow_call_learned`` and no ``slow_call_s``: slower than the
  threshold the caller passes with each release, the learned deadline).
- **open** refuses every call for ``open_s`` seconds. Every re-open waits the
  same ``open_s``: resilience4j and Envoy grow the wait across re-opens, which
  a later ``BreakerConfig`` field can add without changing this API.
- **half_open** admits at most ``half_open_probes`` probes, across all threads
  and tasks. One failed probe opens the breaker again; once that many probes
  have succeeded it closes, with its counters reset. A succeeded probe keeps
  its slot, so a half-open period sends at most ``half_open_probes`` calls; an
  "ignored" probe gives its slot back, and so does a probe not released within
  ``probe_timeout_s``, so a hung probe cannot keep the breaker half-open
  forever (resilience4j issue #903).

There is no timer thread: the breaker moves from open to half-open when it is
next looked at (`CircuitBreaker.acquire`, `CircuitBreaker.state`,
`CircuitBreaker.snapshot`) after ``open_s`` has passed.

The caller decides which outcome each call had, and only provider-side faults
should be reported as failures: 5xx and 529 responses, overload errors,
timeouts and dropped connections. The caller's own mistakes (400, 401, 404),
cancellations and local saturation (a full connection pool, a local rate
limit) say nothing about the provider, so they are released as "ignored":
counting them would let one tenant's bad requests, or this process being
busy, open the breaker for every call to a healthy provider.

Each transition moves the breaker to a new *generation*. A `Permit` carries the
generation that issued it, and a permit released after its generation ended
(a call admitted while closed that fails after the breaker opened, or a probe
released after the breaker closed or re-opened) changes nothing: the new state
starts from its own counts. A probe that outlived ``probe_timeout_s`` is
forgotten the same way, so its late release changes nothing either.

The breaker holds one `threading.Lock` for a few hundred nanoseconds per
decision and never sleeps or waits, so the same object serves threads and
asyncio tasks. All time comes from the injected clock.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..exceptions import ConfigError

__all__ = ["BreakerConfig", "BreakerState", "CircuitBreaker", "Outcome", "Permit"]

_log = logging.getLogger("llmpulse")

BreakerState = Literal["closed", "open", "half_open"]
"""The state of a `CircuitBreaker`."""

Outcome = Literal["success", "failure", "ignored"]
"""How an admitted call ended, as classified by the caller (see the module docstring)."""

_Transition = tuple[BreakerState, BreakerState]

_OUTCOMES = frozenset(("success", "failure", "ignored"))
# Window buckets: one second for windows of 10 s to 10 min; never fewer than 10
# (a call leaves the window within 10 % of window_s of its due time) nor more
# than 600 (memory and the cost of a catch-up stay bounded for long windows).
_MIN_BUCKETS = 10
_MAX_BUCKETS = 600
# Before the first call every bucket counts as long expired.
_NEVER = -(1 << 62)


def _check_int(name: str, value: object, low: int) -> None:
    # bool is an int, but failure_threshold=True is a mistake, not a 1.
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"BreakerConfig.{name} must be an int >= {low}, got {value!r}")


def _check_seconds(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        accepted = "a finite number of seconds > 0" + (" or None" if optional else "")
        raise ConfigError(f"BreakerConfig.{name} must be {accepted}, got {value!r}")


def _check_rate(name: str, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 1:
        raise ConfigError(f"BreakerConfig.{name} must be a fraction in (0, 1], got {value!r}")


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When a `CircuitBreaker` opens, how long it stays open and how it probes.

    Attributes:
        failure_threshold: Consecutive failures that open a closed breaker.
        open_s: Seconds the breaker stays open before it admits probes; the same
            for every re-open.
        half_open_probes: Probes a half-open period admits, across all threads
            and tasks; that many successes close the breaker. A succeeded probe
            keeps its slot, an "ignored" or expired one hands it back.
        probe_timeout_s: Seconds after which a probe not yet released gives its
            slot back (None: ``open_s``).
        window_s: Turns window mode on: also open on the rates of the calls of
            the last ``window_s`` seconds. None (the default): consecutive
            failures only.
        min_calls: Calls the window must hold before its rates can open the breaker.
        failure_rate: Failure share of the window's calls that opens the breaker (>=).
        slow_call_s: A call longer than this is slow, whatever its outcome
            (None: slow calls are not counted). Needs ``window_s``.
        slow_call_rate: Slow share of the window's calls that opens the breaker (>=).
        slow_call_learned: With no ``slow_call_s``, a call is slow when it took
            longer than the threshold its release passes (llmpulse passes the
            deadline learned from healthy calls, ``CallEvent.deadline_learned_s``;
            a call without one is not slow). Needs ``window_s``. The learned
            deadline follows a lasting slowdown within a call or two, so this
            counts sudden outliers; a fixed ``slow_call_s`` catches a slowdown.

    Raises:
        ConfigError: A `ValueError` naming the first invalid field and what it accepts.

    """

    failure_threshold: int = 10
    open_s: float = 60.0
    half_open_probes: int = 1
    probe_timeout_s: float | None = None
    window_s: float | None = None
    min_calls: int = 20
    failure_rate: float = 0.5
    slow_call_s: float | None = None
    slow_call_rate: float = 1.0
    slow_call_learned: bool = False

    def __post_init__(self) -> None:
        _check_int("failure_threshold", self.failure_threshold, 1)
        _check_seconds("open_s", self.open_s)
        _check_int("half_open_probes", self.half_open_probes, 1)
        _check_seconds("probe_timeout_s", self.probe_timeout_s, optional=True)
        _check_seconds("window_s", self.window_s, optional=True)
        _check_int("min_calls", self.min_calls, 1)
        _check_rate("failure_rate", self.failure_rate)
        _check_seconds("slow_call_s", self.slow_call_s, optional=True)
        if self.slow_call_s is not None and self.window_s is None:
            # Slow calls are only ever counted in the window: accepting this
            # would silently do nothing.
            raise ConfigError("BreakerConfig.slow_call_s needs window_s (slow calls are rated over a window)")
        _check_rate("slow_call_rate", self.slow_call_rate)
        if self.slow_call_learned and self.window_s is None:
            raise ConfigError(
                "BreakerConfig.slow_call_learned needs window_s (slow calls are rated over a window)"
            )


_DEFAULT_CONFIG = BreakerConfig()


@dataclass(frozen=True, slots=True)
class Permit:
    """An admitted call, to hand back to `CircuitBreaker.release` exactly once.

    Attributes:
        probe: True when admitted as a half-open probe.
        generation: Internal: the state period that issued it; a permit released
            after that period ended is ignored.
        started: The breaker's clock at admission; the call's duration by default.

    """

    probe: bool
    generation: int
    started: float


class _Window:
    """Outcome counts of the last ``window_s`` seconds, in a ring of time buckets.

    Totals are kept by adding on record and subtracting when a bucket expires,
    so recording and reading are O(1); catching up after a quiet spell clears
    each bucket at most once (a gap longer than the window drops them all at
    once). The caller holds the breaker's lock.
    """

    __slots__ = (
        "_bucket_s",
        "_calls",
        "_epochs",
        "_failures",
        "_head",
        "_n",
        "_slow",
        "calls",
        "failures",
        "slow",
    )

    def __init__(self, window_s: float) -> None:
        # The tolerance keeps 60.000000001 from adding a whole bucket (as in _stats).
        self._n = min(max(math.ceil(window_s - 1e-9), _MIN_BUCKETS), _MAX_BUCKETS)
        self._bucket_s = window_s / self._n
        self._epochs = [_NEVER] * self._n
        self._calls = [0] * self._n
        self._failures = [0] * self._n
        self._slow = [0] * self._n
        self._head = _NEVER
        self.calls = self.failures = self.slow = 0

    def advance(self, now: float) -> int:
        """Expire the buckets that left the window at ``now``; return the current epoch."""
        epoch = int(now // self._bucket_s)
        head = self._head
        if epoch <= head:
            # The clock did not move past the newest bucket (or went back): keep
            # counting there rather than rewrite history.
            return head
        n = self._n
        if epoch - head >= n:
            # Every bucket expired. Their slots are reset when next written: a
            # slot whose epoch is not in the window holds nothing that counts.
            self.calls = self.failures = self.slow = 0
        else:
            for e in range(head + 1, epoch + 1):
                i = e % n
                if self._epochs[i] > head - n:
                    self.calls -= self._calls[i]
                    self.failures -= self._failures[i]
                    self.slow -= self._slow[i]
                self._epochs[i] = e
                self._calls[i] = self._failures[i] = self._slow[i] = 0
        self._head = epoch
        return epoch

    def record(self, now: float, *, failed: bool, slow: bool) -> None:
        """Count one call that ended at ``now``."""
        epoch = self.advance(now)
        i = epoch % self._n
        if self._epochs[i] != epoch:
            self._epochs[i] = epoch
            self._calls[i] = self._failures[i] = self._slow[i] = 0
        self._calls[i] += 1
        self.calls += 1
        if failed:
            self._failures[i] += 1
            self.failures += 1
        if slow:
            self._slow[i] += 1
            self.slow += 1

    def reset(self) -> None:
        """Forget every call."""
        self._epochs = [_NEVER] * self._n
        self._head = _NEVER
        self.calls = self.failures = self.slow = 0


class CircuitBreaker:
    """Admits or refuses calls to one endpoint, from how the previous ones ended.

    Usage: ``permit = breaker.acquire()``; if it is None, fail fast (the
    breaker is open, or half-open with every probe slot taken); otherwise make
    the call and then ``breaker.release(permit, outcome)`` exactly once, with
    "ignored" when the outcome says nothing about the provider.

    One object serves any mix of threads and asyncio tasks: every method takes
    one `threading.Lock` briefly and never blocks.

    Args:
        config: Thresholds and durations.
        clock: Monotonic seconds; inject a fake one in tests.
        on_transition: Called with ``(old, new)`` once per state transition, after
            the lock is released, on the thread that caused it (so two
            transitions caused by different threads may be reported out of
            order). Exceptions from it are logged and swallowed.

    """

    __slots__ = (
        "_callback_errors",
        "_clock",
        "_config",
        "_consecutive",
        "_generation",
        "_lock",
        "_on_transition",
        "_open_until",
        "_opened_count",
        "_probe_successes",
        "_probe_timeout_s",
        "_probes",
        "_probes_expired",
        "_rejected_count",
        "_stale_releases",
        "_state",
        "_window",
    )

    def __init__(
        self,
        config: BreakerConfig = _DEFAULT_CONFIG,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._on_transition = on_transition
        self._probe_timeout_s = config.open_s if config.probe_timeout_s is None else config.probe_timeout_s
        self._window = None if config.window_s is None else _Window(config.window_s)
        self._lock = threading.Lock()
        self._state: BreakerState = "closed"
        self._generation = 0
        self._consecutive = 0
        self._open_until = 0.0
        # The probes in flight in this half-open period, matched by identity:
        # two probes admitted at the same clock value are equal as values.
        self._probes: list[Permit] = []
        self._probe_successes = 0
        self._opened_count = 0
        self._rejected_count = 0
        self._probes_expired = 0
        self._stale_releases = 0
        self._callback_errors = 0

    @property
    def config(self) -> BreakerConfig:
        """The breaker's configuration."""
        return self._config

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose ``open_s`` has passed becomes half-open here."""
        with self._lock:
            transition = self._maybe_half_open(self._clock())
            state = self._state
        if transition is not None:
            self._notify(transition)
        return state

    def acquire(self) -> Permit | None:
        """Admit a call or refuse it.

        Returns:
            A `Permit` to release once the call ended, or None when the breaker is
            open, or half-open with every probe slot taken.

        """
        transition: _Transition | None = None
        permit: Permit | None = None
        with self._lock:
            now = self._clock()
            closed = self._state == "closed"
            if closed:
                generation = self._generation
            else:
                transition = self._maybe_half_open(now)
                permit = self._admit_probe(now) if self._state == "half_open" else None
                if permit is None:
                    self._rejected_count += 1
        if closed:
            # Built outside the lock: a frozen dataclass costs more than the decision.
            return Permit(False, generation, now)
        if transition is not None:
            self._notify(transition)
        return permit

    def release(
        self, permit: Permit, outcome: Outcome, duration_s: float | None = None, slow_s: float | None = None
    ) -> None:
        """Record how an admitted call ended.

        Args:
            permit: What `acquire` returned for the call.
            outcome: "success", "failure" (a provider-side fault), or "ignored"
                (a 4xx, a cancellation, local saturation): it frees a probe slot
                and counts as nothing.
            duration_s: The call's duration for the slow-call rate; None: the
                breaker's clock since `acquire`.
            slow_s: This call's slow-call threshold when the config has
                ``slow_call_learned`` and no ``slow_call_s`` (None: not slow).

        Raises:
            ValueError: If ``outcome`` is none of the three.

        """
        if outcome not in _OUTCOMES:
            raise ValueError(f"outcome must be 'success', 'failure' or 'ignored', got {outcome!r}")
        with self._lock:
            if permit.generation != self._generation:
                self._stale_releases += 1
                return
            if permit.probe:
                transition = self._release_probe(permit, outcome)
            else:
                transition = self._release_call(permit, outcome, duration_s, slow_s)
        if transition is not None:
            self._notify(transition)

    def retry_after_s(self) -> float:
        """Seconds until an open breaker admits a probe; 0.0 when it is not open."""
        with self._lock:
            if self._state != "open":
                return 0.0
            return max(0.0, self._open_until - self._clock())

    def snapshot(self) -> dict[str, float | int | str]:
        """The breaker's state and counters, for telemetry and health endpoints.

        Returns:
            ``state``; ``retry_after_s``; ``consecutive_failures``; the window's
            ``window_calls``, ``window_failures`` and ``window_slow_calls`` (0
            outside window mode); ``probes_in_flight`` and ``probe_successes`` of
            the current half-open period; and since creation: ``opened_count``
            (transitions to open), ``rejected_count`` (refused acquires),
            ``probes_expired`` (probes forgotten after ``probe_timeout_s``),
            ``stale_releases`` (releases that changed nothing), ``callback_errors``
            (exceptions from ``on_transition``) and ``generation``.

        """
        with self._lock:
            now = self._clock()
            transition = self._maybe_half_open(now)
            if self._state == "half_open":
                self._expire_probes(now)
            window = self._window
            if window is not None:
                window.advance(now)
            snap: dict[str, float | int | str] = {
                "state": self._state,
                "retry_after_s": max(0.0, self._open_until - now) if self._state == "open" else 0.0,
                "consecutive_failures": self._consecutive,
                "window_calls": 0 if window is None else window.calls,
                "window_failures": 0 if window is None else window.failures,
                "window_slow_calls": 0 if window is None else window.slow,
                "probes_in_flight": len(self._probes),
                "probe_successes": self._probe_successes,
                "opened_count": self._opened_count,
                "rejected_count": self._rejected_count,
                "probes_expired": self._probes_expired,
                "stale_releases": self._stale_releases,
                "callback_errors": self._callback_errors,
                "generation": self._generation,
            }
        if transition is not None:
            self._notify(transition)
        return snap

    # Everything below runs with the lock held, except _notify.

    def _release_call(
        self, permit: Permit, outcome: Outcome, duration_s: float | None, learned_s: float | None
    ) -> _Transition | None:
        """Count a call admitted while closed (the breaker is still closed: same generation)."""
        if outcome == "ignored":
            return None
        cfg = self._config
        failed = outcome == "failure"
        self._consecutive = self._consecutive + 1 if failed else 0
        tripped = self._consecutive >= cfg.failure_threshold
        window = self._window
        if window is None:
            return self._open(self._clock()) if tripped else None
        now = self._clock()
        slow_s = cfg.slow_call_s
        if slow_s is None and cfg.slow_call_learned:
            slow_s = learned_s
        slow = slow_s is not None and (now - permit.started if duration_s is None else duration_s) > slow_s
        window.record(now, failed=failed, slow=slow)
        if tripped or self._window_tripped(window):
            return self._open(now)
        return None

    def _window_tripped(self, window: _Window) -> bool:
        cfg = self._config
        calls = window.calls
        if calls < cfg.min_calls:
            return False
        # Division, not rate * calls: 3 / 10 >= 0.3 holds, but 3 >= 0.3 * 10 does not.
        if window.failures / calls >= cfg.failure_rate:
            return True
        slow_rule = cfg.slow_call_s is not None or cfg.slow_call_learned
        return slow_rule and window.slow / calls >= cfg.slow_call_rate

    def _release_probe(self, permit: Permit, outcome: Outcome) -> _Transition | None:
        """Count a half-open probe; one that expired meanwhile changes nothing."""
        probes = self._probes
        for i, probe in enumerate(probes):
            if probe is permit:
                del probes[i]
                break
        else:
            self._stale_releases += 1
            return None
        if outcome == "failure":
            return self._open(self._clock())
        if outcome == "success":
            self._probe_successes += 1
            if self._probe_successes >= self._config.half_open_probes:
                return self._close()
        return None

    def _admit_probe(self, now: float) -> Permit | None:
        self._expire_probes(now)
        # A probe that succeeded keeps its slot: a half-open period sends at most
        # half_open_probes calls to a provider that may still be down (as in
        # resilience4j). Only "ignored" and expiry hand a slot back.
        if len(self._probes) + self._probe_successes >= self._config.half_open_probes:
            return None
        permit = Permit(True, self._generation, now)
        self._probes.append(permit)
        return permit

    def _expire_probes(self, now: float) -> None:
        probes = self._probes
        if probes:
            timeout_s = self._probe_timeout_s
            kept = [p for p in probes if now - p.started < timeout_s]
            if len(kept) < len(probes):
                self._probes_expired += len(probes) - len(kept)
                self._probes = kept

    def _maybe_half_open(self, now: float) -> _Transition | None:
        if self._state != "open" or now < self._open_until:
            return None
        self._state = "half_open"
        self._generation += 1
        self._probes = []
        self._probe_successes = 0
        return ("open", "half_open")

    def _open(self, now: float) -> _Transition:
        old = self._state
        self._state = "open"
        self._generation += 1
        self._open_until = now + self._config.open_s
        self._opened_count += 1
        self._probes = []
        self._probe_successes = 0
        return (old, "open")

    def _close(self) -> _Transition:
        self._state = "closed"
        self._generation += 1
        self._consecutive = 0
        self._probes = []
        self._probe_successes = 0
        if self._window is not None:
            self._window.reset()
        return ("half_open", "closed")

    def _notify(self, transition: _Transition) -> None:
        """Report a transition, outside the lock: the callback may be slow or call back in."""
        callback = self._on_transition
        if callback is None:
            return
        try:
            callback(*transition)
        except Exception:  # noqa: BLE001 - telemetry must never break a call
            with self._lock:
                self._callback_errors += 1
                errors = self._callback_errors
            if errors <= 3 or errors % 1000 == 0:
                _log.warning("llmpulse breaker on_transition%r raised", transition, exc_info=True)
