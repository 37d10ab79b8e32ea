"""Inline SVG charts with labelled axes: the scales, the ticks and the drawing.

Every axis has a title naming its quantity and unit (``latency (ms)``,
``time (UTC, 2026-03-01)``) and ticks that cover the data: the first tick is
at or below the data's minimum, the last at or above its maximum, and the
axis spans exactly the ticks. Charts are drawn in a fixed ``viewBox`` and
scale to the page's width. Callers pass already-escaped strings for any text
that came from the logs (`Series.label`, bar titles); axis text is made here
from numbers and is escaped all the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape

__all__ = [
    "WIDTH",
    "Axis",
    "Bar",
    "Mark",
    "Series",
    "chart",
    "linear_axis",
    "log_axis",
    "time_axis",
]

WIDTH = 1200
"""The ``viewBox`` width; the SVG itself is 100 % of the page wide."""
_LEFT, _RIGHT, _TOP, _BOTTOM = 78, 24, 30, 48  # room for tick labels, axis titles and marks
_TIME_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)
_TICK_TARGET = 6


@dataclass(slots=True)
class Axis:
    """A scale from data values to ``[0, 1]`` along an axis, with its ticks and title."""

    title: str
    """Quantity and unit, e.g. ``latency (ms)``."""
    low: float
    high: float
    ticks: list[tuple[float, str]]
    """``(value, label)``; the first is ``low`` and the last ``high``."""
    log: bool = False

    def fraction(self, value: float) -> float:
        """Where ``value`` lies between ``low`` (0) and ``high`` (1), clamped."""
        if self.log:
            value = max(value, self.low)
            share = math.log(value / self.low) / math.log(self.high / self.low)
        else:
            share = (value - self.low) / (self.high - self.low)
        return min(max(share, 0.0), 1.0)


def _fmt_number(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    return f"{value:,.{decimals}f}"


def _nice_step(span: float, target: int) -> float:
    raw = span / target
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10.0 * magnitude


def linear_axis(title: str, low: float, high: float, *, scale: float = 1.0, integer: bool = False) -> Axis:
    """An axis from ``low`` to ``high`` (data units), ticks at 1-2-2.5-5 steps of the shown unit.

    ``scale`` converts data to the unit in the title (1000 for seconds shown in ms);
    ``integer`` keeps the steps whole (counts of calls).
    """
    low_u, high_u = low * scale, high * scale
    if high_u <= low_u:
        high_u = low_u + (abs(low_u) or 1.0)
    step = _nice_step(high_u - low_u, _TICK_TARGET)
    if integer:
        step = max(1.0, round(step))
    first = math.floor(low_u / step + 1e-9) * step
    last = math.ceil(high_u / step - 1e-9) * step
    count = round((last - first) / step)
    ticks = [(first + i * step) for i in range(count + 1)]
    return Axis(title, first / scale, last / scale, [(t / scale, _fmt_number(t, step)) for t in ticks])


def log_axis(title: str, low: float, high: float, *, scale: float = 1.0) -> Axis:
    """A log axis from ``low`` to ``high`` (> 0), ticks at 1-2-5 of each decade of the shown unit."""
    low_u, high_u = max(low * scale, 1e-12), max(high * scale, 1e-12)
    candidates = [
        factor * 10.0**exponent
        for exponent in range(math.floor(math.log10(low_u)) - 1, math.ceil(math.log10(high_u)) + 1)
        for factor in (1, 2, 5)
    ]
    below = max(c for c in candidates if c <= low_u * (1 + 1e-9))
    above = min(c for c in candidates if c >= high_u * (1 - 1e-9))
    if above <= below:
        above = next(c for c in candidates if c > below)
    ticks = [c for c in candidates if below <= c <= above]
    if len(ticks) > 2 * _TICK_TARGET:  # many decades: only the powers of ten (and the ends)
        ticks = [c for c in ticks if c in (below, above) or math.log10(c).is_integer()]
    labels = [(t / scale, f"{t:,.{max(0, -math.floor(math.log10(t) + 1e-9))}f}") for t in ticks]
    return Axis(title, below / scale, above / scale, labels, log=True)


def time_axis(low: float, high: float) -> Axis:
    """Epoch seconds from ``low`` to ``high``, ticks on whole minutes, hours or days (UTC)."""
    if high <= low:
        high = low + 60
    step = next((s for s in _TIME_STEPS if (high - low) / s <= _TICK_TARGET + 2), None)
    if step is None:  # months: whole weeks, as many as keep the ticks apart
        week = _TIME_STEPS[-1]
        step = week * math.ceil((high - low) / week / (_TICK_TARGET + 2))
    first = math.floor(low / step) * step
    last = math.ceil(high / step) * step
    ticks = [float(first + i * step) for i in range(round((last - first) / step) + 1)]
    start, end = (datetime.fromtimestamp(t, UTC) for t in (first, last))
    if start.date() == end.date():
        title = f"time (UTC, {start:%Y-%m-%d})"
        fmt = "%H:%M"
    else:
        title = "time (UTC)"
        fmt = "%m-%d %H:%M"
    return Axis(
        title, float(first), float(last), [(t, datetime.fromtimestamp(t, UTC).strftime(fmt)) for t in ticks]
    )


@dataclass(slots=True)
class Series:
    """A line through ``(x, y)`` points, with a dot on each (a single point still shows)."""

    label: str
    """Already escaped: shown in the legend."""
    css: str
    """The colour class (``s1`` .. ``s4``)."""
    points: list[tuple[float, float]]


@dataclass(slots=True)
class Bar:
    """A bar from ``x0`` to ``x1`` (x data units), stacked segments of ``(height, css class)``."""

    x0: float
    x1: float
    segments: list[tuple[float, str]]
    title: str
    """Already escaped: the tooltip."""


@dataclass(slots=True)
class Mark:
    """A labelled vertical line at ``x`` (a quantile on a histogram)."""

    x: float
    label: str
    css: str


@dataclass(slots=True)
class _Frame:
    x: Axis
    y: Axis
    height: int
    body: list[str] = field(default_factory=list)

    def px(self, value: float) -> float:
        return _LEFT + self.x.fraction(value) * (WIDTH - _LEFT - _RIGHT)

    def py(self, value: float) -> float:
        return self.height - _BOTTOM - self.y.fraction(value) * (self.height - _TOP - _BOTTOM)


def chart(
    name: str,
    label: str,
    x: Axis,
    y: Axis,
    *,
    height: int = 260,
    series: Sequence[Series] = (),
    bars: Sequence[Bar] = (),
    marks: Sequence[Mark] = (),
    legend: Sequence[tuple[str, str]] = (),
    band: tuple[float, float, str] | None = None,
) -> str:
    """One SVG chart: grid, axes with ticks and titles, bars, lines, marks and a legend.

    ``legend`` is ``(escaped label, css class)``; the series' labels are added to it.
    ``band`` shades ``x`` from its first to its second value, with its label on top.
    """
    frame = _Frame(x, y, height)
    body = frame.body
    _axes(frame)
    if band is not None:
        x0, x1 = frame.px(band[0]), frame.px(band[1])
        body.append(
            f'<rect class="band" x="{x0:.1f}" y="{_TOP}" width="{x1 - x0:.1f}" '
            f'height="{height - _TOP - _BOTTOM}"/><text class="band-label" x="{(x0 + x1) / 2:.1f}" '
            f'y="{_TOP - 6}" text-anchor="middle">{escape(band[2])}</text>'
        )
    for bar in bars:
        x0, x1 = frame.px(bar.x0), frame.px(bar.x1)
        base = 0.0
        for value, css in bar.segments:
            if value <= 0:
                continue
            top, bottom = frame.py(base + value), frame.py(base)
            body.append(
                f'<rect class="bar {css}" x="{x0:.1f}" y="{top:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
                f'height="{max(bottom - top, 0.5):.1f}"><title>{bar.title}</title></rect>'
            )
            base += value
    for line in series:
        coords = [(frame.px(px), frame.py(py)) for px, py in line.points]
        path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
        body.append(f'<polyline class="line {line.css}" points="{path}"/>')
        body.extend(
            f'<circle class="dot {line.css}" cx="{cx:.1f}" cy="{cy:.1f}" r="2.5"/>' for cx, cy in coords
        )
    _marks(frame, marks)
    _legend(frame, [*legend, *((s.label, s.css) for s in series)])
    return (
        f'<svg class="chart" data-chart="{escape(name)}" viewBox="0 0 {WIDTH} {height}" '
        f'preserveAspectRatio="xMinYMin meet" role="img" aria-label="{escape(label)}">'
        + "".join(body)
        + "</svg>"
    )


def _axes(frame: _Frame) -> None:
    body, height = frame.body, frame.height
    bottom, right = height - _BOTTOM, WIDTH - _RIGHT
    body.append('<g class="axis x">')
    for value, text in frame.x.ticks:
        px = frame.px(value)
        body.append(f'<line class="grid" x1="{px:.1f}" y1="{_TOP}" x2="{px:.1f}" y2="{bottom}"/>')
        body.append(
            f'<text class="tick" x="{px:.1f}" y="{bottom + 16}" text-anchor="middle">{escape(text)}</text>'
        )
    body.append(
        f'<text class="title" x="{(_LEFT + right) / 2:.1f}" y="{height - 8}" '
        f'text-anchor="middle">{escape(frame.x.title)}</text></g>'
    )
    body.append('<g class="axis y">')
    for value, text in frame.y.ticks:
        py = frame.py(value)
        body.append(f'<line class="grid" x1="{_LEFT}" y1="{py:.1f}" x2="{right}" y2="{py:.1f}"/>')
        body.append(
            f'<text class="tick" x="{_LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">{escape(text)}</text>'
        )
    middle = (_TOP + bottom) / 2
    body.append(
        f'<text class="title" x="16" y="{middle:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {middle:.1f})">{escape(frame.y.title)}</text></g>'
    )
    body.append(
        f'<rect class="frame" x="{_LEFT}" y="{_TOP}" width="{right - _LEFT}" height="{bottom - _TOP}"/>'
    )


def _marks(frame: _Frame, marks: Sequence[Mark]) -> None:
    # Labels sit above the plot, one row each, so close quantiles (p95 next to p99) never overlap.
    bottom = frame.height - _BOTTOM
    for row, mark in enumerate(marks):
        px = frame.px(mark.x)
        anchor = "end" if px > WIDTH * 0.8 else "start"
        shift = -4 if anchor == "end" else 4
        top = _TOP + 12 * row + 12
        frame.body.append(
            f'<g class="mark"><line class="q {mark.css}" x1="{px:.1f}" y1="{top - 10}" '
            f'x2="{px:.1f}" y2="{bottom}"/>'
            f'<text class="mark-label {mark.css}" x="{px + shift:.1f}" y="{top:.1f}" '
            f'text-anchor="{anchor}">{escape(mark.label)}</text></g>'
        )


def _legend(frame: _Frame, entries: Sequence[tuple[str, str]]) -> None:
    if not entries:
        return
    # Right-aligned in the corner; 7 px per character is wide enough for 12 px system-ui.
    widths = [7 * len(text) + 22 for text, _ in entries]
    x = float(WIDTH - _RIGHT - sum(widths))
    items: list[str] = []
    for (text, css), width in zip(entries, widths, strict=True):
        items.append(
            f'<rect class="swatch {css}" x="{x:.1f}" y="8" width="12" height="12"/>'
            f'<text class="legend-label" x="{x + 16:.1f}" y="18">{text}</text>'
        )
        x += width
    frame.body.append('<g class="legend">' + "".join(items) + "</g>")
