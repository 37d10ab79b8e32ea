"""Prometheus metrics, named as OpenTelemetry's GenAI conventions render in Prometheus.

Metric objects are created per registry when the first sink for it is
built, never at import, and shared by every sink on that registry
(prometheus_client refuses a name twice). `PrometheusSink.emit` runs on the
caller's path for every call, so label children are cached per label
combination: ``metric.labels(...)`` costs ~5 µs, a cached child ~1-2 µs per
update. Tenant, route and model labels keep the first N distinct values they
see (plus an allowlist for tenants); later values become "other", with no
re-ranking and no eviction, so series never churn.

Two updates are made cheaper than prometheus_client's defaults because they
ran on every call: the in-flight gauge reads a locked counter at scrape time
(except in multiprocess mode, where each process writes its own value), and
a duration exemplar is attached at most once a second per bucket: exemplar
validation cost as much as the rest of the call's metrics, and Prometheus
keeps only the latest exemplar of a bucket per scrape anyway. The exemplar
carries the caller's OpenTelemetry ``trace_id``/``span_id`` (when a sampled
span is current) and the ``correlation_id``; exemplars are exposed in the
OpenMetrics format only.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any, Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from ..events import AttemptEvent, CallEvent, RateLimitInfo

__all__ = ["DURATION_BUCKETS", "TOKEN_BUCKETS", "PrometheusSink"]

DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92, 163.84, 327.68,
)  # fmt: skip
"""OTel's ``gen_ai.client.operation.duration`` buckets, extended to ~5 min for long reasoning calls."""

TOKEN_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
"""OTel's ``gen_ai.client.token.usage`` buckets."""

_COMMON = ("gen_ai_provider_name", "gen_ai_request_model", "gen_ai_operation_name", "tenant", "route")
_SHORT = ("gen_ai_provider_name", "gen_ai_request_model", "gen_ai_operation_name")
_EXEMPLAR_KEY = "correlation_id"
# prometheus_client rejects exemplars whose label names + values exceed 128
# characters, but only after it has counted the observation.
_EXEMPLAR_MAX_CHARS = 128
_OTHER = "other"
_EXEMPLAR_EVERY_S = 1.0
_DURATION_BOUNDS = (*DURATION_BUCKETS, math.inf)
_monotonic = time.monotonic  # the exemplar clock (tests replace it)
_CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}


def _exemplar(correlation_id: str) -> dict[str, str]:
    """The exemplar labels: the caller's current trace and span ids, and the correlation id.

    OTel's Prometheus compatibility spec names the keys ``trace_id`` and
    ``span_id`` (what Grafana links to a trace by). The span is the caller's:
    llmpulse's own call span is made later, by `OtelSink`, as its child in the
    same trace. When everything does not fit in 128 characters, ``span_id``
    makes room for the correlation id, if that is enough; else the correlation
    id is left out. The trace id, what links, is always kept.
    """
    labels: dict[str, str] = {}
    room = _EXEMPLAR_MAX_CHARS
    ids = _current_trace_ids()
    if ids is not None:
        trace_id, span_id = ids
        labels["trace_id"] = trace_id
        room -= len("trace_id") + len(trace_id)
        span_cost = len("span_id") + len(span_id)
        cid_cost = len(_EXEMPLAR_KEY) + len(correlation_id) if correlation_id else 0
        # span_id gives way only to a correlation id that then fits.
        if span_cost + cid_cost <= room or cid_cost > room:
            labels["span_id"] = span_id
            room -= span_cost
    if correlation_id and len(_EXEMPLAR_KEY) + len(correlation_id) <= room:
        labels[_EXEMPLAR_KEY] = correlation_id
    return labels


def _current_trace_ids() -> tuple[str, str] | None:
    """The caller's current (trace id, span id) in hex, or None when no valid span is current."""
    # No import: an app that never imported opentelemetry.trace has no
    # current span, and importing it here would cost every app that does not use it.
    otel_trace = sys.modules.get("opentelemetry.trace")
    if otel_trace is None:
        return None
    span_context = otel_trace.get_current_span().get_span_context()
    # An unsampled trace is never exported: its id would link to nothing.
    if not span_context.is_valid or not span_context.trace_flags.sampled:
        return None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


class _Metrics:
    """Every metric llmpulse records, registered once per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Duration of GenAI client operations (the whole logical call, retries included).",
            (*_COMMON, "error_type"),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens used per GenAI call.",
            (*_COMMON, "gen_ai_token_type"),
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.ttfc = Histogram(
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "Time to the first content chunk of streamed GenAI calls.",
            _COMMON,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "llmpulse_requests_total",
            "Logical LLM calls by outcome.",
            (*_COMMON, "outcome", "status_class", "error_type"),
            registry=r,
        )
        self.attempts = Counter(
            "llmpulse_attempts_total",
            "HTTP attempts sent to LLM providers.",
            (*_SHORT, "status_class"),
            registry=r,
        )
        self.tokens = Counter(
            "llmpulse_tokens_total",
            "Tokens used (input counts cached input tokens too).",
            (*_COMMON, "token_type"),
            registry=r,
        )
        self.token_details = Counter(
            "llmpulse_token_details_total",
            "Subsets of llmpulse_tokens_total: cached_input and cache_write of input, reasoning of output.",
            (*_COMMON, "kind"),
            registry=r,
        )
        self.cost = Counter("llmpulse_cost_usd_total", "Cost of LLM calls in USD.", _COMMON, registry=r)
        self.unpriced = Counter(
            "llmpulse_unpriced_requests_total",
            "Calls with known tokens but no known price (their cost is unknown, not zero).",
            ("gen_ai_provider_name", "gen_ai_request_model"),
            registry=r,
        )
        self.inflight = Gauge(
            "llmpulse_inflight_requests",
            "LLM calls in progress.",
            ("gen_ai_provider_name",),
            registry=r,
            multiprocess_mode="livesum",
        )
        self.inflight_counts = _Inflight(self.inflight)
        self.ratelimit = Gauge(
            "llmpulse_ratelimit_remaining",
            "Requests or tokens left in the provider's rate-limit window, from its last response.",
            ("gen_ai_provider_name", "kind"),
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.retries = Counter(
            "llmpulse_retries_total",
            "Retries made, by the failure that caused them (5xx, 429, timeout, connect, ...).",
            (*_SHORT[:2], "reason"),
            registry=r,
        )
        self.retries_refused = Counter(
            "llmpulse_retries_refused_total",
            "Failed attempts not retried, by why (budget, deadline, circuit_open, max_retries, ...).",
            (*_SHORT[:2], "reason"),
            registry=r,
        )
        self.rate_limited = Counter(
            "llmpulse_rate_limited_total",
            "Calls a rate limit or throttle held back or refused, by limit (tenant requests, key tokens...).",
            ("gen_ai_provider_name", "limit"),
            registry=r,
        )
        self.budget_actions = Counter(
            "llmpulse_budget_actions_total",
            "Budget actions taken on spent budgets (alert, downgrade, block).",
            ("action", "budget"),
            registry=r,
        )
        self.concurrency_limit = Gauge(
            "llmpulse_concurrency_limit",
            "The adaptive concurrency limit per endpoint.",
            ("gen_ai_provider_name", "server_address"),
            registry=r,
            multiprocess_mode="liveall",
        )
        self.queue_wait = Histogram(
            "llmpulse_queue_wait_seconds",
            "Time calls waited for a rate limit or a concurrency slot (calls that waited).",
            ("gen_ai_provider_name",),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.cache = Counter(
            "llmpulse_cache_total",
            "Response cache lookups (hit, miss) and answers stored (store).",
            ("gen_ai_provider_name", "result"),
            registry=r,
        )
        self.fallbacks = Counter(
            "llmpulse_fallbacks_total",
            "Calls served by a fallback model or provider, by why (overloaded, circuit_open, ...).",
            ("gen_ai_provider_name", "gen_ai_request_model", "served_provider", "served_model", "reason"),
            registry=r,
        )
        self.circuit_state = Gauge(
            "llmpulse_circuit_state",
            "Circuit breaker state per endpoint and model: 0 closed, 1 half-open, 2 open.",
            ("gen_ai_provider_name", "server_address", "gen_ai_request_model"),
            registry=r,
            multiprocess_mode="max",
        )
        self.circuit_transitions = Counter(
            "llmpulse_circuit_transitions_total",
            "Circuit breaker transitions.",
            ("gen_ai_provider_name", "server_address", "gen_ai_request_model", "from_state", "to_state"),
            registry=r,
        )
        self.dropped = Counter(
            "llmpulse_events_dropped_total",
            "Events a sink did not get.",
            ("sink", "reason"),
            registry=r,
        )
        self.store_fallbacks = Counter(
            "llmpulse_state_store_fallbacks_total",
            "Quota decisions made locally (limit / replicas) because Redis did not answer, by why.",
            ("reason",),
            registry=r,
        )
        self.internal_errors = Counter(
            "llmpulse_internal_errors_total",
            "Bugs inside llmpulse that the calls survived.",
            ("where",),
            registry=r,
        )
        self.wrap_failures = Counter(
            "llmpulse_wrap_failures_total",
            "Clients left unwrapped (unknown SDK internals).",
            ("reason",),
            registry=r,
        )


class _Inflight:
    """Calls in progress per provider, shared by the sinks of one registry.

    A plain counter under a lock, read by the gauge when scraped; in
    multiprocess mode the gauge child itself is moved (each process writes
    its own value file and "livesum" adds the live ones).
    """

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._children: dict[str, Gauge] = {}
        self._on_scrape = not _multiprocess()

    def add(self, provider: str, n: int) -> None:
        if not self._on_scrape:
            child = self._children.get(provider)
            if child is None:
                child = self._children[provider] = self._gauge.labels(provider)
            child.inc(n)
            return
        with self._lock:
            count = self._counts.get(provider)
            if count is None:
                count = 0
                self._gauge.labels(provider).set_function(lambda: self._counts[provider])
            self._counts[provider] = count + n


# Metric objects hold no reference to their registry, so a dropped registry
# (one per test, say) takes its entry with it.
_metrics_lock = threading.Lock()
_metrics_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()


def _metrics_for(registry: CollectorRegistry) -> _Metrics:
    with _metrics_lock:
        metrics = _metrics_by_registry.get(registry)
        if metrics is None:
            metrics = _metrics_by_registry[registry] = _Metrics(registry)
        return metrics


def _multiprocess() -> bool:
    from prometheus_client import values  # noqa: PLC0415 - only read here

    # The value class is fixed when prometheus_client is imported. A variable
    # set later still counts: /metrics then serves the multiprocess files,
    # never this process's in-memory exemplars.
    return values.ValueClass is not values.MutexValue or "PROMETHEUS_MULTIPROC_DIR" in os.environ


class _Capped:
    """Maps raw label values to themselves for the first N distinct ones, to "other" after.

    ``known`` is read without the lock on the hot path: a dict lookup is
    atomic, and values only ever get added.
    """

    __slots__ = ("_limit", "_lock", "_seen", "known")

    def __init__(self, limit: int, allow: Iterable[str] = ()) -> None:
        self._limit = limit
        self._seen = 0
        self._lock = threading.Lock()
        self.known: dict[str | None, str] = {None: "", "": ""}
        self.known.update((value, value) for value in allow)

    def resolve(self, value: str | None) -> str:
        """Return the label value for ``value``, admitting it while under the cap."""
        if value is None:
            return ""
        label = self.known.get(value)
        if label is not None:
            return label
        with self._lock:
            label = self.known.get(value)
            if label is not None:
                return label
            if self._seen >= self._limit:
                # Not remembered: the map must stay bounded too.
                return _OTHER
            self._seen += 1
            self.known[value] = value
            return value


class _Series:
    """Cached label children for one (provider, model, operation, tenant, route)."""

    __slots__ = (
        "cache_write",
        "cached_input",
        "cost",
        "duration",
        "exemplar_due",
        "labels",
        "reasoning",
        "requests",
        "tokens_in",
        "tokens_out",
        "ttfc",
        "unpriced",
        "usage_in",
        "usage_out",
    )

    def __init__(self, m: _Metrics, labels: tuple[str, str, str, str, str]) -> None:
        self.labels = labels
        self.duration: dict[str | None, Histogram] = {}
        # Per duration bucket: when the next exemplar may be attached.
        self.exemplar_due: dict[str | None, list[float]] = {}
        self.requests: dict[tuple[str, int | None, str | None], Counter] = {}
        self.usage_in = m.token_usage.labels(*labels, "input")
        self.usage_out = m.token_usage.labels(*labels, "output")
        self.tokens_in = m.tokens.labels(*labels, "input")
        self.tokens_out = m.tokens.labels(*labels, "output")
        self.cost = m.cost.labels(*labels)
        # Created on first use: most series never see them, and a histogram
        # child exports a sample per bucket even when empty.
        self.ttfc: Histogram | None = None
        self.cached_input: Counter | None = None
        self.cache_write: Counter | None = None
        self.reasoning: Counter | None = None
        self.unpriced: Counter | None = None


def _status_class(status: int | None) -> str:
    return "none" if status is None else f"{status // 100}xx"


class PrometheusSink:
    """Records calls and attempts in Prometheus metrics, on the caller's path.

    Metric names follow the OpenTelemetry GenAI conventions as an OTel
    exporter renders them in Prometheus (``gen_ai_client_operation_duration_seconds``,
    ``gen_ai_client_token_usage``, ...), so dashboards work for both paths;
    llmpulse's own counters start with ``llmpulse_``. Label values that are
    None are exported as "". `emit` never raises: a failure inside it is
    counted in ``llmpulse_internal_errors_total{where="prometheus_sink"}``.

    Args:
        registry: The prometheus_client registry (None: the global ``REGISTRY``).
            Sinks on the same registry share the metric objects.
        max_tenants: Distinct tenant label values kept before later ones become "other".
        max_routes: Distinct route label values kept before later ones become "other".
        max_models: Distinct model label values kept before later ones become "other".
        tenant_allowlist: Tenants always kept, outside the ``max_tenants`` count.

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> sink = PrometheusSink(CollectorRegistry(), max_tenants=20)

    """

    name = "prometheus"
    inline = True

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_tenants: int = 100,
        max_routes: int = 100,
        max_models: int = 200,
        tenant_allowlist: Iterable[str] = (),
    ) -> None:
        self._m = _metrics_for(REGISTRY if registry is None else registry)
        self._tenants = _Capped(max_tenants, tenant_allowlist)
        self._routes = _Capped(max_routes)
        self._models = _Capped(max_models)
        self._series: dict[tuple[str, str, str, str, str], _Series] = {}
        self._attempts: dict[tuple[str, str, str, int | None], Counter] = {}
        self._ratelimit: dict[str, tuple[Gauge, Gauge]] = {}
        self._other: dict[tuple[str, ...], Any] = {}
        # Exemplars are silently dropped in multiprocess mode; skip the work.
        self._exemplars = not _multiprocess()

    def emit(self, event: object) -> None:
        """Record a `CallEvent` or an `AttemptEvent`; other events are ignored.

        Args:
            event: Any llmpulse event.

        """
        try:
            if isinstance(event, CallEvent):
                self._call(event)
            elif isinstance(event, AttemptEvent):
                self._attempt(event)
        except Exception:  # noqa: BLE001 - metrics must never break a call
            self.record_internal_error("prometheus_sink")

    def _call(self, e: CallEvent) -> None:
        # Hot path: a handful of direct child updates, split only as far as
        # readability needs (each extra method call costs ~0.1 µs).
        s = self._series_for(e)
        key = s.labels
        error_type = e.error_type
        rkey = (e.outcome, e.http_status, error_type)
        requests = s.requests.get(rkey)
        if requests is None:
            requests = s.requests[rkey] = self._m.requests.labels(
                *key, e.outcome, _status_class(e.http_status), error_type or ""
            )
        requests.inc()

        if e.outcome != "rejected":
            duration = s.duration.get(error_type)
            if duration is None:
                duration = s.duration[error_type] = self._m.duration.labels(*key, error_type or "")
                s.exemplar_due[error_type] = [0.0] * len(_DURATION_BOUNDS)
            latency = e.latency_s
            if self._exemplars:
                due = s.exemplar_due[error_type]
                bucket = bisect.bisect_left(_DURATION_BOUNDS, latency)  # the first bound >= latency
                now = _monotonic()
                # The labels are only worked out when one is due: once a second per bucket.
                exemplar = _exemplar(e.correlation_id) if now >= due[bucket] else None
                if exemplar:
                    due[bucket] = now + _EXEMPLAR_EVERY_S
                    duration.observe(latency, exemplar)
                else:
                    duration.observe(latency)
            else:
                duration.observe(latency)

        if e.streamed and e.ttft_s is not None:
            ttfc = s.ttfc
            if ttfc is None:
                ttfc = s.ttfc = self._m.ttfc.labels(*key)
            ttfc.observe(e.ttft_s)

        self._tokens(s, e)
        if e.queue_wait_s > 0:
            self._queue_wait_child(e.provider).observe(e.queue_wait_s)
        if e.ratelimit is not None:
            self._set_ratelimit(e.provider, e.ratelimit)

    def _series_for(self, e: CallEvent) -> _Series:
        model = self._models.known.get(e.model)
        if model is None:
            model = self._models.resolve(e.model)
        tenant = self._tenants.known.get(e.tenant)
        if tenant is None:
            tenant = self._tenants.resolve(e.tenant)
        route = self._routes.known.get(e.route)
        if route is None:
            route = self._routes.resolve(e.route)
        key = (e.provider, model, e.operation, tenant, route)
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = _Series(self._m, key)
        return s

    def _tokens(self, s: _Series, e: CallEvent) -> None:
        if e.cache_hit:
            return  # answered from the cache: no tokens used, nothing billed
        known = False
        if e.input_tokens is not None:
            known = True
            s.usage_in.observe(e.input_tokens)
            s.tokens_in.inc(e.input_tokens)
        if e.output_tokens is not None:
            known = True
            s.usage_out.observe(e.output_tokens)
            s.tokens_out.inc(e.output_tokens)
        # Zero is the common case for these subsets: skip the update (not the meaning).
        if e.cached_input_tokens:
            if s.cached_input is None:
                s.cached_input = self._m.token_details.labels(*s.labels, "cached_input")
            s.cached_input.inc(e.cached_input_tokens)
        if e.cache_write_tokens:
            if s.cache_write is None:
                s.cache_write = self._m.token_details.labels(*s.labels, "cache_write")
            s.cache_write.inc(e.cache_write_tokens)
        if e.reasoning_tokens:
            if s.reasoning is None:
                s.reasoning = self._m.token_details.labels(*s.labels, "reasoning")
            s.reasoning.inc(e.reasoning_tokens)
        if e.cost_usd is not None:
            s.cost.inc(e.cost_usd)
        elif known and e.attempts > 0:
            # Sent and answered with usage, yet no price: cost is unknown, not zero.
            if s.unpriced is None:
                s.unpriced = self._m.unpriced.labels(*s.labels[:2])
            s.unpriced.inc()

    def _set_ratelimit(self, provider: str, rl: RateLimitInfo) -> None:
        gauges = self._ratelimit.get(provider)
        if gauges is None:
            gauges = self._ratelimit[provider] = (
                self._m.ratelimit.labels(provider, "requests"),
                self._m.ratelimit.labels(provider, "tokens"),
            )
        if rl.remaining_requests is not None:
            gauges[0].set(rl.remaining_requests)
        if rl.remaining_tokens is not None:
            gauges[1].set(rl.remaining_tokens)

    def _attempt(self, e: AttemptEvent) -> None:
        self.count_attempt(e.provider, e.model, e.operation, e.http_status)

    def count_attempt(self, provider: str, model: str | None, operation: str, status: int | None) -> None:
        """Count one HTTP attempt (without building an `AttemptEvent`)."""
        try:
            label = self._models.known.get(model)
            if label is None:
                label = self._models.resolve(model)
            key = (provider, label, operation, status)
            child = self._attempts.get(key)
            if child is None:
                child = self._attempts[key] = self._m.attempts.labels(
                    provider, label, operation, _status_class(status)
                )
            child.inc()
        except Exception:  # noqa: BLE001 - metrics must never break a call
            self.record_internal_error("prometheus_sink")

    def call_started(self, provider: str) -> None:
        """Count a call as in flight (``llmpulse_inflight_requests``).

        Args:
            provider: The ``gen_ai_provider_name`` of the call.

        """
        try:
            self._m.inflight_counts.add(provider, 1)
        except Exception:  # noqa: BLE001 - metrics must never break a call
            self.record_internal_error("prometheus_sink")

    def call_finished(self, provider: str) -> None:
        """Count a call as no longer in flight.

        Args:
            provider: The ``gen_ai_provider_name`` given to `call_started`.

        """
        try:
            self._m.inflight_counts.add(provider, -1)
        except Exception:  # noqa: BLE001 - metrics must never break a call
            self.record_internal_error("prometheus_sink")

    def count_retry(self, provider: str, model: str | None, reason: str, *, made: bool) -> None:
        """Count a retry made (``llmpulse_retries_total``) or refused (``llmpulse_retries_refused_total``).

        Args:
            provider: The ``gen_ai_provider_name``.
            model: The requested model.
            reason: The failure retried, or why it was not.
            made: Whether the retry is made.

        """
        label = self._models.known.get(model)
        if label is None:
            label = self._models.resolve(model)
        metric = self._m.retries if made else self._m.retries_refused
        self._bump(metric, ("retry" if made else "refused", provider, label, reason), 1)

    def _queue_wait_child(self, provider: str) -> Histogram:
        child = self._other.get(("queue_wait", provider))
        if child is None:
            child = self._other[("queue_wait", provider)] = self._m.queue_wait.labels(provider)
        return child

    def count_rate_limited(self, provider: str, what: str) -> None:
        """Count a call held back by a rate limit (``llmpulse_rate_limited_total``)."""
        self._bump(self._m.rate_limited, ("ratelimited", provider, what), 1)

    def count_budget_action(self, action: str, what: str) -> None:
        """Count a budget action (``llmpulse_budget_actions_total``)."""
        self._bump(self._m.budget_actions, ("budget", action, what), 1)

    def set_concurrency_limit(self, provider: str, host: str, limit: int) -> None:
        """Record an endpoint's concurrency limit (``llmpulse_concurrency_limit``)."""
        with contextlib.suppress(Exception):  # metrics must never break a call
            self._m.concurrency_limit.labels(provider, host).set(limit)

    def count_cache(self, provider: str, result: str) -> None:
        """Count a cache lookup or store (``llmpulse_cache_total``).

        Args:
            provider: The ``gen_ai_provider_name``.
            result: "hit", "miss" or "store".

        """
        self._bump(self._m.cache, ("cache", provider, result), 1)

    def count_fallback(
        self, provider: str, from_model: str | None, to_model: str, reason: str, served_provider: str
    ) -> None:
        """Count a switch to a fallback model or provider (``llmpulse_fallbacks_total``).

        Args:
            provider: The ``gen_ai_provider_name``.
            from_model: The model that could not serve the call.
            to_model: The model asked instead.
            reason: "overloaded", "circuit_open", "queue_full" or "budget".
            served_provider: ``provider``, or the one the cross-provider fallback used.

        """
        models = self._models
        from_model, to_model = models.resolve(from_model), models.resolve(to_model)
        key = ("fallback", provider, from_model, served_provider, to_model, reason)
        self._bump(self._m.fallbacks, key, 1)

    def record_circuit(self, provider: str, host: str, model: str, old: str, new: str) -> None:
        """Record a breaker transition and its new state (``llmpulse_circuit_*``).

        Args:
            provider: The ``gen_ai_provider_name``.
            host: The endpoint's host.
            model: The breaker's model.
            old: The state left.
            new: The state entered.

        """
        label = self._models.resolve(model)
        with contextlib.suppress(Exception):  # metrics must never break a call
            self._m.circuit_state.labels(provider, host, label).set(_CIRCUIT_STATES.get(new, -1))
        self._bump(self._m.circuit_transitions, ("circuit", provider, host, label, old, new), 1)

    def record_dropped(self, sink: str, reason: str, n: int = 1) -> None:
        """Count events a sink did not get (``llmpulse_events_dropped_total``).

        Args:
            sink: The sink's name.
            reason: Why: "buffer_full", "sink_error", or "shutdown" (a call that
                ended after llmpulse's exit hook, see `llmpulse._exit`).
            n: How many events.

        """
        self._bump(self._m.dropped, ("dropped", sink, reason), n)

    def record_store_fallback(self, reason: str) -> None:
        """Count a quota decided locally because Redis failed (``llmpulse_state_store_fallbacks_total``).

        Args:
            reason: "unreachable", "timeout" or "error".

        """
        self._bump(self._m.store_fallbacks, ("store_fallback", reason), 1)

    def record_internal_error(self, where: str) -> None:
        """Count a bug inside llmpulse that a call survived (``llmpulse_internal_errors_total``).

        Args:
            where: The component, e.g. "prometheus_sink" or "stats".

        """
        self._bump(self._m.internal_errors, ("internal", where), 1)

    def record_wrap_failure(self, reason: str) -> None:
        """Count a client that could not be wrapped (``llmpulse_wrap_failures_total``).

        Args:
            reason: A short, low-cardinality reason.

        """
        self._bump(self._m.wrap_failures, ("wrap", reason), 1)

    def _bump(self, metric: Counter, key: tuple[str, ...], n: float) -> None:
        # Called from error paths, `emit`'s included, with nowhere left to
        # report a failure to: it must not raise itself.
        with contextlib.suppress(Exception):
            child = self._other.get(key)
            if child is None:
                child = self._other[key] = metric.labels(*key[1:])
            child.inc(n)
