"""The report as plain tables of strings, shared by the terminal and HTML views."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from .._bins import fmt_seconds
from ._aggregate import OTHER, Aggregate, GroupStats
from ._sketch import RELATIVE_ACCURACY

__all__ = ["Table", "build_tables", "fmt_cost", "fmt_seconds", "fmt_time", "summary_lines"]

_TITLES = {"model": "By model", "tenant": "Top tenants by cost", "route": "Top routes by cost"}


@dataclass(slots=True)
class Table:
    """A titled table; the first column is a label, the others are right-aligned numbers."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str | None = None


def fmt_cost(value: float) -> str:
    """Dollars, with more decimals for small amounts."""
    return f"${value:,.2f}" if value >= 100 else f"${value:,.4f}"


def fmt_time(epoch: float | None) -> str:
    """UTC, to the second."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _pct(value: float) -> str:
    return f"{value * 100:.1f} %"


def summary_lines(agg: Aggregate, window: tuple[float | None, float | None]) -> list[str]:
    """The lines above the tables: period, totals, skipped input, accuracy."""
    total = agg.total
    lines = [
        f"{total.calls:,} calls from {fmt_time(agg.first)} to {fmt_time(agg.last)}",
        f"cost {fmt_cost(total.cost_usd)} ({total.unpriced:,} unpriced calls), "
        f"tokens {total.input_tokens:,} in / {total.output_tokens:,} out",
        f"errors {_pct(total.error_rate)}, 429 {_pct(total.rate_limited_rate)}, "
        f"{total.attempts_per_call:.2f} attempts per call",
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


def build_tables(agg: Aggregate, dimensions: list[str], top: int) -> list[Table]:
    """One table per dimension: every model (by calls), the ``top`` tenants and routes (by cost)."""
    tables: list[Table] = []
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
                table.note = f"{len(ranked) - top:,} more {dim}s (--top N shows more)"
        if groups.folded_calls:
            folded = (
                f"{groups.folded_calls:,} calls of {dim}s beyond the first {groups.cap:,} "
                f"are counted as {OTHER}"
            )
            table.note = f"{table.note}; {folded}" if table.note else folded
        tables.append(table)
    return tables
