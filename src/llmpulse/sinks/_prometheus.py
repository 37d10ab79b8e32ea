"""Prometheus metrics, named as OpenTelemetry's GenAI conventions render in Prometheus.

Metric objects are created per registry on first use, never at import, and
shared by every sink on that registry (prometheus_client refuses a name
twice). Label children are cached: ``metric.labels(...)`` costs ~5 µs, a
cached child ~2 µs per update. Tenant, route and model labels keep the
first N distinct values they see (or an allowlist); later ones are
"other", with no re-ranking, so no series churn.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from ..events import AttemptEvent, CallEvent

__all__ = ["PrometheusSink"]

DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92, 163.84, 327.68,
)  # fmt: skip
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
COMMON = ("gen_ai_provider_name", "gen_ai_request_model", "gen_ai_operation_name", "tenant", "route")
_SHORT = ("gen_ai_provider_name", "gen_ai_request_model", "gen_ai_operation_name")


class _Metrics:
    """Every metric llmpulse records, registered once per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Duration of GenAI client operations (whole logical call, retries included).",
            (*COMMON, "error_type"),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens used per GenAI call.",
            (*COMMON, "gen_ai_token_type"),
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.ttfc = Histogram(
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "Time to the first content chunk of streamed GenAI calls.",
            COMMON,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "llmpulse_requests_total",
            "Logical LLM calls by outcome.",
            (*COMMON, "outcome", "status_class", "error_type"),
            registry=r,
        )
        self.attempts = Counter(
            "llmpulse_attempts_total",
            "HTTP attempts sent to providers.",
            (*_SHORT, "status_class"),
            registry=r,
        )
        self.tokens = Counter("llmpulse_tokens_total", "Tokens used.", (*COMMON, "token_type"), registry=r)
        self.token_details = Counter(
            "llmpulse_token_details_total",
            "Subsets of llmpulse_tokens_total: cached_input and cache_write of input, reasoning of output.",
            (*COMMON, "kind"),
            registry=r,
        )
        self.cost = Counter("llmpulse_cost_usd_total", "Cost of LLM calls in USD.", COMMON, registry=r)
        self.unpriced = Counter(
            "llmpulse_unpriced_requests_total",
            "Calls whose model has no known price (cost unknown, not zero).",
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
        self.ratelimit = Gauge(
            "llmpulse_ratelimit_remaining",
            "Remaining requests/tokens reported by the provider on its last response.",
            ("gen_ai_provider_name", "kind"),
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.dropped = Counter(
            "llmpulse_events_dropped_total", "Events a sink did not get.", ("sink", "reason"), registry=r
        )
        self.internal_errors = Counter(
            "llmpulse_internal_errors_total",
            "Bugs inside llmpulse that calls survived.",
            ("where",),
            registry=r,
        )
        self.wrap_failures = Counter(
            "llmpulse_wrap_failures_total",
            "Clients left unwrapped (unknown SDK internals).",
            ("reason",),
            registry=r,
        )


_metrics_lock = threading.Lock()
_metrics_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()


def _metrics_for(registry: CollectorRegistry) -> _Metrics:
    with _metrics_lock:
        metrics = _metrics_by_registry.get(registry)
        if metrics is None:
            metrics = _metrics_by_registry[registry] = _Metrics(registry)
        return metrics


class _Capped:
    """First-N-distinct label values; the rest are "other"."""

    __slots__ = ("_allow", "_limit", "_lock", "_seen")

    def __init__(self, limit: int, allow: Iterable[str] = ()) -> None:
        self._limit = limit
        self._allow = frozenset(allow)
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        if value is None:
            return ""
        if value in self._seen or value in self._allow:
            return value
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return "other"


def _status_class(status: int | None) -> str:
    return "none" if status is None else f"{status // 100}xx"


class PrometheusSink:
    """Records every call and attempt in Prometheus metrics (inline: in-memory and cheap).

    Args:
        registry: prometheus_client registry (default: the global one).
        max_tenants: Distinct tenant label values before "other".
        max_routes: Distinct route label values before "other".
        max_models: Distinct model label values before "other".
        tenant_allowlist: Tenants always kept.
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
        self._tenant = _Capped(max_tenants, tenant_allowlist)
        self._route = _Capped(max_routes)
        self._model = _Capped(max_models)
        self._children: dict[tuple[Any, ...], Any] = {}
        # Exemplars are silently dropped in multiprocess mode; skip the work there.
        self._exemplars = "PROMETHEUS_MULTIPROC_DIR" not in os.environ

    def _child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def emit(self, event: Any) -> None:
        """Record a `CallEvent` or `AttemptEvent`; anything else is ignored."""
        try:
            if isinstance(event, CallEvent):
                self._call(event)
            elif isinstance(event, AttemptEvent):
                labels = (
                    event.provider,
                    self._model(event.model),
                    event.operation,
                    _status_class(event.http_status),
                )
                self._child(self._m.attempts, labels).inc()
        except Exception:  # noqa: BLE001 - metrics must never break a call
            self.record_internal_error("prometheus_sink")

    def _call(self, e: CallEvent) -> None:
        m = self._m
        common = (e.provider, self._model(e.model), e.operation, self._tenant(e.tenant), self._route(e.route))
        error_type = e.error_type or ""
        self._child(m.requests, (*common, e.outcome, _status_class(e.http_status), error_type)).inc()
        if e.outcome != "rejected":
            duration = self._child(m.duration, (*common, error_type))
            exemplar = {"correlation_id": e.correlation_id} if self._exemplars and e.correlation_id else None
            if exemplar is not None and len("correlation_id") + len(e.correlation_id) <= 128:
                duration.observe(e.latency_s, exemplar)
            else:
                duration.observe(e.latency_s)
        if e.streamed and e.ttft_s is not None:
            self._child(m.ttfc, common).observe(e.ttft_s)
        for kind, count in (("input", e.input_tokens), ("output", e.output_tokens)):
            if count is not None:
                self._child(m.token_usage, (*common, kind)).observe(count)
                if count:
                    self._child(m.tokens, (*common, kind)).inc(count)
        for kind, count in (
            ("cached_input", e.cached_input_tokens),
            ("cache_write", e.cache_write_tokens),
            ("reasoning", e.reasoning_tokens),
        ):
            if count:
                self._child(m.token_details, (*common, kind)).inc(count)
        if e.cost_usd is not None:
            if e.cost_usd:
                self._child(m.cost, common).inc(e.cost_usd)
        elif e.attempts and e.input_tokens is not None:
            self._child(m.unpriced, (e.provider, common[1])).inc()
        if e.ratelimit is not None:
            if e.ratelimit.remaining_requests is not None:
                self._child(m.ratelimit, (e.provider, "requests")).set(e.ratelimit.remaining_requests)
            if e.ratelimit.remaining_tokens is not None:
                self._child(m.ratelimit, (e.provider, "tokens")).set(e.ratelimit.remaining_tokens)

    def call_started(self, provider: str) -> None:
        """Count a call in flight."""
        self._child(self._m.inflight, (provider,)).inc()

    def call_finished(self, provider: str) -> None:
        """Count a call no longer in flight."""
        self._child(self._m.inflight, (provider,)).dec()

    def record_dropped(self, sink: str, reason: str, n: int = 1) -> None:
        """Count events a sink did not get."""
        self._child(self._m.dropped, (sink, reason)).inc(n)

    def record_internal_error(self, where: str) -> None:
        """Count a bug inside llmpulse."""
        self._child(self._m.internal_errors, (where,)).inc()

    def record_wrap_failure(self, reason: str) -> None:
        """Count a client left unwrapped."""
        self._child(self._m.wrap_failures, (reason,)).inc()
