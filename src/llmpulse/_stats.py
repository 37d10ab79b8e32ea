"""`llmpulse.stats()`: rolling in-process statistics, in bounded memory.

Time is cut into buckets (10 s by default) kept in a ring covering the
horizon (1 h); each bucket holds, per group (overall, model, route,
tenant), counters and log-scale latency histograms: no per-call lists.
Percentiles come from the merged histograms of the buckets in the window,
interpolated within a bin: bins grow by 25 %, so a percentile is within
about ±12 % of the true value (the "bucket resolution").
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .events import CallEvent

__all__ = ["GroupStats", "RollingStats", "StatsSnapshot"]

_MIN_S = 0.001
_RATIO = 1.25
_LOG_RATIO = math.log(_RATIO)
_BINS = 64  # 1 ms ... ~1.3 h
_DIMENSIONS = ("model", "route", "tenant")


def _bin(seconds: float) -> int:
    if seconds <= _MIN_S:
        return 0
    return min(int(math.log(seconds / _MIN_S) / _LOG_RATIO), _BINS - 1)


class _Acc:
    """Counters of one group in one bucket."""

    __slots__ = (
        "abandoned",
        "calls",
        "cancelled",
        "cost",
        "errors",
        "input_tokens",
        "latency",
        "output_tokens",
        "rejected",
        "retries",
        "status_5xx",
        "status_429",
        "ttft",
        "unpriced",
    )

    def __init__(self) -> None:
        self.calls = self.errors = self.cancelled = self.abandoned = self.rejected = 0
        self.status_429 = self.status_5xx = self.retries = 0
        self.input_tokens = self.output_tokens = self.unpriced = 0
        self.cost = 0.0
        self.latency = [0] * _BINS
        self.ttft: list[int] | None = None

    def add(self, event: CallEvent, latency_bin: int, ttft_bin: int | None) -> None:
        self.calls += 1
        outcome = event.outcome
        if outcome == "error":
            self.errors += 1
        elif outcome == "cancelled":
            self.cancelled += 1
        elif outcome == "abandoned":
            self.abandoned += 1
        elif outcome == "rejected":
            self.rejected += 1
        status = event.http_status
        if status == 429:
            self.status_429 += 1
        elif status is not None and status >= 500:
            self.status_5xx += 1
        self.retries += event.retries
        self.input_tokens += event.input_tokens or 0
        self.output_tokens += event.output_tokens or 0
        if event.cost_usd is None:
            if event.attempts:
                self.unpriced += 1
        else:
            self.cost += event.cost_usd
        self.latency[latency_bin] += 1
        if ttft_bin is not None:
            if self.ttft is None:
                self.ttft = [0] * _BINS
            self.ttft[ttft_bin] += 1

    def merge(self, other: _Acc) -> None:
        for name in (
            "calls",
            "errors",
            "cancelled",
            "abandoned",
            "rejected",
            "status_429",
            "status_5xx",
            "retries",
            "input_tokens",
            "output_tokens",
            "unpriced",
            "cost",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latency = [a + b for a, b in zip(self.latency, other.latency, strict=True)]
        if other.ttft is not None:
            mine = self.ttft or [0] * _BINS
            self.ttft = [a + b for a, b in zip(mine, other.ttft, strict=True)]


@dataclass(frozen=True, slots=True)
class GroupStats:
    """Statistics of one group (all calls, one model, one route or one tenant) over a window.

    Attributes:
        calls: Logical calls that finished in the window.
        errors: Calls with outcome "error".
        cancelled: Calls with outcome "cancelled".
        abandoned: Streams closed or dropped early.
        rejected: Calls refused before sending.
        status_429: Calls whose last attempt got a 429.
        status_5xx: Calls whose last attempt got a 5xx.
        error_rate: ``errors / calls`` (0.0 without calls).
        rate_429: ``status_429 / calls``.
        p50_s: Median latency (None without calls); p95_s and p99_s likewise.
        ttft_p50_s: Median time to first token of streams (None without streams).
        input_tokens: Sum of known input tokens.
        output_tokens: Sum of known output tokens.
        cost_usd: Sum of known costs.
        unpriced_calls: Calls sent whose cost is unknown.
        retries: Retries made.
        calls_per_s: ``calls / window``.
    """

    calls: int
    errors: int
    cancelled: int
    abandoned: int
    rejected: int
    status_429: int
    status_5xx: int
    error_rate: float
    rate_429: float
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    unpriced_calls: int
    retries: int
    calls_per_s: float


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """`llmpulse.stats()` result: overall and per model, route and tenant."""

    window_s: float
    total: GroupStats
    by_model: dict[str, GroupStats] = field(default_factory=dict)
    by_route: dict[str, GroupStats] = field(default_factory=dict)
    by_tenant: dict[str, GroupStats] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, e.g. for a JSON health endpoint."""
        return asdict(self)


def _quantile(hist: list[int] | None, q: float) -> float | None:
    if hist is None:
        return None
    n = sum(hist)
    if n == 0:
        return None
    rank = q * n
    seen = 0
    for i, count in enumerate(hist):
        if count and seen + count >= rank:
            # Interpolate geometrically inside the bin [lo, lo * ratio).
            frac = (rank - seen) / count
            return float(_MIN_S * _RATIO ** (i + frac))
        seen += count
    return float(_MIN_S * _RATIO**_BINS)


def _group(acc: _Acc, window_s: float) -> GroupStats:
    calls = acc.calls
    return GroupStats(
        calls=calls,
        errors=acc.errors,
        cancelled=acc.cancelled,
        abandoned=acc.abandoned,
        rejected=acc.rejected,
        status_429=acc.status_429,
        status_5xx=acc.status_5xx,
        error_rate=acc.errors / calls if calls else 0.0,
        rate_429=acc.status_429 / calls if calls else 0.0,
        p50_s=_quantile(acc.latency, 0.50),
        p95_s=_quantile(acc.latency, 0.95),
        p99_s=_quantile(acc.latency, 0.99),
        ttft_p50_s=_quantile(acc.ttft, 0.50),
        ttft_p95_s=_quantile(acc.ttft, 0.95),
        input_tokens=acc.input_tokens,
        output_tokens=acc.output_tokens,
        cost_usd=acc.cost,
        unpriced_calls=acc.unpriced,
        retries=acc.retries,
        calls_per_s=calls / window_s if window_s > 0 else 0.0,
    )


class RollingStats:
    """Rolling statistics of finished calls.

    Args:
        clock: Monotonic seconds (injected by tests).
        bucket_s: Time resolution of the window.
        horizon_s: Longest window kept.
        max_keys: Distinct values kept per dimension before "other".
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        bucket_s: float = 10.0,
        horizon_s: float = 3600.0,
        max_keys: int = 1000,
    ) -> None:
        self._clock = clock
        self._bucket_s = bucket_s
        self._slots = max(1, math.ceil(horizon_s / bucket_s))
        self._max_keys = max_keys
        self._ring: list[tuple[int, dict[tuple[str, str], _Acc]] | None] = [None] * self._slots
        self._seen: dict[str, set[str]] = {d: set() for d in _DIMENSIONS}
        self._lock = threading.Lock()

    def _key(self, dimension: str, value: str | None) -> str:
        name = value if value is not None else "unknown"
        seen = self._seen[dimension]
        if name in seen:
            return name
        if len(seen) >= self._max_keys:
            return "other"
        seen.add(name)
        return name

    def record(self, event: CallEvent) -> None:
        """Count one finished call (O(1), a short lock)."""
        latency_bin = _bin(event.latency_s)
        ttft_bin = None if event.ttft_s is None else _bin(event.ttft_s)
        epoch = int(self._clock() // self._bucket_s)
        with self._lock:
            slot = epoch % self._slots
            entry = self._ring[slot]
            if entry is None or entry[0] != epoch:
                entry = (epoch, {})
                self._ring[slot] = entry
            groups = entry[1]
            for key in (
                ("total", ""),
                ("model", self._key("model", event.model)),
                ("route", self._key("route", event.route)),
                ("tenant", self._key("tenant", event.tenant)),
            ):
                acc = groups.get(key)
                if acc is None:
                    acc = groups[key] = _Acc()
                acc.add(event, latency_bin, ttft_bin)

    def _merged(self, window_s: float) -> dict[tuple[str, str], _Acc]:
        now_epoch = int(self._clock() // self._bucket_s)
        oldest = now_epoch - max(1, math.ceil(window_s / self._bucket_s)) + 1
        merged: dict[tuple[str, str], _Acc] = {}
        with self._lock:
            for entry in self._ring:
                if entry is None or not oldest <= entry[0] <= now_epoch:
                    continue
                for key, acc in entry[1].items():
                    target = merged.get(key)
                    if target is None:
                        target = merged[key] = _Acc()
                    target.merge(acc)
        return merged

    def snapshot(self, window_s: float = 300.0) -> StatsSnapshot:
        """Statistics of the calls that finished in the last ``window_s`` seconds."""
        window_s = min(window_s, self._slots * self._bucket_s)
        merged = self._merged(window_s)
        by: dict[str, dict[str, GroupStats]] = {d: {} for d in _DIMENSIONS}
        for (dimension, name), acc in merged.items():
            if dimension in by:
                by[dimension][name] = _group(acc, window_s)
        return StatsSnapshot(
            window_s=window_s,
            total=_group(merged.get(("total", ""), _Acc()), window_s),
            by_model=by["model"],
            by_route=by["route"],
            by_tenant=by["tenant"],
        )

    def top(
        self, dimension: str = "tenant", by: str = "requests", n: int = 5, window_s: float = 300.0
    ) -> list[tuple[str, float]]:
        """The ``n`` largest groups of a dimension by "requests", "tokens" or "cost"."""
        if dimension not in _DIMENSIONS or by not in ("requests", "tokens", "cost"):
            raise ValueError(
                f"top(dimension={dimension!r}, by={by!r}): use {_DIMENSIONS} and requests/tokens/cost"
            )
        rows: list[tuple[str, float]] = []
        for (dim, name), acc in self._merged(window_s).items():
            if dim != dimension:
                continue
            value = {"requests": acc.calls, "tokens": acc.input_tokens + acc.output_tokens, "cost": acc.cost}[
                by
            ]
            rows.append((name, float(value)))
        rows.sort(key=lambda r: (-r[1], r[0]))
        return rows[:n]
