"""The HTML view: one self-contained file, inline CSS and SVG charts, no scripts.

Every string that comes from the logs (models, tenants, routes) is user
data and goes through `html.escape`, in tables and in chart tooltips alike.
"""

from __future__ import annotations

import math
from html import escape

from ._aggregate import Aggregate
from ._sketch import Sketch
from ._tables import Table, fmt_cost, fmt_seconds, fmt_time

__all__ = ["render_html"]

_WIDTH = 720
_HEIGHT = 160
_PAD = 28  # room for the axis labels
_HISTOGRAM_BINS = 40

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; }
ul.summary { list-style: none; padding: 0; } ul.summary li { margin: .15em 0; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { padding: .25em .7em; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f4; } p.note { color: #666; font-size: .9em; }
.charts { display: flex; flex-wrap: wrap; gap: 1.5em; }
figure { margin: 0; } figcaption { font-weight: 600; margin-bottom: .3em; }
svg text { font: 11px system-ui, sans-serif; fill: #555; }
rect.bar { fill: #4e79a7; } rect.bar:hover { fill: #f28e2b; }
line.q { stroke: #e15759; stroke-dasharray: 3 2; }
"""


def render_html(title: str, lines: list[str], tables: list[Table], agg: Aggregate) -> str:
    """The whole report as one HTML document."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        '<ul class="summary">',
        *(f"<li>{escape(line)}</li>" for line in lines),
        "</ul>",
        "<h2>Cost over time</h2>",
        _cost_chart(agg),
        "<h2>Latency by model</h2>",
        '<div class="charts">',
    ]
    for model, stats in agg.groups["model"].ranked(by_cost=False):
        if stats.latency is not None and stats.latency.count:
            parts.append(
                f"<figure><figcaption>{escape(model)} ({stats.latency.count:,} calls)</figcaption>"
                f"{_histogram(stats.latency)}</figure>"
            )
    parts.append("</div>")
    parts.extend(_table(table) for table in tables)
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _table(table: Table) -> str:
    head = "".join(f"<th>{escape(column)}</th>" for column in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in table.rows
    )
    note = f'<p class="note">{escape(table.note)}</p>' if table.note else ""
    return f"<h2>{escape(table.title)}</h2><table><tr>{head}</tr>{body}</table>{note}"


def _svg(body: list[str], label: str) -> str:
    return (
        f'<svg width="{_WIDTH}" height="{_HEIGHT + _PAD}" '
        f'role="img" aria-label="{escape(label)}">' + "".join(body) + "</svg>"
    )


def _histogram(sketch: Sketch) -> str:
    """Calls per latency bin, log-scaled x axis, with p50/p95/p99 marked."""
    low, high = max(sketch.min, 1e-4), max(sketch.max, 1e-4)
    span = math.log(high / low) or 1.0  # one value: a single full-width bar
    counts = [0] * _HISTOGRAM_BINS
    for value, n in sketch.buckets():
        share = math.log(max(value, low) / low) / span
        counts[min(int(share * _HISTOGRAM_BINS), _HISTOGRAM_BINS - 1)] += n
    peak = max(counts) or 1
    bar_w = _WIDTH / _HISTOGRAM_BINS
    body: list[str] = []
    for index, n in enumerate(counts):
        if not n:
            continue
        height = n / peak * _HEIGHT
        start, end = (
            low * math.exp(span * index / _HISTOGRAM_BINS),
            low * math.exp(span * (index + 1) / _HISTOGRAM_BINS),
        )
        body.append(
            f'<rect class="bar" x="{index * bar_w:.1f}" y="{_HEIGHT - height:.1f}" '
            f'width="{max(bar_w - 1, 1):.1f}" height="{height:.1f}">'
            f"<title>{escape(fmt_seconds(start))} to {escape(fmt_seconds(end))}: {n:,} calls</title></rect>"
        )
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        quantile = sketch.quantile(q)
        if quantile is None:
            continue
        x = math.log(max(quantile, low) / low) / span * _WIDTH
        body.append(
            f'<line class="q" x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{_HEIGHT}">'
            f"<title>{name} {escape(fmt_seconds(quantile))}</title></line>"
        )
    body.append(f'<text x="0" y="{_HEIGHT + 16}">{escape(fmt_seconds(low))}</text>')
    body.append(f'<text x="{_WIDTH}" y="{_HEIGHT + 16}" text-anchor="end">{escape(fmt_seconds(high))}</text>')
    body.append(f'<text x="{_WIDTH / 2}" y="{_HEIGHT + 16}" text-anchor="middle">latency (log scale)</text>')
    return _svg(body, "latency histogram")


def _cost_chart(agg: Aggregate) -> str:
    """Cost per time bucket, bars on a linear time axis."""
    points = agg.timeline.points()
    if not points:
        return "<p>No calls.</p>"
    width_s = agg.timeline.width_s
    t0, t1 = points[0][0], points[-1][0] + width_s
    peak = max(cost for _, cost, _, _ in points) or 1.0
    bar_w = max(_WIDTH * width_s / (t1 - t0), 1.0)
    body: list[str] = []
    for start, cost, calls, errors in points:
        height = cost / peak * _HEIGHT
        x = (start - t0) / (t1 - t0) * _WIDTH
        body.append(
            f'<rect class="bar" x="{x:.1f}" y="{_HEIGHT - height:.1f}" '
            f'width="{bar_w:.1f}" height="{height:.1f}">'
            f"<title>{escape(fmt_time(start))}: {escape(fmt_cost(cost))}, {calls:,} calls, "
            f"{errors:,} errors</title></rect>"
        )
    body.append(f'<text x="0" y="{_HEIGHT + 16}">{escape(fmt_time(t0))}</text>')
    body.append(f'<text x="{_WIDTH}" y="{_HEIGHT + 16}" text-anchor="end">{escape(fmt_time(t1))}</text>')
    body.append(
        f'<text x="{_WIDTH / 2}" y="{_HEIGHT + 16}" text-anchor="middle">'
        f"{escape(fmt_cost(peak))} max per {width_s // 60} min</text>"
    )
    return _svg(body, "cost over time")
