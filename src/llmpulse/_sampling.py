"""Which calls get the costly details (network timings, traces, attempt events), decided once per call.

Metrics, stats and the per-call log line always see every call; details
that cost real CPU on each call are collected for a steady fraction of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["DetailSampler", "Sampler"]


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


class DetailSampler:
    """Decides once per call, when it ends, whether its detailed telemetry is kept.

    Traces, attempt events and captured content are costly to store; the
    summary event, metrics and `llmpulse.stats()` see every call regardless.
    Kept: every failed or retried call; every call while sampling is elevated
    (`llmpulse.elevate_sampling`); for ``slow_for_s`` after a latency spike on
    a model, its calls slower than the p95 the spike was detected at; and a
    steady ``rate`` of the rest.

    Args:
        rate: The baseline share of healthy calls kept (0 < rate <= 1).
        errors: Keep every failed or retried call.
        slow_for_s: How long after a spike slow calls are all kept.
        clock: Epoch seconds (tests pass a fake one).
        elevated: Epoch seconds until which another replica elevated sampling
            (the shared store's view; None: this process only).

    """

    __slots__ = ("_baseline", "_clock", "_elevated_until", "_errors", "_shared", "_slow", "slow_for_s")

    def __init__(
        self,
        rate: float = 0.01,
        *,
        errors: bool = True,
        slow_for_s: float = 600.0,
        clock: Callable[[], float] = time.time,
        elevated: Callable[[], float] | None = None,
    ) -> None:
        self._baseline = Sampler(rate)
        self._errors = errors
        self.slow_for_s = slow_for_s
        self._clock = clock
        self._shared = elevated
        self._elevated_until = 0.0
        self._slow: dict[str, tuple[float, float]] = {}  # model -> (p95 at the spike, until)

    def keep(self, *, failed: bool, retried: bool, latency_s: float, model: str | None) -> bool:
        """Whether this finished call's details are kept."""
        if failed or retried:
            return self._errors
        if self._slow or self._elevated_until or self._shared is not None:
            now = self._clock()
            if now < self._elevated_until or (self._shared is not None and now < self._shared()):
                return True
            slow = self._slow.get(model or "")
            if slow is not None and now < slow[1] and latency_s > slow[0]:
                return True
        return self._baseline.pick()

    def elevate(self, seconds: float) -> None:
        """Keep every call's details for ``seconds`` from now (in this process)."""
        self._elevated_until = max(self._elevated_until, self._clock() + seconds)

    def spike(self, model: str, p95_s: float) -> None:
        """A latency spike on ``model``: keep its calls slower than ``p95_s`` for ``slow_for_s``."""
        self._slow[model] = (p95_s, self._clock() + self.slow_for_s)
