"""Which calls get the costly details (network phase timings), decided once per call.

Metrics, stats and the per-call log line always see every call; details
that cost real CPU on each call are collected for a steady fraction of them.
"""

from __future__ import annotations

__all__ = ["Sampler"]


class Sampler:
    """Picks a steady ``rate`` of calls: the first one, then one in every ``1 / rate``.

    Deterministic rather than random, so a low rate still covers a client's
    first call (where the connection is opened) and tests can rely on it.
    Updates race benignly between threads: at worst a pick is early or late.

    Args:
        rate: Fraction of calls to pick, 0 < rate <= 1.

    """

    __slots__ = ("_credit", "rate")

    def __init__(self, rate: float) -> None:
        if not 0.0 < rate <= 1.0:
            msg = f"sample rate must be in (0, 1], got {rate!r}"
            raise ValueError(msg)
        self.rate = rate
        self._credit = 1.0 - rate  # the first call is picked

    def pick(self) -> bool:
        """Whether this call is one of the sampled ones."""
        credit = self._credit + self.rate
        if credit >= 1.0 - 1e-9:  # tolerate float drift, so 1 in 100 stays 1 in 100
            self._credit = credit - 1.0
            return True
        self._credit = credit
        return False
