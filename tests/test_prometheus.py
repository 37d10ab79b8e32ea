"""Prometheus sink and /metrics serving: names, labels, caps, exemplars, multiprocess."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import subprocess
import sys
import threading
import urllib.request
import wsgiref.util
from pathlib import Path
from typing import Any

import httpx2
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from llmpulse import _metrics_server
from llmpulse._config import Settings
from llmpulse._metrics_server import (
    maybe_start_from_env,
    metrics_asgi_app,
    metrics_wsgi_app,
    start_metrics_server,
)
from llmpulse._pipeline import make_metrics
from llmpulse.events import AttemptEvent, CallEvent, InteractionSummary, RateLimitInfo
from llmpulse.exceptions import ConfigError
from llmpulse.sinks import _prometheus as prometheus_module
from llmpulse.sinks._prometheus import DURATION_BUCKETS, PrometheusSink
from llmpulse.testing import make_call_event

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
SHORT = {
    "gen_ai_provider_name": "openai",
    "gen_ai_request_model": "gpt-4o-mini",
    "gen_ai_operation_name": "chat",
}
COMMON = {**SHORT, "tenant": "acme", "route": "/chat"}
# The histograms' labels: the GenAI conventions' attributes, no tenant or route.
HIST = {**SHORT, "server_address": "api.openai.com", "server_port": "443"}
OK = {**COMMON, "outcome": "ok", "status_class": "2xx", "error_type": ""}


def make_call(**changes: Any) -> CallEvent:
    """A finished, successful, non-streamed call; ``changes`` override any field."""
    defaults = {
        "priority": "normal",
        "request_id": "req-1",
        "provider_latency_s": 0.45,
        "cached_input_tokens": 0,
        "response_bytes": 512,
        "server_address": "api.openai.com",
        "server_port": 443,
    }
    return make_call_event(**{**defaults, **changes})


def make_attempt(**changes: Any) -> AttemptEvent:
    """One successful HTTP attempt; ``changes`` override any field."""
    event = AttemptEvent(
        call_id="call-1",
        correlation_id="corr-1",
        attempt=1,
        provider="openai",
        operation="chat",
        model="gpt-4o-mini",
        http_status=200,
        error_type=None,
        request_id="req-1",
        latency_s=0.4,
        retry_after_s=None,
        will_retry=False,
        backoff_s=0.0,
    )
    return dataclasses.replace(event, **changes)


@pytest.fixture(name="sink")
def _sink(registry: CollectorRegistry) -> PrometheusSink:
    return PrometheusSink(registry)


def label_values(registry: CollectorRegistry, sample_name: str, label: str) -> set[str]:
    """The values ``label`` takes among the samples called ``sample_name``."""
    return {
        s.labels[label]
        for m in registry.collect()
        for s in m.samples
        if s.name == sample_name and label in s.labels
    }


class TestCallMetrics:
    def test_ok_call_records_every_metric(self, registry: CollectorRegistry, sink: PrometheusSink) -> None:
        """A successful call counts a request, a duration, tokens and cost under the common labels."""
        sink.emit(make_call())

        get = registry.get_sample_value
        assert get("llmpulse_requests_total", OK) == 1
        assert get("gen_ai_client_operation_duration_seconds_count", {**HIST, "error_type": ""}) == 1
        assert get("gen_ai_client_operation_duration_seconds_sum", {**HIST, "error_type": ""}) == 0.5
        assert get("gen_ai_client_token_usage_sum", {**HIST, "gen_ai_token_type": "input"}) == 100
        assert get("gen_ai_client_token_usage_sum", {**HIST, "gen_ai_token_type": "output"}) == 20
        assert get("llmpulse_tokens_total", {**COMMON, "token_type": "input"}) == 100
        assert get("llmpulse_tokens_total", {**COMMON, "token_type": "output"}) == 20
        assert get("llmpulse_cost_usd_total", COMMON) == pytest.approx(0.001)
        assert label_values(registry, "llmpulse_unpriced_requests_total", "gen_ai_request_model") == set()

    def test_duration_uses_extended_otel_buckets(
        self, registry: CollectorRegistry, sink: PrometheusSink
    ) -> None:
        """Durations land in OTel's buckets, extended to 327.68 s for long reasoning calls."""
        sink.emit(make_call(latency_s=100.0))

        labels = {**HIST, "error_type": ""}
        bucket = "gen_ai_client_operation_duration_seconds_bucket"
        assert registry.get_sample_value(bucket, {**labels, "le": "81.92"}) == 0
        assert registry.get_sample_value(bucket, {**labels, "le": "163.84"}) == 1
        assert registry.get_sample_value(bucket, {**labels, "le": "327.68"}) == 1
        assert label_values(registry, bucket, "le") == {*map(str, DURATION_BUCKETS), "+Inf"}

    def test_token_usage_uses_otel_buckets(self, registry: CollectorRegistry, sink: PrometheusSink) -> None:
        """Token counts land in OTel's power-of-four buckets."""
        sink.emit(make_call(input_tokens=1000, output_tokens=None))

        bucket = "gen_ai_client_token_usage_bucket"
        labels = {**HIST, "gen_ai_token_type": "input"}
        assert registry.get_sample_value(bucket, {**labels, "le": "256.0"}) == 0
        assert registry.get_sample_value(bucket, {**labels, "le": "1024.0"}) == 1
        assert "6.7108864e+07" in label_values(registry, bucket, "le")

    def test_error_call_labels_error_type_and_status_class(
        self, registry: CollectorRegistry, sink: PrometheusSink
    ) -> None:
        """A failed call carries its error type on the duration and request series."""
        sink.emit(make_call(outcome="error", http_status=503, error_type="InternalServerError"))

        labels = {**COMMON, "outcome": "error", "status_class": "5xx", "error_type": "InternalServerError"}
        assert registry.get_sample_value("llmpulse_requests_total", labels) == 1
        duration = {**HIST, "error_type": "InternalServerError"}
        assert registry.get_sample_value("gen_ai_client_operation_duration_seconds_count", duration) == 1

    def test_no_response_is_status_class_none(
        self, registry: CollectorRegistry, sink: PrometheusSink
    ) -> None:
        """A call that got no HTTP response has status_class "none"."""
        sink.emit(make_call(outcome="error", http_status=None, error_type="APIConnectionError"))

        labels = {**COMMON, "outcome": "error", "status_class": "none", "error_type": "APIConnectionError"}
        assert registry.get_sample_value("llmpulse_requests_total", labels) == 1

    def test_none_label_values_are_empty_strings(
        self, registry: CollectorRegistry, sink: PrometheusSink
    ) -> None:
        """A missing model, tenant or route is exported as an empty label value."""
        sink.emit(make_call(model=None, tenant=None, route=None))

        empty = {**SHORT, "gen_ai_request_model": "", "tenant": "", "route": ""}
        assert registry.get_sample_value("llmpulse_requests_total", {**OK, **empty}) == 1

    def test_rejected_call_is_counted_but_not_timed(
        self, registry: CollectorRegistry, sink: PrometheusSink
    ) -> None:
        """A call rejected before sending counts as a request but has no duration."""
        sink.emit(make_call(outcome="rejected", http_status=None, error_type="RateLimitedError", attempts=0))

        labels = {**COMMON, "outcome": "rejected", "status_class": "none", "error_type": "RateLimitedError"}
        assert registry.get_sample_value("llmpulse_requests_total", labels) == 1
        assert label_values(registry, "gen_ai_client_operation_duration_seconds_count", "error_type") == set()

    def test_time_to_first_chunk_only_for_streams(
        self, registry: CollectorRegistry, sink: PrometheusSink
    ) -> None:
        """Time to first chunk is observed for streamed calls that have one, and never otherwise."""
        sink.emit(make_call(streamed=True, ttft_s=0.2))
        sink.emit(make_call(streamed=False, ttft_s=0.3))
        sink.emit(make_call(streamed=True, ttft_s=None))

        name = "gen_ai_client_operation_time_to_first_chunk_seconds"
        assert registry.get_sample_value(f"{name}_count", HIST) == 1
        assert registry.get_sample_value(f"{name}_sum", HIST) == 0.2

    def test_unknown_token_counts_are_not_recorded(
        self, registry: CollectorRegistry, sink: PrometheusSink
    ) -> None:
        """A None token count records nothing for that token type, not a zero."""
        sink.emit(make_call(input_tokens=None, output_tokens=7))

        input_labels = {**HIST, "gen_ai_token_type": "input"}
        assert registry.get_sample_value("gen_ai_client_token_usage_count", input_labels) is None
        assert registry.get_sample_value("llmpulse_tokens_total", {**COMMON, "token_type": "input"}) is None
        assert registry.get_sample_value("llmpulse_tokens_total", {**COMMON, "token_type": "output"}) == 7

    def test_token_details_are_separate_from_totals(
        self, registry: CollectorRegistry, sink: PrometheusSink
    ) -> None:
        """Cached, cache-write and reasoning tokens have their own counter, so tokens_total sums right."""
        sink.emit(
            make_call(input_tokens=1000, cached_input_tokens=800, cache_write_tokens=50, reasoning_tokens=15)
        )

        details = "llmpulse_token_details_total"
        assert registry.get_sample_value(details, {**COMMON, "kind": "cached_input"}) == 800
        assert registry.get_sample_value(details, {**COMMON, "kind": "cache_write"}) == 50
        assert registry.get_sample_value(details, {**COMMON, "kind": "reasoning"}) == 15
        assert registry.get_sample_value("llmpulse_tokens_total", {**COMMON, "token_type": "input"}) == 1000
        assert label_values(registry, "llmpulse_tokens_total", "token_type") == {"input", "output"}

    @pytest.mark.parametrize(
        ("changes", "unpriced", "cost"),
        [
            ({"cost_usd": None}, 1, 0.0),
            ({"cost_usd": None, "input_tokens": None}, 1, 0.0),
            ({"cost_usd": None, "input_tokens": None, "output_tokens": None}, None, None),
            ({"cost_usd": None, "attempts": 0}, None, 0.0),
            ({"cost_usd": 0.0}, None, 0.0),
        ],
    )
    def test_unpriced_requests(
        self,
        registry: CollectorRegistry,
        sink: PrometheusSink,
        changes: dict[str, Any],
        unpriced: int | None,
        cost: float | None,
    ) -> None:
        """A sent call with known tokens but no price is counted as unpriced, never as zero cost.

        A series with tokens has a cost series (0 while unpriced); a call with
        neither tokens nor cost makes none.
        """
        sink.emit(make_call(**changes))

        labels = {"gen_ai_provider_name": "openai", "gen_ai_request_model": "gpt-4o-mini"}
        assert registry.get_sample_value("llmpulse_unpriced_requests_total", labels) == unpriced
        assert registry.get_sample_value("llmpulse_cost_usd_total", COMMON) == cost

    def test_ratelimit_gauges_keep_the_latest_values(
        self, registry: CollectorRegistry, sink: PrometheusSink
    ) -> None:
        """Remaining requests and tokens are set from the last response that reported them."""
        sink.emit(make_call(ratelimit=RateLimitInfo(remaining_requests=99, remaining_tokens=5000)))
        sink.emit(make_call(ratelimit=RateLimitInfo(remaining_requests=98, remaining_tokens=None)))
        sink.emit(make_call(ratelimit=None))

        gauge = "llmpulse_ratelimit_remaining"
        assert registry.get_sample_value(gauge, {"gen_ai_provider_name": "openai", "kind": "requests"}) == 98
        assert registry.get_sample_value(gauge, {"gen_ai_provider_name": "openai", "kind": "tokens"}) == 5000

    def test_attempts_are_counted_by_status_class(
        self, registry: CollectorRegistry, sink: PrometheusSink
    ) -> None:
        """Each AttemptEvent counts once, by status class ("none" when no response came)."""
        sink.emit(make_attempt(http_status=429, will_retry=True))
        sink.emit(make_attempt(http_status=None, error_type="ConnectError", attempt=2))
        sink.emit(make_attempt(attempt=3))

        attempts = "llmpulse_attempts_total"
        for status_class in ("4xx", "none", "2xx"):
            assert registry.get_sample_value(attempts, {**SHORT, "status_class": status_class}) == 1
        assert registry.get_sample_value("llmpulse_requests_total", OK) is None

    def test_other_events_are_ignored(self, registry: CollectorRegistry, sink: PrometheusSink) -> None:
        """Interaction summaries and unknown objects record nothing and raise nothing."""
        summary = InteractionSummary(
            interaction_id="i",
            name="n",
            correlation_id="c",
            tenant=None,
            route=None,
            feature=None,
            calls=1,
            errors=0,
            input_tokens=1,
            output_tokens=1,
            cost_usd=None,
            unpriced_calls=0,
            latency_s=1.0,
            outcome="ok",
        )
        sink.emit(summary)
        sink.emit(object())

        assert b"llmpulse_requests_total{" not in generate_latest(registry)
        assert label_values(registry, "llmpulse_internal_errors_total", "where") == set()


class TestSinkMethods:
    def test_inflight_gauge_follows_started_and_finished(
        self, registry: CollectorRegistry, sink: PrometheusSink
    ) -> None:
        """call_started and call_finished move the in-flight gauge per provider."""
        sink.call_started("openai")
        sink.call_started("openai")
        sink.call_started("anthropic")
        sink.call_finished("openai")

        gauge = "llmpulse_inflight_requests"
        assert registry.get_sample_value(gauge, {"gen_ai_provider_name": "openai"}) == 1
        assert registry.get_sample_value(gauge, {"gen_ai_provider_name": "anthropic"}) == 1

    def test_pipeline_counters(self, registry: CollectorRegistry, sink: PrometheusSink) -> None:
        """Dropped events, internal errors and wrap failures have their own counters."""
        sink.record_dropped("jsonl", "buffer_full", 3)
        sink.record_dropped("jsonl", "buffer_full")
        sink.record_internal_error("stats")
        sink.record_wrap_failure("unknown_transport")

        get = registry.get_sample_value
        assert get("llmpulse_events_dropped_total", {"sink": "jsonl", "reason": "buffer_full"}) == 4
        assert get("llmpulse_internal_errors_total", {"where": "stats"}) == 1
        assert get("llmpulse_wrap_failures_total", {"reason": "unknown_transport"}) == 1

    def test_emit_never_raises(self, registry: CollectorRegistry, sink: PrometheusSink) -> None:
        """A bad event is counted as an internal error instead of reaching the caller."""
        sink.emit(make_call(latency_s="slow"))

        errors = {"where": "prometheus_sink"}
        assert registry.get_sample_value("llmpulse_internal_errors_total", errors) == 1

    def test_sink_declares_itself_inline(self, sink: PrometheusSink) -> None:
        """The dispatcher runs this in-memory sink on the caller's path under the name "prometheus"."""
        assert (sink.name, sink.inline) == ("prometheus", True)


class TestCardinality:
    def test_first_tenants_keep_their_label_later_ones_are_other(self, registry: CollectorRegistry) -> None:
        """Past max_tenants, new tenants become "__other__" while the first ones keep theirs."""
        sink = PrometheusSink(registry, max_tenants=2)
        for tenant in ("a", "b", "c", "d", "a", "c"):
            sink.emit(make_call(tenant=tenant))

        tenants = {"a": 2, "b": 1, "__other__": 3}
        for tenant, count in tenants.items():
            assert registry.get_sample_value("llmpulse_requests_total", {**OK, "tenant": tenant}) == count
        assert label_values(registry, "llmpulse_requests_total", "tenant") == set(tenants)

    def test_allowlisted_tenants_are_kept_and_not_counted(self, registry: CollectorRegistry) -> None:
        """Allowlisted tenants always keep their label and leave the cap to the others."""
        sink = PrometheusSink(registry, max_tenants=1, tenant_allowlist=["vip"])
        for tenant in ("x", "vip", "y"):
            sink.emit(make_call(tenant=tenant))

        assert label_values(registry, "llmpulse_requests_total", "tenant") == {"x", "vip", "__other__"}

    def test_routes_and_models_are_capped(self, registry: CollectorRegistry) -> None:
        """Routes and models have their own caps, attempts included."""
        sink = PrometheusSink(registry, max_routes=1, max_models=1)
        sink.emit(make_call(route="/a", model="m1"))
        sink.emit(make_call(route="/b", model="ft:m1:org:x"))
        sink.emit(make_attempt(model="ft:m1:org:y"))
        sink.emit(make_call(route=None, model=None))

        assert label_values(registry, "llmpulse_requests_total", "route") == {"/a", "__other__", ""}
        assert label_values(registry, "llmpulse_requests_total", "gen_ai_request_model") == {
            "m1",
            "__other__",
            "",
        }
        assert label_values(registry, "llmpulse_attempts_total", "gen_ai_request_model") == {"__other__"}

    def test_cap_holds_under_concurrent_emits(self, registry: CollectorRegistry) -> None:
        """Threads racing with distinct tenants admit exactly max_tenants of them."""
        sink = PrometheusSink(registry, max_tenants=10)
        barrier = threading.Barrier(8)

        def worker(n: int) -> None:
            barrier.wait()
            for i in range(50):
                sink.emit(make_call(tenant=f"t{n}-{i}"))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        tenants = label_values(registry, "llmpulse_requests_total", "tenant")
        assert len(tenants - {"__other__"}) == 10
        total = sum(
            registry.get_sample_value("llmpulse_requests_total", {**OK, "tenant": t}) or 0 for t in tenants
        )
        assert total == 400

    def test_caps_are_per_sink(self, registry: CollectorRegistry) -> None:
        """Two sinks on one registry share the metrics but each keeps its own first N."""
        first = PrometheusSink(registry, max_tenants=1)
        second = PrometheusSink(registry, max_tenants=1)
        first.emit(make_call(tenant="a"))
        second.emit(make_call(tenant="b"))
        first.emit(make_call(tenant="b"))

        assert label_values(registry, "llmpulse_requests_total", "tenant") == {"a", "b", "__other__"}


def sample_lines(registry: CollectorRegistry, family: str) -> list[str]:
    """The exposition's sample lines of ``family`` (a counter's name with its ``_total``), as scraped."""
    base = family.removesuffix("_total")
    suffixes = (
        ("_total", "_created") if family.endswith("_total") else ("_bucket", "_sum", "_count", "_created", "")
    )
    names = {base + suffix for suffix in suffixes}
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if line.split("{", 1)[0] in names]


class TestHistogramLabels:
    def test_histograms_carry_the_conventions_attributes_only(
        self, registry: CollectorRegistry, sink: PrometheusSink
    ) -> None:
        """The three GenAI histograms have no tenant or route; the counters keep both."""
        sink.emit(make_call(streamed=True, ttft_s=0.1))

        def names(sample: str) -> set[str]:
            return {
                label for m in registry.collect() for s in m.samples if s.name == sample for label in s.labels
            }

        semconv = {*HIST, "le"}
        assert names("gen_ai_client_operation_duration_seconds_bucket") == {*semconv, "error_type"}
        assert names("gen_ai_client_token_usage_bucket") == {*semconv, "gen_ai_token_type"}
        assert names("gen_ai_client_operation_time_to_first_chunk_seconds_bucket") == semconv
        assert {"tenant", "route"} <= names("llmpulse_requests_total")
        assert {"tenant", "route"} <= names("llmpulse_tokens_total")
        assert {"tenant", "route"} <= names("llmpulse_cost_usd_total")

    def test_no_address_means_no_port(self, registry: CollectorRegistry, sink: PrometheusSink) -> None:
        """server_port is only set beside a server_address, as the conventions require."""
        sink.emit(make_call(server_address="", server_port=443))

        labels = {**SHORT, "server_address": "", "server_port": "", "error_type": ""}
        assert registry.get_sample_value("gen_ai_client_operation_duration_seconds_count", labels) == 1

    def test_histogram_labels_add_tenant_and_route_back(self, registry: CollectorRegistry) -> None:
        """histogram_labels puts tenant and route back on every histogram, in any order given."""
        sink = PrometheusSink(registry, histogram_labels=["route", "tenant"])
        sink.emit(make_call(streamed=True, ttft_s=0.1, tenant="t1", route="/r1"))

        labels = {**HIST, "tenant": "t1", "route": "/r1"}
        get = registry.get_sample_value
        assert get("gen_ai_client_operation_duration_seconds_count", {**labels, "error_type": ""}) == 1
        assert get("gen_ai_client_token_usage_sum", {**labels, "gen_ai_token_type": "input"}) == 100
        assert get("gen_ai_client_operation_time_to_first_chunk_seconds_count", labels) == 1

    def test_histogram_labels_can_add_tenant_alone(self, registry: CollectorRegistry) -> None:
        """With only "tenant", the histograms get a tenant label and still no route."""
        PrometheusSink(registry, histogram_labels=["tenant"]).emit(make_call())

        labels = {**HIST, "tenant": "acme", "error_type": ""}
        assert registry.get_sample_value("gen_ai_client_operation_duration_seconds_count", labels) == 1

    def test_an_unknown_histogram_label_is_a_config_error(self, registry: CollectorRegistry) -> None:
        """Only tenant and route can be added: anything else fails when the sink is built."""
        with pytest.raises(ConfigError, match="LLMPULSE_HISTOGRAM_LABELS=tenant,user is not valid"):
            PrometheusSink(registry, histogram_labels=["tenant", "user"])

    @pytest.mark.parametrize(
        ("env", "message"),
        [
            ({"LLMPULSE_HISTOGRAM_LABELS": "tenant,feature"}, "LLMPULSE_HISTOGRAM_LABELS=tenant,feature"),
            (
                {"LLMPULSE_METRICS_MAX_SERIES": "0"},
                "LLMPULSE_METRICS_MAX_SERIES=0 is not valid: use an integer >= 1",
            ),
            ({"LLMPULSE_METRICS_MAX_SERIES": "10k"}, "LLMPULSE_METRICS_MAX_SERIES='10k' is not an integer"),
        ],
    )
    def test_settings_are_validated_at_configure_time(self, env: dict[str, str], message: str) -> None:
        """A bad histogram label or budget is a ConfigError naming the variable and its value."""
        with pytest.raises(ConfigError, match=message):
            Settings.from_env(env)

    def test_settings_reach_the_sink(self, registry: CollectorRegistry) -> None:
        """LLMPULSE_HISTOGRAM_LABELS and LLMPULSE_METRICS_MAX_SERIES shape the pipeline's sink."""
        settings = Settings.from_env(
            {"LLMPULSE_HISTOGRAM_LABELS": "route", "LLMPULSE_METRICS_MAX_SERIES": "1234"}
        )
        sink = make_metrics(registry, settings)
        sink.emit(make_call())

        labels = {**HIST, "route": "/chat", "error_type": ""}
        assert registry.get_sample_value("gen_ai_client_operation_duration_seconds_count", labels) == 1
        assert sink._budget.max_series == 1234

    def test_a_registry_keeps_the_labels_it_was_set_up_with(self, registry: CollectorRegistry) -> None:
        """A second sink cannot change a registry's histogram labels or budget: it is refused, not ignored."""
        PrometheusSink(registry)
        with pytest.raises(ConfigError, match="LLMPULSE_HISTOGRAM_LABELS"):
            PrometheusSink(registry, histogram_labels=["tenant"])
        with pytest.raises(ConfigError, match="LLMPULSE_METRICS_MAX_SERIES=10000"):
            PrometheusSink(registry, max_series=500)
        PrometheusSink(registry).emit(make_call())  # the same settings share it


def flood(sink: PrometheusSink, n: int, **changes: Any) -> None:
    """``n`` calls from distinct tenants (tenant-0 ...), ``changes`` applied to each."""
    for i in range(n):
        sink.emit(make_call(tenant=f"tenant-{i}", **changes))


class TestSeriesBudget:
    # 1,000 series: llmpulse_requests_total gets 200 (100 label sets of 2 series:
    # _total and _created), the duration histogram 200 (10 label sets of 20).
    BUDGET = 1000

    @pytest.fixture(name="small")
    def _small(self, registry: CollectorRegistry) -> PrometheusSink:
        return PrometheusSink(registry, max_series=self.BUDGET, max_tenants=10_000)

    def test_a_family_folds_past_its_share(self, registry: CollectorRegistry, small: PrometheusSink) -> None:
        """The first label sets that fit keep their values; later ones record under __other__."""
        flood(small, 150)

        tenants = label_values(registry, "llmpulse_requests_total", "tenant")
        assert len(tenants - {"__other__"}) == 100  # 200 series: 100 label sets of _total and _created
        assert "__other__" in tenants
        folded = {**OK, "tenant": "__other__", "route": "__other__", "gen_ai_request_model": "__other__"}
        assert registry.get_sample_value("llmpulse_requests_total", folded) == 50
        total = (
            sum(
                registry.get_sample_value("llmpulse_requests_total", {**OK, "tenant": t}) or 0
                for t in tenants
            )
            + 50
        )
        assert total == 150

    def test_the_budget_counts_series_as_they_are_scraped(
        self, registry: CollectorRegistry, small: PrometheusSink
    ) -> None:
        """Each family's count of series is exactly the sample lines /metrics gives Prometheus."""
        flood(small, 300, streamed=True, ttft_s=0.1, cached_input_tokens=10)
        for i in range(30):
            small.emit(make_call(model=f"m{i}", outcome="error", http_status=500, error_type="E"))
            small.emit(make_attempt(model=f"m{i}", http_status=500))

        budget = small._budget
        families = [budget.duration, budget.token_usage, budget.ttfc, budget.requests, budget.tokens]
        families += [budget.token_details, budget.cost, budget.attempts]
        for family in families:
            lines = sample_lines(registry, family.name)
            assert lines, family.name
            assert len(lines) == family.used, family.name
            # Past the share only the folded label sets, a handful, are added.
            assert family.used <= family.limit + 2 * family.cost, family.name

    def test_a_flood_on_one_family_does_not_starve_another(
        self, registry: CollectorRegistry, small: PrometheusSink
    ) -> None:
        """Tenants filling the request counter's share leave a new model its own series elsewhere."""
        flood(small, 500)
        assert "__other__" in label_values(registry, "llmpulse_requests_total", "tenant")

        small.emit(make_call(model="late-model", tenant="tenant-0"))
        small.emit(make_attempt(model="late-model"))
        duration = {**HIST, "gen_ai_request_model": "late-model", "error_type": ""}
        assert registry.get_sample_value("gen_ai_client_operation_duration_seconds_count", duration) == 1
        attempts = {**SHORT, "gen_ai_request_model": "late-model", "status_class": "2xx"}
        assert registry.get_sample_value("llmpulse_attempts_total", attempts) == 1

    def test_attempts_flooding_their_share_leave_requests_theirs(
        self, registry: CollectorRegistry, small: PrometheusSink
    ) -> None:
        """The other way round: many models' attempts fill only the attempt counter's share."""
        for i in range(100):
            small.emit(make_attempt(model=f"m{i}"))
        assert "__other__" in label_values(registry, "llmpulse_attempts_total", "gen_ai_request_model")

        small.emit(make_call(model="m99"))
        assert (
            registry.get_sample_value("llmpulse_requests_total", {**OK, "gen_ai_request_model": "m99"}) == 1
        )

    def test_existing_series_keep_their_labels_after_the_budget_is_reached(
        self, registry: CollectorRegistry, small: PrometheusSink
    ) -> None:
        """No churn: a label set admitted before the share filled keeps being updated under its labels."""
        flood(small, 200)
        small.emit(make_call(tenant="tenant-0"))
        small.emit(make_call(tenant="tenant-5", outcome="error", http_status=500, error_type="E"))

        assert registry.get_sample_value("llmpulse_requests_total", {**OK, "tenant": "tenant-0"}) == 2
        # A new outcome for an admitted tenant is a new label set: past the share, it folds.
        error = {**COMMON, "outcome": "error", "status_class": "5xx", "error_type": "E"}
        assert registry.get_sample_value("llmpulse_requests_total", {**error, "tenant": "tenant-5"}) is None
        other = {"tenant": "__other__", "route": "__other__", "gen_ai_request_model": "__other__"}
        assert registry.get_sample_value("llmpulse_requests_total", {**error, **other}) == 1

    def test_folded_updates_are_counted_per_metric(
        self, registry: CollectorRegistry, small: PrometheusSink
    ) -> None:
        """llmpulse_metrics_folded_total counts each update recorded under __other__, by family."""
        flood(small, 130)

        folded = "llmpulse_metrics_folded_total"
        assert registry.get_sample_value(folded, {"metric": "llmpulse_requests_total"}) == 30
        assert (
            registry.get_sample_value(folded, {"metric": "gen_ai_client_operation_duration_seconds"}) is None
        )

    def test_the_first_fold_of_each_metric_is_logged_once(
        self, small: PrometheusSink, caplog: pytest.LogCaptureFixture
    ) -> None:
        """One warning per metric family names it and the budget; more folds say nothing more."""
        with caplog.at_level(logging.WARNING, logger="llmpulse"):
            flood(small, 400)
        warnings = [r.getMessage() for r in caplog.records if "series budget" in r.getMessage()]
        requests = [w for w in warnings if w.startswith("llmpulse: llmpulse_requests_total ")]
        assert len(requests) == 1
        assert "LLMPULSE_METRICS_MAX_SERIES=1000" in requests[0]
        assert len(warnings) == len(set(warnings))

    def test_allowlisted_tenants_are_never_folded(self, registry: CollectorRegistry) -> None:
        """A tenant on the allowlist keeps its label past the cap and past the budget."""
        sink = PrometheusSink(registry, max_series=self.BUDGET, max_tenants=10_000, tenant_allowlist=["vip"])
        flood(sink, 300)
        sink.emit(make_call(tenant="vip"))

        assert registry.get_sample_value("llmpulse_requests_total", {**OK, "tenant": "vip"}) == 1

    def test_a_histogram_with_tenants_folds_them_too(self, registry: CollectorRegistry) -> None:
        """With tenant on the histograms, a tenant flood folds there as well, and stays within the share."""
        sink = PrometheusSink(
            registry, max_series=self.BUDGET, max_tenants=10_000, histogram_labels=["tenant"]
        )
        flood(sink, 50)

        bucket = "gen_ai_client_operation_duration_seconds_bucket"
        tenants = label_values(registry, bucket, "tenant")
        assert len(tenants - {"__other__"}) == 10  # 10 label sets of 20 series fill the share of 200
        # The folded label set comes on top (the budget keeps 5 % for those).
        assert len(sample_lines(registry, "gen_ai_client_operation_duration_seconds")) == 220

    def test_a_real_value_never_collides_with_the_folded_one(self, registry: CollectorRegistry) -> None:
        """A tenant really called "__other__" is exported as "___other__", apart from folded tenants."""
        sink = PrometheusSink(registry, max_tenants=2)
        for tenant in ("__other__", "__x", "a", "b", "c"):
            sink.emit(make_call(tenant=tenant))

        tenants = {"___other__": 1, "___x": 1, "__other__": 3}  # a, b and c past the cap of 2
        assert label_values(registry, "llmpulse_requests_total", "tenant") == set(tenants)
        for tenant, count in tenants.items():
            assert registry.get_sample_value("llmpulse_requests_total", {**OK, "tenant": tenant}) == count

    def test_cap_folds_are_counted_and_logged_once(
        self, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Tenants past LLMPULSE_MAX_TENANTS are counted as folded too, with one warning naming the cap."""
        sink = PrometheusSink(registry, max_tenants=2)
        with caplog.at_level(logging.WARNING, logger="llmpulse"):
            flood(sink, 5)

        assert (
            registry.get_sample_value("llmpulse_metrics_folded_total", {"metric": "llmpulse_requests_total"})
            == 3
        )
        warnings = [r.getMessage() for r in caplog.records if "LLMPULSE_MAX_TENANTS=2" in r.getMessage()]
        assert len(warnings) == 1

    def test_the_default_budget_is_10000_series(self, sink: PrometheusSink) -> None:
        """By default the registry's budget is 10,000 series, of which each family has its share."""
        assert sink._budget.max_series == 10_000
        assert sink._budget.requests.limit == 2000
        assert sink._budget.duration.limit == 2000
        assert sum(prometheus_module._SHARES.values()) == pytest.approx(0.95)


class TestRegistries:
    def test_two_sinks_share_one_registry(self, registry: CollectorRegistry) -> None:
        """A second sink on the same registry reuses the metrics instead of raising DuplicatedTimeseries."""
        PrometheusSink(registry).emit(make_call())
        PrometheusSink(registry).emit(make_call())

        assert registry.get_sample_value("llmpulse_requests_total", OK) == 2

    def test_default_is_the_global_registry(self) -> None:
        """With no registry, any number of sinks record into prometheus_client's REGISTRY."""
        labels = {**OK, "gen_ai_provider_name": "test-default-registry"}
        before = REGISTRY.get_sample_value("llmpulse_requests_total", labels) or 0
        PrometheusSink().emit(make_call(provider="test-default-registry"))
        PrometheusSink().emit(make_call(provider="test-default-registry"))

        assert REGISTRY.get_sample_value("llmpulse_requests_total", labels) == before + 2

    def test_import_registers_nothing(self) -> None:
        """Importing the module creates no metric: only constructing a sink does."""
        code = (
            "import llmpulse.sinks._prometheus\n"
            "from prometheus_client import REGISTRY, generate_latest\n"
            "assert b'llmpulse_' not in generate_latest(REGISTRY)\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


class TestExemplars:
    def test_correlation_id_is_an_exemplar_in_openmetrics(
        self, registry: CollectorRegistry, sink: PrometheusSink
    ) -> None:
        """The duration histogram carries the correlation id as an OpenMetrics exemplar."""
        sink.emit(make_call(correlation_id="abc123", latency_s=0.7))

        text = generate_openmetrics(registry).decode()
        [line] = [line for line in text.splitlines() if "# {" in line]
        assert line.startswith("gen_ai_client_operation_duration_seconds_bucket{")
        assert 'le="1.28"' in line
        assert '} 1.0 # {correlation_id="abc123"} 0.7 ' in line
        assert "correlation_id" not in generate_latest(registry).decode()

    def test_at_most_one_exemplar_per_bucket_per_second(
        self, registry: CollectorRegistry, sink: PrometheusSink, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Within a second a bucket keeps its exemplar; other buckets get theirs; after it, a new one wins."""
        clock = [1000.0]
        monkeypatch.setattr(prometheus_module, "_monotonic", lambda: clock[0])

        def exemplars() -> dict[str, str]:
            text = generate_openmetrics(registry).decode()
            lines = [line for line in text.splitlines() if "# {" in line]
            return {
                line.split('le="')[1].split('"')[0]: line.split('correlation_id="')[1].split('"')[0]
                for line in lines
            }

        sink.emit(make_call(correlation_id="first", latency_s=0.7))
        sink.emit(make_call(correlation_id="second", latency_s=0.9))  # same bucket, same second
        sink.emit(make_call(correlation_id="slow", latency_s=30.0))  # another bucket
        assert exemplars() == {"1.28": "first", "40.96": "slow"}
        clock[0] += 1.0
        sink.emit(make_call(correlation_id="later", latency_s=0.8))
        assert exemplars() == {"1.28": "later", "40.96": "slow"}
        count = "gen_ai_client_operation_duration_seconds_count"
        assert registry.get_sample_value(count, {**HIST, "error_type": ""}) == 4

    def test_inflight_gauge_is_read_at_scrape_time_from_threads(
        self, registry: CollectorRegistry, sink: PrometheusSink
    ) -> None:
        """Concurrent starts and finishes from many threads leave the gauge exactly balanced."""

        def work() -> None:
            for _ in range(2000):
                sink.call_started("openai")
                sink.call_finished("openai")

        threads = [threading.Thread(target=work) for _ in range(4)]
        sink.call_started("openai")
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert (
            registry.get_sample_value("llmpulse_inflight_requests", {"gen_ai_provider_name": "openai"}) == 1
        )

    def test_overlong_correlation_id_is_observed_once_without_exemplar(
        self, registry: CollectorRegistry, sink: PrometheusSink
    ) -> None:
        """An id too long for an exemplar still counts the call exactly once, with no internal error."""
        sink.emit(make_call(correlation_id="x" * 115))
        sink.emit(make_call(correlation_id="y" * 114))

        count = "gen_ai_client_operation_duration_seconds_count"
        assert registry.get_sample_value(count, {**HIST, "error_type": ""}) == 2
        assert label_values(registry, "llmpulse_internal_errors_total", "where") == set()
        text = generate_openmetrics(registry).decode()
        assert "y" * 114 in text
        assert "x" * 115 not in text

    def test_no_exemplars_in_multiprocess_mode(
        self, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A sink built with PROMETHEUS_MULTIPROC_DIR set skips exemplars, which that mode drops anyway."""
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/nonexistent")
        sink = PrometheusSink(registry)
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
        sink.emit(make_call())

        assert "correlation_id" not in generate_openmetrics(registry).decode()


def _filled_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    PrometheusSink(registry).emit(make_call(correlation_id="served-1"))
    return registry


def _wsgi_get(app: Any, accept: str = "") -> tuple[str, dict[str, str], str]:
    environ: dict[str, Any] = {"PATH_INFO": "/metrics"}
    if accept:
        environ["HTTP_ACCEPT"] = accept
    wsgiref.util.setup_testing_defaults(environ)
    started: list[Any] = []
    body = b"".join(app(environ, lambda status, headers: started.append((status, headers))))
    [(status, headers)] = started
    return status, dict(headers), body.decode()


class TestServing:
    async def test_asgi_app_serves_metrics(self) -> None:
        """The ASGI app serves the text format, and OpenMetrics with exemplars when asked."""
        app = metrics_asgi_app(_filled_registry())
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://test") as client:
            plain = await client.get("/metrics")
            om = await client.get("/metrics", headers={"Accept": OPENMETRICS})

        assert plain.status_code == 200
        assert plain.headers["content-type"].startswith("text/plain")
        assert 'llmpulse_requests_total{error_type="",gen_ai_operation_name="chat"' in plain.text
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert 'correlation_id="served-1"' in om.text

    async def test_asgi_app_answers_lifespan(self) -> None:
        """Served on its own, the ASGI app completes the lifespan handshake instead of failing it."""
        incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return incoming.pop(0)

        async def send(message: Any) -> None:
            sent.append(message)

        await metrics_asgi_app(CollectorRegistry())({"type": "lifespan"}, receive, send)

        assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]

    def test_wsgi_app_serves_metrics(self) -> None:
        """The WSGI app serves the text format, and OpenMetrics with exemplars when asked."""
        app = metrics_wsgi_app(_filled_registry())

        status, headers, text = _wsgi_get(app)
        assert status.startswith("200")
        assert headers["Content-Type"].startswith("text/plain")
        assert "llmpulse_requests_total{" in text
        _, headers, text = _wsgi_get(app, OPENMETRICS)
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert 'correlation_id="served-1"' in text

    def test_default_apps_serve_the_global_registry(self) -> None:
        """With no registry and no multiprocess directory the apps serve REGISTRY."""
        PrometheusSink().emit(make_call(provider="test-served-default"))

        _, _, text = _wsgi_get(metrics_wsgi_app())
        assert 'gen_ai_provider_name="test-served-default"' in text

    def test_standalone_server_over_http(self) -> None:
        """start_metrics_server(0) binds a free port on 127.0.0.1 and serves both formats over HTTP."""
        with start_metrics_server(0, registry=_filled_registry()) as server:
            assert server.port != 0
            assert server.url == f"http://127.0.0.1:{server.port}/metrics"
            with urllib.request.urlopen(server.url, timeout=10) as resp:
                plain = resp.read().decode()
            request = urllib.request.Request(server.url, headers={"Accept": OPENMETRICS})
            with urllib.request.urlopen(request, timeout=10) as resp:
                om = resp.read().decode()
        assert "llmpulse_requests_total{" in plain
        assert 'correlation_id="served-1"' in om
        assert not server.running
        server.stop()

    def test_maybe_start_from_env_starts_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A configured port starts one server per process; later calls return it; no port starts none."""
        monkeypatch.setattr(_metrics_server, "_started", None)
        assert maybe_start_from_env(None) is None
        server = maybe_start_from_env(0)
        assert server is not None
        try:
            assert maybe_start_from_env(0) is server
            assert maybe_start_from_env(12345) is server
        finally:
            server.stop()

    def test_maybe_start_from_env_logs_a_taken_port(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A port already in use is logged and yields no server instead of raising into the app."""
        monkeypatch.setattr(_metrics_server, "_started", None)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with caplog.at_level(logging.WARNING, logger="llmpulse"):
                assert maybe_start_from_env(port) is None
                assert maybe_start_from_env(port) is None
        assert len([r for r in caplog.records if "metrics server not started" in r.message]) == 1


CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from test_prometheus import make_attempt, make_call
from llmpulse.events import RateLimitInfo
from llmpulse.sinks._prometheus import PrometheusSink

sink = PrometheusSink()
sink.call_started("openai")
sink.call_started("openai")
sink.call_finished("openai")
for _ in range(10):
    sink.emit(make_attempt())
    sink.emit(make_call(streamed=True, ttft_s=0.1, ratelimit=RateLimitInfo(remaining_requests=7)))
sink.emit(make_call(outcome="error", http_status=500, error_type="InternalServerError"))
"""
TESTS_DIR = str(Path(__file__).parent)


@dataclasses.dataclass
class Workers:
    """A multiprocess directory written by finished child processes."""

    path: Path
    pids: list[int]


@pytest.fixture(name="workers")
def _workers(tmp_path: Path) -> Workers:
    # Only the children get the variable: this process keeps in-memory metrics.
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, TESTS_DIR], env=env, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for child in children:
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err.decode()
    return Workers(tmp_path, [child.pid for child in children])


AGGREGATE = (
    'llmpulse_requests_total{error_type="",gen_ai_operation_name="chat",'
    'gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o-mini",'
    'outcome="ok",route="/chat",status_class="2xx",tenant="acme"} '
)


class TestMultiprocess:
    def test_counters_and_histograms_sum_over_processes(self, workers: Workers) -> None:
        """A MultiProcessCollector over the children's files shows the sums over all of them."""
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(workers.path))
        get = registry.get_sample_value

        assert get("llmpulse_requests_total", OK) == 30
        error = {**COMMON, "outcome": "error", "status_class": "5xx", "error_type": "InternalServerError"}
        assert get("llmpulse_requests_total", error) == 3
        assert get("llmpulse_attempts_total", {**SHORT, "status_class": "2xx"}) == 30
        assert get("gen_ai_client_operation_duration_seconds_count", {**HIST, "error_type": ""}) == 30
        assert get("gen_ai_client_operation_time_to_first_chunk_seconds_count", HIST) == 30
        assert get("llmpulse_tokens_total", {**COMMON, "token_type": "input"}) == 3300
        assert get("llmpulse_cost_usd_total", COMMON) == pytest.approx(0.033)
        assert (
            get("llmpulse_ratelimit_remaining", {"gen_ai_provider_name": "openai", "kind": "requests"}) == 7
        )
        assert "correlation_id" not in generate_openmetrics(registry).decode()

    def test_inflight_is_a_live_sum(self, workers: Workers) -> None:
        """In-flight calls sum over live processes and vanish when a process is marked dead."""
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(workers.path))
        gauge = "llmpulse_inflight_requests"

        assert registry.get_sample_value(gauge, {"gen_ai_provider_name": "openai"}) == 3
        for pid in workers.pids:
            multiprocess.mark_process_dead(pid, str(workers.path))
        assert registry.get_sample_value(gauge, {"gen_ai_provider_name": "openai"}) is None

    def test_wsgi_app_and_server_serve_the_aggregate(
        self, workers: Workers, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With PROMETHEUS_MULTIPROC_DIR set, the default WSGI app and server serve the sum over processes."""
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(workers.path))
        wsgi = metrics_wsgi_app()
        assert AGGREGATE + "30.0" in _wsgi_get(wsgi)[2]
        # A fourth worker writes after the app was built: the per-request registry sees it.
        subprocess.run([sys.executable, "-c", CHILD, TESTS_DIR], check=True, timeout=60)
        assert AGGREGATE + "40.0" in _wsgi_get(wsgi)[2]
        with start_metrics_server(0) as server, urllib.request.urlopen(server.url, timeout=10) as resp:
            assert AGGREGATE + "40.0" in resp.read().decode()

    def test_the_old_lowercase_variable_is_honoured(
        self, workers: Workers, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """prometheus_client still reads prometheus_multiproc_dir; so does the app llmpulse serves."""
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
        monkeypatch.setenv("prometheus_multiproc_dir", str(workers.path))
        assert AGGREGATE + "30.0" in _wsgi_get(metrics_wsgi_app())[2]

    def test_an_empty_variable_is_warned_about(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An empty PROMETHEUS_MULTIPROC_DIR is a misconfiguration worth one warning, not a crash."""
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
        monkeypatch.setattr(_metrics_server, "_warned_empty", [])
        with caplog.at_level(logging.WARNING, logger="llmpulse"):
            assert _metrics_server._multiprocess_dir() is None
            assert _metrics_server._multiprocess_dir() is None
        assert len([r for r in caplog.records if "set but empty" in r.message]) == 1

    async def test_asgi_app_serves_the_aggregate(
        self, workers: Workers, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With PROMETHEUS_MULTIPROC_DIR set, the default ASGI app serves the sum over processes."""
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(workers.path))
        app = metrics_asgi_app()
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app), base_url="http://test") as client:
            response = await client.get("/metrics")

        assert AGGREGATE + "30.0" in response.text
