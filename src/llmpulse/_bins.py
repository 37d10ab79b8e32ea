"""Log-spaced bins for latencies: the histograms behind `llmpulse.stats()` and the alert rules.

A value lands in bin ``int(log(v / min_s) / log(ratio)) + 1``; bin 0 holds
everything under ``min_s`` and the last bin everything over the top. A
percentile is interpolated inside the bin that holds the true (nearest-rank)
value, geometrically, so its error is under one bin width: ``ratio - 1`` of
the value. Histograms are plain ``{bin: count}`` dicts, sparse and mergeable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["LogBins"]


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
