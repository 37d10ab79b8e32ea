"""The retry budget of one endpoint: retries may be at most ``ratio`` of requests, plus a reserve.

A token bucket in the manner of Finagle's ``RetryBudget`` and the SRE book's
per-client retry ratio, rather than gRPC A6's throttle: every request
deposits ``ratio`` of a token, every retry withdraws a whole one, and the
balance is capped at ``reserve``. Over any stretch of time, then,

    retries <= reserve + ratio * requests

which is exactly the bound the retry-storm incident asks for (attempts
<= 1.1 x requests + a small fixed reserve with the defaults 0.1 and 10).
gRPC's throttle bounds retries only while failures stay under a fraction
of calls and says less about the total; this states the guarantee in the
numbers an on-call engineer checks. The balance starts full so the first
failures of a quiet client are retried; it cannot grow beyond the reserve
during calm periods, so a long healthy stretch does not bank retries for
the next outage.

Tokens are kept as integers (milli-tokens), so long runs do not drift.
"""

from __future__ import annotations

import threading

__all__ = ["RetryBudget"]

_MILLI = 1000


class RetryBudget:
    """Retries allowed against one endpoint, shared by every thread and task.

    Args:
        ratio: Retries earned per request (0.1: one retry per ten requests).
        reserve: Retries allowed beyond the ratio; also the starting balance.

    Raises:
        ValueError: ``ratio`` is negative or ``reserve`` is negative.

    """

    __slots__ = ("_balance", "_capacity", "_deposit", "_lock", "refused", "spent")

    def __init__(self, ratio: float = 0.1, reserve: int = 10) -> None:
        if ratio < 0:
            raise ValueError(f"retry budget ratio must be >= 0, got {ratio!r}")
        if reserve < 0:
            raise ValueError(f"retry budget reserve must be >= 0, got {reserve!r}")
        self._deposit = round(ratio * _MILLI)
        self._capacity = max(reserve * _MILLI, _MILLI if ratio > 0 else 0)
        self._balance = reserve * _MILLI
        self._lock = threading.Lock()
        self.spent = 0  # retries granted, for telemetry
        self.refused = 0  # retries refused, for telemetry

    def on_request(self) -> None:
        """Credit one new logical call."""
        with self._lock:
            self._balance = min(self._capacity, self._balance + self._deposit)

    def try_spend(self) -> bool:
        """Take one retry if the budget allows it; never waits."""
        with self._lock:
            if self._balance >= _MILLI:
                self._balance -= _MILLI
                self.spent += 1
                return True
            self.refused += 1
            return False

    def refund(self) -> None:
        """Give back a retry that was granted but never sent (the call was cancelled or refused first)."""
        with self._lock:
            self._balance = min(self._capacity, self._balance + _MILLI)
            self.spent -= 1

    @property
    def balance(self) -> float:
        """Retries available right now."""
        return self._balance / _MILLI
