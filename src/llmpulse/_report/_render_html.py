"""The HTML view: one self-contained file, inline CSS and SVG charts, no scripts.

Laid out for someone paged at night: the headline numbers, then what is
failing over time and by error type and tenant, then latency over time and
per model, then volume and cost, then the full tables. Every string that
comes from the logs (models, tenants, routes, error types) is user data and
goes through `html.escape`, in tables, captions and chart tooltips alike.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from html import escape

from .._units import fmt_count
from ._aggregate import Aggregate, Point
from ._charts import Axis, Bar, Mark, Series, chart, linear_axis, log_axis, time_axis
from ._sketch import MIN_VALUE, Sketch
from ._tables import Incident, Table, cost_per_hour, fmt_cost, fmt_duration, fmt_seconds, fmt_time, incident

__all__ = ["render_html"]

_HISTOGRAM_BINS = 60
_QUANTILES = (("p50", 0.5, "s-p50"), ("p95", 0.95, "s-p95"), ("p99", 0.99, "s-p99"))

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.2em 2em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .3em; } h2 { font-size: 1.15em; margin: 1.6em 0 .4em; }
ul.summary { list-style: none; padding: 0; margin: .6em 0; } ul.summary li { margin: .15em 0; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; margin: .8em 0; }
.card { flex: 1 1 12em; border: 1px solid #ddd; border-radius: 6px; padding: .6em .9em; }
.card .k { color: #555; font-size: .9em; } .card .v { font-size: 1.8em; font-weight: 600; }
.card .d { color: #555; font-size: .9em; } .card.bad .v { color: #c62828; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { padding: .25em .7em; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f4; } p.note { color: #666; font-size: .9em; }
svg.chart { display: block; width: 100%; height: auto; margin: .2em 0 .8em; }
figure { margin: 0; } figcaption { font-weight: 600; margin-top: .6em; }
svg text { font: 12px system-ui, sans-serif; fill: #444; }
svg text.title { font-weight: 600; fill: #222; }
svg text.mark-label { font-weight: 600; paint-order: stroke; stroke: #fff; stroke-width: 3px; }
line.grid { stroke: #e6e6e6; } rect.frame { fill: none; stroke: #999; }
polyline.line { fill: none; stroke-width: 2; }
rect.bar:hover { opacity: .75; } line.q { stroke-width: 2; stroke-dasharray: 5 3; }
rect.band { fill: #d62728; opacity: .08; } svg text.band-label { fill: #b71c1c; font-weight: 600; }
.s-ok { fill: #4e79a7; stroke: #4e79a7; } .s-cost { fill: #59a14f; stroke: #59a14f; }
.s-err { fill: #d62728; stroke: #d62728; } .s-429 { fill: #ff7f0e; stroke: #ff7f0e; }
.s-p50 { fill: #1f77b4; stroke: #1f77b4; } .s-p95 { fill: #9467bd; stroke: #9467bd; }
.s-p99 { fill: #d62728; stroke: #d62728; }
text.s-p50, text.s-p95, text.s-p99 { stroke: #fff; }
svg text.s-p50 { fill: #1f77b4; } svg text.s-p95 { fill: #9467bd; } svg text.s-p99 { fill: #d62728; }
"""


def render_html(title: str, lines: list[str], tables: list[Table], agg: Aggregate) -> str:
    """The whole report as one HTML document."""
    points = agg.timeline.points()
    width = agg.timeline.width_s
    found = incident(agg)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        _cards(agg, found),
        '<ul class="summary">',
        *(f"<li>{escape(line)}</li>" for line in lines),
        "</ul>",
    ]
    if not points:
        parts.append("<p>No calls.</p>")
    else:
        time = time_axis(points[0].start, points[-1].start + width)
        parts += [
            f"<h2>Errors and 429s over time (per {escape(fmt_duration(width))})</h2>",
            _error_chart(points, time, width, found),
            *(_table(table) for table in tables if table.incident),
            f"<h2>Latency over time (per {escape(fmt_duration(width))})</h2>",
            _latency_chart(points, time, width),
            "<h2>Latency by model (one shared axis)</h2>",
            *_histograms(agg),
            f"<h2>Calls and cost over time (per {escape(fmt_duration(width))})</h2>",
            _calls_chart(points, time, width),
            _cost_chart(points, time, width),
        ]
    parts.extend(_table(table) for table in tables if not table.incident)
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _card(key: str, value: str, detail: str, *, bad: bool = False) -> str:
    css = "card bad" if bad else "card"
    return (
        f'<div class="{css}"><div class="k">{escape(key)}</div><div class="v">{escape(value)}</div>'
        f'<div class="d">{escape(detail)}</div></div>'
    )


def _cards(agg: Aggregate, found: Incident | None) -> str:
    """The headline: what fails, since when, for whom, how slow, what it costs."""
    total = agg.total
    latency = total.latency
    assert latency is not None  # the total always carries sketches
    p50, p95, p99 = latency.quantiles((0.5, 0.95, 0.99))
    rate = cost_per_hour(agg)
    kinds = agg.error_kinds.ranked()
    cards = [
        _card(
            "Errors",
            f"{total.error_rate * 100:.1f} %",
            f"{total.errors:,} of {total.calls:,} calls"
            + (f"; most: {kinds[0][0]}{_status(kinds[0][1])} ({kinds[0][2]:,})" if kinds else ""),
            bad=total.errors > 0,
        ),
        _card(
            "Rate limited (429)",
            f"{total.rate_limited_rate * 100:.1f} %",
            f"{total.rate_limited:,} calls; {total.attempts_per_call:.2f} attempts per call",
            bad=total.rate_limited > 0,
        ),
    ]
    if found is not None:
        # Within one UTC day the charts' axes give the date; a longer input needs it on each time.
        dated = agg.first is not None and agg.last is not None and _day(agg.first) != _day(agg.last)
        fmt = "%m-%d %H:%M" if dated else "%H:%M"
        cards.append(
            _card(
                "Errors elevated (UTC)",
                f"{_clock(found.elevated_start, fmt)}\u2013{_clock(found.elevated_end, fmt)}",
                f"{fmt_duration(found.elevated_end - found.elevated_start)}; worst "
                f"{_clock(found.worst_start, fmt)}: {found.worst_rate * 100:.0f} % of "
                f"{found.worst_calls:,} calls",
            )
        )
        cards.append(_affected(agg, found))
    cards += [
        _card("Latency p95", fmt_seconds(p95), f"p50 {fmt_seconds(p50)}, p99 {fmt_seconds(p99)}"),
        _card(
            "Cost",
            fmt_cost(total.cost_usd),
            (f"{fmt_cost(rate)} per hour; " if rate is not None else "")
            + fmt_count(total.unpriced, "unpriced call"),
        ),
    ]
    return '<div class="cards">' + "".join(cards) + "</div>"


def _affected(agg: Aggregate, found: Incident) -> str:
    """The tenant with the most errors, and the model."""
    parts = []
    for dim, top in (("tenant", found.top_tenant), ("model", found.top_model)):
        if top is not None:
            name, errors = top
            share = agg.groups[dim].stats[name].error_rate
            parts.append((dim, name, f"{dim} {name}: {errors:,} errors ({share * 100:.0f} % of its calls)"))
    if not parts:  # pragma: no cover - a failed call always has a tenant and a model group
        return _card("Most affected", "-", "")
    return _card(f"Most affected {parts[0][0]}", parts[0][1], "; ".join(detail for _, _, detail in parts))


def _status(status: int | None) -> str:
    return "" if status is None else f" {status}"


def _clock(epoch: float, fmt: str) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(fmt)


def _day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def _table(table: Table) -> str:
    head = "".join(f"<th>{escape(column)}</th>" for column in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in table.rows
    )
    note = f'<p class="note">{escape(table.note)}</p>' if table.note else ""
    return f"<h2>{escape(table.title)}</h2><table><tr>{head}</tr>{body}</table>{note}"


def _latency_unit(high: float) -> tuple[str, float]:
    """Seconds from 1 s up, else milliseconds: the unit and the factor from seconds."""
    return ("s", 1.0) if high >= 1 else ("ms", 1000.0)


def _error_chart(points: list[Point], time: Axis, width: int, found: Incident | None) -> str:
    errors = [(p.start + width / 2, 100 * p.errors / p.calls) for p in points]
    limited = [(p.start + width / 2, 100 * p.rate_limited / p.calls) for p in points]
    peak = max(y for _, y in errors + limited)
    y = linear_axis("failed calls (% of calls)", 0.0, peak if peak > 0 else 1.0)
    band = None
    if found is not None:
        band = (found.elevated_start, found.elevated_end, "errors at least half the worst rate")
    return chart(
        "errors-over-time",
        "error rate and 429 rate over time",
        time,
        y,
        # 429s are a subset of the errors: drawn first, so the error line stays on top where they match.
        series=[Series("HTTP 429", "s-429", limited), Series("errors", "s-err", errors)],
        band=band,
    )


def _latency_chart(points: list[Point], time: Axis, width: int) -> str:
    lines: list[Series] = []
    high = 0.0
    for name, q, css in _QUANTILES:
        values = [(p.start + width / 2, p.latency.quantile(q)) for p in points]
        known = [(x, v) for x, v in values if v is not None]
        high = max([high, *(v for _, v in known)])
        lines.append(Series(name, css, known))
    unit, scale = _latency_unit(high)
    y = linear_axis(f"latency ({unit})", 0.0, high if high > 0 else 1.0, scale=scale)
    return chart("latency-over-time", "latency percentiles over time", time, y, series=lines)


def _histograms(agg: Aggregate) -> list[str]:
    """A histogram per model, all on one log latency axis, p50/p95/p99 marked and labelled."""
    models = [
        (model, stats.latency)
        for model, stats in agg.groups["model"].ranked(by_cost=False)
        if stats.latency is not None and stats.latency.count
    ]
    if not models:
        return ["<p>No calls were sent.</p>"]
    low = max(min(sketch.min for _, sketch in models), MIN_VALUE)
    high = max(low, *(sketch.max for _, sketch in models))
    unit, scale = _latency_unit(high)
    x = log_axis(f"latency ({unit}, log scale)", low, high, scale=scale)
    out = []
    for index, (model, sketch) in enumerate(models):
        out.append(
            f"<figure><figcaption>{escape(model)} ({sketch.count:,} calls)</figcaption>"
            f"{_histogram(f'latency-model-{index}', sketch, x)}</figure>"
        )
    return out


def _histogram(name: str, sketch: Sketch, x: Axis) -> str:
    span = math.log(x.high / x.low)
    counts = [0] * _HISTOGRAM_BINS
    for value, n in sketch.buckets():
        share = math.log(max(value, x.low) / x.low) / span
        counts[min(max(int(share * _HISTOGRAM_BINS), 0), _HISTOGRAM_BINS - 1)] += n
    bars = []
    for index, n in enumerate(counts):
        if not n:
            continue
        start = x.low * math.exp(span * index / _HISTOGRAM_BINS)
        end = x.low * math.exp(span * (index + 1) / _HISTOGRAM_BINS)
        title = f"{escape(fmt_seconds(start))} to {escape(fmt_seconds(end))}: {n:,} calls"
        bars.append(Bar(start, end, [(n, "s-ok")], title))
    marks = []
    for label, q, css in _QUANTILES:
        quantile = sketch.quantile(q)
        if quantile is not None:
            marks.append(Mark(quantile, f"{label} {fmt_seconds(quantile)}", css))
    y = linear_axis("calls (per bin)", 0.0, max(counts), integer=True)
    return chart(name, "latency histogram", x, y, height=190, bars=bars, marks=marks)


def _calls_chart(points: list[Point], time: Axis, width: int) -> str:
    bars = [
        Bar(
            p.start,
            p.start + width,
            [(p.calls - p.errors, "s-ok"), (p.errors, "s-err")],
            f"{escape(fmt_time(p.start))}: {p.calls:,} calls, {p.errors:,} failed, "
            f"{p.rate_limited:,} got 429",
        )
        for p in points
    ]
    y = linear_axis(f"calls (per {fmt_duration(width)})", 0.0, max(p.calls for p in points), integer=True)
    legend = [("succeeded", "s-ok"), ("failed", "s-err")]
    return chart("calls-over-time", "calls over time", time, y, height=220, bars=bars, legend=legend)


def _cost_chart(points: list[Point], time: Axis, width: int) -> str:
    bars = [
        Bar(
            p.start,
            p.start + width,
            [(p.cost_usd, "s-cost")],
            f"{escape(fmt_time(p.start))}: {escape(fmt_cost(p.cost_usd))}, {p.calls:,} calls",
        )
        for p in points
    ]
    peak = max(p.cost_usd for p in points)
    y = linear_axis(f"cost (USD per {fmt_duration(width)})", 0.0, peak if peak > 0 else 1.0)
    return chart("cost-over-time", "cost over time", time, y, height=220, bars=bars)
