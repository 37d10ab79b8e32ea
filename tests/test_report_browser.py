"""The HTML report in a real browser: headless chromium lays it out; axes, ticks and marks are read back.

The input is `report_browser.incident_events`: two hours with a 429 storm.
Every number the checks compare against is computed here from the events,
not taken from the report. Set ``REPORT_SCREENSHOT=docs/img/report.png``
to also copy the screenshot there (the one in docs/report.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from llmpulse._cli import main
from llmpulse._units import fmt_seconds
from llmpulse.events import CallEvent
from llmpulse.sinks import JsonlSink
from report_browser import (
    INCIDENT_START,
    STORM,
    chromium,
    dump_dom,
    incident_events,
    png_pixels,
    screenshot,
)

SCREENSHOT_SIZE = (1400, 1800)
_TITLE = re.compile(r"^(?P<quantity>[a-z][a-z ]*[a-z]) \((?P<unit>[^()]+)\)$")


@dataclass
class AxisText:
    """The text of one axis as the browser has it."""

    title: str = ""
    ticks: list[str] = field(default_factory=list)


@dataclass
class ChartText:
    """The text of one chart."""

    name: str
    axes: dict[str, AxisText] = field(default_factory=lambda: {"x": AxisText(), "y": AxisText()})
    marks: list[str] = field(default_factory=list)
    bar_titles: list[str] = field(default_factory=list)
    legend: list[str] = field(default_factory=list)


class _Charts(HTMLParser):
    """Collects every ``svg.chart``: axis titles and ticks, mark labels, bar tooltips, legend labels."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: list[ChartText] = []
        self._axis: str | None = None
        self._text: str | None = None  # the class of the <text> or <title> being read
        self._in_bar = False
        self._buffer = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "svg" and "chart" in classes:
            self.charts.append(ChartText(dict(attrs)["data-chart"] or ""))
        elif tag == "g" and "axis" in classes:
            self._axis = "x" if "x" in classes else "y"
        elif tag == "rect" and "bar" in classes:
            self._in_bar = True
        elif tag == "text" or (tag == "title" and self._in_bar):
            self._text, self._buffer = " ".join(classes) if tag == "text" else "bar-title", ""

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._buffer += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "g":
            self._axis = None
        elif tag == "rect":
            self._in_bar = False
        elif tag in ("text", "title") and self._text is not None:
            chart, kind, text = self.charts[-1], self._text, self._buffer.strip()
            if self._axis is not None and kind in ("tick", "title"):
                axis = chart.axes[self._axis]
                if kind == "tick":
                    axis.ticks.append(text)
                else:
                    axis.title = text
            elif kind.startswith("mark-label"):
                chart.marks.append(text)
            elif kind == "bar-title":
                chart.bar_titles.append(text)
            elif kind == "legend-label":
                chart.legend.append(text)
            self._text = None


@pytest.fixture(name="incident", scope="module")
def _incident() -> list[CallEvent]:
    return incident_events()


@pytest.fixture(name="page", scope="module")
def _page(incident: list[CallEvent], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The incident's HTML report, and its aggregate as ``--json`` prints it."""
    chromium()  # skip (or fail under CI=true) before any work
    tmp = tmp_path_factory.mktemp("report")
    sink = JsonlSink(tmp / "incident.jsonl")
    for event in incident:
        sink.emit(event)
    sink.close()
    html, out = tmp / "report.html", tmp / "report.json"
    with out.open("w") as file, pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", file)
        assert main(["report", str(tmp / "incident.jsonl"), "--html", str(html), "--json"]) == 0
    return html, json.loads(out.read_text())


@pytest.fixture(name="dom", scope="module")
def _dom(page: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> str:
    """The page's DOM as chromium has it after loading."""
    return dump_dom(page[0], tmp_path_factory.mktemp("profile"))


@pytest.fixture(name="charts", scope="module")
def _charts(dom: str) -> dict[str, ChartText]:
    """The charts of the page."""
    parser = _Charts()
    parser.feed(dom)
    return {chart.name: chart for chart in parser.charts}


def _unit_of(axis: AxisText) -> str:
    match = _TITLE.match(axis.title)
    assert match, f"axis title {axis.title!r} does not read 'quantity (unit)'"
    return match["unit"]


def _numbers(axis: AxisText) -> list[float]:
    values = [float(tick.replace(",", "")) for tick in axis.ticks]
    assert values == sorted(values), axis.ticks
    assert len(values) >= 3, axis.ticks
    return values


def _times(axis: AxisText) -> list[float]:
    """The time ticks as epoch seconds: ``HH:MM`` on the day the title names."""
    day = re.fullmatch(r"UTC, (\d{4}-\d{2}-\d{2})", _unit_of(axis))
    assert day, axis.title
    return [datetime.fromisoformat(f"{day[1]}T{tick}:00+00:00").timestamp() for tick in axis.ticks]


def _seconds_factor(unit: str) -> float:
    """How many of the axis' unit make a second."""
    return {"s": 1.0, "ms": 1000.0}[unit.split(",", maxsplit=1)[0]]


def _spans(ticks: list[float], low: float, high: float) -> None:
    assert ticks[0] <= low, (ticks, low)
    assert ticks[-1] >= high, (ticks, high)


def _minutes(incident: list[CallEvent]) -> dict[float, list[CallEvent]]:
    buckets: dict[float, list[CallEvent]] = defaultdict(list)
    for event in incident:
        buckets[event.started_at.timestamp() // 60 * 60].append(event)
    return buckets


TIMELINE = ("errors-over-time", "latency-over-time", "calls-over-time", "cost-over-time")


class TestHeadline:
    def test_cards_say_since_when_and_for_whom(self, dom, incident):
        """The cards give the storm's window, the tenant behind it and the top error, from the events."""
        cards = dict(re.findall(r'<div class="k">([^<]+)</div><div class="v">([^<]+)</div>', dom))
        start, end = (INCIDENT_START + offset for offset in STORM)
        assert cards["Errors elevated (UTC)"] == f"{start:%H:%M}\u2013{end:%H:%M}"
        failed = [e for e in incident if e.outcome in ("error", "rejected")]
        tenants = Counter(e.tenant for e in failed)
        assert cards["Most affected tenant"] == tenants.most_common(1)[0][0] == "globex"
        assert cards["Errors"] == f"{100 * len(failed) / len(incident):.1f} %"
        top = Counter((e.error_type, e.http_status) for e in failed).most_common(1)[0]
        assert f"most: {top[0][0]} {top[0][1]} ({top[1]:,})" in dom


class TestAxes:
    def test_every_axis_title_names_quantity_and_unit(self, charts):
        """Each chart's two axes read 'quantity (unit)', with the unit each chart should have."""
        expected = {
            "errors-over-time": ("time", "failed calls (% of calls)"),
            "latency-over-time": ("time", "latency (s)"),
            "calls-over-time": ("time", "calls (per 1 min)"),
            "cost-over-time": ("time", "cost (USD per 1 min)"),
        }
        models = [name for name in charts if name.startswith("latency-model-")]
        assert len(models) == 4
        expected |= dict.fromkeys(models, ("latency (s, log scale)", "calls (per bin)"))
        assert sorted(charts) == sorted(expected)
        for name, (x_title, y_title) in expected.items():
            chart = charts[name]
            for axis in chart.axes.values():
                _unit_of(axis)
            if x_title == "time":
                assert chart.axes["x"].title == "time (UTC, 2026-03-01)", name
            else:
                assert chart.axes["x"].title == x_title, name
            assert chart.axes["y"].title == y_title, name

    def test_time_ticks_span_the_first_and_last_call(self, charts, incident):
        """Every chart over time has time ticks from at or before the first call to at or after the last."""
        starts = [e.started_at.timestamp() for e in incident]
        for name in TIMELINE:
            ticks = _times(charts[name].axes["x"])
            _spans(ticks, min(starts), max(starts))
            assert ticks[-1] - ticks[0] <= 2.5 * 3600, ticks  # two hours of data: no empty half chart

    def test_rate_ticks_span_the_per_minute_error_and_429_rates(self, charts, incident):
        """The rate axis covers the lowest and highest per-minute error and 429 rate of the events."""
        rates = [
            100 * sum(pred(e) for e in mine) / len(mine)
            for mine in _minutes(incident).values()
            for pred in (lambda e: e.outcome in ("error", "rejected"), lambda e: e.http_status == 429)
        ]
        _spans(_numbers(charts["errors-over-time"].axes["y"]), min(rates), max(rates))
        assert max(rates) > 50  # the storm is on the chart
        assert charts["errors-over-time"].legend == ["HTTP 429", "errors"]

    def test_latency_over_time_ticks_span_the_quantiles(self, charts, page):
        """The latency axis covers the lowest p50 and the highest p99 of the time buckets."""
        points = page[1]["timeline"]["points"]
        values = [p["latency_s"][q] for p in points for q in ("p50", "p95", "p99") if p["latency_s"]["count"]]
        y = charts["latency-over-time"].axes["y"]
        factor = _seconds_factor(_unit_of(y))
        _spans(_numbers(y), min(values) * factor, max(values) * factor)
        assert charts["latency-over-time"].legend == ["p50", "p95", "p99"]

    def test_calls_and_cost_ticks_span_the_per_minute_totals(self, charts, incident):
        """The calls and cost axes reach the busiest and the costliest minute, from 0."""
        minutes = _minutes(incident).values()
        calls = [len(mine) for mine in minutes]
        costs = [sum(e.cost_usd or 0 for e in mine) for mine in minutes]
        _spans(_numbers(charts["calls-over-time"].axes["y"]), 0, max(calls))
        _spans(_numbers(charts["cost-over-time"].axes["y"]), 0, max(costs))


class TestHistograms:
    def test_one_shared_latency_axis_spanning_every_sent_call(self, charts, incident):
        """All models' histograms have the same ticks, from the fastest to the slowest sent call of all."""
        models = [chart for name, chart in charts.items() if name.startswith("latency-model-")]
        assert len({tuple(chart.axes["x"].ticks) for chart in models}) == 1
        x = models[0].axes["x"]
        factor = _seconds_factor(_unit_of(x))
        sent = [e.latency_s for e in incident if e.attempts > 0]
        ticks = _numbers(x)
        _spans(ticks, min(sent) * factor, max(sent) * factor)
        # Log ticks: every one a 1, 2 or 5 times a power of ten.
        assert all(re.fullmatch(r"[125]0*|0\.0*[125]", f"{t:g}") for t in ticks), ticks

    def test_bars_count_every_call_and_fit_under_the_count_axis(self, charts, page, incident):
        """Each model's bars add up to its sent calls; the count axis reaches the tallest bar."""
        order = list(page[1]["by_model"]["groups"])
        by_calls = sorted(order, key=lambda m: -page[1]["by_model"]["groups"][m]["calls"])
        for index, model in enumerate(by_calls):
            chart = charts[f"latency-model-{index}"]
            counts = [int(re.search(r": ([\d,]+) calls$", t)[1].replace(",", "")) for t in chart.bar_titles]
            assert sum(counts) == sum(e.model == model and e.attempts > 0 for e in incident), model
            _spans(_numbers(chart.axes["y"]), 0, max(counts))

    def test_p50_p95_p99_are_marked_and_labelled_with_their_values(self, charts, page):
        """Each histogram labels its p50, p95 and p99 with the model's quantiles, as the table prints them."""
        groups = page[1]["by_model"]["groups"]
        by_calls = sorted(groups, key=lambda m: -groups[m]["calls"])
        for index, model in enumerate(by_calls):
            latency = groups[model]["latency_s"]
            expected = [f"p{q} {fmt_seconds(latency[f'p{q}'])}" for q in (50, 95, 99)]
            assert charts[f"latency-model-{index}"].marks == expected, model


class TestScreenshot:
    def test_the_page_renders_full_width_with_the_charts_colours(self, page, tmp_path):
        """A real screenshot: the expected size, not blank, charts as wide as the page, colours shown."""
        png = tmp_path / "report.png"
        screenshot(page[0], png, tmp_path / "profile", SCREENSHOT_SIZE)
        data = png.read_bytes()
        width, height, rows = png_pixels(data)
        assert (width, height) == SCREENSHOT_SIZE
        channels = len(rows[0]) // width
        colours = {row[i : i + 3] for row in rows[::4] for i in range(0, len(row), channels * 2)}
        assert len(colours) > 200, len(colours)  # text, anti-aliasing and six series colours
        for name, rgb in (("errors", (214, 39, 40)), ("429", (255, 127, 14)), ("p50", (31, 119, 180))):
            assert bytes(rgb) in colours, name
        # Full width: a chart frame's edge is a grey line across the page but for the margins
        # (body 2 x 28 px, the y axis' 78 of 1,200 viewBox units): about 88 % of the window.
        longest = max(_grey_run(row, channels) for row in rows[::2])
        assert longest > 0.85 * width, longest
        target = os.environ.get("REPORT_SCREENSHOT")
        if target:
            shutil.copyfile(png, target)


def _grey_run(row: bytes, channels: int) -> int:
    """The longest run of neutral grey pixels darker than the grid lines (the frame, anti-aliased or not)."""
    best = run = 0
    for i in range(0, len(row), channels):
        r, g, b = row[i], row[i + 1], row[i + 2]
        run = run + 1 if r == g == b and r < 220 else 0  # the grid lines are #e6e6e6 (230)
        best = max(best, run)
    return best
