"""What a state store is, and the rate-limit arithmetic every store shares.

Why GCRA. A quota such as "600 requests or 90,000 tokens per minute per
tenant" needs a limiter that allows a burst, charges weighted costs, refunds
over-reservations, says exactly when to retry, and keeps O(1) state per key.
The Generic Cell Rate Algorithm (ATM's, as in redis-cell and throttled-py)
does all of that with one number per key and no background refill: a fixed
window lets 2x the limit through across a window edge, and a sliding log
keeps one entry per unit of cost (useless for tokens).

The algorithm, with ``rate`` units of cost per second and a ``burst``:

- the *emission interval* ``T = 1 / rate`` is the time one unit of cost
  occupies;
- the *tolerance* ``tau = burst * T`` is how far ahead of now the schedule may
  run: a quiet key admits ``burst`` at once;
- the *theoretical arrival time* ``TAT`` is when the key would be idle again
  if nothing more arrived (``TAT <= now`` means idle; a missing key is idle).

A request of ``cost`` at ``now`` computes ``new_tat = max(TAT, now) + cost * T``
and is admitted iff ``new_tat - now <= tau``; only then is ``TAT = new_tat``
stored. A refused request changes nothing and may retry after
``new_tat - now - tau`` seconds; a cost above ``burst`` never fits
(``retry_after_s`` is infinite). A negative cost is a refund (the call used
fewer tokens than it reserved): always admitted, it moves ``TAT`` back by
``|cost| * T`` but never before ``now``, so a refund cannot bank capacity
beyond the burst. ``remaining = (tau - (max(TAT, now) - now)) / T`` is what
could still be admitted right now.

The state is kept as ``(stamp, backlog)`` with ``TAT = stamp + backlog``,
not as ``TAT`` itself: epoch seconds in a double are only good to ~0.24 us,
and adding ``T`` to one a thousand times drifts by tens of microseconds, which
would refuse the last request of a burst. ``backlog`` is at most ``tau``, so
the sums stay exact to ~1e-13 of the burst. The admission test allows
``tau`` plus a tolerance of one part per billion of ``tau`` (`GCRA_SLACK`)
and one microsecond (`GCRA_SLACK_S`, the resolution of Redis ``TIME``, and
about that of an epoch timestamp in a double), so a caller that waits exactly
``retry_after_s`` is admitted: decisions are exact to the clock's
resolution, and the most they can over-admit is a billionth of the burst
plus one microsecond's worth of the rate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "GCRA_SLACK",
    "GCRA_SLACK_S",
    "GcraResult",
    "StateStore",
    "check_gcra_args",
    "check_window",
    "gcra_step",
]

#: Relative tolerance on ``tau`` that absorbs float rounding (see the module docstring).
GCRA_SLACK = 1e-9
#: Absolute tolerance in seconds: the clock's resolution (see the module docstring).
GCRA_SLACK_S = 1e-6


@dataclass(frozen=True, slots=True)
class GcraResult:
    """One rate-limit decision.

    Attributes:
        allowed: The whole cost was admitted (and charged).
        retry_after_s: 0.0 when allowed; otherwise the seconds until a request of
            the same cost would be admitted (``math.inf`` when the cost exceeds
            the burst and never can be).
        remaining: The cost that could still be admitted right now, after this
            decision (fractional: costs need not be whole).

    """

    allowed: bool
    retry_after_s: float
    remaining: float


class StateStore(Protocol):
    """Where state that is a quota across replicas lives.

    Only state that maps to a quota enforced globally in reality belongs here
    (per-tenant or per-key RPM/TPM, spend budgets, a provider's "retry after"
    for one API key); breakers, retry budgets and concurrency limits stay per
    process (see the reliability research, section 4). `MemoryStore` serves
    one process, `RedisStore` every replica that points at the same Redis.

    A key holds one kind of state; stores keep the three kinds apart, so the
    same key may be used for ``gcra``, ``add`` and ``*_until`` without mixing.
    No method raises for a backend failure: a store that loses its backend
    decides locally (fails open) instead.
    """

    def gcra(self, key: str, *, rate_per_s: float, burst: float, cost: float = 1.0) -> GcraResult:
        """Admit ``cost`` against the limit ``key`` if it fits, per GCRA (see the module docstring).

        Args:
            key: The limit, e.g. ``"rl:req:tenant:acme"``.
            rate_per_s: Cost refilled per second, e.g. requests per minute / 60.
            burst: Cost that may be admitted at once, e.g. one minute's worth.
            cost: Cost of this request; negative refunds an earlier over-estimate.

        Raises:
            ValueError: ``rate_per_s`` or ``burst`` is not positive and finite,
                or ``cost`` is not finite.

        """
        ...

    async def agcra(self, key: str, *, rate_per_s: float, burst: float, cost: float = 1.0) -> GcraResult:
        """`gcra` for asyncio code."""
        ...

    def add(self, key: str, amount: float, *, window_s: float) -> float:
        """Add ``amount`` to the counter of the current fixed window; return the window's total.

        The window index is ``floor(now / window_s)``; a new window starts at 0.

        Raises:
            ValueError: ``window_s`` is not positive and finite, or ``amount`` is not finite.

        """
        ...

    async def aadd(self, key: str, amount: float, *, window_s: float) -> float:
        """`add` for asyncio code."""
        ...

    def get_until(self, key: str) -> float:
        """The "paused until" epoch seconds stored under ``key``; 0.0 when none (or it passed)."""
        ...

    async def aget_until(self, key: str) -> float:
        """`get_until` for asyncio code."""
        ...

    def set_until(self, key: str, until: float) -> None:
        """Pause ``key`` until the epoch seconds ``until``, unless it is already paused longer.

        The value keeps the max of old and new and is forgotten once it passed.
        """
        ...

    async def aset_until(self, key: str, until: float) -> None:
        """`set_until` for asyncio code."""
        ...

    def add_fields(self, key: str, amounts: Mapping[str, float], *, ttl_s: float) -> None:
        """Add each amount to its field of the record ``key``, kept ``ttl_s`` seconds after this write.

        For aggregates written in the background (hourly token totals per
        tenant for the alerts' baselines): no async twin.
        """
        ...

    def get_fields(self, key: str) -> dict[str, float]:
        """The fields of the record ``key`` (empty when there is none)."""
        ...


def check_gcra_args(rate_per_s: float, burst: float, cost: float) -> None:
    """Refuse arguments that would make the arithmetic meaningless.

    Raises:
        ValueError: ``rate_per_s`` or ``burst`` is not positive and finite, or
            ``cost`` is not finite.

    """
    if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
        raise ValueError(f"rate_per_s must be positive and finite, got {rate_per_s!r}")
    if not (burst > 0 and math.isfinite(burst)):
        raise ValueError(f"burst must be positive and finite, got {burst!r}")
    if not math.isfinite(cost):
        raise ValueError(f"cost must be finite, got {cost!r}")


def check_window(amount: float, window_s: float) -> None:
    """Refuse a window or amount that would make the counter meaningless.

    Raises:
        ValueError: ``window_s`` is not positive and finite, or ``amount`` is not finite.

    """
    if not (window_s > 0 and math.isfinite(window_s)):
        raise ValueError(f"window_s must be positive and finite, got {window_s!r}")
    if not math.isfinite(amount):
        raise ValueError(f"amount must be finite, got {amount!r}")


def gcra_step(
    stamp: float, backlog: float, now: float, *, rate_per_s: float, burst: float, cost: float
) -> tuple[float | None, GcraResult]:
    """One GCRA decision on the state ``(stamp, backlog)``, i.e. ``TAT = stamp + backlog``.

    The Lua script in `llmpulse.state._redis` is a line-by-line copy of this.

    Args:
        stamp: When the state was last written (0.0 for a missing key).
        backlog: ``TAT - stamp`` at that time (0.0 for a missing key).
        now: The current time, on the same clock as ``stamp``.
        rate_per_s: Cost refilled per second.
        burst: Cost admitted at once.
        cost: This request's cost; negative refunds.

    Returns:
        The backlog to store with ``stamp = now`` (None: leave the state as it
        is, the request was refused), and the decision.

    """
    # Conditional expressions rather than max(): this runs on every call, and
    # they halve its cost.
    interval = 1.0 / rate_per_s
    tau = burst * interval
    limit = tau * (1.0 + GCRA_SLACK) + GCRA_SLACK_S
    # What is left of the backlog now; a clock that went back drains nothing.
    elapsed = now - stamp
    left = backlog - elapsed if elapsed > 0.0 else backlog
    left = left if left > 0.0 else 0.0
    new = left + cost * interval
    if cost < 0.0:
        new = new if new > 0.0 else 0.0
    elif new > limit:
        retry = math.inf if cost * interval > limit else new - tau
        return None, GcraResult(False, retry, (tau - left) * rate_per_s if tau > left else 0.0)
    return new, GcraResult(True, 0.0, (tau - new) * rate_per_s if tau > new else 0.0)
