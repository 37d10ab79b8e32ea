"""A fixed-size quantile sketch: log-spaced buckets, bounded relative error.

The DDSketch idea: bucket ``i`` holds values in ``(gamma**(i-1), gamma**i]``
with ``gamma = (1 + a) / (1 - a)``; answering with ``2 * gamma**i / (gamma + 1)``
is within ``a`` (relative) of every value in the bucket, so any quantile is
within ``a`` of an exact order statistic. Here ``a`` is 1 %. Unlike DDSketch
the buckets are a fixed array over ``[MIN_VALUE, MAX_VALUE]``, so memory is
the same (~8 KB) whatever is added.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator

__all__ = ["MAX_VALUE", "MIN_VALUE", "RELATIVE_ACCURACY", "Sketch"]

RELATIVE_ACCURACY = 0.01
"""Every quantile the sketch returns is within 1 % of an exact order statistic."""
MIN_VALUE = 1e-4
"""Smaller values (incl. 0) count in the lowest bucket, reported as ``MIN_VALUE``."""
MAX_VALUE = 1e5
"""Larger values count in the highest bucket (about 28 hours: no LLM call takes longer)."""

_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
_OFFSET = math.ceil(math.log(MIN_VALUE) / _LOG_GAMMA)
_SIZE = math.ceil(math.log(MAX_VALUE) / _LOG_GAMMA) - _OFFSET + 1


def _bucket_value(index: int) -> float:
    # The midpoint (in relative terms) of bucket `index`; the first one is a floor.
    if index == 0:
        return MIN_VALUE
    return 2 * _GAMMA ** (index + _OFFSET) / (_GAMMA + 1)


class Sketch:
    """Counts of values in fixed log-spaced buckets; quantiles within 1 %."""

    __slots__ = ("count", "counts", "max", "min")

    def __init__(self) -> None:
        self.counts = array("q", bytes(8 * _SIZE))
        self.count = 0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value: float) -> None:
        """Count one value (seconds)."""
        if value <= MIN_VALUE:
            index = 0
        elif value >= MAX_VALUE:
            index = _SIZE - 1
        else:
            index = math.ceil(math.log(value) / _LOG_GAMMA) - _OFFSET
        self.counts[index] += 1
        self.count += 1
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (0..1) by the lower rank ``floor(q * (count - 1))``; None if empty.

        The answer is clamped to the exact min and max seen, so p0 and p100
        are exact.
        """
        if self.count == 0:
            return None
        rank = math.floor(q * (self.count - 1))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen > rank:
                return min(max(_bucket_value(index), self.min), self.max)
        return self.max  # pragma: no cover - the counts sum to `count`

    def buckets(self) -> Iterator[tuple[float, int]]:
        """``(representative value, count)`` of every non-empty bucket, ascending."""
        for index, n in enumerate(self.counts):
            if n:
                yield _bucket_value(index), n
