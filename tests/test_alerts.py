"""In-process alerts: each rule at its warning and page tiers, dedupe, evidence, baselines and sinks."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest

import llmpulse
from conftest import MESSAGES
from llmpulse.alerts import Alert, AlertConfig, AlertEngine, LogAlertSink, WebhookAlertSink, WebhookError
from llmpulse.exceptions import ConfigError
from llmpulse.state import MemoryStore, RedisStore
from llmpulse.testing import CapturingSink, FakeClock, FakeProvider, FaultPlan, make_call_event
from local_server import WebhookReceiver
from redis_server import RedisServer

T0 = 1_800_000_000.0  # a whole hour: the clock hour starts here
HOUR = 3600
UP = 6 * HOUR + 60  # how long the engines below have been watching (idle) at T0: every window is covered


class Alerts:
    """An alert sink that keeps what it gets."""

    def __init__(self) -> None:
        self.got: list[Alert] = []

    def emit(self, alert: Alert) -> None:
        self.got.append(alert)

    def summary(self) -> list[tuple[str, str, str]]:
        return [(a.rule, a.status, a.severity) for a in self.got]


@pytest.fixture(name="clock")
def _clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture(name="sink")
def _sink() -> Alerts:
    return Alerts()


def started_earlier(clock: FakeClock, up_s: float = UP, **kwargs: Any) -> AlertEngine:
    """An engine made ``up_s`` before the clock's time: a process that has been up (and idle) that long."""
    clock.now -= up_s
    try:
        return AlertEngine(clock=clock, background=False, **kwargs)
    finally:
        clock.now += up_s


def engine(clock: FakeClock, sink: Alerts, store: Any = None, **config: Any) -> AlertEngine:
    defaults: dict[str, Any] = {"latency_jump_s": None, "slo": None, "min_calls": 10}
    return started_earlier(
        clock,
        config=AlertConfig(**{**defaults, **config}),
        sinks=[sink],
        store=store if store is not None else MemoryStore(clock),
    )


def calls(e: AlertEngine, n: int, **fields: Any) -> None:
    for i in range(n):
        e.record(make_call_event(correlation_id=f"c{i}", **fields))


def test_p95_latency_warns_pages_and_resolves(clock: FakeClock, sink: Alerts) -> None:
    """p95 over 5 min: > 600 ms warns, > 780 ms pages, back under resolves; one alert per change."""
    e = engine(clock, sink)
    calls(e, 40, latency_s=0.5)
    assert e.evaluate() == []
    calls(e, 40, latency_s=0.7)  # half the calls now: p95 ~ 0.7 s
    e.evaluate()
    e.evaluate()  # still firing: nothing new to say
    assert sink.summary() == [("latency_p95", "firing", "warning")]
    first = sink.got[0]
    assert first.labels == {"model": "gpt-4o-mini"}
    assert first.threshold == 0.6
    assert first.value == pytest.approx(0.7, rel=0.05)
    assert "p95 latency of gpt-4o-mini is 0.7" in first.summary
    assert "threshold 0.60 s" in first.summary
    calls(e, 200, latency_s=0.9)
    e.evaluate()
    assert sink.summary()[-1] == ("latency_p95", "firing", "page")
    assert sink.got[-1].threshold == pytest.approx(0.78)
    clock.advance(6 * 60)  # the slow minutes leave the window
    calls(e, 40, latency_s=0.2)
    e.evaluate()
    assert sink.summary()[-1] == ("latency_p95", "resolved", "page")
    assert sink.got[-1].summary.startswith("resolved: ")
    assert len(sink.got) == 3


def test_too_few_calls_alert_nobody(clock: FakeClock, sink: Alerts) -> None:
    """Three slow calls at night are not a p95: rates and percentiles need min_calls."""
    e = engine(clock, sink)
    calls(e, 9, latency_s=5.0)
    e.evaluate()
    assert sink.got == []


@pytest.mark.parametrize(
    ("total", "failed", "severity"), [(100, 1, None), (200, 5, "warning"), (100, 3, "page")]
)
def test_5xx_rate_tiers(
    clock: FakeClock, sink: Alerts, total: int, failed: int, severity: str | None
) -> None:
    """5xx share over 5 min: 1 % nothing, 2.5 % warning (> 2 %), 3 % page (> 2.6 %)."""
    e = engine(clock, sink, rate_5xx=0.02)
    calls(e, total - failed)
    for i in range(failed):
        e.record(
            make_call_event(outcome="error", http_status=503, correlation_id=f"bad{i}", request_id=f"req{i}")
        )
    e.evaluate()
    got = [(a.rule, a.severity) for a in sink.got]
    assert got == ([] if severity is None else [("error_5xx_rate", severity)])
    if severity:
        evidence = sink.got[0].evidence
        assert set(evidence.correlation_ids) == {f"bad{i}" for i in range(failed)}
        assert set(evidence.request_ids) == {f"req{i}" for i in range(failed)}


def test_429_rate_over_3_minutes(clock: FakeClock, sink: Alerts) -> None:
    """429s older than 3 minutes no longer count."""
    e = engine(clock, sink, rate_429=0.01)
    calls(e, 98)
    calls(e, 2, outcome="error", http_status=429)
    e.evaluate()
    assert sink.summary() == [("rate_429", "firing", "page")]  # 2 % > 1.3 %
    clock.advance(4 * 60)
    calls(e, 100)
    e.evaluate()
    assert sink.summary()[-1] == ("rate_429", "resolved", "page")


def test_slo_burn_multiwindow(clock: FakeClock, sink: Alerts) -> None:
    """20 % of calls failing for an hour burns a 99 % SLO at 20x: page; and both windows must burn."""
    e = engine(clock, sink, slo=0.99, rate_5xx=None, p95_latency_s=None)
    for _ in range(60):
        calls(e, 8)
        calls(e, 2, outcome="error", http_status=500)
        clock.advance(60)
    e.evaluate()
    assert sorted(sink.summary()) == [
        ("slo_burn_page", "firing", "page"),
        ("slo_burn_warning", "firing", "warning"),
    ]
    page = next(a for a in sink.got if a.rule == "slo_burn_page")
    assert page.value == pytest.approx(20, rel=0.01)
    assert "14.4x" in page.summary
    clock.advance(6 * 60)  # 6 healthy minutes: the 5-minute window stops burning, the page resolves
    for _ in range(6):
        calls(e, 10)
    e.evaluate()
    assert ("slo_burn_page", "resolved", "page") in sink.summary()
    assert ("slo_burn_warning", "resolved", "warning") not in sink.summary()  # 30 min still burns


def test_latency_jump(clock: FakeClock, sink: Alerts) -> None:
    """p95 of the last 2 min 350 ms above the hour before: warning (300 ms), not page (390 ms)."""
    e = engine(clock, sink, latency_jump_s=0.3, p95_latency_s=None)
    for _ in range(30):
        calls(e, 10, latency_s=0.2)
        clock.advance(60)
    calls(e, 30, latency_s=0.55)
    e.evaluate()
    assert sink.summary() == [("latency_jump", "firing", "warning")]
    assert sink.got[0].value == pytest.approx(0.35, rel=0.1)


@pytest.mark.parametrize(("exceeded", "word"), [(True, "past"), (False, "within")])
def test_a_slow_call_alert_says_what_healthy_calls_lately_allowed(
    clock: FakeClock, sink: Alerts, exceeded: bool, word: str
) -> None:
    """The learned deadline is the slow-call alert's evidence: an outlier, or what this model now takes."""
    e = engine(clock, sink)
    e.record(
        make_call_event(
            latency_s=20.0, deadline_learned_s=4.25, deadline_exceeded=exceeded, deadline_phase="answer"
        )
    )
    [alert] = sink.got
    assert f"20.0 s, {word} the 4.2 s its healthy calls lately allow (answer)" in alert.summary


def test_per_call_rules_fire_once_per_window_then_resolve(clock: FakeClock, sink: Alerts) -> None:
    """A call over 15 s fires at once; more within the window say nothing; a quiet window resolves it."""
    e = engine(clock, sink)
    e.record(make_call_event(latency_s=20.0, correlation_id="slow1"))
    e.record(make_call_event(latency_s=25.0))
    e.record(make_call_event(output_tokens=9000, correlation_id="long1"))
    assert sink.summary() == [("slow_call", "firing", "warning"), ("large_output", "firing", "warning")]
    assert "20.0 s" in sink.got[0].summary
    assert sink.got[0].evidence.correlation_ids[0] == "slow1"
    assert "9,000 output tokens" in sink.got[1].summary
    clock.advance(60)
    e.evaluate()
    assert len(sink.got) == 2
    clock.advance(5 * 60)
    e.evaluate()
    assert sink.summary()[2:] == [
        ("slow_call", "resolved", "warning"),
        ("large_output", "resolved", "warning"),
    ]


def test_user_rules_run_and_a_broken_one_is_logged(
    clock: FakeClock, sink: Alerts, caplog: pytest.LogCaptureFixture
) -> None:
    """A rule is a callable over a CallEvent; one that raises is logged and the others still run."""

    def vip_error(event: llmpulse.CallEvent) -> str | None:
        return f"VIP {event.tenant} got {event.http_status}" if event.outcome == "error" else None

    def broken(event: llmpulse.CallEvent) -> str | None:
        raise RuntimeError("oops")

    e = engine(clock, sink, rules=(broken, vip_error))
    with caplog.at_level(logging.WARNING, logger="llmpulse"):
        e.record(make_call_event(outcome="error", http_status=500, tenant="bigco"))
    assert [(a.rule, a.summary) for a in sink.got] == [
        ("vip_error", "vip error on gpt-4o-mini: VIP bigco got 500")
    ]
    assert "alert rule 'broken' raised" in caplog.text


def test_a_flapping_rule_alerts_once_per_window(clock: FakeClock, sink: Alerts) -> None:
    """Resolved, then bad again a minute later: no second firing until its window has passed."""
    e = engine(clock, sink, rate_429=0.01)
    calls(e, 50, outcome="error", http_status=429)
    e.evaluate()
    clock.advance(4 * 60)  # a 3-minute window reads 3 whole minutes and the current one
    calls(e, 50)
    e.evaluate()
    clock.advance(60)
    calls(e, 50, outcome="error", http_status=429)
    e.evaluate()
    assert sink.summary() == [("rate_429", "firing", "page"), ("rate_429", "resolved", "page")]
    clock.advance(2 * 60)
    calls(e, 50, outcome="error", http_status=429)
    e.evaluate()
    assert sink.summary()[-1] == ("rate_429", "firing", "page")


def _seed_hours(store: MemoryStore, tenant: str, tokens: float, hours: int) -> None:
    first = int(T0 // HOUR) - hours
    for h in range(first, first + hours):
        store.add_fields(f"alerts:hour:{h}", {f"t:{tenant}": tokens, "T": tokens}, ttl_s=30 * 86400)


def test_tenant_anomaly_against_its_median_hour(clock: FakeClock, sink: Alerts) -> None:
    """12x a tenant's median hour: the alert names it; a new tenant (cold start) is not judged."""
    store = MemoryStore(clock)
    _seed_hours(store, "acme", 1000, 48)
    _seed_hours(store, "newco", 1000, 5)  # fewer than baseline_min_hours (24)
    e = engine(clock, sink, store=store, p95_latency_s=None, token_burn=None)
    calls(e, 100, tenant="acme", input_tokens=100, output_tokens=20)  # 12,000 tokens
    calls(e, 100, tenant="newco", input_tokens=100, output_tokens=20)
    e.evaluate()
    assert [(a.rule, a.labels, a.severity) for a in sink.got] == [
        ("tenant_token_anomaly", {"tenant": "acme"}, "warning")  # 12x: over 10x, under 13x
    ]
    assert sink.got[0].value == pytest.approx(12.0)
    assert "tenant acme used 12,000 tokens this hour, 12.0x its median hour (1,000)" in sink.got[0].summary


def test_token_burn_against_the_same_hour_last_week(clock: FakeClock, sink: Alerts) -> None:
    """Expected = the stored hour a week before: +30 % warns (> 25 %), +70 % pages (> 62.5 %)."""
    store = MemoryStore(clock)
    store.add_fields(f"alerts:hour:{int(T0 // HOUR) - 168}", {"T": 10_000}, ttl_s=30 * 86400)
    e = engine(clock, sink, store=store, p95_latency_s=None)
    calls(e, 100, input_tokens=110, output_tokens=20)  # 13,000 tokens
    e.evaluate()
    calls(e, 30, input_tokens=110, output_tokens=20)  # 16,900
    e.evaluate()
    assert [(a.rule, a.severity) for a in sink.got] == [("token_burn", "warning"), ("token_burn", "page")]
    assert "+30% against the expected 10,000" in sink.got[0].summary


def test_cost_over_hourly_budgets(clock: FakeClock, sink: Alerts) -> None:
    """Per tenant and in total, per clock hour."""
    e = engine(clock, sink, hourly_budget_usd=1.0, tenant_hourly_budget_usd=0.5, p95_latency_s=None)
    calls(e, 60, tenant="acme", cost_usd=0.01)  # $0.60: over its $0.50
    calls(e, 30, tenant="globex", cost_usd=0.01)  # total $0.90: under $1
    e.evaluate()
    assert [(a.rule, a.labels) for a in sink.got] == [("tenant_cost_over_budget", {"tenant": "acme"})]
    calls(e, 15, tenant="globex", cost_usd=0.01)  # total $1.05; globex $0.45
    e.evaluate()
    assert sink.got[-1].rule == "cost_over_budget"
    clock.advance(HOUR)  # a new clock hour: nothing spent yet
    e.evaluate()
    assert sorted(a.rule for a in sink.got if a.status == "resolved") == [
        "cost_over_budget",
        "tenant_cost_over_budget",
    ]


def test_finished_hours_are_stored_as_totals(clock: FakeClock, sink: Alerts) -> None:
    """At the end of a clock hour its per-tenant tokens and cost go to the store, never the calls."""
    store = MemoryStore(clock)
    e = engine(clock, sink, store=store)
    calls(e, 3, tenant="acme", cost_usd=0.5)
    calls(e, 1, tenant="globex", cost_usd=0.25)
    clock.advance(HOUR)
    e.evaluate()
    record = store.get_fields(f"alerts:hour:{int(T0 // HOUR)}")
    assert record == {"T": 480, "C": 1.75, "t:acme": 360, "c:acme": 1.5, "t:globex": 120, "c:globex": 0.25}


def test_replicas_add_to_one_hour_in_redis(clock: FakeClock, sink: Alerts) -> None:
    """Two replicas' hours land in one Redis record: the baseline is the service's, not one process's."""
    with RedisServer() as server:
        prefix = f"a-{uuid.uuid4().hex[:6]}:"
        stores = [RedisStore(server.url, prefix=prefix, timeout_s=2.0) for _ in range(2)]
        engines = [engine(clock, sink, store=store) for store in stores]
        calls(engines[0], 2, tenant="acme")
        calls(engines[1], 3, tenant="acme")
        clock.advance(HOUR)
        for e in engines:
            e.evaluate()
        record = stores[0].get_fields(f"alerts:hour:{int(T0 // HOUR)}")
        for store in stores:
            store.close()
    assert record["t:acme"] == 5 * 120


def test_evidence_names_the_top_tenants(clock: FakeClock, sink: Alerts) -> None:
    """The alert carries the top tenants of the last 5 minutes, from llmpulse.stats()."""
    stats = llmpulse._stats.RollingStats(clock=clock)
    e = started_earlier(
        clock, config=AlertConfig(min_calls=10), sinks=[sink], store=MemoryStore(clock), stats=stats
    )
    for tenant, n in (("acme", 30), ("globex", 10)):
        for _ in range(n):
            event = make_call_event(tenant=tenant, outcome="error", http_status=500)
            stats.record(event)
            e.record(event)
    e.evaluate()
    alert = next(a for a in sink.got if a.rule == "error_5xx_rate")
    assert alert.evidence.top_tenants_by_requests == (("acme", 30.0), ("globex", 10.0))
    assert alert.evidence.top_tenants_by_tokens == (("acme", 3600.0), ("globex", 1200.0))


# --- sinks -------------------------------------------------------------------------


def _alert(**changes: Any) -> Alert:
    from datetime import UTC, datetime  # noqa: PLC0415

    base: dict[str, Any] = {
        "rule": "error_5xx_rate",
        "status": "firing",
        "severity": "page",
        "summary": "3.0% of 100 calls to gpt-4o ended in 5xx over 5 min (threshold 2.6%)",
        "value": 0.03,
        "threshold": 0.026,
        "window_s": 300.0,
        "labels": {"model": "gpt-4o"},
        "at": datetime(2026, 11, 29, tzinfo=UTC),
        "since": datetime(2026, 11, 29, tzinfo=UTC),
        "evidence": llmpulse.alerts.Evidence((("acme", 30.0),), (("acme", 900.0),), ("corr-9",), ("req-9",)),
    }
    return Alert(**{**base, **changes})


def test_log_sink_writes_one_json_line() -> None:
    """The log sink's line has the event name, a level and every field."""
    stream = io.StringIO()
    LogAlertSink(stream).emit(_alert())
    line = json.loads(stream.getvalue())
    assert (line["event"], line["level"], line["rule"], line["labels"]) == (
        "llmpulse.alert",
        "warning",
        "error_5xx_rate",
        {"model": "gpt-4o"},
    )
    assert line["evidence"]["correlation_ids"] == ["corr-9"]


@pytest.fixture(name="receiver")
def _receiver() -> Iterator[tuple[str, WebhookReceiver]]:
    with WebhookReceiver("/services/T000/B000/s3cr3t-token") as server:
        yield server.url, server


@pytest.mark.parametrize("fmt", ["json", "slack", "discord"])
def test_webhook_formats(receiver: tuple[str, WebhookReceiver], fmt: str) -> None:
    """Slack gets ``text``, Discord ``content``, JSON the alert's fields; chat text carries the evidence."""
    url, handler = receiver
    WebhookAlertSink(url, format=fmt).emit(_alert())  # type: ignore[arg-type]
    body = orjson.loads(handler.bodies[0])
    if fmt == "json":
        assert (body["rule"], body["value"]) == ("error_5xx_rate", 0.03)
    else:
        text = body["text" if fmt == "slack" else "content"]
        assert text.startswith("[PAGE] error_5xx_rate (model=gpt-4o): 3.0% of 100 calls")
        assert "top tenants by calls (5 min): acme 30" in text
        assert "example correlation ids: corr-9" in text
        assert "provider request ids: req-9" in text


def test_webhook_retries_then_gives_up_without_showing_the_url(receiver: tuple[str, WebhookReceiver]) -> None:
    """5xx answers are retried with backoff; when every attempt fails the error names the host only."""
    url, handler = receiver
    slept: list[float] = []
    handler.statuses = [500, 503]
    WebhookAlertSink(url, retries=3, backoff_s=1.0, sleep=slept.append).emit(_alert())
    assert (len(handler.bodies), slept) == (3, [1.0, 2.0])
    handler.statuses = [500] * 4
    sink = WebhookAlertSink(url, retries=3, sleep=slept.append)
    with pytest.raises(WebhookError) as info:
        sink.emit(_alert())
    assert "s3cr3t" not in str(info.value) + repr(sink)
    assert "127.0.0.1" in str(info.value)
    handler.statuses = [400]
    with pytest.raises(WebhookError, match="1 attempt"):  # the receiver refuses the payload: no retry
        sink.emit(_alert())


def test_a_failing_alert_sink_is_counted_and_logged_never_raised(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The engine keeps going when a sink fails; the URL never reaches the log."""
    delivered: list[tuple[str, str]] = []
    good = Alerts()
    webhook = WebhookAlertSink("http://127.0.0.1:9/hooks/s3cr3t", retries=0, timeout_s=1.0)
    e = AlertEngine(
        AlertConfig(),
        [webhook, good],
        store=MemoryStore(clock),
        clock=clock,
        background=False,
        on_delivery=lambda sink, result: delivered.append((sink, result)),
    )
    with caplog.at_level(logging.WARNING, logger="llmpulse"):
        e.record(make_call_event(latency_s=30.0))
    assert good.summary() == [("slow_call", "firing", "warning")]
    assert delivered == [("WebhookAlertSink", "failed"), ("Alerts", "ok")]
    assert "alert sink WebhookAlertSink failed" in caplog.text
    assert "s3cr3t" not in caplog.text


# --- settings and the pipeline ----------------------------------------------------------


def test_settings_name_the_bad_variable() -> None:
    """Thresholds come from LLMPULSE_ALERT_*; a bad one is named; "off" turns a rule off."""
    with pytest.raises(ConfigError, match="LLMPULSE_ALERT_SLO must be a fraction"):
        llmpulse.Settings.from_env({"LLMPULSE_ALERT_SLO": "99"})
    with pytest.raises(ConfigError, match="LLMPULSE_ALERT_WEBHOOK_URL is not set"):
        llmpulse.Settings.from_env({"LLMPULSE_ALERT_SINKS": "log,webhook"})
    settings = llmpulse.Settings.from_env(
        {"LLMPULSE_ALERT_P95_LATENCY_S": "off", "LLMPULSE_ALERT_RATE_5XX": "0.05"}
    )
    config = settings.alert_config()
    assert (config.p95_latency_s, config.rate_5xx) == (None, 0.05)
    url = "https://hooks.slack.com/services/T0/B0/s3cr3t"
    assert "s3cr3t" not in repr(llmpulse.Settings.from_env({"LLMPULSE_ALERT_WEBHOOK_URL": url}))


def test_calls_through_the_sdk_raise_alerts(fake: FakeProvider, raw_openai: openai.OpenAI) -> None:
    """A provider answering 500 to a third of the calls: the process's engine pages on the 5xx rate."""
    got = Alerts()
    llmpulse.configure(sinks=("none",), alert_sinks=(got,), alert_min_calls=10, max_retries=0)
    try:
        engine = llmpulse._pipeline.get_pipeline().alerts
        assert engine is not None
        engine._started -= 300  # the process has been up 5 minutes: the 5-minute windows are covered
        client = llmpulse.wrap(raw_openai, sinks=[CapturingSink()])
        fake.plan = FaultPlan(error_rate={500: 0.35}, seed=7)
        for _ in range(30):
            with contextlib.suppress(openai.InternalServerError):
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        engine.evaluate()
        llmpulse.flush()
    finally:
        llmpulse.configure(sinks=("none",))
    fired = [a for a in got.got if a.rule == "error_5xx_rate"]
    assert [(a.status, a.severity, a.labels) for a in fired] == [("firing", "page", {"model": "gpt-4o-mini"})]
    assert len(fired[0].evidence.correlation_ids) == 5


# --- sampling of detailed telemetry ---------------------------------------------------


def test_detail_sampler_keeps_errors_a_baseline_spikes_and_elevations(clock: FakeClock) -> None:
    """Failed and retried calls always; 1 healthy call in 100; slow calls after a spike; all when elevated."""
    from llmpulse._sampling import DetailSampler  # noqa: PLC0415

    sampler = DetailSampler(0.01, clock=clock)
    healthy = [sampler.keep(failed=False, retried=False, latency_s=0.5, model="m") for _ in range(250)]
    assert sum(healthy) == 3
    assert healthy[0]  # the first call is always one of them
    assert sampler.keep(failed=True, retried=False, latency_s=0.5, model="m")
    assert sampler.keep(failed=False, retried=True, latency_s=0.5, model="m")
    sampler.spike("m", 0.8)
    assert sampler.keep(failed=False, retried=False, latency_s=0.9, model="m")
    assert not sampler.keep(failed=False, retried=False, latency_s=0.9, model="other")
    clock.advance(601)
    assert not sampler.keep(failed=False, retried=False, latency_s=0.9, model="m")  # 10 minutes later
    sampler.elevate(60)
    assert all(sampler.keep(failed=False, retried=False, latency_s=0.1, model="m") for _ in range(50))
    clock.advance(61)
    assert sum(sampler.keep(failed=False, retried=False, latency_s=0.1, model="m") for _ in range(100)) == 1


def test_a_latency_alert_starts_keeping_slow_calls(clock: FakeClock, sink: Alerts) -> None:
    """When the p95 rule fires for a model, the sampler is told that model's p95."""
    spikes: list[tuple[str, float]] = []
    e = started_earlier(
        clock,
        config=AlertConfig(min_calls=10),
        sinks=[sink],
        store=MemoryStore(clock),
        on_spike=lambda model, p95: spikes.append((model, p95)),
    )
    calls(e, 40, latency_s=0.9)
    e.evaluate()
    assert [m for m, _ in spikes] == ["gpt-4o-mini"]
    assert spikes[0][1] == pytest.approx(0.9, rel=0.05)


def test_unsampled_calls_keep_their_summary_but_not_their_details(
    fake: FakeProvider, raw_openai: openai.OpenAI
) -> None:
    """Healthy calls past the 1 % are summarised without attempts or content; a failed call keeps them."""
    llmpulse.configure(sinks=("none",), capture_content=True, max_retries=1, alerts=False, sample_rate=0.01)
    try:
        events = CapturingSink()
        client = llmpulse.wrap(raw_openai, sinks=[events])
        for _ in range(3):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        fake.plan = FaultPlan(error_rate={500: 1.0})
        with contextlib.suppress(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        llmpulse.flush()
    finally:
        llmpulse.configure(sinks=("none",))
    assert [e.sampled for e in events.calls] == [True, False, False, True]
    assert [e.input_content is not None for e in events.calls] == [True, False, False, True]
    kept = {a.call_id for a in events.attempts}
    assert kept == {events.calls[0].call_id, events.calls[3].call_id}
    assert len(events.attempts) == 3  # one for the first call, two for the failed one


def test_elevated_sampling_reaches_another_replica() -> None:
    """elevate_sampling() in one replica: another one's sampler keeps everything within a refresh."""
    from llmpulse.policies import _shared  # noqa: PLC0415
    from llmpulse.state import WRITE_BACK  # noqa: PLC0415

    with RedisServer() as server:
        prefix = f"e-{uuid.uuid4().hex[:6]}:"
        stores = [RedisStore(server.url, prefix=prefix, timeout_s=2.0) for _ in range(2)]
        try:
            policies = llmpulse.Policies(store=stores[0])  # registers the store, as a replica's would
            assert _shared.elevated_until() < 1  # nothing elevated yet (and a refresh is queued)
            assert WRITE_BACK.join(10)
            stores[1].set_until("sampling:elevated", T0 + 10**9)  # another replica elevated it
            _shared._elevation[1] = -1.0  # the once-a-second refresh is due
            _shared.elevated_until()
            assert WRITE_BACK.join(10)
            assert _shared.elevated_until() == T0 + 10**9
            del policies
        finally:
            _shared._elevation[:] = [0.0, -1.0]
            for store in stores:
                store.close()


def test_top_tenants_across_replicas(clock: FakeClock, sink: Alerts) -> None:
    """With Redis, each replica writes its minute of tenant counts; top_tenants sums every replica's."""
    with RedisServer() as server:
        prefix = f"t-{uuid.uuid4().hex[:6]}:"
        stores = [RedisStore(server.url, prefix=prefix, timeout_s=2.0) for _ in range(2)]
        try:
            a, b = (engine(clock, sink, store=store) for store in stores)
            calls(a, 5, tenant="acme")
            calls(b, 4, tenant="acme")
            calls(b, 6, tenant="globex")
            clock.advance(60)
            calls(a, 1, tenant="globex")  # a's new minute: its last one is written out
            calls(b, 1, tenant="initech")
            top = a.top_tenants(300, "requests", 5)
            tokens = a.top_tenants(300, "tokens", 1)
        finally:
            for store in stores:
                store.close()
    assert top == [("acme", 9.0), ("globex", 7.0)]  # b's current minute (initech) is not written yet
    assert tokens == [("acme", 9 * 120.0)]


def test_top_tenants_in_one_process(fake: FakeProvider, raw_openai: openai.OpenAI) -> None:
    """Without a shared store, llmpulse.top_tenants() reads this process's rolling stats."""
    llmpulse.configure(sinks=("none",))
    client = llmpulse.wrap(raw_openai, sinks=[CapturingSink()])
    for tenant, n in (("acme", 3), ("globex", 1)):
        for _ in range(n):
            with llmpulse.context(tenant=tenant):
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    top = dict(llmpulse.top_tenants(window_s=300, by="requests"))
    assert top["acme"] - top.get("globex", 0) >= 2
    with pytest.raises(ValueError, match="by must be"):
        llmpulse.top_tenants(by="latency")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="minutes must be positive"):
        llmpulse.elevate_sampling(minutes=0)


def test_the_provider_side_rates_see_what_retries_hide(clock: FakeClock, sink: Alerts) -> None:
    """5 % of attempts answered 503 and retried: callers saw none, the provider-side rule pages."""
    e = engine(clock, sink, rate_5xx=0.02, p95_latency_s=None)
    for i in range(200):
        if i % 20 == 0:
            e.record_attempt("gpt-4o-mini", 503)  # retried...
        e.record_attempt("gpt-4o-mini", 200)  # ...and answered
        e.record(make_call_event(attempts=2 if i % 20 == 0 else 1))
    e.evaluate()
    assert [(a.rule, a.severity) for a in sink.got] == [("provider_error_5xx_rate", "page")]
    assert "4.8% of 210 attempts to gpt-4o-mini were answered 5xx" in sink.got[0].summary


def test_resolved_keys_are_forgotten_after_the_longest_window(clock: FakeClock, sink: Alerts) -> None:
    """Per-tenant keys come and go: what resolved is not kept past 6 hours."""
    e = engine(clock, sink, tenant_hourly_budget_usd=0.5, p95_latency_s=None)
    for i in range(20):
        calls(e, 60, tenant=f"t{i}", cost_usd=0.01)
    e.evaluate()
    clock.advance(HOUR)
    e.evaluate()
    assert len(e._resolved_at) == 20
    clock.advance(6 * HOUR + 60)
    e.evaluate()
    assert e._resolved_at == {}


def test_tenants_past_the_hourly_cap_share_a_subject_that_gets_no_tenant_alert(
    clock: FakeClock, sink: Alerts
) -> None:
    """Past 10,000 tenants in a clock hour the rest count as "__other__", which no tenant rule judges.

    A real tenant called "other" keeps its own row and its own budget alert.
    """
    e = engine(clock, sink, tenant_hourly_budget_usd=0.5, p95_latency_s=None)
    for i in range(10_000):
        e.record(make_call_event(tenant=f"t{i:05d}", cost_usd=0.0))
    calls(e, 60, tenant="late-1", cost_usd=0.01)  # past the cap: together $1.20, over the $0.50 budget
    calls(e, 60, tenant="late-2", cost_usd=0.01)
    e.evaluate()
    assert e._tenants["__other__"][1] == pytest.approx(1.2)
    assert [a.labels for a in sink.got] == []
    e2_sink = Alerts()
    e2 = engine(clock, e2_sink, tenant_hourly_budget_usd=0.5, p95_latency_s=None)
    calls(e2, 60, tenant="other", cost_usd=0.01)
    e2.evaluate()
    assert [a.labels for a in e2_sink.got] == [{"tenant": "other"}]


def test_replicas_send_each_change_once(clock: FakeClock) -> None:
    """Four workers see the same incident: with Redis, one of them sends each firing and resolve."""
    with RedisServer() as server:
        prefix = f"c-{uuid.uuid4().hex[:6]}:"
        stores = [RedisStore(server.url, prefix=prefix, timeout_s=2.0) for _ in range(4)]
        sinks = [Alerts() for _ in stores]
        try:
            engines = [
                engine(clock, sink, store=store, rate_429=0.01)
                for sink, store in zip(sinks, stores, strict=True)
            ]
            for e in engines:
                calls(e, 50, outcome="error", http_status=429)
                e.evaluate()
            clock.advance(5 * 60)
            for e in engines:
                calls(e, 50)
                e.evaluate()
        finally:
            for store in stores:
                store.close()
    sent = [a for sink in sinks for a in sink.got]
    assert sorted((a.rule, a.status) for a in sent) == [("rate_429", "firing"), ("rate_429", "resolved")]
    assert sum(e.suppressed for e in engines) == 6


# --- windows that hold enough data, evidence about the alert's own subject ----------------


def _faulty_second(e: AlertEngine, clock: FakeClock, n: int, offset: int) -> None:
    """``n`` calls in one simulated second: 30 % 503, 20 % 429, all slow (0.9 s), each on its own attempt."""
    for i in range(n):
        k = offset + i
        status = 503 if k % 10 < 3 else 429 if k % 10 < 5 else None
        e.record_attempt("gpt-4o-mini", status or 200)
        failed = {"outcome": "error", "http_status": status} if status else {}
        e.record(make_call_event(latency_s=0.9, correlation_id=f"c{k}", **failed))
    clock.advance(1)


def test_a_young_process_judges_only_the_windows_it_has_watched(clock: FakeClock, sink: Alerts) -> None:
    """15 s of faulty traffic after start: per-call rules fire; a windowed rule only once 80 % covered."""
    e = AlertEngine(AlertConfig(), [sink], store=MemoryStore(clock), clock=clock, background=False)
    e.record(make_call_event(latency_s=20.0))  # per-call rules: not windowed, they fire at once
    e.record(make_call_event(output_tokens=9000))

    for second in range(15):  # 10 calls a second, evaluated every 10 s as the engine's thread does
        _faulty_second(e, clock, 10, 10 * second)
        if (second + 1) % 10 == 0:
            e.evaluate()
    e.evaluate()  # at 15 s
    assert sorted(a.rule for a in sink.got) == ["large_output", "slow_call"]
    # Then 1 call a second for 5 h, still failing: each rule fires at the first evaluation after 80 %
    # of its window (rate_429: 144 s of 3 min; 5 min: 240 s; SLO: 48 min of 1 h, 4 h 48 min of 6 h).
    while clock.now < T0 + 5 * HOUR:
        _faulty_second(e, clock, 1, int(clock.now))
        if int(clock.now - T0) % 10 == 0:
            e.evaluate()
    fired: dict[str, float] = {}
    for alert in sink.got:
        if alert.status == "firing":
            fired.setdefault(alert.rule, alert.at.timestamp() - T0)
    assert fired == {
        "slow_call": 0.0,
        "large_output": 0.0,
        "rate_429": 150.0,
        "provider_rate_429": 150.0,
        "latency_p95": 240.0,
        "error_5xx_rate": 240.0,
        "provider_error_5xx_rate": 240.0,
        "slo_burn_page": 2880.0,
        "slo_burn_warning": 17280.0,
    }
    first = {a.rule: a for a in sink.got if a.status == "firing"}
    assert "over the last 2 min 30 s of a 3 min window" in first["rate_429"].summary
    assert (first["rate_429"].window_s, first["rate_429"].span_s) == (180.0, 150.0)
    assert "over the last 4 min of a 5 min window" in first["error_5xx_rate"].summary
    assert "over the last 4 h 48 min of a 6 h window and" in first["slo_burn_warning"].summary
    assert first["slow_call"].span_s is None


def test_a_full_window_states_the_minutes_it_read(clock: FakeClock, sink: Alerts) -> None:
    """An engine up for hours: a 5 min window is the 5 whole minutes before this one and this one so far."""
    e = engine(clock, sink, p95_latency_s=None)
    clock.advance(20)
    calls(e, 95)
    calls(e, 5, outcome="error", http_status=500)
    e.evaluate()
    (alert,) = sink.got
    assert "5.0% of 100 calls to gpt-4o-mini ended in 5xx over the last 5 min 20 s" in alert.summary
    assert (alert.window_s, alert.span_s) == (300.0, 320.0)


def test_too_few_calls_in_a_covered_window_alert_nobody(clock: FakeClock, sink: Alerts) -> None:
    """Coverage is not enough: a covered window still needs min_calls calls."""
    e = engine(clock, sink, rate_5xx=0.02, p95_latency_s=None)
    calls(e, 9, outcome="error", http_status=500)
    e.evaluate()
    assert sink.got == []
    calls(e, 1, outcome="error", http_status=500)
    e.evaluate()
    assert sink.summary() == [("error_5xx_rate", "firing", "page")]


def test_each_alert_s_evidence_is_about_its_own_subject(clock: FakeClock, sink: Alerts) -> None:
    """Two models failing for different tenants: each alert lists its own model's tenants and calls."""
    e = engine(clock, sink, p95_latency_s=None)
    for i in range(40):
        e.record(
            make_call_event(
                model="gpt-4o", tenant="acme", outcome="error", http_status=500, correlation_id=f"a{i}"
            )
        )
    for i in range(124):
        failed = {"outcome": "error", "http_status": 500} if i < 10 else {}
        tenant = "globex" if i % 2 else "initech"
        e.record(make_call_event(model="gpt-4o-mini", tenant=tenant, correlation_id=f"m{i}", **failed))
    calls(e, 200, model="claude-haiku-4-5", tenant="hooli")  # healthy: no alert, and in no evidence
    e.evaluate()
    alerts = {a.labels["model"]: a for a in sink.got if a.rule == "error_5xx_rate"}
    assert set(alerts) == {"gpt-4o", "gpt-4o-mini"}
    big, mini = alerts["gpt-4o"].evidence, alerts["gpt-4o-mini"].evidence
    assert big.top_tenants_by_requests == (("acme", 40.0),)
    assert all(c.startswith("a") for c in big.correlation_ids)
    assert "of 124 calls to gpt-4o-mini" in alerts["gpt-4o-mini"].summary
    assert mini.top_tenants_by_requests == (("globex", 62.0), ("initech", 62.0))
    assert mini.top_tenants_by_tokens == (("globex", 62 * 120.0), ("initech", 62 * 120.0))
    assert set(mini.correlation_ids) == {f"m{i}" for i in range(5, 10)}  # its own last 5 failures
    assert mini.window_s == 300.0  # the rule's own 5 minutes (and this one, 0 s in)


def test_a_tenant_alert_s_evidence_is_that_tenant(clock: FakeClock, sink: Alerts) -> None:
    """A tenant's anomaly lists that tenant (this clock hour) and that tenant's last calls."""
    store = MemoryStore(clock)
    _seed_hours(store, "acme", 1000, 48)
    e = engine(clock, sink, store=store, p95_latency_s=None, token_burn=None)
    calls(e, 100, tenant="acme", input_tokens=100, output_tokens=20, request_id="req-acme")
    calls(e, 300, tenant="globex", request_id="req-globex")
    clock.advance(30 * 60)
    e.evaluate()
    (alert,) = sink.got
    assert alert.labels == {"tenant": "acme"}
    assert alert.evidence.top_tenants_by_requests == (("acme", 100.0),)
    assert alert.evidence.top_tenants_by_tokens == (("acme", 12_000.0),)
    assert alert.evidence.request_ids == ("req-acme",) * 5
    assert alert.evidence.window_s == 30 * 60.0  # this clock hour so far


def test_evidence_counts_are_bounded_per_model_and_minute(clock: FakeClock, sink: Alerts) -> None:
    """Past 100 tenants in one model's minute the rest count as "__other__": memory stays bounded."""
    e = engine(clock, sink, p95_latency_s=None)
    for i in range(250):
        e.record(make_call_event(tenant=f"t{i:03d}", outcome="error", http_status=500))
    e.evaluate()
    (alert,) = sink.got
    assert alert.evidence.top_tenants_by_requests[0] == ("__other__", 150.0)
    bucket = e._subject_tenants.bucket(int(T0 // 60))
    assert (len(bucket["gpt-4o-mini"]), len(bucket[""])) == (101, 250)  # every model together: 1,000


def test_min_coverage_is_a_share() -> None:
    """min_coverage outside (0, 1] is a ConfigError naming the field."""
    with pytest.raises(ConfigError, match=r"AlertConfig\.min_coverage must be a share in"):
        AlertConfig(min_coverage=1.5)
    with pytest.raises(ConfigError, match="min_coverage"):
        AlertConfig(min_coverage=0)
