"""Prometheus metrics, named as OpenTelemetry's GenAI conventions render in Prometheus.

Metric objects are created per registry when the first sink for it is
built, never at import, and shared by every sink on that registry
(prometheus_client refuses a name twice). `PrometheusSink.emit` runs on the
caller's path for every call, so label children are cached per label
combination: ``metric.labels(...)`` costs ~5 µs, a cached child ~1-2 µs per
update.

Cardinality is bounded twice. Tenant, route and model labels keep the first
N distinct values they see (plus an allowlist for tenants). And each metric
family that carries them has a share of a series budget per registry,
counted as Prometheus stores series: when a new label set would not fit its
family's share, its tenant, route and model fold into ``__other__``, a value
no real one can take (real values starting with ``__`` get one more ``_``).
Nothing is re-ranked or evicted, so series never churn. The histograms carry
only the GenAI conventions' attributes unless ``histogram_labels`` adds
tenant or route.

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
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any, Final, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from ..events import AttemptEvent, CallEvent, RateLimitInfo
from ..exceptions import ConfigError

__all__ = ["DURATION_BUCKETS", "TOKEN_BUCKETS", "PrometheusSink"]

DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92, 163.84, 327.68,
)  # fmt: skip
"""OTel's ``gen_ai.client.operation.duration`` buckets, extended to ~5 min for long reasoning calls."""

TOKEN_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
"""OTel's ``gen_ai.client.token.usage`` buckets."""

# The value tenant, route and model labels fold into past a cap or the
# series budget; no real value is exported as it (see `_label_value`).
_OTHER: Final = "__other__"
# The labels `histogram_labels` may add to the three GenAI histograms.
_HISTOGRAM_LABELS: Final = ("tenant", "route")
# The default series budget of a registry: docs/performance.md says why.
_MAX_SERIES: Final = 10_000
# Each budgeted family's share of the budget. They add up to 95 %: the rest
# is room for the "__other__" label sets, always recorded, and for the
# families whose label values come from llmpulse's code or configuration
# (providers, reasons, sink names), which are not budgeted.
_SHARES: Final = {
    "gen_ai_client_operation_duration_seconds": 0.20,
    "gen_ai_client_token_usage": 0.08,
    "gen_ai_client_operation_time_to_first_chunk_seconds": 0.07,
    "llmpulse_requests_total": 0.20,
    "llmpulse_tokens_total": 0.12,
    "llmpulse_token_details_total": 0.04,
    "llmpulse_cost_usd_total": 0.08,
    "llmpulse_unpriced_requests_total": 0.02,
    "llmpulse_attempts_total": 0.04,
    "llmpulse_retries_total": 0.02,
    "llmpulse_retries_refused_total": 0.02,
    "llmpulse_fallbacks_total": 0.02,
    "llmpulse_circuit_state": 0.02,
    "llmpulse_circuit_transitions_total": 0.02,
}

_COMMON = ("gen_ai_provider_name", "gen_ai_request_model", "gen_ai_operation_name", "tenant", "route")
_SHORT = ("gen_ai_provider_name", "gen_ai_request_model", "gen_ai_operation_name")
# The GenAI conventions' attributes of the client histograms (server.port is
# required when server.address is set), as an OTel exporter names them.
_SEMCONV = (*_SHORT, "server_address", "server_port")
# The labels whose values come from the caller's requests: these fold.
_FOLDABLE = frozenset({"tenant", "route", "gen_ai_request_model", "served_model"})
_EXEMPLAR_KEY = "correlation_id"
# prometheus_client rejects exemplars whose label names + values exceed 128
# characters, but only after it has counted the observation.
_EXEMPLAR_MAX_CHARS = 128
# Raw label combinations whose cached children a sink keeps; beyond, each
# update resolves its children again (slower, bounded memory).
_MAX_CACHED_SERIES = 20_000
_log = logging.getLogger("llmpulse")
_EXEMPLAR_EVERY_S = 1.0
_DURATION_BOUNDS = (*DURATION_BUCKETS, math.inf)
_monotonic = time.monotonic  # the exemplar clock (tests replace it)
_CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}


def _exemplar(correlation_id: str, ids: tuple[str, str] | None) -> dict[str, str]:
    """The exemplar labels: the caller's trace and span ids (as the call found them), and the correlation id.

    OTel's Prometheus compatibility spec names the keys ``trace_id`` and
    ``span_id`` (what Grafana links to a trace by). The span is the caller's:
    llmpulse's own call span is made later, by `OtelSink`, as its child in the
    same trace. When everything does not fit in 128 characters, ``span_id``
    makes room for the correlation id, if that is enough; else the correlation
    id is left out. The trace id, what links, is always kept.
    """
    labels: dict[str, str] = {}
    room = _EXEMPLAR_MAX_CHARS
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


class _Metrics:
    """Every metric llmpulse records, registered once per registry."""

    def __init__(
        self, registry: CollectorRegistry, histogram_labels: tuple[str, ...], max_series: int
    ) -> None:
        r = registry
        self.histogram_labels = histogram_labels
        hist = (*_SEMCONV, *histogram_labels)
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Duration of GenAI client operations (the whole logical call, retries included).",
            (*hist, "error_type"),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens used per GenAI call.",
            (*hist, "gen_ai_token_type"),
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.ttfc = Histogram(
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "Time to the first content chunk of streamed GenAI calls.",
            hist,
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
        self.folded = Counter(
            "llmpulse_metrics_folded_total",
            'Updates recorded with tenant, route or model "__other__" (past a cap or the series budget).',
            ("metric",),
            registry=r,
        )
        self.budget = _Budget(self, max_series)


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


def _metrics_for(registry: CollectorRegistry, histogram_labels: tuple[str, ...], max_series: int) -> _Metrics:
    with _metrics_lock:
        metrics = _metrics_by_registry.get(registry)
        if metrics is None:
            metrics = _metrics_by_registry[registry] = _Metrics(registry, histogram_labels, max_series)
        elif (metrics.histogram_labels, metrics.budget.max_series) != (histogram_labels, max_series):
            # The registered histograms' label names cannot change, and one
            # budget bounds what the registry exports.
            raise ConfigError(
                f"this registry's llmpulse metrics were set up with LLMPULSE_HISTOGRAM_LABELS="
                f"{','.join(metrics.histogram_labels)} and LLMPULSE_METRICS_MAX_SERIES="
                f"{metrics.budget.max_series}; a sink cannot use {','.join(histogram_labels)} and "
                f"{max_series} on it"
            )
        return metrics


class _Inc(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class _Observe(Protocol):
    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None: ...


class _Set(Protocol):
    def set(self, value: float) -> None: ...


class _Folded:
    """A child whose labels were folded: each update is also counted in ``llmpulse_metrics_folded_total``."""

    __slots__ = ("_child", "_folded")

    def __init__(self, child: Any, folded: Counter) -> None:
        self._child = child
        self._folded = folded

    def inc(self, amount: float = 1) -> None:
        self._child.inc(amount)
        self._folded.inc()

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        self._child.observe(amount, exemplar)
        self._folded.inc()

    def set(self, value: float) -> None:
        self._child.set(value)
        self._folded.inc()


class _Family:
    """One budgeted metric family: its share of the budget and the label sets it admitted."""

    __slots__ = (
        "admitted",
        "children",
        "cost",
        "fold",
        "limit",
        "metric",
        "name",
        "tenant",
        "used",
        "warned",
    )

    def __init__(self, metric: Counter | Gauge | Histogram, cost: int, max_series: int) -> None:
        # prometheus_client keeps a counter's name without "_total".
        self.name: str = metric._name + ("_total" if metric._type == "counter" else "")
        self.metric = metric
        names: tuple[str, ...] = tuple(metric._labelnames)
        # Series per label set, as Prometheus stores them.
        self.cost = cost
        self.limit = int(max_series * _SHARES[self.name])
        self.used = 0
        self.fold = tuple(i for i, name in enumerate(names) if name in _FOLDABLE)
        self.tenant = names.index("tenant") if "tenant" in names else None
        self.admitted: set[tuple[str, ...]] = set()
        self.children: dict[tuple[str, ...], Any] = {}
        self.warned = False


class _Budget:
    """The series budget of one registry, shared out per metric family.

    A label set is admitted while its family's series fit its share; once
    admitted it stays (no eviction, so no churn). One that does not fit has
    its tenant, route and model folded into ``__other__``; a label set with
    every such label folded is always admitted (it is bounded by the other
    labels: providers, operations, outcomes), as is one for an allowlisted
    tenant (the operator chose the list). The first fold of a family is
    logged once.
    """

    def __init__(self, m: _Metrics, max_series: int) -> None:
        self.max_series = max_series
        self._lock = threading.Lock()
        self._folded = m.folded
        # prometheus_client exports a `_created` series per counter and
        # histogram label set unless told not to (multiprocess mode never does).
        created = 0 if _multiprocess() or not _created_series() else 1
        histogram = len(DURATION_BUCKETS) + 1 + 2 + created  # buckets and +Inf, _sum, _count
        tokens = len(TOKEN_BUCKETS) + 1 + 2 + created
        counter = 1 + created

        def family(metric: Counter | Gauge | Histogram, cost: int) -> _Family:
            return _Family(metric, cost, max_series)

        self.duration = family(m.duration, histogram)
        self.token_usage = family(m.token_usage, tokens)
        self.ttfc = family(m.ttfc, histogram)
        self.requests = family(m.requests, counter)
        self.tokens = family(m.tokens, counter)
        self.token_details = family(m.token_details, counter)
        self.cost = family(m.cost, counter)
        self.unpriced = family(m.unpriced, counter)
        self.attempts = family(m.attempts, counter)
        self.retries = family(m.retries, counter)
        self.retries_refused = family(m.retries_refused, counter)
        self.fallbacks = family(m.fallbacks, counter)
        self.circuit_state = family(m.circuit_state, 1)
        self.circuit_transitions = family(m.circuit_transitions, counter)

    def child(self, f: _Family, labels: tuple[str, ...], keep: frozenset[str] = frozenset()) -> Any:
        """The child to update for ``labels``: theirs, or the folded one when they do not fit."""
        child = f.children.get(labels)
        if child is not None:
            return child
        with self._lock:
            resolved = self._admit(f, labels, keep)
            child = f.children.get(resolved)
            if child is None:
                child = f.metric.labels(*resolved)
                if _OTHER in resolved:
                    child = _Folded(child, self._folded.labels(f.name))
                f.children[resolved] = child
        # Not remembered under labels that did not fit: the map stays bounded.
        return child

    def _admit(self, f: _Family, labels: tuple[str, ...], keep: frozenset[str]) -> tuple[str, ...]:
        if labels in f.admitted:
            return labels
        folded = tuple(_OTHER if i in f.fold else v for i, v in enumerate(labels))
        kept = f.tenant is not None and labels[f.tenant] in keep
        if f.used + f.cost <= f.limit or folded == labels or kept:
            f.admitted.add(labels)
            f.used += f.cost
            return labels
        if not f.warned:
            f.warned = True
            _log.warning(
                "llmpulse: %s reached its share of the series budget (%d of LLMPULSE_METRICS_MAX_SERIES=%d); "
                "new label sets are recorded with tenant, route and model %r "
                "(counted in llmpulse_metrics_folded_total)",
                f.name,
                f.limit,
                self.max_series,
                _OTHER,
            )
        if folded not in f.admitted:
            f.admitted.add(folded)
            f.used += f.cost
        return folded


def _created_series() -> bool:
    from prometheus_client import metrics  # noqa: PLC0415 - only read here

    # Set from PROMETHEUS_DISABLE_CREATED_SERIES at import, or by disable_created_metrics().
    return bool(getattr(metrics, "_use_created", True))


def _multiprocess() -> bool:
    from prometheus_client import values  # noqa: PLC0415 - only read here

    # The value class is fixed when prometheus_client is imported. A variable
    # set later still counts: /metrics then serves the multiprocess files,
    # never this process's in-memory exemplars.
    return values.ValueClass is not values.MutexValue or "PROMETHEUS_MULTIPROC_DIR" in os.environ


def _label_value(value: str) -> str:
    """``value`` as exported: one starting with "__" gets one more "_", so no real value is `_OTHER`."""
    return "_" + value if value.startswith("__") else value


class _Capped:
    """Maps raw label values to themselves for the first N distinct ones, to "__other__" after.

    ``known`` is read without the lock on the hot path: a dict lookup is
    atomic, and values only ever get added. The first value past the cap
    is logged, once.
    """

    __slots__ = ("_limit", "_lock", "_seen", "_setting", "_warned", "known")

    def __init__(self, limit: int, setting: str, allow: Iterable[str] = ()) -> None:
        self._limit = limit
        self._setting = setting
        self._seen = 0
        self._warned = False
        self._lock = threading.Lock()
        self.known: dict[str | None, str] = {None: "", "": ""}
        self.known.update((value, _label_value(value)) for value in allow)

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
                if not self._warned:
                    self._warned = True
                    _log.warning(
                        "llmpulse: more than %s=%d distinct values; later ones are recorded as %r "
                        "(counted in llmpulse_metrics_folded_total)",
                        self._setting,
                        self._limit,
                        _OTHER,
                    )
                # Not remembered: the map must stay bounded too.
                return _OTHER
            self._seen += 1
            label = self.known[value] = _label_value(value)
            return label


class _Series:
    """Cached label children for one (provider, model, operation, tenant, route, server address, port).

    Every child is made on first use: a call that never needs one (a
    rejected call has no tokens) spends none of the series budget on it.
    Children are shared with other raw combinations whose labels are the
    same (the histograms' have no tenant or route) or were folded.
    """

    __slots__ = (
        "cache_write",
        "cached_input",
        "cost",
        "duration",
        "hist",
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

    def __init__(self, labels: tuple[str, ...], hist: tuple[str, ...]) -> None:
        self.labels = labels  # the counters': provider, model, operation, tenant, route
        self.hist = hist  # the histograms', but their last (error or token type)
        # Per error type: the duration child and, per bucket, when its next exemplar may be attached.
        self.duration: dict[str | None, tuple[_Observe, list[float]]] = {}
        self.requests: dict[tuple[str, int | None, str | None], _Inc] = {}
        self.usage_in: _Observe | None = None
        self.usage_out: _Observe | None = None
        self.ttfc: _Observe | None = None
        self.tokens_in: _Inc | None = None
        self.tokens_out: _Inc | None = None
        self.cost: _Inc | None = None
        self.cached_input: _Inc | None = None
        self.cache_write: _Inc | None = None
        self.reasoning: _Inc | None = None
        self.unpriced: _Inc | None = None


def _status_class(status: int | None) -> str:
    return "none" if status is None else f"{status // 100}xx"


class PrometheusSink:
    """Records calls and attempts in Prometheus metrics, on the caller's path.

    Metric names follow the OpenTelemetry GenAI conventions as an OTel
    exporter renders them in Prometheus (``gen_ai_client_operation_duration_seconds``,
    ``gen_ai_client_token_usage``, ...), so dashboards work for both paths;
    llmpulse's own counters start with ``llmpulse_``. The three histograms
    carry the conventions' attributes only (provider, request model,
    operation, server address and port, error or token type); tenant and
    route are on the counters. Label values that are None are exported as "".
    `emit` never raises: a failure inside it is counted in
    ``llmpulse_internal_errors_total{where="prometheus_sink"}``.

    Tenant, route and model values past their cap, and label sets past their
    family's share of the registry's series budget, are recorded as
    ``"__other__"`` (see docs/performance.md); each such update is counted in
    ``llmpulse_metrics_folded_total{metric}``.

    Args:
        registry: The prometheus_client registry (None: the global ``REGISTRY``).
            Sinks on the same registry share the metric objects and the budget.
        max_tenants: Distinct tenant label values kept before later ones become "__other__".
        max_routes: Distinct route label values kept before later ones become "__other__".
        max_models: Distinct model label values kept before later ones become "__other__".
        tenant_allowlist: Tenants always kept, outside the ``max_tenants`` count and the budget.
        histogram_labels: "tenant" and/or "route", added to the histograms' labels.
        max_series: The registry's series budget.

    Raises:
        ConfigError: When ``histogram_labels`` names another label, or the
            registry's metrics were set up by a sink with other
            ``histogram_labels`` or ``max_series``.

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
        histogram_labels: Iterable[str] = (),
        max_series: int = _MAX_SERIES,
    ) -> None:
        wanted = tuple(histogram_labels)
        unknown = [label for label in wanted if label not in _HISTOGRAM_LABELS]
        if unknown:
            raise ConfigError(
                f"LLMPULSE_HISTOGRAM_LABELS={','.join(wanted)} is not valid: "
                f"accepted values are {', '.join(_HISTOGRAM_LABELS)}"
            )
        if max_series < 1:
            raise ConfigError(f"LLMPULSE_METRICS_MAX_SERIES={max_series!r} is not valid: use an integer >= 1")
        extra = tuple(label for label in _HISTOGRAM_LABELS if label in wanted)
        self._m = _metrics_for(REGISTRY if registry is None else registry, extra, max_series)
        self._budget = self._m.budget
        self._hist_tenant = "tenant" in extra
        self._hist_route = "route" in extra
        allow = tuple(tenant_allowlist)
        self._keep = frozenset(map(_label_value, allow))
        self._tenants = _Capped(max_tenants, "LLMPULSE_MAX_TENANTS", allow)
        self._routes = _Capped(max_routes, "LLMPULSE_MAX_ROUTES")
        self._models = _Capped(max_models, "LLMPULSE_MAX_MODELS")
        self._series: dict[tuple[str, str, str, str, str, str, int | None], _Series] = {}
        self._attempts: dict[tuple[str, str, str, int | None], _Inc] = {}
        self._ratelimit: dict[str, tuple[Gauge, Gauge]] = {}
        self._other: dict[tuple[str, ...], Any] = {}
        # Per duration child, shared by the series that update it: when each
        # bucket's next exemplar is due.
        self._exemplar_due: dict[int, list[float]] = {}
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

    def _child(self, family: _Family, labels: tuple[str, ...]) -> Any:
        return self._budget.child(family, labels, self._keep)

    def _call(self, e: CallEvent) -> None:
        # Hot path: a handful of direct child updates, split only as far as
        # readability needs (each extra method call costs ~0.1 µs).
        s = self._series_for(e)
        error_type = e.error_type
        rkey = (e.outcome, e.http_status, error_type)
        requests = s.requests.get(rkey)
        if requests is None:
            labels = (*s.labels, e.outcome, _status_class(e.http_status), error_type or "")
            requests = s.requests[rkey] = self._child(self._budget.requests, labels)
        requests.inc()

        if e.outcome != "rejected":
            timed = s.duration.get(error_type)
            if timed is None:
                child = self._child(self._budget.duration, (*s.hist, error_type or ""))
                due_by_bucket = self._exemplar_due.setdefault(id(child), [0.0] * len(_DURATION_BOUNDS))
                timed = s.duration[error_type] = (child, due_by_bucket)
            duration, due = timed
            latency = e.latency_s
            if self._exemplars:
                bucket = bisect.bisect_left(_DURATION_BOUNDS, latency)  # the first bound >= latency
                now = _monotonic()
                # The labels are only worked out when one is due: once a second per bucket.
                ids = None if e.trace_id is None or e.span_id is None else (e.trace_id, e.span_id)
                exemplar = _exemplar(e.correlation_id, ids) if now >= due[bucket] else None
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
                ttfc = s.ttfc = self._child(self._budget.ttfc, s.hist)
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
        key = (e.provider, model, e.operation, tenant, route, e.server_address, e.server_port)
        s = self._series.get(key)
        if s is None:
            address = e.server_address
            port = "" if e.server_port is None or not address else str(e.server_port)
            hist: tuple[str, ...] = (e.provider, model, e.operation, address, port)
            if self._hist_tenant:
                hist = (*hist, tenant)
            if self._hist_route:
                hist = (*hist, route)
            s = _Series((e.provider, model, e.operation, tenant, route), hist)
            # Past the limit the series is used for this call only: memory stays bounded.
            if len(self._series) < _MAX_CACHED_SERIES:
                self._series[key] = s
        return s

    def _tokens(self, s: _Series, e: CallEvent) -> None:
        if e.cache_hit:
            return  # answered from the cache: no tokens used, nothing billed
        b = self._budget
        known = False
        if e.input_tokens is not None:
            known = True
            if s.usage_in is None:
                s.usage_in = self._child(b.token_usage, (*s.hist, "input"))
            if s.tokens_in is None:
                s.tokens_in = self._child(b.tokens, (*s.labels, "input"))
            s.usage_in.observe(e.input_tokens)
            s.tokens_in.inc(e.input_tokens)
        if e.output_tokens is not None:
            known = True
            if s.usage_out is None:
                s.usage_out = self._child(b.token_usage, (*s.hist, "output"))
            if s.tokens_out is None:
                s.tokens_out = self._child(b.tokens, (*s.labels, "output"))
            s.usage_out.observe(e.output_tokens)
            s.tokens_out.inc(e.output_tokens)
        if e.cached_input_tokens or e.cache_write_tokens or e.reasoning_tokens:
            self._token_details(s, e)
        if e.cost_usd is not None or known:
            self._cost(s, e)

    def _cost(self, s: _Series, e: CallEvent) -> None:
        # A series with tokens has a cost series, 0 while unpriced, so rates of it exist.
        if s.cost is None:
            s.cost = self._child(self._budget.cost, s.labels)
        if e.cost_usd is not None:
            s.cost.inc(e.cost_usd)
        elif e.attempts > 0:
            # Sent and answered with usage, yet no price: cost is unknown, not zero.
            if s.unpriced is None:
                s.unpriced = self._child(self._budget.unpriced, s.labels[:2])
            s.unpriced.inc()

    def _token_details(self, s: _Series, e: CallEvent) -> None:
        # Zero is the common case for these subsets: skip the update (not the meaning).
        details = self._budget.token_details
        if e.cached_input_tokens:
            if s.cached_input is None:
                s.cached_input = self._child(details, (*s.labels, "cached_input"))
            s.cached_input.inc(e.cached_input_tokens)
        if e.cache_write_tokens:
            if s.cache_write is None:
                s.cache_write = self._child(details, (*s.labels, "cache_write"))
            s.cache_write.inc(e.cache_write_tokens)
        if e.reasoning_tokens:
            if s.reasoning is None:
                s.reasoning = self._child(details, (*s.labels, "reasoning"))
            s.reasoning.inc(e.reasoning_tokens)

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
                labels = (provider, label, operation, _status_class(status))
                child = self._attempts[key] = self._child(self._budget.attempts, labels)
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
        family = self._budget.retries if made else self._budget.retries_refused
        self._bump_budgeted(family, ("retry" if made else "refused", provider, label, reason), 1)

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
        self._bump_budgeted(self._budget.fallbacks, key, 1)

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
            state: _Set = self._child(self._budget.circuit_state, (provider, host, label))
            state.set(_CIRCUIT_STATES.get(new, -1))
        self._bump_budgeted(self._budget.circuit_transitions, ("circuit", provider, host, label, old, new), 1)

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

    def _bump_budgeted(self, family: _Family, key: tuple[str, ...], n: float) -> None:
        # As `_bump`, through the series budget.
        with contextlib.suppress(Exception):
            child = self._other.get(key)
            if child is None:
                child = self._other[key] = self._child(family, key[1:])
            child.inc(n)

    def _bump(self, metric: Counter, key: tuple[str, ...], n: float) -> None:
        # Called from error paths, `emit`'s included, with nowhere left to
        # report a failure to: it must not raise itself.
        with contextlib.suppress(Exception):
            child = self._other.get(key)
            if child is None:
                child = self._other[key] = metric.labels(*key[1:])
            child.inc(n)
