"""`llmpulse.stats()`: rolling in-process statistics, in bounded memory.

Time is cut into buckets of ``bucket_s`` (10 s) kept in a ring that covers
``fine_horizon_s`` (10 min); a second ring of ``coarse_bucket_s`` (5 min)
buckets covers ``horizon_s`` (1 h), so hour-long windows cost 12 buckets per
group instead of 360. Each bucket holds, per model, route and tenant, a few
counters, a latency sketch and a TTFT sketch; no per-call data is kept.

Latencies and TTFTs go into quantile sketches (`llmpulse._bins.Sketch`, the
one the report uses): log buckets 2 % wide (DDSketch with gamma = 1.0202),
each answering with a value within 1 % of everything in it. So a percentile
is within 1 % of the exact order statistic at rank ``floor(q * (n - 1))``
(from 0) of the ``n`` calls, clamped to the exact min and max, for values
from 0.1 ms to about 28 h (outside, the edge buckets). Merging
the buckets of a window loses nothing: the result is the sketch of all its
calls.

A window covers whole buckets: of the fine ring up to ``fine_horizon_s``, of
the coarse one beyond. Calls older than ``window_s`` are never counted, and
calls up to one bucket younger may already have dropped out.

Memory is bounded by the rings: at most ``fine_horizon_s / bucket_s +
horizon_s / coarse_bucket_s`` buckets (60 + 12), each with at most
``max_keys + 1`` groups per dimension (values past ``max_keys`` share the
group "__other__", as in the Prometheus metrics), each group with two sparse sketches: one dict entry per
2 % bucket its calls hit in that interval, so no more entries than calls,
and never more than 1,037 (~37 KB). In practice a bucket only holds the
groups that made calls during its interval, at roughly 0.5 KB for a group
with a few calls: 1,000 tenants calling in every 10 s for an hour hold about
42 MiB (36 MiB with the former 25 % bins; ``benchmarks/stats.py``). Each
call is counted in both rings.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from ._bins import Sketch, bucket_index
from ._units import fmt_cost, fmt_seconds
from .events import CallEvent

__all__ = ["Dimension", "GroupStats", "RollingStats", "StatsSnapshot", "TopBy"]

Dimension = Literal["model", "route", "tenant"]
"""A grouping of `StatsSnapshot` and `RollingStats.top`."""

TopBy = Literal["requests", "tokens", "cost"]
"""What `RollingStats.top` ranks by."""

OTHER = "__other__"
"""The shared group of the values seen after ``max_keys`` distinct ones."""

UNKNOWN = "unknown"
"""The group of calls without a model, route or tenant."""

_DIMENSIONS: tuple[Dimension, ...] = get_args(Dimension)

# The _Acc counter of each outcome but "ok".
_OUTCOME_COUNTER = {
    "error": "errors",
    "cancelled": "cancelled",
    "abandoned": "abandoned",
    "rejected": "rejected",
}


class _Acc:
    """Counters of one group, in one bucket or merged over a window."""

    __slots__ = (
        "abandoned",
        "calls",
        "cancelled",
        "cost",
        "errors",
        "input_tokens",
        "latency",
        "latency_max",
        "latency_min",
        "output_tokens",
        "rejected",
        "retries",
        "status_5xx",
        "status_429",
        "ttft",
        "ttft_max",
        "ttft_min",
        "unpriced",
    )

    def __init__(self) -> None:
        self.calls = self.errors = self.cancelled = self.abandoned = self.rejected = 0
        self.status_429 = self.status_5xx = self.retries = 0
        self.input_tokens = self.output_tokens = self.unpriced = 0
        self.cost = 0.0
        # The sketches' counts, sparse ({bucket_index: count}) with their exact min and max:
        # most groups see a handful of calls per bucket, which a dense Sketch would spread
        # over every bucket between them. `sketches` makes the Sketches at snapshot time.
        self.latency: dict[int, int] = {}
        self.latency_min = math.inf
        self.latency_max = -math.inf
        self.ttft: dict[int, int] | None = None  # most groups never stream
        self.ttft_min = math.inf
        self.ttft_max = -math.inf

    def sketches(self) -> tuple[Sketch, Sketch | None]:
        """The latency and TTFT sketches (None without a TTFT)."""
        latency = Sketch.of(self.latency, self.latency_min, self.latency_max)
        if self.ttft is None:
            return latency, None
        return latency, Sketch.of(self.ttft, self.ttft_min, self.ttft_max)

    def merge(self, other: _Acc, *, histograms: bool = True) -> None:
        self.calls += other.calls
        self.errors += other.errors
        self.cancelled += other.cancelled
        self.abandoned += other.abandoned
        self.rejected += other.rejected
        self.status_429 += other.status_429
        self.status_5xx += other.status_5xx
        self.retries += other.retries
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.unpriced += other.unpriced
        self.cost += other.cost
        if not histograms:
            return
        _add_counts(self.latency, other.latency)
        # Plain ifs, not min() and max(): a snapshot merges tens of thousands of groups.
        if other.latency_min < self.latency_min:  # noqa: PLR1730
            self.latency_min = other.latency_min
        if other.latency_max > self.latency_max:  # noqa: PLR1730
            self.latency_max = other.latency_max
        if other.ttft is not None:
            if self.ttft is None:
                self.ttft = {}
            _add_counts(self.ttft, other.ttft)
            if other.ttft_min < self.ttft_min:  # noqa: PLR1730
                self.ttft_min = other.ttft_min
            if other.ttft_max > self.ttft_max:  # noqa: PLR1730
                self.ttft_max = other.ttft_max


def _add_counts(into: dict[int, int], other: dict[int, int]) -> None:
    for index, count in other.items():
        into[index] = into.get(index, 0) + count


def _observe(accs: list[_Acc], index: int, value: float, ttft_index: int, ttft_value: float) -> None:
    """Count one call's latency (and TTFT, unless ``ttft_index`` is -1) in each of ``accs``.

    Written for speed, six times per call: plain ifs, not min()/max() (~0.5 µs more).
    """
    for acc in accs:
        counts = acc.latency
        counts[index] = counts.get(index, 0) + 1
        if value < acc.latency_min:  # noqa: PLR1730
            acc.latency_min = value
        if value > acc.latency_max:  # noqa: PLR1730
            acc.latency_max = value
        if ttft_index >= 0:
            ttft = acc.ttft
            if ttft is None:
                ttft = acc.ttft = {}
            ttft[ttft_index] = ttft.get(ttft_index, 0) + 1
            if ttft_value < acc.ttft_min:  # noqa: PLR1730
                acc.ttft_min = ttft_value
            if ttft_value > acc.ttft_max:  # noqa: PLR1730
                acc.ttft_max = ttft_value


class _Bucket:
    """The groups of one bucket interval: model, route and tenant maps."""

    __slots__ = ("epoch", "groups")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.groups: tuple[dict[str, _Acc], dict[str, _Acc], dict[str, _Acc]] = ({}, {}, {})


class _Ring:
    """Buckets of ``bucket_s`` seconds covering ``horizon_s``, oldest reused first."""

    __slots__ = ("bucket_s", "buckets", "horizon_s", "slots")

    def __init__(self, bucket_s: float, horizon_s: float) -> None:
        self.bucket_s = float(bucket_s)
        # The tolerance keeps 3600 / 10.000000001 from adding a whole bucket.
        self.slots = math.ceil(horizon_s / bucket_s - 1e-9)
        self.horizon_s = self.slots * self.bucket_s
        self.buckets: list[_Bucket | None] = [None] * self.slots

    def current(self, now: float) -> _Bucket:
        """The bucket of ``now``, replacing the one a horizon older (caller holds the lock)."""
        epoch = int(now // self.bucket_s)
        slot = epoch % self.slots
        bucket = self.buckets[slot]
        if bucket is None or bucket.epoch != epoch:
            bucket = self.buckets[slot] = _Bucket(epoch)
        return bucket


@dataclass(frozen=True, slots=True)
class GroupStats:
    """Statistics of one group of calls (all, one model, route or tenant) over a window.

    Rates are fractions of ``calls`` (0.0 without calls). Latencies are
    seconds, within 1 % of the exact percentile (see docs/stats.md); print
    them to 3 significant figures, as ``str()`` does.

    Attributes:
        calls: Logical calls that finished in the window, whatever their outcome.
        errors: Calls with outcome "error".
        cancelled: Calls with outcome "cancelled".
        abandoned: Calls with outcome "abandoned" (the caller dropped a stream or body).
        rejected: Calls with outcome "rejected" (refused by a policy, never sent).
        status_429: Calls whose final HTTP status was 429.
        status_5xx: Calls whose final HTTP status was 5xx.
        error_rate: ``errors / calls``.
        rate_429: ``status_429 / calls``.
        p50_s: Median latency; None without calls.
        p95_s: 95th percentile latency; None without calls.
        p99_s: 99th percentile latency; None without calls.
        ttft_p50_s: Median time to first token; None when no stream produced one.
        ttft_p95_s: 95th percentile time to first token; None likewise.
        input_tokens: Sum of the known input tokens.
        output_tokens: Sum of the known output tokens.
        cost_usd: Sum of the known costs.
        unpriced_calls: Calls sent to the provider whose cost is unknown (not in ``cost_usd``).
        retries: Retries made, summed over the calls.
        calls_per_s: ``calls`` divided by the time the window actually covers.

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

    def __str__(self) -> str:
        """One line, durations to the 3 significant figures the sketch supports."""
        return (
            f"{self.calls:,} calls ({self.calls_per_s:.3g}/s), errors {self.error_rate:.1%},"
            f" 429 {self.rate_429:.1%}; latency p50 {fmt_seconds(self.p50_s)},"
            f" p95 {fmt_seconds(self.p95_s)}, p99 {fmt_seconds(self.p99_s)};"
            f" TTFT p50 {fmt_seconds(self.ttft_p50_s)}, p95 {fmt_seconds(self.ttft_p95_s)};"
            f" tokens {self.input_tokens:,} in / {self.output_tokens:,} out;"
            f" {fmt_cost(self.cost_usd)} ({self.unpriced_calls:,} unpriced)"
        )


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """The result of `llmpulse.stats()`: all calls, and per model, route and tenant.

    Calls without a model, route or tenant are grouped under "unknown";
    values seen after ``max_keys`` distinct ones share the group "__other__".
    Each ``by_*`` map is ordered by calls, most first.

    Attributes:
        window_s: The window covered, after clamping to ``[bucket_s, horizon_s]``.
        total: All calls.
        by_model: Per requested model.
        by_route: Per route of the call's context.
        by_tenant: Per tenant of the call's context.

    """

    window_s: float
    total: GroupStats
    by_model: dict[str, GroupStats] = field(default_factory=dict)
    by_route: dict[str, GroupStats] = field(default_factory=dict)
    by_tenant: dict[str, GroupStats] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the snapshot as plain JSON-serialisable values (e.g. for a health endpoint)."""
        return asdict(self)

    def __str__(self) -> str:
        """The total and every group, one line each (see `GroupStats.__str__`)."""
        lines = [f"last {self.window_s:g} s: {self.total}"]
        for title, groups in (("model", self.by_model), ("route", self.by_route), ("tenant", self.by_tenant)):
            lines += [f"  {title} {name}: {group}" for name, group in groups.items()]
        return "\n".join(lines)


def _group(acc: _Acc, span_s: float) -> GroupStats:
    calls = acc.calls
    latency, ttft = acc.sketches()
    p50, p95, p99 = latency.quantiles((0.50, 0.95, 0.99))
    ttft50, ttft95 = ttft.quantiles((0.50, 0.95)) if ttft is not None else (None, None)
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
        p50_s=p50,
        p95_s=p95,
        p99_s=p99,
        ttft_p50_s=ttft50,
        ttft_p95_s=ttft95,
        input_tokens=acc.input_tokens,
        output_tokens=acc.output_tokens,
        cost_usd=acc.cost,
        unpriced_calls=acc.unpriced,
        retries=acc.retries,
        calls_per_s=calls / span_s if span_s > 0 else 0.0,
    )


_TOP_VALUE: dict[str, Callable[[_Acc], float]] = {
    "requests": lambda acc: acc.calls,
    "tokens": lambda acc: acc.input_tokens + acc.output_tokens,
    "cost": lambda acc: acc.cost,
}


def _by_calls(groups: dict[str, _Acc], span_s: float) -> dict[str, GroupStats]:
    ordered = sorted(groups.items(), key=lambda kv: (-kv[1].calls, kv[0]))
    return {name: _group(acc, span_s) for name, acc in ordered}


class RollingStats:
    """Rolling statistics of finished calls, overall and per model, route and tenant.

    `record` is called on the caller's path for every call: it is O(1) and
    holds one lock for a few microseconds. `snapshot` and `top` merge the
    buckets of a window; the lock is held only while the current bucket is
    merged, since older buckets no longer change.

    Args:
        clock: Monotonic seconds; inject a fake one in tests.
        bucket_s: Time resolution of windows up to ``fine_horizon_s``.
        horizon_s: Longest window kept (rounded up to whole buckets).
        fine_horizon_s: Longest window served at ``bucket_s`` resolution; longer
            ones (when ``horizon_s`` is longer) at ``coarse_bucket_s``.
        coarse_bucket_s: Time resolution of windows beyond ``fine_horizon_s``.
        max_keys: Distinct values kept per dimension; later ones are counted under "__other__".
            Admitted values are never evicted, so group names stay stable.

    Raises:
        ValueError: If ``bucket_s`` is not positive, ``horizon_s`` or ``coarse_bucket_s``
            is shorter than ``bucket_s``, or ``max_keys`` is negative.

    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        bucket_s: float = 10.0,
        horizon_s: float = 3600.0,
        fine_horizon_s: float = 600.0,
        coarse_bucket_s: float = 300.0,
        max_keys: int = 1000,
    ) -> None:
        if not bucket_s > 0:
            raise ValueError(f"bucket_s must be positive, got {bucket_s!r}")
        if not horizon_s >= bucket_s:
            raise ValueError(f"horizon_s ({horizon_s!r}) must be at least bucket_s ({bucket_s!r})")
        if not coarse_bucket_s >= bucket_s:
            raise ValueError(
                f"coarse_bucket_s ({coarse_bucket_s!r}) must be at least bucket_s ({bucket_s!r})"
            )
        if max_keys < 0:
            raise ValueError(f"max_keys must be >= 0, got {max_keys!r}")
        self._clock = clock
        self._bucket_s = float(bucket_s)
        self._fine = _Ring(bucket_s, min(horizon_s, max(fine_horizon_s, bucket_s)))
        self._rings: tuple[_Ring, ...] = (self._fine,)
        if horizon_s > self._fine.horizon_s:
            self._rings = (self._fine, _Ring(coarse_bucket_s, horizon_s))
        self._horizon_s = self._rings[-1].horizon_s
        self._max_keys = max_keys
        self._admitted: tuple[set[str], set[str], set[str]] = (set(), set(), set())
        self._lock = threading.Lock()
        self._started = clock()

    def record(self, event: CallEvent) -> None:
        """Count one finished call.

        Args:
            event: The call's event; calls are grouped by the time of this call, not
                by ``event.started_at``.

        """
        # Everything that does not touch shared state is worked out before the lock.
        latency_s = event.latency_s
        latency_bin = bucket_index(latency_s)
        latency_s = latency_s if latency_s >= 0 else 0.0  # NaN too, as Sketch.add
        ttft_s = event.ttft_s or 0.0
        ttft_bin = -1 if event.ttft_s is None else bucket_index(ttft_s)
        ttft_s = ttft_s if ttft_s >= 0 else 0.0
        counter = _OUTCOME_COUNTER.get(event.outcome)
        status = event.http_status or 0
        retries = event.retries
        # A cache hit used no tokens (its event reports the ones it saved).
        input_tokens = 0 if event.cache_hit else event.input_tokens or 0
        output_tokens = 0 if event.cache_hit else event.output_tokens or 0
        cost = event.cost_usd
        # A call never sent (rejected by a policy) costs nothing: it is not "unpriced".
        unpriced = cost is None and event.attempts > 0
        model = event.model or UNKNOWN
        route = event.route or UNKNOWN
        tenant = event.tenant or UNKNOWN
        with self._lock:
            # The clock is read under the lock so that epochs only grow: a
            # bucket older than the current one is never written again, which
            # lets snapshots read it without the lock.
            now = self._clock()
            # No overall group: every call has exactly one group per dimension, so
            # the total is their sum, worked out at snapshot time.
            accs: list[_Acc] = []
            for ring in self._rings:
                by_model, by_route, by_tenant = ring.current(now).groups
                accs += (
                    by_model.get(model) or self._admit(by_model, 0, model),
                    by_route.get(route) or self._admit(by_route, 1, route),
                    by_tenant.get(tenant) or self._admit(by_tenant, 2, tenant),
                )
            for acc in accs:
                acc.calls += 1
                if counter is not None:
                    setattr(acc, counter, getattr(acc, counter) + 1)
                if status == 429:
                    acc.status_429 += 1
                elif status >= 500:
                    acc.status_5xx += 1
                acc.retries += retries
                acc.input_tokens += input_tokens
                acc.output_tokens += output_tokens
                if cost is not None:
                    acc.cost += cost
                elif unpriced:
                    acc.unpriced += 1
            _observe(accs, latency_bin, latency_s, ttft_bin, ttft_s)

    def _admit(self, groups: dict[str, _Acc], dimension: int, name: str) -> _Acc:
        """The group of a value not yet in this bucket (caller holds the lock)."""
        admitted = self._admitted[dimension]
        if name not in admitted:
            if len(admitted) >= self._max_keys:
                name = OTHER
            else:
                admitted.add(name)
        acc = groups.get(name)
        if acc is None:
            acc = groups[name] = _Acc()
        return acc

    def snapshot(self, window_s: float = 300.0) -> StatsSnapshot:
        """Statistics of the calls that finished in the last ``window_s`` seconds.

        Args:
            window_s: The window; clamped to ``[bucket_s, horizon_s]``.

        Returns:
            The overall statistics and those per model, route and tenant.

        Raises:
            ValueError: If ``window_s`` is not positive.

        """
        window_s = self._clamp(window_s)
        span_s, merged = self._merge(window_s, _DIMENSIONS, histograms=True)
        by_model, by_route, by_tenant = merged
        total = _Acc()
        # Every call is in exactly one group of each dimension: sum the one with fewest groups.
        for acc in min(merged, key=len).values():
            total.merge(acc)
        return StatsSnapshot(
            window_s=window_s,
            total=_group(total, span_s),
            by_model=_by_calls(by_model, span_s),
            by_route=_by_calls(by_route, span_s),
            by_tenant=_by_calls(by_tenant, span_s),
        )

    def top(
        self, dimension: Dimension = "tenant", by: TopBy = "requests", n: int = 5, window_s: float = 300.0
    ) -> list[tuple[str, float]]:
        """The largest groups of one dimension over the last ``window_s`` seconds.

        The shared "__other__" group is ranked like any value: if it shows up, the
        ``max_keys`` cap was reached.

        Args:
            dimension: "tenant", "model" or "route".
            by: "requests" (calls), "tokens" (input + output) or "cost" (known USD costs).
            n: How many groups to return.
            window_s: The window; clamped to ``[bucket_s, horizon_s]``.

        Returns:
            Up to ``n`` ``(name, value)`` pairs, largest first, ties by name.

        Raises:
            ValueError: If ``dimension`` or ``by`` is unknown or ``window_s`` is not positive.

        """
        if dimension not in _DIMENSIONS:
            raise ValueError(f"dimension must be one of {_DIMENSIONS}, got {dimension!r}")
        if by not in _TOP_VALUE:
            raise ValueError(f"by must be one of {tuple(_TOP_VALUE)}, got {by!r}")
        _, (groups,) = self._merge(self._clamp(window_s), (dimension,), histograms=False)
        value = _TOP_VALUE[by]
        rows = [(name, float(value(acc))) for name, acc in groups.items()]
        rows.sort(key=lambda row: (-row[1], row[0]))
        return rows[: max(0, n)]

    def _clamp(self, window_s: float) -> float:
        if not window_s > 0:
            raise ValueError(f"window_s must be positive, got {window_s!r}")
        return min(max(float(window_s), self._bucket_s), self._horizon_s)

    def _merge(
        self, window_s: float, dimensions: tuple[Dimension, ...], *, histograms: bool
    ) -> tuple[float, list[dict[str, _Acc]]]:
        """Merge the buckets wholly inside the window; also return the seconds they cover."""
        indexes = [_DIMENSIONS.index(d) for d in dimensions]
        merged: list[dict[str, _Acc]] = [{} for _ in indexes]

        def add(bucket: _Bucket) -> None:
            for out, index in zip(merged, indexes, strict=True):
                for name, acc in bucket.groups[index].items():
                    target = out.get(name)
                    if target is None:
                        target = out[name] = _Acc()
                    target.merge(acc, histograms=histograms)

        ring = self._fine if window_s <= self._fine.horizon_s else self._rings[-1]
        with self._lock:
            now = self._clock()
            current = int(now // ring.bucket_s)
            oldest = math.ceil((now - window_s) / ring.bucket_s)
            settled = [b for b in ring.buckets if b is not None and oldest <= b.epoch < current]
            live = ring.buckets[current % ring.slots]
            if live is not None and live.epoch == current:
                add(live)
        # Settled buckets are never written again (see record); a slot reused
        # meanwhile gets a new bucket object, leaving these intact.
        for bucket in settled:
            add(bucket)
        span_s = now - max(oldest * ring.bucket_s, self._started)
        return span_s, merged

    def _stored_groups(self) -> int:
        """The number of groups held in the ring (for memory tests)."""
        with self._lock:
            return sum(len(g) for r in self._rings for b in r.buckets if b is not None for g in b.groups)
