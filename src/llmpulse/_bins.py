"""Log-scale latency histograms: the sketch behind `llmpulse.stats()` and the report, and the alert bins.

`Sketch` is DDSketch's mapping over a fixed range: bucket ``i`` holds the
values in ``(gamma**(i-1), gamma**i]`` with ``gamma = (1 + a) / (1 - a)``
(1.0202 for ``a`` = 1 %), and answers with ``2 * gamma**i / (gamma + 1)``,
which is within ``a`` of every value in the bucket. So a quantile is within
1 % of the exact order statistic of that rank, for values between
``MIN_VALUE`` (0.1 ms) and ``MAX_VALUE`` (about 28 h); outside, values are
counted in the edge buckets. A sketch holds one count per bucket from its
lowest to its highest value, so never more than ``BUCKETS`` (1,037), and
usually far fewer. Sketches merge exactly: merging and then asking a
quantile gives the same answer as one sketch of all the values.

`LogBins` are the coarser fixed bins the alert rules use (5 % wide there).
"""

from __future__ import annotations

import math
import operator
from array import array
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from itertools import accumulate

__all__ = [
    "BUCKETS",
    "MAX_VALUE",
    "MIN_VALUE",
    "RELATIVE_ACCURACY",
    "LogBins",
    "Sketch",
    "bucket_index",
]

RELATIVE_ACCURACY = 0.01
"""Every quantile a `Sketch` returns is within 1 % of an exact order statistic."""
MIN_VALUE = 1e-4
"""Smaller values (incl. 0, negatives and NaN) count in the lowest bucket, reported as at most 0.1 ms."""
MAX_VALUE = 1e5
"""Larger values count in the highest bucket (about 28 hours: no LLM call takes longer)."""

_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
_OFFSET = math.ceil(math.log(MIN_VALUE) / _LOG_GAMMA)
BUCKETS = math.ceil(math.log(MAX_VALUE) / _LOG_GAMMA) - _OFFSET + 1
"""How many buckets a sketch can use: the most counts it ever holds."""
_TOP = BUCKETS - 1
# One int object per bucket: dict keys of `llmpulse.stats()` then share these instead of each
# holding a fresh 28-byte int (ints over 256 are not cached): 3-9 MiB over an hour of 1,000 tenants.
_INDEXES = tuple(range(BUCKETS))


def bucket_index(value: float) -> int:
    """The bucket of ``value`` (seconds); never raises, whatever the float."""
    if value > MIN_VALUE:  # False for NaN as well
        if value < MAX_VALUE:
            return _INDEXES[math.ceil(math.log(value) / _LOG_GAMMA) - _OFFSET]
        return _TOP
    return 0


def _bucket_value(index: int) -> float:
    # The midpoint (in relative terms) of bucket `index`; the first one is a floor.
    if index == 0:
        return MIN_VALUE
    return 2 * _GAMMA ** (index + _OFFSET) / (_GAMMA + 1)


class Sketch:
    """Counts of values in log buckets; quantiles within 1 %, exact min and max.

    The counts are one dense array over the buckets from the lowest to the
    highest one used, as DDSketch's dense store: 8 bytes a bucket, so at most
    ``BUCKETS * 8`` bytes (8.3 KB) however many values, and one 8-byte slot for
    a sketch of identical values. ``counts[i]`` is the count of bucket
    ``offset + i``.

    `llmpulse.stats()` keeps sparse ``{bucket_index: count}`` dicts per group
    and bucket instead (a group with a few calls would fill a dense array
    with zeros) and makes sketches of them with `of` when asked.
    """

    __slots__ = ("counts", "max", "min", "offset")

    def __init__(self) -> None:
        self.counts = array("Q")
        self.offset = 0
        self.min = math.inf
        self.max = -math.inf

    @property
    def count(self) -> int:
        """How many values were added."""
        # Summed when asked rather than kept: one update fewer on the hot path.
        return sum(self.counts)

    @classmethod
    def of(cls, counts: Mapping[int, int], low: float, high: float) -> Sketch:
        """The sketch of sparse ``{bucket_index: count}`` counts of values from ``low`` to ``high``."""
        sketch = cls()
        if counts:
            offset = min(counts)
            dense = array("Q", bytes(8 * (max(counts) - offset + 1)))
            for index, n in counts.items():
                dense[index - offset] += n
            sketch.counts, sketch.offset, sketch.min, sketch.max = dense, offset, low, high
        return sketch

    def add(self, value: float) -> None:
        """Count one value (seconds); NaN and negatives count as 0."""
        index = bucket_index(value)
        i = index - self.offset
        if 0 <= i < len(self.counts):
            self.counts[i] += 1
        else:
            self._widen(index, 1)
        value = value if value >= 0 else 0.0
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def _widen(self, index: int, n: int) -> None:
        """Add ``n`` to bucket ``index``, which lies outside the array: grow it to reach it."""
        if self.counts:
            self._cover(index, index + 1)
            self.counts[index - self.offset] += n
        else:
            self.counts = array("Q", (n,))
            self.offset = index

    def _cover(self, low: int, high: int) -> None:
        """Grow the array to hold buckets ``low`` to ``high - 1`` too."""
        counts, offset = self.counts, self.offset
        if not counts:
            self.counts, self.offset = array("Q", bytes(8 * (high - low))), low
            return
        low = min(low, offset)
        high = max(high, offset + len(counts))
        if high - low == len(counts):
            return
        grown = array("Q", bytes(8 * (high - low)))
        start = offset - low
        grown[start : start + len(counts)] = counts
        self.counts = grown
        self.offset = low

    def merge(self, other: Sketch) -> None:
        """Add ``other``'s values to this sketch."""
        theirs = other.counts
        if not theirs:
            return
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self._cover(other.offset, other.offset + len(theirs))
        start = other.offset - self.offset
        end = start + len(theirs)
        self.counts[start:end] = array("Q", map(operator.add, self.counts[start:end], theirs))

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (0..1) by the lower rank ``floor(q * (count - 1))``; None if empty.

        The lowest and highest ranks answer the exact min and max seen, and
        every other answer is clamped between them (so identical values are
        reported exactly).
        """
        return self.quantiles((q,))[0]

    def quantiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """`quantile` of each of ``qs``."""
        running = list(accumulate(self.counts))  # in C, as bisect: snapshots ask thousands of these
        count = running[-1] if running else 0
        if count == 0:
            return [None] * len(qs)
        out: list[float | None] = []
        for q in qs:
            rank = math.floor(q * (count - 1))
            if rank <= 0:
                out.append(self.min)
            elif rank >= count - 1:
                out.append(self.max)
            else:
                value = _bucket_value(self.offset + bisect_right(running, rank))
                out.append(min(max(value, self.min), self.max))
        return out

    def buckets(self) -> Iterator[tuple[float, int]]:
        """``(representative value, count)`` of every non-empty bucket, ascending."""
        for i, n in enumerate(self.counts):
            if n:
                yield _bucket_value(self.offset + i), n


class LogBins:
    """``bins`` log bins of width ``ratio`` from ``min_s``, plus one under and one over.

    Args:
        min_s: The lower edge of the first log bin.
        ratio: Each bin's upper edge over its lower one (1.25: percentiles within 25 %).
        bins: How many log bins; values beyond the last one share the overflow bin.

    """

    __slots__ = ("_inv_log_ratio", "min_s", "overflow", "ratio", "top_s")

    def __init__(self, min_s: float, ratio: float, bins: int) -> None:
        self.min_s = min_s
        self.ratio = ratio
        self.top_s = min_s * ratio**bins
        self.overflow = bins + 1
        self._inv_log_ratio = 1.0 / math.log(ratio)

    def index(self, seconds: float) -> int:
        """The bin of ``seconds``; inf, NaN and negatives land in an edge bin instead of raising."""
        if seconds >= self.top_s:
            return self.overflow
        if seconds >= self.min_s:
            return int(math.log(seconds / self.min_s) * self._inv_log_ratio) + 1
        return 0

    def value(self, index: int, frac: float) -> float:
        """The value at fraction ``frac`` of bin ``index`` (geometric inside log bins)."""
        if index == 0:
            return self.min_s * frac
        if index >= self.overflow:
            return self.top_s
        return float(self.min_s * self.ratio ** (index - 1 + frac))

    def quantiles(self, hist: Mapping[int, int], qs: tuple[float, ...]) -> list[float | None]:
        """The ``qs`` quantiles of a ``{bin: count}`` histogram (None for each when it is empty)."""
        total = sum(hist.values())
        if not total:
            return [None] * len(qs)
        bins = sorted(hist.items())
        out: list[float | None] = []
        for q in qs:
            rank = q * total
            seen = 0
            for index, count in bins:
                if seen + count >= rank:
                    out.append(self.value(index, (rank - seen) / count))
                    break
                seen += count
            else:  # unreachable while q <= 1; keeps the result aligned with qs
                out.append(self.value(bins[-1][0], 1.0))
        return out
