"""One streaming pass over call events into fixed-size totals.

Memory does not grow with the number of lines: per group a handful of
counters (and, per model, two fixed quantile sketches), at most
``MAX_GROUPS`` groups per dimension (later keys fold into ``OTHER``), and at
most ``MAX_TIME_BUCKETS`` time buckets (their width doubles when needed), each
with a latency sketch, and at most ``MAX_ERROR_KINDS`` kinds of error.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._read import Call, Skipped
from ._sketch import RELATIVE_ACCURACY, Sketch

__all__ = [
    "DIMENSIONS",
    "MAX_ERROR_KINDS",
    "MAX_GROUPS",
    "MAX_TIME_BUCKETS",
    "OTHER",
    "Aggregate",
    "ErrorKinds",
    "GroupStats",
    "Point",
    "Timeline",
    "error_kind",
]

DIMENSIONS = ("model", "tenant", "route")
MAX_GROUPS = {"model": 500, "tenant": 10_000, "route": 10_000}
"""Distinct keys kept per dimension; models carry sketches (up to 1,037 buckets each), so fewer."""
OTHER = "(other)"
MAX_TIME_BUCKETS = 720
MAX_ERROR_KINDS = 200
BASE_BUCKET_S = 60
_ERROR_OUTCOMES = frozenset(("error", "rejected"))
_PICO = 1e12  # costs are summed as integer picodollars: exact and order-independent


class GroupStats:
    """Totals of the calls of one group (one model, tenant, route, or all calls)."""

    __slots__ = (
        "attempts",
        "calls",
        "cost_pico",
        "errors",
        "input_tokens",
        "latency",
        "output_tokens",
        "rate_limited",
        "retried",
        "ttft",
        "unpriced",
    )

    def __init__(self, *, sketches: bool) -> None:
        self.calls = 0
        self.errors = 0
        self.rate_limited = 0
        self.attempts = 0
        self.retried = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_pico = 0
        self.unpriced = 0
        # Latency of calls that were sent (not rejected, not cache hits); TTFT of streams.
        self.latency: Sketch | None = Sketch() if sketches else None
        self.ttft: Sketch | None = Sketch() if sketches else None

    def add(self, call: Call, cost_pico: int | None) -> None:
        """Count one call."""
        self.calls += 1
        if call.outcome in _ERROR_OUTCOMES:
            self.errors += 1
        if call.http_status == 429:
            self.rate_limited += 1
        self.attempts += call.attempts
        if call.attempts > 1:
            self.retried += 1
        self.input_tokens += call.input_tokens
        self.output_tokens += call.output_tokens
        if cost_pico is None:
            self.unpriced += 1
        else:
            self.cost_pico += cost_pico
        if self.latency is not None and call.attempts > 0:
            self.latency.add(call.latency_s)
        if self.ttft is not None and call.ttft_s is not None:
            self.ttft.add(call.ttft_s)

    @property
    def cost_usd(self) -> float:
        """Sum of the known costs."""
        return self.cost_pico / _PICO

    @property
    def error_rate(self) -> float:
        """Share of calls that ended in error or were rejected by a policy."""
        return self.errors / self.calls if self.calls else 0.0

    @property
    def rate_limited_rate(self) -> float:
        """Share of calls whose last attempt got HTTP 429."""
        return self.rate_limited / self.calls if self.calls else 0.0

    @property
    def attempts_per_call(self) -> float:
        """Mean HTTP attempts per call."""
        return self.attempts / self.calls if self.calls else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready totals, rates and quantiles."""
        out: dict[str, Any] = {
            "calls": self.calls,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "rate_limited": self.rate_limited,
            "rate_limited_rate": self.rate_limited_rate,
            "attempts": self.attempts,
            "attempts_per_call": self.attempts_per_call,
            "retried_calls": self.retried,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "unpriced_calls": self.unpriced,
        }
        for name, sketch in (("latency_s", self.latency), ("ttft_s", self.ttft)):
            if sketch is not None:
                out[name] = _quantiles(sketch)
        return out


class Groups:
    """`GroupStats` per key of one dimension, at most ``cap`` keys, the rest in `OTHER`."""

    __slots__ = ("cap", "folded_calls", "sketches", "stats")

    def __init__(self, cap: int, *, sketches: bool) -> None:
        self.cap = cap
        self.sketches = sketches
        self.stats: dict[str, GroupStats] = {}
        self.folded_calls = 0
        """Calls counted in `OTHER` because their key came after ``cap`` others."""

    def get(self, key: str) -> GroupStats:
        """The stats of ``key`` (of `OTHER` once ``cap`` keys exist)."""
        stats = self.stats.get(key)
        if stats is None:
            if len(self.stats) >= self.cap:
                self.folded_calls += 1
                key = OTHER
                stats = self.stats.get(key)
            if stats is None:
                stats = self.stats[key] = GroupStats(sketches=self.sketches)
        return stats

    def ranked_by_errors(self) -> list[tuple[str, GroupStats]]:
        """Groups with failed calls, most first; ties by error rate, then name."""
        with_errors = [kv for kv in self.stats.items() if kv[1].errors]
        return sorted(with_errors, key=lambda kv: (-kv[1].errors, -kv[1].error_rate, kv[0]))

    def ranked(self, *, by_cost: bool) -> list[tuple[str, GroupStats]]:
        """Groups by cost (or calls), largest first; ties by name."""
        if by_cost:
            return sorted(self.stats.items(), key=lambda kv: (-kv[1].cost_pico, -kv[1].calls, kv[0]))
        return sorted(self.stats.items(), key=lambda kv: (-kv[1].calls, -kv[1].cost_pico, kv[0]))


class Bucket:
    """The calls of one time bucket: cost, counts and a latency sketch."""

    __slots__ = ("calls", "cost_pico", "errors", "latency", "rate_limited")

    def __init__(self) -> None:
        self.cost_pico = 0
        self.calls = 0
        self.errors = 0
        self.rate_limited = 0
        self.latency = Sketch()
        """Latency of the bucket's calls that were sent, as in `GroupStats.latency`."""

    def merge(self, other: Bucket) -> None:
        """Add ``other``'s calls (exact: counts add, sketches merge)."""
        self.cost_pico += other.cost_pico
        self.calls += other.calls
        self.errors += other.errors
        self.rate_limited += other.rate_limited
        self.latency.merge(other.latency)


class Point(NamedTuple):
    """One time bucket as the views read it."""

    start: float
    """Bucket start, epoch seconds."""
    cost_usd: float
    calls: int
    errors: int
    rate_limited: int
    latency: Sketch


class Timeline:
    """Cost, calls, errors, 429s and latency per time bucket; at most ``cap`` buckets.

    Buckets start at ``BASE_BUCKET_S`` wide and are aligned on the epoch,
    so doubling the width merges pairs exactly (bucket ``k`` into ``k // 2``).
    Each bucket keeps a latency sketch (at most 8.3 KB, usually far less), so
    the latency quantiles over time are as accurate as the per-model ones.
    """

    __slots__ = ("buckets", "cap", "width_s")

    def __init__(self, cap: int = MAX_TIME_BUCKETS) -> None:
        self.cap = cap
        self.width_s = BASE_BUCKET_S
        self.buckets: dict[int, Bucket] = {}

    def add(
        self,
        time: float,
        cost_pico: int,
        error: bool,
        *,
        rate_limited: bool = False,
        latency_s: float | None = None,
    ) -> None:
        """Count one call at ``time`` (epoch seconds); ``latency_s`` None for a call never sent."""
        index = int(time // self.width_s)
        bucket = self.buckets.get(index)
        if bucket is None:
            bucket = self.buckets[index] = Bucket()
            if len(self.buckets) > self.cap:
                self._coarsen()
                bucket = self.buckets[int(time // self.width_s)]
        bucket.cost_pico += cost_pico
        bucket.calls += 1
        bucket.errors += error
        bucket.rate_limited += rate_limited
        if latency_s is not None:
            bucket.latency.add(latency_s)

    def _coarsen(self) -> None:
        while len(self.buckets) > self.cap:
            self.width_s *= 2
            merged: dict[int, Bucket] = {}
            for index, bucket in sorted(self.buckets.items()):
                into = merged.get(index // 2)
                if into is None:
                    merged[index // 2] = bucket  # reused: its partner, if any, merges into it
                else:
                    into.merge(bucket)
            self.buckets = merged

    def points(self) -> list[Point]:
        """Every non-empty bucket, in time order."""
        return [
            Point(index * self.width_s, b.cost_pico / _PICO, b.calls, b.errors, b.rate_limited, b.latency)
            for index, b in sorted(self.buckets.items())
        ]


class ErrorKinds:
    """Failed calls by (error type, HTTP status): count, first and last start; at most ``cap`` kinds."""

    __slots__ = ("cap", "folded_calls", "kinds")

    def __init__(self, cap: int = MAX_ERROR_KINDS) -> None:
        self.cap = cap
        self.kinds: dict[tuple[str, int | None], list[float]] = {}  # -> [count, first, last]
        self.folded_calls = 0
        """Failed calls counted under `OTHER` because their kind came after ``cap`` others."""

    def add(self, call: Call) -> None:
        """Count one failed (``error`` or ``rejected``) call."""
        key = (error_kind(call), call.http_status)
        entry = self.kinds.get(key)
        if entry is None:
            if len(self.kinds) >= self.cap:
                self.folded_calls += 1
                key = (OTHER, None)
                entry = self.kinds.get(key)
            if entry is None:
                entry = self.kinds[key] = [0, call.time, call.time]
        entry[0] += 1
        entry[1] = min(entry[1], call.time)
        entry[2] = max(entry[2], call.time)

    def ranked(self) -> list[tuple[str, int | None, int, float, float]]:
        """``(kind, status, calls, first, last)``, most calls first; ties by first seen."""
        rows = [
            (kind, status, int(n), first, last) for (kind, status), (n, first, last) in self.kinds.items()
        ]
        return sorted(rows, key=lambda row: (-row[2], row[3], row[0]))


def error_kind(call: Call) -> str:
    """What went wrong: the exception class, ``rejected: <policy reason>``, or ``(none)``."""
    if call.error_type is not None:
        return call.error_type
    if call.outcome == "rejected":
        return f"rejected: {call.rejected_reason or '(no reason)'}"
    return "(none)"


class Aggregate:
    """Everything the report shows, built by `add` one call at a time."""

    def __init__(
        self, *, max_groups: dict[str, int] | None = None, max_time_buckets: int = MAX_TIME_BUCKETS
    ) -> None:
        caps = max_groups or MAX_GROUPS
        self.total = GroupStats(sketches=True)
        self.groups = {dim: Groups(caps[dim], sketches=dim == "model") for dim in DIMENSIONS}
        self.timeline = Timeline(max_time_buckets)
        self.error_kinds = ErrorKinds()
        self.skipped = Skipped()
        self.outside_window = 0
        """Call events left out by ``--since`` / ``--until``."""
        self.first: float | None = None
        self.last: float | None = None

    def add(self, call: Call) -> None:
        """Count one call in the totals, its groups and the timeline."""
        cost = None if call.cost_usd is None else round(call.cost_usd * _PICO)
        self.total.add(call, cost)
        groups = self.groups
        groups["model"].get(call.model).add(call, cost)
        groups["tenant"].get(call.tenant).add(call, cost)
        groups["route"].get(call.route).add(call, cost)
        failed = call.outcome in _ERROR_OUTCOMES
        self.timeline.add(
            call.time,
            cost or 0,
            failed,
            rate_limited=call.http_status == 429,
            latency_s=call.latency_s if call.attempts > 0 else None,
        )
        if failed:
            self.error_kinds.add(call)
        if self.first is None or call.time < self.first:
            self.first = call.time
        if self.last is None or call.time > self.last:
            self.last = call.time

    def to_dict(self) -> dict[str, Any]:
        """The whole aggregate, JSON-ready (``llmpulse report --json``)."""
        return {
            "relative_accuracy": RELATIVE_ACCURACY,
            "first_started_at": self.first,
            "last_started_at": self.last,
            "skipped_lines": {
                "total": self.skipped.total,
                "not_json": self.skipped.not_json,
                "other_events": self.skipped.other_events,
                "malformed": self.skipped.malformed,
            },
            "outside_window": self.outside_window,
            "total": self.total.to_dict(),
            **{
                f"by_{dim}": {
                    "folded_calls": groups.folded_calls,
                    "groups": {key: stats.to_dict() for key, stats in groups.ranked(by_cost=True)},
                }
                for dim, groups in self.groups.items()
            },
            "timeline": {
                "bucket_s": self.timeline.width_s,
                "points": [
                    {
                        "start": point.start,
                        "cost_usd": point.cost_usd,
                        "calls": point.calls,
                        "errors": point.errors,
                        "rate_limited": point.rate_limited,
                        "latency_s": _quantiles(point.latency),
                    }
                    for point in self.timeline.points()
                ],
            },
            "errors_by_kind": {
                "folded_calls": self.error_kinds.folded_calls,
                "kinds": [
                    {"error": kind, "http_status": status, "calls": n, "first": first, "last": last}
                    for kind, status, n, first, last in self.error_kinds.ranked()
                ],
            },
        }


def _quantiles(sketch: Sketch) -> dict[str, Any]:
    return {"count": sketch.count, **{f"p{q}": sketch.quantile(q / 100) for q in (50, 95, 99)}}
