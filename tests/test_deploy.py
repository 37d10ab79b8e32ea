"""The ops assets in deploy/: Prometheus rules (promtool), the Grafana dashboard, and an end-to-end run.

Everything runs against real binaries from Debian's ``prometheus`` package: ``promtool`` for
the rule unit tests, and ``prometheus`` servers on free 127.0.0.1 ports, one loaded with the
real rules (to syntax-check every query) and one scraping a workload process with a
time-scaled copy of the rules (every minute of a window or ``for:`` becomes a second).
Without the binaries the tests are skipped, under ``CI=true`` they fail (tests/prometheus_server.py).
"""

from __future__ import annotations

import bisect
import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmpulse.sinks._prometheus import DURATION_BUCKETS
from llmpulse.testing import FakeProvider, FaultPlan
from prometheus_server import PrometheusServer, prometheus_binary

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "llmpulse-rules.yml"
RULE_TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "llmpulse.json"
ALERTS_DOC = ROOT / "docs" / "prometheus-alerts.md"
WORKLOAD = Path(__file__).resolve().parent / "prometheus_workload.py"
SEVERITIES = {"warning", "page"}
# Grafana's variables and macros, replaced by plausible values before Prometheus parses a query.
GRAFANA_VARS = {
    "model": ".*",
    "tenant": ".*",
    "datasource": "prometheus",
    "__rate_interval": "1m",
    "__interval": "30s",
    "__range": "6h",
}
DEADLINE_S = 30.0


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [prometheus_binary("promtool"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def _grafana_substitute(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in GRAFANA_VARS, f"unknown Grafana variable ${name} in {expr!r}"
        return GRAFANA_VARS[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def _poll(what: str, check: Callable[[], Any], deadline_s: float = DEADLINE_S) -> Any:
    """Call ``check`` until it returns something truthy; fail after ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s} s waiting for {what}; last: {result!r}")
        time.sleep(0.2)


def _scaled_rules(text: str) -> str:
    """The rules with every duration's minutes made seconds (5m -> 5s, 1h -> 60s, 1w -> 10080s)."""
    seconds_per_minute = {"m": 1, "h": 60, "d": 1440, "w": 10080}

    def scale(match: re.Match[str]) -> str:
        return f"{int(match.group(1)) * seconds_per_minute[match.group(2)]}s"

    duration = r"(\d+)([mhdw])\b"
    text = re.sub(r"(?<=\[)" + duration + r"(?=\])", scale, text)
    text = re.sub(r"(?<=offset )" + duration, scale, text)
    return re.sub(r"(?<=for: )" + duration, scale, text)


def test_scaled_rules_rewrite_every_duration() -> None:
    """The time-scaled copy keeps the rules and rewrites windows, offsets and for: durations."""
    text = RULES.read_text()
    scaled = _scaled_rules(text)
    assert "[5s]" in scaled
    assert "[60s]" in scaled
    assert "[360s]" in scaled
    assert "offset 10080s" in scaled
    assert "for: 5s" in scaled
    assert not re.search(r"\[\d+[mhdw]\]|offset \d+[mhdw]\b|for: \d+[mhdw]\b", scaled)
    assert scaled.count("\n") == text.count("\n")


# --- promtool ---


def test_promtool_check_rules() -> None:
    """promtool accepts the rules file, with every rule in it."""
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"SUCCESS: (\d+) rules found", result.stdout)
    assert found, result.stdout
    assert int(found.group(1)) == len(re.findall(r"^\s+- (?:record|alert): ", RULES.read_text(), re.M))


def test_promtool_unit_tests_pass() -> None:
    """Every promtool unit test file is found, has tests and passes."""
    assert len(RULE_TESTS) >= 4
    result = _promtool("test", "rules", *map(str, RULE_TESTS))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("SUCCESS") == len(RULE_TESTS), output
    for path in RULE_TESTS:
        text = path.read_text()
        assert "alert_rule_test:" in text or "promql_expr_test:" in text, path


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """A wrong expectation makes promtool fail: the suite above is not vacuous."""
    broken = tmp_path / "broken.yml"
    source = (RULE_TESTS[0].parent / "ratios.yml").read_text()
    broken.write_text(
        source.replace("../llmpulse-rules.yml", str(RULES)).replace("value: 25000}", "value: 25001}")
    )
    result = _promtool("test", "rules", str(broken))
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def _alert_blocks(text: str) -> list[str]:
    return re.split(r"\n\s+- eval_time: ", text)[1:]


def test_every_alert_is_tested_at_both_tiers_and_just_under() -> None:
    """Each alert has a unit test where it fires as warning and as page, and one where nothing fires."""
    names = set(re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.M))
    assert len(names) == 8
    blocks = [b for path in RULE_TESTS for b in _alert_blocks(path.read_text())]
    for name in names:
        mine = [b for b in blocks if re.search(rf"alertname: {name}\n", b)]
        assert any("exp_alerts: []" in b for b in mine), f"{name}: no test where it does not fire"
        assert any("severity: warning" in b for b in mine), f"{name}: warning tier untested"
        assert any("severity: page" in b for b in mine), f"{name}: page tier untested"


# --- a Prometheus with the real rules: parsed rules and query syntax ---


@pytest.fixture(name="plain_prometheus", scope="module")
def _plain_prometheus() -> Iterator[PrometheusServer]:
    config = "global:\n  evaluation_interval: 1m\nrule_files:\n  - llmpulse-rules.yml\n"
    with PrometheusServer(config, {"llmpulse-rules.yml": RULES.read_text()}) as server:
        yield server


def _loaded_rules(server: PrometheusServer) -> list[dict[str, Any]]:
    groups = server.get("rules")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_rules_follow_the_conventions(plain_prometheus: PrometheusServer) -> None:
    """Recording rules are named llmpulse:metric:operations; alerts carry severity, numbers and a runbook."""
    rules = _loaded_rules(plain_prometheus)
    doc = ALERTS_DOC.read_text()
    anchors = {
        re.sub(r"[^\w-]", "", h.strip().lower().replace(" ", "-"))
        for h in re.findall(r"^#+ (.+)$", doc, re.M)
    }
    recording = [r for r in rules if r["type"] == "recording"]
    alerting = [r for r in rules if r["type"] == "alerting"]
    assert len(recording) >= 17
    assert len(alerting) == 16
    for rule in recording:
        assert re.fullmatch(r"llmpulse:[a-z0-9_]+:[a-z0-9_]+", rule["name"]), rule["name"]
    tiers: dict[str, set[str]] = {}
    for rule in alerting:
        labels, annotations = rule["labels"], rule["annotations"]
        assert labels["severity"] in SEVERITIES, rule["name"]
        tiers.setdefault(rule["name"], set()).add(labels["severity"])
        assert set(annotations) == {"summary", "description", "runbook"}, rule["name"]
        assert re.search(r"\d", annotations["description"]), f"{rule['name']}: no threshold in description"
        page, anchor = annotations["runbook"].split("#")
        assert page == "docs/prometheus-alerts.md"
        assert anchor == rule["name"].lower()
        assert anchor in anchors, f"docs/prometheus-alerts.md has no section #{anchor}"
        assert rule["duration"] > 0, f"{rule['name']} fires on a single evaluation"
    assert all(found == SEVERITIES for found in tiers.values()), tiers


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panel_targets() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in _dashboard()["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def test_dashboard_structure() -> None:
    """The dashboard has a Prometheus datasource variable, model and tenant filters, well-formed panels."""
    dash = _dashboard()
    assert 36 <= dash["schemaVersion"] <= 41
    assert dash["uid"]
    assert dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("model", "tenant"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
        assert variables[name]["includeAll"]
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid), panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    queries = " ".join(expr for _, expr in _panel_targets())
    for metric in (
        "gen_ai_client_operation_duration_seconds_bucket",
        "gen_ai_client_operation_time_to_first_chunk_seconds_bucket",
        "llmpulse_attempts_total",
        "llmpulse_requests_total",
        "llmpulse_tokens_total",
        "llmpulse_cost_usd_total",
        "llmpulse_circuit_state",
        "llmpulse_concurrency_limit",
        "llmpulse_events_dropped_total",
    ):
        assert metric in queries, f"no panel shows {metric}"


def test_no_dashboard_query_filters_a_histogram_by_tenant_or_route() -> None:
    """The gen_ai_client_* histograms have no tenant or route by default: no panel may select on them."""
    histogram_queries = [(title, expr) for title, expr in _panel_targets() if "gen_ai_client_" in expr]
    assert len(histogram_queries) >= 4
    for title, expr in histogram_queries:
        assert not re.search(r"\b(tenant|route)\s*(=~|!~|!=|=)", expr), f"{title}: {expr}"
        assert "by (tenant" not in expr, f"{title}: {expr}"


def test_grafana_substitution_is_not_a_no_op() -> None:
    """Variables are replaced, and a broken query is rejected by Prometheus (checked below)."""
    assert _grafana_substitute('rate(x{m=~"$model"}[$__rate_interval])') == 'rate(x{m=~".*"}[1m])'
    assert _grafana_substitute("${datasource}") == "prometheus"


def _check_syntax(server: PrometheusServer, expr: str) -> tuple[int, dict[str, Any]]:
    return server.api("query", query=expr)


def test_every_query_parses(plain_prometheus: PrometheusServer) -> None:
    """Prometheus parses every dashboard query and every rule expression (a parse error is a 400)."""
    status, body = _check_syntax(plain_prometheus, "sum(rate(x[5m])")
    assert (status, body["errorType"]) == (400, "bad_data")
    queries = [(title, _grafana_substitute(expr)) for title, expr in _panel_targets()]
    for variable in _dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            inner = re.fullmatch(r"label_values\((.*), *\w+\)", variable["query"]["query"])
            assert inner, variable["name"]
            queries.append((f"variable {variable['name']}", _grafana_substitute(inner.group(1))))
    queries += [(rule["name"], rule["query"]) for rule in _loaded_rules(plain_prometheus)]
    assert len(queries) > 40
    for title, expr in queries:
        status, body = _check_syntax(plain_prometheus, expr)
        assert status == 200, f"{title}: {expr}: {body.get('error')}"


# --- end to end: workload -> /metrics -> Prometheus with time-scaled rules ---


class _Workload:
    def __init__(self, base_url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKLOAD), base_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self.read()["metrics_port"])

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"workload exited with {self.proc.poll()}"
        data: dict[str, Any] = json.loads(line)
        return data

    def command(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            self.proc.wait(timeout=15)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            self.proc.kill()
            self.proc.wait()
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()


@pytest.fixture(name="e2e_fake", scope="module")
def _e2e_fake() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture(name="workload", scope="module")
def _workload(e2e_fake: FakeProvider) -> Iterator[_Workload]:
    prometheus_binary("prometheus")  # skip before starting anything
    workload = _Workload(e2e_fake.openai_base_url)
    try:
        yield workload
    finally:
        workload.stop()


@pytest.fixture(name="scaled_prometheus", scope="module")
def _scaled_prometheus(workload: _Workload) -> Iterator[PrometheusServer]:
    config = (
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "rule_files:\n  - scaled-rules.yml\n"
        "scrape_configs:\n  - job_name: workload\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{workload.port}']\n"
    )
    with PrometheusServer(config, {"scaled-rules.yml": _scaled_rules(RULES.read_text())}) as server:
        yield server


def _value(result: list[dict[str, Any]]) -> float | None:
    return float(result[0]["value"][1]) if result else None


def test_e2e_p95_agrees_with_llmpulse_then_5xx_alert_fires_only_under_faults(
    e2e_fake: FakeProvider, workload: _Workload, scaled_prometheus: PrometheusServer
) -> None:
    """Prometheus's p95 agrees with llmpulse.stats(); the scaled 5xx alert fires under faults only."""
    prom = scaled_prometheus
    # (a) p95. Latencies spread over 50-500 ms, so the p95 sits inside one bucket, (0.32, 0.64].
    calls = 120
    e2e_fake.plan = FaultPlan(latency_s=(0.05, 0.5), seed=1)
    own = workload.command(f"burst {calls}")
    assert own["calls"] == calls
    count_expr = 'sum(gen_ai_client_operation_duration_seconds_count{job="workload"})'
    _poll(f"{calls} calls scraped", lambda: _value(prom.query(count_expr)) == calls)
    quantile = (
        "histogram_quantile(0.95, sum by (le) "
        '(gen_ai_client_operation_duration_seconds_bucket{job="workload"}))'
    )
    prom_p95 = _value(prom.query(quantile))
    assert prom_p95 is not None
    # Prometheus finds the bucket that holds the true p95 exactly and interpolates inside it;
    # llmpulse's own p95 is within 1 % of the true value (docs/stats.md). So llmpulse's
    # value must lie in that bucket, widened by its 1 %.
    bounds = (0.0, *DURATION_BUCKETS)
    index = bisect.bisect_left(bounds, prom_p95)
    low, high = bounds[index - 1], bounds[index]
    assert low / 1.01 <= own["p95_s"] <= high * 1.01, (prom_p95, own["p95_s"], (low, high))
    assert abs(prom_p95 - own["p95_s"]) <= (high - low) + 0.01 * high

    # (b) healthy traffic: the 5xx ratio is computed, stays 0, and the alert is never even pending.
    e2e_fake.plan = FaultPlan(latency_s=0.02, seed=2)
    workload.command("loop")
    healthy_from = time.time()
    ratio = "llmpulse:llmpulse_requests:5xx_ratio_rate5m"

    def evaluated_since(start: float, seconds: float) -> bool:
        stamp = _value(prom.query(f"timestamp({ratio})"))
        return stamp is not None and stamp >= start + seconds

    # 5 s window + 1 s for:, and a margin: long enough for a false alarm to have fired.
    _poll("8 s of healthy rule evaluations", lambda: evaluated_since(healthy_from, 8))
    span = int(time.time() - healthy_from)
    assert _value(prom.query(f"max_over_time({ratio}[{span}s])")) == 0.0
    assert prom.query(f'max_over_time(ALERTS{{alertname="LLMPulse5xxRatioHigh"}}[{span}s])') == []

    # (c) 30 % of calls answered 500: the alert fires, as warning and as page.
    e2e_fake.plan = FaultPlan(latency_s=0.02, error_rate={500: 0.3}, seed=3)

    def firing() -> set[str]:
        alerts = prom.get("alerts")["alerts"]
        return {
            a["labels"]["severity"]
            for a in alerts
            if a["labels"]["alertname"] == "LLMPulse5xxRatioHigh" and a["state"] == "firing"
        }

    assert _poll("LLMPulse5xxRatioHigh firing at both tiers", lambda: firing() == SEVERITIES or None)
    alert = next(
        a for a in prom.get("alerts")["alerts"] if a["labels"]["alertname"] == "LLMPulse5xxRatioHigh"
    )
    assert alert["labels"]["gen_ai_request_model"] == "gpt-4o-mini"
    assert alert["annotations"]["runbook"] == "docs/prometheus-alerts.md#llmpulse5xxratiohigh"
    assert 0.1 < float(alert["value"]) < 0.6


# Panels the workload's traffic (one model, one tenant, non-streamed, no retries) must fill.
FILLED_PANELS = (
    "p95 and p99 latency by model",
    "Attempts vs requests",
    "Tokens by tenant",
    "Cost by tenant (USD per hour)",
    "Cost by tenant over the dashboard range",
)


def test_e2e_dashboard_panels_show_the_workload_for_one_tenant(
    workload: _Workload, scaled_prometheus: PrometheusServer
) -> None:
    """With one tenant and model picked, each panel the traffic should fill has data in a real Prometheus."""
    prom = scaled_prometheus
    workload.command("loop")  # traffic of its own, should this test run alone
    _poll("calls scraped", lambda: prom.query('llmpulse_requests_total{job="workload"}'))
    # What the histograms carry: the conventions' attributes, the server's included, no tenant.
    by_labels = "count by (tenant, route, server_address) "
    [series] = prom.query(by_labels + '(gen_ai_client_operation_duration_seconds_count{job="workload"})')
    assert "tenant" not in series["metric"]
    assert "route" not in series["metric"]
    assert series["metric"]["server_address"] == "127.0.0.1"
    picked = {**GRAFANA_VARS, "model": "gpt-4o-mini", "tenant": "acme"}
    targets = [(title, expr) for title, expr in _panel_targets() if title in FILLED_PANELS]
    assert {title for title, _ in targets} == set(FILLED_PANELS)
    for title, expr in targets:
        query = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: picked[m.group(1) or m.group(2)], expr)
        if "llmpulse_retries_total" in query or "hourly_budget" in query:
            continue  # the workload makes no retries; the budget rule needs an hour of cost

        def numbers(q: str = query) -> list[float]:
            return [v for r in prom.query(q) if not math.isnan(v := float(r["value"][1]))]

        assert all(v >= 0 for v in _poll(f"{title}: {query}", numbers)), title
