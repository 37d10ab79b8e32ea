"""`llmpulse report`: numbers, input formats, time windows, output views, bounded memory."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import math
import random
import re
import sys
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from llmpulse._cli import main
from llmpulse._report._aggregate import OTHER, Aggregate, ErrorKinds, Timeline
from llmpulse._report._charts import linear_axis, log_axis, time_axis
from llmpulse._report._command import aggregate
from llmpulse._report._read import Call, Skipped, parse_line
from llmpulse._report._sketch import RELATIVE_ACCURACY
from llmpulse._units import fmt_duration
from llmpulse.events import AttemptEvent, CallEvent, InteractionSummary
from llmpulse.sinks import JsonlSink, StructlogSink
from llmpulse.testing import make_call_event

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MODELS = ("gpt-4o-mini", "claude-haiku-4-5")
TENANTS = ("acme", "globex", "initech")
ROUTES = ("/chat", "/search")


def make_events(n: int, seed: int = 7) -> list[CallEvent]:
    """A varied workload: lognormal latencies, streams with TTFT, 429s, errors, retries, rejections."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        kind = rng.choices(("ok", "429", "500", "rejected"), (85, 8, 4, 3))[0]
        streamed = i % 3 == 0
        attempts = {"ok": rng.choice((1, 1, 1, 2)), "429": 3, "500": 2, "rejected": 0}[kind]
        events.append(
            make_call_event(
                call_id=f"c{i}",
                model=MODELS[i % 2],
                tenant=rng.choice(TENANTS),
                route=rng.choice(ROUTES),
                started_at=T0 + timedelta(seconds=i),
                latency_s=rng.lognormvariate(-0.7, 0.9),
                streamed=streamed,
                ttft_s=rng.lognormvariate(-2.0, 0.6) if streamed and kind == "ok" else None,
                outcome={"ok": "ok", "429": "error", "500": "error", "rejected": "rejected"}[kind],
                http_status={"ok": 200, "429": 429, "500": 500, "rejected": None}[kind],
                attempts=attempts,
                retries=max(0, attempts - 1),
                input_tokens=rng.randint(10, 5000),
                output_tokens=rng.randint(0, 800),
                # Exact in picodollars; every 10th call is unpriced.
                cost_usd=None if i % 10 == 9 else rng.randint(1, 100_000) / 10**7,
            )
        )
    return events


def write_jsonl(path: Path, events: list[Any]) -> Path:
    sink = JsonlSink(path)
    for event in events:
        sink.emit(event)
    sink.close()
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["report", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def parse_call(event: CallEvent) -> Call:
    """The report's reading of one event, as a JSONL line."""
    call = parse_line(JsonlSink("unused").render_line(event).encode(), Skipped())
    assert call is not None
    return call


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def assert_totals(group: dict[str, Any], events: list[CallEvent]) -> None:
    """Every number of a group against the events it covers, computed exactly here."""
    n = len(events)
    assert group["calls"] == n
    assert group["error_rate"] == sum(e.outcome in ("error", "rejected") for e in events) / n
    assert group["rate_limited_rate"] == sum(e.http_status == 429 for e in events) / n
    assert group["attempts_per_call"] == sum(e.attempts for e in events) / n
    assert group["input_tokens"] == sum(e.input_tokens or 0 for e in events)
    assert group["output_tokens"] == sum(e.output_tokens or 0 for e in events)
    priced = [round(e.cost_usd * 10**7) for e in events if e.cost_usd is not None]
    assert group["cost_usd"] == sum(priced) / 10**7  # exact: summed as integers
    assert group["unpriced_calls"] == n - len(priced)


def assert_quantiles(sketch: dict[str, Any], values: list[float]) -> None:
    assert sketch["count"] == len(values)
    for q in (50, 95, 99):
        exact = exact_quantile(values, q / 100)
        assert sketch[f"p{q}"] == pytest.approx(exact, rel=RELATIVE_ACCURACY), q


class TestNumbers:
    def test_per_model_quantiles_rates_attempts_and_exact_cost(self, tmp_path, capsys):
        """p50/p95/p99 and TTFT are within the stated 1 % of exact; rates, attempts and cost are exact."""
        events = make_events(4000)
        result = run_json(capsys, str(write_jsonl(tmp_path / "calls.jsonl", events)))
        assert_totals(result["total"], events)
        assert result["relative_accuracy"] == RELATIVE_ACCURACY
        for model in MODELS:
            mine = [e for e in events if e.model == model]
            group = result["by_model"]["groups"][model]
            assert_totals(group, mine)
            # Latency covers calls that were sent (rejected ones made no attempt).
            assert_quantiles(group["latency_s"], [e.latency_s for e in mine if e.attempts > 0])
            assert_quantiles(group["ttft_s"], [e.ttft_s for e in mine if e.ttft_s is not None])
        for tenant in TENANTS:
            assert_totals(result["by_tenant"]["groups"][tenant], [e for e in events if e.tenant == tenant])
        for route in ROUTES:
            assert_totals(result["by_route"]["groups"][route], [e for e in events if e.route == route])
        assert result["skipped_lines"]["total"] == 0

    def test_structlog_lines_among_other_logs_give_the_same_numbers(self, tmp_path, capsys):
        """Log-sink lines among app logs, attempts and garbage: calls counted, the rest skipped by kind."""
        events = make_events(500)
        out = io.StringIO()
        sink = StructlogSink(file=out, attempts=True)
        attempt = AttemptEvent("c", "c", 1, "openai", "chat", "gpt-4o", 429, None, None, 0.1, 1.0, True, 1.0)
        summary = InteractionSummary("i", "n", "c", "acme", None, None, 1, 0, 1, 1, 0.1, 0, 0.2, "ok")
        for i, event in enumerate(events):
            sink.emit(event)
            if i % 100 == 0:
                sink.emit(attempt)
                sink.emit(summary)
                out.write(
                    '{"event": "user logged in", "level": "info", "timestamp": "2026-03-01T12:00:00Z"}\n'
                )
        console = StructlogSink(file=out, format="console")
        console.emit(events[0])  # the human format is not JSON: skipped
        out.write("Traceback (most recent call last):\n\n")  # blank lines are not counted
        out.write('{"event": "llm.call", "model": "x"}\n')  # no started_at/latency_s
        out.write('{"type": "llm.call", "started_at": "2026-03-01T12:00:00", "latency_s": 1}\n')  # naive time
        out.write(out.getvalue().splitlines(keepends=True)[0][:50] + "\n")  # truncated line
        out.write("[1, 2]\n")
        (tmp_path / "app.log").write_text(out.getvalue())
        result = run_json(capsys, str(tmp_path / "app.log"))
        assert_totals(result["total"], events)
        assert result["skipped_lines"] == {
            "total": 5 * 3 + 4 + 2,
            "not_json": 4,  # console, traceback, truncated, and "[1, 2]" (JSON, but not an object)
            "other_events": 5 * 3,
            "malformed": 2,
        }

    def test_prefixed_lines_are_read_from_the_first_brace(self, tmp_path, capsys):
        """A container runtime's prefix before the JSON does not hide the call."""
        line = JsonlSink(tmp_path / "unused").render_line(make_call_event())
        (tmp_path / "pod.log").write_text(f"2026-03-01T12:00:00.1Z stdout F {line}")
        assert run_json(capsys, str(tmp_path / "pod.log"))["total"]["calls"] == 1


class TestIncident:
    """What is broken, since when, for whom: errors by kind, rates and latency over time, the worst run."""

    @pytest.fixture(name="storm")
    def _storm(self) -> list[CallEvent]:
        """30 minutes, 10 calls a minute; in minutes 10-14 "globex" gets 429s; one 500, one rejection."""
        events = []
        for minute in range(30):
            for i in range(10):
                at = T0 + timedelta(minutes=minute, seconds=6 * i)
                storm = 10 <= minute < 15 and i < 6  # 60 % of the calls fail in the storm
                kind = {"outcome": "ok", "http_status": 200, "error_type": None}
                if storm:
                    kind = {"outcome": "error", "http_status": 429, "error_type": "RateLimitError"}
                elif minute == 3 and i == 0:
                    kind = {"outcome": "error", "http_status": 500, "error_type": "InternalServerError"}
                elif minute == 20 and i == 2:
                    kind = {"outcome": "rejected", "http_status": None, "error_type": None}
                events.append(
                    make_call_event(
                        call_id=f"{minute}-{i}",
                        started_at=at,
                        tenant="globex" if storm else TENANTS[i % 3],
                        latency_s=(5.0 + i if storm else 0.2 + 0.01 * i),
                        attempts=0 if kind["outcome"] == "rejected" else 1,
                        rejected_reason="circuit_open" if kind["outcome"] == "rejected" else None,
                        **kind,
                    )
                )
        return events

    def test_errors_by_kind_and_status_with_first_and_last_seen(self, storm, tmp_path, capsys):
        """Each (error type, status) is counted with its first and last start; rejections name the policy."""
        result = run_json(capsys, str(write_jsonl(tmp_path / "s.jsonl", storm)))
        storm_times = [e.started_at.timestamp() for e in storm if e.error_type == "RateLimitError"]
        assert result["errors_by_kind"] == {
            "folded_calls": 0,
            "kinds": [
                {
                    "error": "RateLimitError",
                    "http_status": 429,
                    "calls": 30,
                    "first": min(storm_times),
                    "last": max(storm_times),
                },
                *(
                    {"error": name, "http_status": status, "calls": 1, "first": at, "last": at}
                    for name, status, at in (
                        ("InternalServerError", 500, (T0 + timedelta(minutes=3)).timestamp()),
                        (
                            "rejected: circuit_open",
                            None,
                            (T0 + timedelta(minutes=20, seconds=12)).timestamp(),
                        ),
                    )
                ),
            ],
        }

    def test_timeline_counts_429s_and_keeps_latency_quantiles_per_bucket(self, storm, tmp_path, capsys):
        """Per minute: 429s exactly, and p50/p95/p99 of the sent calls within 1 %."""
        points = run_json(capsys, str(write_jsonl(tmp_path / "s.jsonl", storm)))["timeline"]["points"]
        assert len(points) == 30
        for minute, point in enumerate(points):
            mine = [e for e in storm if e.started_at.timestamp() // 60 * 60 == point["start"]]
            assert point["start"] == (T0 + timedelta(minutes=minute)).timestamp()
            assert point["rate_limited"] == sum(e.http_status == 429 for e in mine)
            assert_quantiles(point["latency_s"], [e.latency_s for e in mine if e.attempts > 0])

    def test_summary_names_the_worst_bucket_the_elevated_run_and_who(self, storm, tmp_path, capsys):
        """The worst minute, the run around it at half its rate or more, the tenant and model most hit."""
        code, out, _ = run(capsys, str(write_jsonl(tmp_path / "s.jsonl", storm)), "--top", "2")
        assert code == 0
        assert (
            "worst 1 min bucket: 2026-03-01 12:10:00 UTC, 60.0 % errors (6 of 10 calls); at least half that "
            "rate from 2026-03-01 12:10:00 UTC to 2026-03-01 12:15:00 UTC (5 min)"
        ) in out
        assert "most errors: tenant globex (30), model gpt-4o-mini (32)" in out
        assert "errors 10.7 % (32 calls)" in out
        assert re.search(r"RateLimitError\s+│\s+429\s+│\s+30\s+│\s+93\.8 %", out)
        assert re.search(r"^Top tenants by errors", out, re.MULTILINE)
        assert "1 more tenant with errors" in out  # globex plus the two tenants of the 500 and the rejection

    def test_no_errors_no_incident(self, tmp_path, capsys):
        """Without a failed call there is no incident line and no error table."""
        events = [make_call_event(call_id=str(i), started_at=T0 + timedelta(seconds=i)) for i in range(20)]
        code, out, _ = run(capsys, str(write_jsonl(tmp_path / "ok.jsonl", events)))
        assert code == 0
        assert "worst" not in out
        assert "Errors by type" not in out
        assert "Top tenants by errors" not in out


class TestCharts:
    """The axes the HTML charts draw: round ticks that cover the data, titles with units."""

    @pytest.mark.parametrize(("low", "high"), [(0, 0.0003), (0, 7), (0, 67.3), (12, 13), (0, 0), (0, 1234)])
    def test_linear_ticks_cover_the_data_in_round_steps(self, low, high):
        """First tick at or below the minimum, last at or above the maximum, evenly spaced; axis = ticks."""
        axis = linear_axis("x (u)", low, high)
        values = [value for value, _ in axis.ticks]
        assert values[0] <= low
        assert values[-1] >= high
        assert (axis.low, axis.high) == (values[0], values[-1])
        steps = {round(b - a, 12) for a, b in itertools.pairwise(values)}
        assert len(steps) == 1
        assert 2 <= len(values) <= 12
        assert all(float(label.replace(",", "")) == pytest.approx(value) for value, label in axis.ticks)

    def test_integer_axes_never_step_by_fractions(self):
        """Counts of calls get whole ticks, even when the largest count is 3."""
        axis = linear_axis("calls (per bin)", 0, 3, integer=True)
        assert [label for _, label in axis.ticks] == ["0", "1", "2", "3"]

    def test_scaled_axis_labels_in_the_titled_unit(self):
        """Seconds drawn in ms: labels are milliseconds, values stay seconds."""
        axis = linear_axis("latency (ms)", 0, 0.42, scale=1000)
        assert axis.ticks[-1] == (pytest.approx(0.5), "500")

    @pytest.mark.parametrize(("low", "high"), [(0.0032, 41.0), (0.25, 0.25), (1e-4, 2e-4), (2.0, 5.0)])
    def test_log_ticks_are_1_2_5_and_cover_the_data(self, low, high):
        """A log axis runs from a 1-2-5 tick at or below the minimum to one at or above the maximum."""
        axis = log_axis("latency (s, log scale)", low, high)
        values = [value for value, _ in axis.ticks]
        assert values[0] <= low * (1 + 1e-9)
        assert values[-1] >= high * (1 - 1e-9)
        assert values[0] < values[-1]
        for value in values:
            assert f"{value:.0e}"[0] in "125"
        assert axis.fraction(axis.low) == 0.0
        assert axis.fraction(axis.high) == 1.0

    def test_time_ticks_on_whole_minutes_and_the_day_in_the_title(self):
        """Two hours from 02:03:20: quarter-hour ticks from 02:00 to 04:15, the date in the title."""
        start = datetime(2026, 3, 1, 2, 3, 20, tzinfo=UTC).timestamp()
        axis = time_axis(start, start + 2 * 3600)
        assert axis.title == "time (UTC, 2026-03-01)"
        assert [label for _, label in axis.ticks][:2] == ["02:00", "02:15"]
        assert axis.ticks[-1][1] == "04:15"
        assert axis.low <= start

    def test_time_ticks_across_midnight_carry_the_date(self):
        """An axis over two UTC days labels each tick with month and day."""
        start = datetime(2026, 3, 1, 22, 0, tzinfo=UTC).timestamp()
        axis = time_axis(start, start + 4 * 3600)
        assert axis.title == "time (UTC)"
        assert axis.ticks[0][1] == "03-01 22:00"
        assert axis.ticks[-1][1] == "03-02 02:00"

    def test_time_ticks_over_months_stay_few(self):
        """A year of input: ticks whole weeks apart, no more than ten of them."""
        start = T0.timestamp()
        axis = time_axis(start, start + 365 * 86400)
        values = [value for value, _ in axis.ticks]
        assert len(values) <= 10
        assert values[0] <= start
        assert values[-1] >= start + 365 * 86400
        assert {(b - a) % (7 * 86400) for a, b in itertools.pairwise(values)} == {0}

    def test_html_without_any_sent_call(self, tmp_path, capsys):
        """Only rejected calls: no latency to draw, the page still renders and says so."""
        events = [
            make_call_event(
                call_id=str(i),
                started_at=T0 + timedelta(seconds=i),
                outcome="rejected",
                attempts=0,
                http_status=None,
                rejected_reason="budget_exceeded",
            )
            for i in range(5)
        ]
        out_html = tmp_path / "r.html"
        code, _, _ = run(capsys, str(write_jsonl(tmp_path / "r.jsonl", events)), "--html", str(out_html))
        assert code == 0
        page = out_html.read_text()
        assert "No calls were sent." in page
        assert "<td>rejected: budget_exceeded</td><td>-</td><td>5</td><td>100.0 %</td>" in page


class TestInputs:
    def test_several_files_gzip_and_stdin(self, tmp_path, capsys, monkeypatch):
        """Plain, .gz and stdin inputs add up."""
        events = make_events(300)
        plain = write_jsonl(tmp_path / "a.jsonl", events[:100])
        packed = tmp_path / "b.jsonl.gz"
        with gzip.open(packed, "wb") as file:
            file.write(write_jsonl(tmp_path / "b.jsonl", events[100:200]).read_bytes())
        stdin = write_jsonl(tmp_path / "c.jsonl", events[200:]).read_bytes()
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        result = run_json(capsys, str(plain), str(packed), "-")
        assert_totals(result["total"], events)

    def test_unreadable_and_corrupt_inputs_exit_2_naming_the_file(self, tmp_path, capsys):
        """A missing file or a broken .gz is a usage error (exit 2) that names the file."""
        code, out, err = run(capsys, str(tmp_path / "missing.jsonl"))
        assert (code, out) == (2, "")
        assert "missing.jsonl" in err
        broken = tmp_path / "broken.jsonl.gz"
        broken.write_bytes(b"not gzip at all\n")
        code, _, err = run(capsys, str(broken))
        assert code == 2
        assert "broken.jsonl.gz" in err


class TestWindow:
    @pytest.fixture(name="minutes")
    def _minutes(self, tmp_path) -> Path:
        """100 calls one minute apart, newest at T0 + 99 min, written out of order."""
        events = [make_call_event(call_id=str(i), started_at=T0 + timedelta(minutes=i)) for i in range(100)]
        return write_jsonl(tmp_path / "m.jsonl", events[50:] + events[:50])

    def test_since_is_relative_to_the_newest_event(self, minutes, capsys):
        """--since 10m keeps the calls of the last 10 minutes of the file (both ends inclusive)."""
        result = run_json(capsys, str(minutes), "--since", "10m")
        assert result["total"]["calls"] == 11
        assert result["outside_window"] == 89
        assert result["first_started_at"] == (T0 + timedelta(minutes=89)).timestamp()

    def test_until_and_absolute_times(self, minutes, capsys):
        """--until counts back from the newest too; ISO times are absolute (UTC when naive)."""
        assert run_json(capsys, str(minutes), "--since", "1h", "--until", "30m")["total"]["calls"] == 31
        result = run_json(capsys, str(minutes), "--since", "2026-03-01T13:00:00")
        assert result["total"]["calls"] == 40
        assert run_json(capsys, str(minutes), "--since", "1.5h")["total"]["calls"] == 91

    def test_since_on_stdin(self, minutes, capsys, monkeypatch):
        """stdin is spooled to disk so the newest event can be found first."""
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(minutes.read_bytes())))
        assert run_json(capsys, "-", "--since", "5m")["total"]["calls"] == 6

    @pytest.mark.parametrize(
        ("option", "value"), [("--since", "5x"), ("--until", "yesterday"), ("--by", "colour"), ("--top", "0")]
    )
    def test_bad_values_exit_2_naming_the_value(self, minutes, capsys, option, value):
        """A bad --since/--until/--by is a usage error that quotes the value."""
        with pytest.raises(SystemExit) as exc_info:
            main(["report", str(minutes), option, value])
        assert exc_info.value.code == 2
        assert repr(value) in capsys.readouterr().err


class TestViews:
    def test_rich_tables(self, tmp_path, capsys):
        """With rich: box-drawn tables, the summary lines, skipped lines and the accuracy stated."""
        path = write_jsonl(tmp_path / "a.jsonl", make_events(200))
        with path.open("a") as file:
            file.write("garbage\n")
        code, out, _ = run(capsys, str(path), "--top", "2")
        assert code == 0
        assert "┃ model" in out
        assert "skipped 1 lines" in out
        assert "within 1% of the exact values" in out
        assert "1 more tenant (--top N shows more)" in out

    def test_plain_text_without_rich(self, tmp_path, capsys, monkeypatch):
        """When rich cannot be imported the same tables are printed as aligned plain text."""
        for name in ("rich", "rich.console", "rich.table", "rich.text"):
            monkeypatch.setitem(sys.modules, name, None)
        events = make_events(200)
        code, out, _ = run(capsys, str(write_jsonl(tmp_path / "a.jsonl", events)), "--by", "model,tenant")
        assert code == 0
        assert "┃" not in out
        assert re.search(r"^model\s+calls\s+err\s+429\s+p50\s+p95\s+p99", out, re.MULTILINE)
        calls = sum(e.model == "gpt-4o-mini" for e in events)
        assert re.search(rf"^gpt-4o-mini\s+{calls}\s", out, re.MULTILINE)
        assert "Top tenants by cost" in out
        assert "Top routes by cost" not in out

    def test_html_is_self_contained_and_escapes_log_strings(self, tmp_path, capsys):
        """One file, no external resources or scripts; a tenant named like a script tag is shown as text."""
        evil = "<script>alert(1)</script>"
        failed = make_call_event(tenant=evil, outcome="error", http_status=500, error_type="<b onclick=x>")
        events = [
            *make_events(300),
            make_call_event(tenant=evil, cost_usd=9.0, model='"><img src=x>'),
            failed,
        ]
        out_html = tmp_path / "report.html"
        code, out, _ = run(capsys, str(write_jsonl(tmp_path / "a.jsonl", events)), "--html", str(out_html))
        assert code == 0
        assert str(out_html) in out
        page = out_html.read_text()
        assert "<script" not in page.lower()
        assert "<img" not in page
        assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "<b " not in page
        assert "&lt;b onclick=x&gt;" in page  # the error type, in the errors table and the headline
        charts = re.findall(r'<svg class="chart" data-chart="([^"]+)"', page)
        assert charts == [
            "errors-over-time",
            "latency-over-time",
            *(f"latency-model-{i}" for i in range(3)),  # one histogram per model
            "calls-over-time",
            "cost-over-time",
        ]
        assert page.count("<svg") == len(charts)

    def test_unwritable_html_exits_2(self, tmp_path, capsys):
        """An --html path in a missing directory is reported, exit 2."""
        path = write_jsonl(tmp_path / "a.jsonl", make_events(5))
        code, _, err = run(capsys, str(path), "--html", str(tmp_path / "no" / "r.html"))
        assert code == 2
        assert "r.html" in err


class TestBounds:
    def test_distinct_keys_beyond_the_cap_fold_into_other(self):
        """Past the cap, new keys count in "(other)"; totals are unchanged and the fold is counted."""
        agg = Aggregate(max_groups={"model": 2, "tenant": 3, "route": 3})
        sink = JsonlSink("unused")
        for i in range(10):
            line = sink.render_line(make_call_event(tenant=f"t{i}", cost_usd=i / 100)).encode()
            call = parse_line(line, agg.skipped)
            assert call is not None
            agg.add(call)
        tenants = agg.groups["tenant"]
        assert sorted(tenants.stats) == [OTHER, "t0", "t1", "t2"]
        assert tenants.folded_calls == 7
        assert tenants.stats[OTHER].calls == 7
        assert tenants.stats[OTHER].cost_usd == sum(range(3, 10)) / 100
        assert agg.total.calls == 10

    def test_error_kinds_beyond_the_cap_fold_into_other(self):
        """Past the cap, new (error type, status) kinds count under "(other)", with first and last time."""
        kinds = ErrorKinds(cap=2)
        for i in range(6):
            kinds.add(
                parse_call(make_call_event(outcome="error", error_type=f"E{i}", started_at=T0 + timedelta(i)))
            )
        rows = kinds.ranked()
        assert [(kind, n) for kind, _, n, _, _ in rows] == [(OTHER, 4), ("E0", 1), ("E1", 1)]
        assert rows[0][3:] == ((T0 + timedelta(2)).timestamp(), (T0 + timedelta(5)).timestamp())
        assert kinds.folded_calls == 4

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [
            (45, "45 s"),
            (60, "1 min"),
            (960, "16 min"),
            (3600, "1 h"),
            (7500, "2 h 5 min"),
            (86400 * 3, "3 d"),
            (93600, "1 d 2 h"),
        ],
    )
    def test_bucket_widths_read_as_durations(self, seconds, text):
        """Bucket widths and runs are written for people: minutes, hours, days."""
        assert fmt_duration(seconds) == text

    def test_timeline_widens_its_buckets_instead_of_growing(self):
        """More minutes than the cap: bucket width doubles, every call and cent is still counted."""
        timeline = Timeline(cap=10)
        for minute in range(95):
            timeline.add(
                T0.timestamp() + minute * 60,
                10**12,
                error=minute % 2 == 0,
                rate_limited=minute % 5 == 0,
                latency_s=minute + 1.0,
            )
        points = timeline.points()
        assert len(points) <= 10
        assert timeline.width_s == 60 * 16
        assert sum(p.calls for p in points) == 95
        assert sum(p.errors for p in points) == 48
        assert sum(p.rate_limited for p in points) == 19
        assert sum(p.cost_usd for p in points) == 95.0
        # The sketches merged with their buckets: each one holds exactly its minutes' latencies.
        for point in points:
            first = int((point.start - T0.timestamp()) // 60)
            values = [m + 1.0 for m in range(95) if first <= m < first + 16]
            assert point.latency.count == point.calls == len(values)
            assert (point.latency.min, point.latency.max) == (min(values), max(values))

    def test_memory_does_not_grow_with_the_number_of_lines(self):
        """Peak traced memory for 60k lines (all tenants and routes new, 17 hours) is ~ that for 12k.

        Both runs exceed the 10k cap on tenants and routes; anything kept per
        line (even 100 bytes) would make the second peak far larger than the first.
        """
        base = JsonlSink("unused").render_line(make_call_event(tenant="TENANT", route="ROUTE", started_at=T0))
        stamp = T0.isoformat()

        def lines(n: int) -> Iterator[bytes]:
            for i in range(n):
                moment = (T0 + timedelta(seconds=i)).isoformat()
                yield (
                    base.replace("TENANT", f"t{i}").replace("ROUTE", f"/r{i}").replace(stamp, moment).encode()
                )

        def peak(n: int) -> int:
            tracemalloc.start()
            try:
                agg = aggregate(lines(n))
                _, top = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert agg.total.calls == n
            assert agg.groups["tenant"].folded_calls == n - 10_000
            return top

        small, large = peak(12_000), peak(60_000)
        assert large < 16 * 2**20  # the caps bound it: 2 x 10k groups + sketches + timeline (~5 MB here)
        assert large < 1.3 * small
