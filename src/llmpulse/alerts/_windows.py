"""The counters alert rules read: one-minute buckets in fixed rings, per model and in total.

Recording a call is O(1): a handful of counter updates in the current
minute's bucket. Memory is bounded by the rings (70 minutes with latency
histograms per model, 6 hours of totals for the SLO), the model cap, and the
histogram bins (5 % wide, sparse), never by the number of calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from .._bins import LogBins

__all__ = ["Counts", "LatencyHistogram", "Ring", "Totals"]

T = TypeVar("T")

# Percentiles within 5 %: a 600 ms threshold is not crossed by a bin's width (stats() bins are 25 %).
_BINS = LogBins(min_s=0.001, ratio=1.05, bins=319)  # up to ~5.7 h


class LatencyHistogram:
    """Seconds in sparse log bins 5 % wide (see `llmpulse._bins`)."""

    __slots__ = ("bins", "count")

    def __init__(self) -> None:
        self.bins: dict[int, int] = {}
        self.count = 0

    def add(self, seconds: float) -> None:
        """Count one value (inf, NaN and negatives land in an edge bin instead of raising)."""
        index = _BINS.index(seconds)
        self.bins[index] = self.bins.get(index, 0) + 1
        self.count += 1

    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s counts to this one."""
        for index, n in other.bins.items():
            self.bins[index] = self.bins.get(index, 0) + n
        self.count += other.count

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile, interpolated inside its bin; None when empty."""
        return _BINS.quantiles(self.bins, (q,))[0]


class Counts:
    """One scope's calls in one minute (or merged over a window)."""

    __slots__ = ("a5xx", "a429", "attempts", "cost", "errors", "latency", "s5xx", "s429", "sent", "tokens")

    def __init__(self) -> None:
        self.sent = 0  # calls that reached the provider and ended ok or in error
        self.errors = 0  # of those, the ones that ended in error
        self.s5xx = 0  # of those, final answer 5xx
        self.s429 = 0  # of those, final answer 429
        self.tokens = 0
        self.cost = 0.0
        self.latency = LatencyHistogram()
        self.attempts = 0  # HTTP attempts of the calls that ended: the provider's side, retries included
        self.a5xx = 0
        self.a429 = 0

    def merge(self, other: Counts) -> None:
        """Add ``other`` to this one."""
        self.sent += other.sent
        self.errors += other.errors
        self.s5xx += other.s5xx
        self.s429 += other.s429
        self.tokens += other.tokens
        self.cost += other.cost
        self.latency.merge(other.latency)
        self.attempts += other.attempts
        self.a5xx += other.a5xx
        self.a429 += other.a429


class Totals:
    """The SLO's two counters for one minute, for every call: kept 6 hours."""

    __slots__ = ("errors", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.errors = 0


class Ring(Generic[T]):
    """``size`` one-minute buckets; a bucket is reset when its slot comes round again."""

    __slots__ = ("_factory", "_minutes", "_slots")

    def __init__(self, size: int, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._minutes = [-1] * size
        self._slots: list[dict[str, T]] = [{} for _ in range(size)]

    def bucket(self, minute: int) -> dict[str, T]:
        """The bucket of ``minute`` (scope -> counters), emptied if it held an older minute."""
        i = minute % len(self._slots)
        if self._minutes[i] != minute:
            self._minutes[i] = minute
            self._slots[i] = {}
        return self._slots[i]

    def scope(self, minute: int, name: str) -> T:
        """The counters of ``name`` in the bucket of ``minute``, made on first use."""
        bucket = self.bucket(minute)
        found = bucket.get(name)
        if found is None:
            found = bucket[name] = self._factory()
        return found

    def window(self, first: int, last: int) -> Iterable[dict[str, T]]:
        """The buckets of minutes ``first`` to ``last`` (inclusive) still held."""
        size = len(self._slots)
        for minute in range(max(first, last - size + 1), last + 1):
            i = minute % size
            if self._minutes[i] == minute:
                yield self._slots[i]
