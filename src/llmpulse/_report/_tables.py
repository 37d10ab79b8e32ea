"""The report as plain tables of strings, shared by the terminal and HTML views."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from .._units import fmt_cost, fmt_count, fmt_duration, fmt_seconds
from ._aggregate import OTHER, Aggregate, GroupStats
from ._sketch import RELATIVE_ACCURACY

__all__ = [
    "Incident",
    "Table",
    "build_tables",
    "cost_per_hour",
    "error_table",
    "fmt_cost",
    "fmt_duration",
    "fmt_seconds",
    "fmt_time",
    "incident",
    "incident_lines",
    "summary_lines",
]

_TITLES = {"model": "By model", "tenant": "Top tenants by cost", "route": "Top routes by cost"}


@dataclass(slots=True)
class Table:
    """A titled table; the first column is a label, the others are right-aligned numbers."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str | None = None
    incident: bool = False
    """One of the incident tables (errors by type, tenants by errors): the HTML view shows them first."""


def fmt_time(epoch: float | None) -> str:
    """UTC, to the second."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _pct(value: float) -> str:
    return f"{value * 100:.1f} %"


@dataclass(slots=True, frozen=True)
class Incident:
    """What the on-call engineer reads first: when errors peaked, since when, and for whom.

    ``worst_*`` is the time bucket with the highest error rate (the earliest
    on a tie); ``elevated_*`` is the run of consecutive non-empty buckets
    around it whose error rate is at least half the worst one.
    """

    bucket_s: int
    worst_start: float
    worst_errors: int
    worst_calls: int
    elevated_start: float
    elevated_end: float
    """The end of the run's last bucket."""
    first_error: float
    last_error: float
    top_tenant: tuple[str, int] | None
    """The tenant with the most failed calls, and how many."""
    top_model: tuple[str, int] | None

    @property
    def worst_rate(self) -> float:
        """Error rate of the worst bucket."""
        return self.worst_errors / self.worst_calls


def incident(agg: Aggregate) -> Incident | None:
    """The `Incident` of ``agg``; None when no call failed."""
    if not agg.total.errors:
        return None
    points = agg.timeline.points()
    width = agg.timeline.width_s
    worst = max(range(len(points)), key=lambda i: (points[i].errors / points[i].calls, -i))
    threshold = points[worst].errors / points[worst].calls / 2

    def elevated(i: int) -> bool:
        return points[i].errors / points[i].calls >= threshold

    first = last = worst
    while first > 0 and points[first - 1].start == points[first].start - width and elevated(first - 1):
        first -= 1
    while (
        last + 1 < len(points) and points[last + 1].start == points[last].start + width and elevated(last + 1)
    ):
        last += 1
    kinds = agg.error_kinds.ranked()
    return Incident(
        bucket_s=width,
        worst_start=points[worst].start,
        worst_errors=points[worst].errors,
        worst_calls=points[worst].calls,
        elevated_start=points[first].start,
        elevated_end=points[last].start + width,
        first_error=min(row[3] for row in kinds),
        last_error=max(row[4] for row in kinds),
        top_tenant=_most_errors(agg, "tenant"),
        top_model=_most_errors(agg, "model"),
    )


def _most_errors(agg: Aggregate, dim: str) -> tuple[str, int] | None:
    ranked = agg.groups[dim].ranked_by_errors()
    return (ranked[0][0], ranked[0][1].errors) if ranked else None


def incident_lines(found: Incident | None) -> list[str]:
    """The incident as summary lines (empty when no call failed)."""
    if found is None:
        return []
    lines = [
        f"worst {fmt_duration(found.bucket_s)} bucket: {fmt_time(found.worst_start)}, "
        f"{_pct(found.worst_rate)} errors ({found.worst_errors:,} of {found.worst_calls:,} calls); "
        f"at least half that rate from {fmt_time(found.elevated_start)} to {fmt_time(found.elevated_end)} "
        f"({fmt_duration(found.elevated_end - found.elevated_start)})",
    ]
    who = [
        f"{dim} {name} ({errors:,})"
        for dim, top in (("tenant", found.top_tenant), ("model", found.top_model))
        if top is not None
        for name, errors in (top,)
    ]
    lines.append(
        f"errors from {fmt_time(found.first_error)} to {fmt_time(found.last_error)}; "
        f"most errors: {', '.join(who)}"
    )
    return lines


def summary_lines(agg: Aggregate, window: tuple[float | None, float | None]) -> list[str]:
    """The lines above the tables: period, totals, skipped input, accuracy."""
    total = agg.total
    lines = [
        f"{total.calls:,} calls from {fmt_time(agg.first)} to {fmt_time(agg.last)}",
        f"cost {fmt_cost(total.cost_usd)}{_per_hour(agg)} ({fmt_count(total.unpriced, 'unpriced call')}), "
        f"tokens {total.input_tokens:,} in / {total.output_tokens:,} out",
        f"errors {_pct(total.error_rate)} ({total.errors:,} calls), 429 {_pct(total.rate_limited_rate)}, "
        f"{total.attempts_per_call:.2f} attempts per call",
        *incident_lines(incident(agg)),
    ]
    if window != (None, None):
        lines.append(
            f"window {fmt_time(window[0]) if window[0] is not None else 'start'} to "
            f"{fmt_time(window[1]) if window[1] is not None else 'end'}: "
            f"{agg.outside_window:,} call events outside it left out"
        )
    skipped = agg.skipped
    lines.append(
        f"skipped {skipped.total:,} lines ({skipped.not_json:,} not JSON, "
        f"{skipped.other_events:,} other events, {skipped.malformed:,} malformed call events)"
    )
    lines.append(
        f"latency and TTFT quantiles are within {RELATIVE_ACCURACY:.0%} of the exact values "
        "(latency: calls that were sent; TTFT: streams)"
    )
    return lines


def cost_per_hour(agg: Aggregate) -> float | None:
    """Cost per hour over the span from the first call's start to the last one's (None under a minute)."""
    # Under a minute the rate would extrapolate a few seconds of calls into an hour.
    if agg.first is None or agg.last is None or agg.last - agg.first < 60:
        return None
    return agg.total.cost_usd / (agg.last - agg.first) * 3600


def _per_hour(agg: Aggregate) -> str:
    rate = cost_per_hour(agg)
    return "" if rate is None else f", {fmt_cost(rate)} per hour"


def _model_row(name: str, stats: GroupStats) -> list[str]:
    latency, ttft = stats.latency, stats.ttft
    assert latency is not None  # models always carry sketches
    assert ttft is not None
    return [
        name,
        f"{stats.calls:,}",
        _pct(stats.error_rate),
        _pct(stats.rate_limited_rate),
        fmt_seconds(latency.quantile(0.5)),
        fmt_seconds(latency.quantile(0.95)),
        fmt_seconds(latency.quantile(0.99)),
        fmt_seconds(ttft.quantile(0.5)),
        fmt_seconds(ttft.quantile(0.95)),
        f"{stats.attempts_per_call:.2f}",
        f"{stats.input_tokens:,}",
        f"{stats.output_tokens:,}",
        fmt_cost(stats.cost_usd),
    ]


def _cost_row(name: str, stats: GroupStats, total_cost: float) -> list[str]:
    share = stats.cost_usd / total_cost if total_cost else 0.0
    return [
        name,
        f"{stats.calls:,}",
        _pct(stats.error_rate),
        _pct(stats.rate_limited_rate),
        f"{stats.attempts_per_call:.2f}",
        f"{stats.input_tokens:,}",
        f"{stats.output_tokens:,}",
        fmt_cost(stats.cost_usd),
        _pct(share),
    ]


def error_table(agg: Aggregate) -> Table | None:
    """Failed calls by error type and HTTP status, most first (None when none failed)."""
    kinds = agg.error_kinds
    if not kinds.kinds:
        return None
    table = Table(
        "Errors by type and status", ["error", "status", "calls", "share", "first", "last"], incident=True
    )
    errors = agg.total.errors
    table.rows = [
        [
            kind,
            "-" if status is None else str(status),
            f"{n:,}",
            _pct(n / errors),
            fmt_time(first),
            fmt_time(last),
        ]
        for kind, status, n, first, last in kinds.ranked()
    ]
    if kinds.folded_calls:
        table.note = (
            f"{kinds.folded_calls:,} calls of kinds beyond the first {kinds.cap:,} are counted as {OTHER}"
        )
    return table


def _tenants_by_errors(agg: Aggregate, top: int) -> Table | None:
    ranked = agg.groups["tenant"].ranked_by_errors()
    if not ranked:
        return None
    table = Table(
        "Top tenants by errors",
        ["tenant", "calls", "errors", "err", "429", "att/call", "cost"],
        incident=True,
    )
    table.rows = [
        [
            name,
            f"{stats.calls:,}",
            f"{stats.errors:,}",
            _pct(stats.error_rate),
            _pct(stats.rate_limited_rate),
            f"{stats.attempts_per_call:.2f}",
            fmt_cost(stats.cost_usd),
        ]
        for name, stats in ranked[:top]
    ]
    if len(ranked) > top:
        table.note = f"{fmt_count(len(ranked) - top, 'more tenant')} with errors (--top N shows more)"
    return table


def build_tables(agg: Aggregate, dimensions: list[str], top: int) -> list[Table]:
    """The incident tables, then one per dimension.

    First the errors by type and status and (with the tenant dimension) the
    ``top`` tenants by errors, when any call failed; then every model (by
    calls), the ``top`` tenants and routes (by cost).
    """
    tables: list[Table] = [
        table
        for table in (error_table(agg), _tenants_by_errors(agg, top) if "tenant" in dimensions else None)
        if table is not None
    ]
    for dim in dimensions:
        groups = agg.groups[dim]
        if dim == "model":
            table = Table(
                _TITLES[dim],
                [
                    *("model", "calls", "err", "429", "p50", "p95", "p99", "TTFT p50", "TTFT p95"),
                    *("att/call", "in tok", "out tok", "cost"),
                ],
            )
            ranked = groups.ranked(by_cost=False)
            table.rows = [_model_row(name, stats) for name, stats in ranked]
        else:
            table = Table(
                _TITLES[dim],
                [dim, "calls", "err", "429", "att/call", "in tok", "out tok", "cost", "share"],
            )
            ranked = groups.ranked(by_cost=True)
            table.rows = [_cost_row(name, stats, agg.total.cost_usd) for name, stats in ranked[:top]]
            if len(ranked) > top:
                table.note = f"{fmt_count(len(ranked) - top, f'more {dim}')} (--top N shows more)"
        if groups.folded_calls:
            folded = (
                f"{groups.folded_calls:,} calls of {dim}s beyond the first {groups.cap:,} "
                f"are counted as {OTHER}"
            )
            table.note = f"{table.note}; {folded}" if table.note else folded
        tables.append(table)
    return tables
