"""④→⑤ Where finished events go: metrics and stats always, then the output sinks.

Global state department: one `Pipeline` per process, built from the
settings on first use and rebuilt by `configure()`. Metrics and the rolling
stats see 100 % of calls on the caller's path (they are in-memory and
cheap); logs, files and user sinks go through the `Dispatcher`.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import logging
import sys
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import _exit
from ._config import Settings, get_settings, on_configure
from ._exit import exiting
from ._redact import PII_RULES, Scrubber
from ._sampling import DetailSampler
from .events import AttemptEvent, CallEvent, Event, InteractionSummary
from .sinks._dispatch import Dispatcher, Route, SinkStats

if TYPE_CHECKING:
    from ._context import Context, InteractionTotals
    from ._stats import RollingStats, StatsSnapshot
    from .alerts import AlertEngine
    from .policies import RetryDecision
    from .sinks._prometheus import PrometheusSink

__all__ = [
    "Pipeline",
    "aflush",
    "emit_interaction",
    "flush",
    "get_pipeline",
    "shutdown",
    "sink_stats",
    "stats",
]

_log = logging.getLogger("llmpulse")


class Pipeline:
    """The process's metrics, stats and default output sinks."""

    def __init__(self, settings: Settings) -> None:
        from ._stats import RollingStats  # noqa: PLC0415 - keep `import llmpulse` light

        self.settings = settings
        self.metrics: PrometheusSink | None = None
        if settings.metrics:
            self.metrics = make_metrics(None, settings)
        self.stats: RollingStats = RollingStats()
        self.dispatcher = Dispatcher(capacity=settings.buffer_size, on_drop=self._dropped)
        self.default_routes: tuple[Route, ...] = self.routes_for(default_sinks(settings))
        self.sampler = make_sampler(settings)
        self.scrubber = make_scrubber(settings)
        self.alerts: AlertEngine | None = make_alerts(settings, self.stats, self.sampler, self.scrubber)
        self._internal_errors = 0

    def routes_for(self, sinks: Iterable[Any]) -> tuple[Route, ...]:
        """Register user-chosen sinks and return their routes."""
        return tuple(self.dispatcher.route(sink) for sink in sinks)

    def call_started(self, provider: str, metrics: PrometheusSink | None) -> None:
        """Count a call in flight."""
        target = metrics or self.metrics
        if target is not None:
            target.call_started(provider)

    def count_attempt(
        self,
        metrics: PrometheusSink | None,
        provider: str,
        model: str | None,
        operation: str,
        status: int | None,
    ) -> None:
        """Count one HTTP attempt in the metrics."""
        target = metrics or self.metrics
        if target is not None:
            target.count_attempt(provider, model, operation, status)
        alerts = self.alerts
        if alerts is not None and status is not None and (status >= 500 or status == 429):
            alerts.record_attempt(model, status)

    def count_retry(
        self, metrics: PrometheusSink | None, provider: str, model: str | None, decision: RetryDecision
    ) -> None:
        """Count a retry made, or a failed attempt not retried, with its reason."""
        target = metrics or self.metrics
        if target is not None:
            target.count_retry(provider, model, decision.reason, made=decision.delay_s is not None)

    def count_rate_limited(self, metrics: PrometheusSink | None, provider: str, what: str) -> None:
        """Count a call a rate limit held back or refused."""
        target = metrics or self.metrics
        if target is not None:
            target.count_rate_limited(provider, what)

    def count_budget_action(self, metrics: PrometheusSink | None, action: str, what: str) -> None:
        """Count a budget action taken (alert, downgrade, block)."""
        target = metrics or self.metrics
        if target is not None:
            target.count_budget_action(action, what)

    def concurrency_changed(
        self, metrics: PrometheusSink | None, provider: str, host: str, limit: int
    ) -> None:
        """Record an endpoint's new concurrency limit."""
        target = metrics or self.metrics
        if target is not None:
            target.set_concurrency_limit(provider, host, limit)

    def count_cache(self, metrics: PrometheusSink | None, provider: str, result: str) -> None:
        """Count a cache lookup ("hit", "miss") or a stored answer ("store")."""
        target = metrics or self.metrics
        if target is not None:
            target.count_cache(provider, result)

    def count_fallback(
        self,
        metrics: PrometheusSink | None,
        provider: str,
        from_model: str | None,
        to_model: str,
        reason: str,
        served_provider: str,
    ) -> None:
        """Count a call sent on to a fallback model."""
        target = metrics or self.metrics
        if target is not None:
            target.count_fallback(provider, from_model, to_model, reason, served_provider)

    def circuit_changed(
        self,
        metrics: PrometheusSink | None,
        provider: str,
        host: str,
        model: str,
        old: str,
        new: str,
    ) -> None:
        """Record a circuit breaker transition."""
        target = metrics or self.metrics
        if target is not None:
            target.record_circuit(provider, host, model, old, new)

    def wants_attempts(self, routes: tuple[Route, ...] | None) -> bool:
        """Whether any output sink takes `AttemptEvent` s (else none is built)."""
        return any(r.wants_type(AttemptEvent) for r in (self.default_routes if routes is None else routes))

    def emit_attempt(
        self, event: AttemptEvent, routes: tuple[Route, ...] | None, app_ctx: contextvars.Context
    ) -> None:
        """Send one `AttemptEvent` to the output sinks that take them."""
        self.dispatcher.submit(event, self.default_routes if routes is None else routes, app_ctx)

    def emit_call(
        self,
        event: CallEvent,
        routes: tuple[Route, ...] | None,
        metrics: PrometheusSink | None,
        app_ctx: contextvars.Context,
    ) -> None:
        """Record one finished call everywhere it belongs."""
        target = metrics or self.metrics
        if target is not None:
            target.call_finished(event.provider)
            target.emit(event)
        try:
            self.stats.record(event)
        except Exception:  # noqa: BLE001 - stats must never break a call
            self.internal_error("stats")
        alerts = self.alerts
        if alerts is not None:
            try:
                alerts.record(event)
            except Exception:  # noqa: BLE001 - alerting must never break a call
                self.internal_error("alerts")
        self.dispatcher.submit(event, self.default_routes if routes is None else routes, app_ctx)

    def call_lost(self, routes: tuple[Route, ...] | None, metrics: PrometheusSink | None) -> None:
        """Count a call that ended after the exit hook, its event never built (see `llmpulse._exit`)."""
        target = metrics or self.metrics
        if target is not None:
            target.record_dropped(target.name, "shutdown")
        self.dispatcher.count_dropped(
            CallEvent, self.default_routes if routes is None else routes, "shutdown"
        )

    def emit_other(self, event: Event) -> None:
        """Send a non-call event (an interaction summary) to the default sinks."""
        self.dispatcher.submit(event, self.default_routes, contextvars.copy_context())

    def internal_error(self, where: str) -> None:
        """Count (and log once in a while) a bug inside llmpulse that a call survived."""
        self._internal_errors += 1
        if self.metrics is not None:
            self.metrics.record_internal_error(where)
        if self._internal_errors <= 3 or self._internal_errors % 1000 == 0:
            _log.warning("llmpulse internal error in %s", where, exc_info=True)

    def _dropped(self, sink: str, reason: str, n: int) -> None:
        if self.metrics is not None:
            self.metrics.record_dropped(sink, reason, n)


def make_metrics(registry: Any, settings: Settings) -> PrometheusSink:
    """Build the Prometheus sink for ``registry`` (None: the global registry)."""
    from .sinks._prometheus import PrometheusSink  # noqa: PLC0415

    return PrometheusSink(
        registry,
        max_tenants=settings.max_tenants,
        max_routes=settings.max_routes,
        max_models=settings.max_models,
        tenant_allowlist=settings.tenant_allowlist,
        histogram_labels=settings.histogram_labels,
        max_series=settings.metrics_max_series,
    )


def make_sampler(settings: Settings) -> DetailSampler:
    """The sampler of detailed telemetry the settings describe."""
    from .policies._shared import elevated_until  # noqa: PLC0415

    return DetailSampler(
        settings.sample_rate,
        errors=settings.sample_errors,
        slow_for_s=settings.sample_slow_for_s,
        elevated=elevated_until if settings.redis_url else None,
    )


def make_scrubber(settings: Settings) -> Scrubber:
    """The scrubbing step the settings describe (``redact`` rules, ``capture_error_text``)."""
    rules = tuple(PII_RULES[rule] if isinstance(rule, str) else rule for rule in settings.redact)
    return Scrubber(rules, error_text=settings.capture_error_text)


def make_alerts(
    settings: Settings, stats: RollingStats, sampler: DetailSampler, scrubber: Scrubber
) -> AlertEngine | None:
    """The alert engine the settings describe (None when alerts are off)."""
    if not settings.alerts:
        return None
    from .alerts import AlertEngine, LogAlertSink, WebhookAlertSink  # noqa: PLC0415
    from .alerts._metrics import AlertMetrics  # noqa: PLC0415

    sinks: list[Any] = []
    for sink in settings.alert_sinks:
        if sink == "log":
            sinks.append(LogAlertSink(sys.stdout if settings.log_stream == "stdout" else sys.stderr))
        elif sink == "webhook":
            assert settings.alert_webhook_url is not None  # checked by Settings
            sinks.append(WebhookAlertSink(settings.alert_webhook_url, format=settings.alert_webhook_format))  # type: ignore[arg-type]
        elif not isinstance(sink, str):
            sinks.append(sink)
    counters = AlertMetrics() if settings.metrics else None
    if counters is not None:
        sinks.append(counters)
    return AlertEngine(
        settings.alert_config(),
        sinks,
        store=_alert_store(settings),
        stats=stats,
        on_delivery=counters.delivered if counters is not None else None,
        on_spike=sampler.spike,
        scrub=scrubber.scrub,  # the events' scrubber: one set of rules, one warning per failing rule
    )


def _alert_store(settings: Settings) -> Any:
    # The policies' shared store when there is one: hourly totals add up across replicas.
    from ._wrap import default_policies  # noqa: PLC0415

    return default_policies(settings).state_store() if settings.redis_url else None


def default_sinks(settings: Settings) -> list[Any]:
    """The output sinks the settings name."""
    from .sinks import JsonlSink, StructlogSink  # noqa: PLC0415

    sinks: list[Any] = []
    for name in settings.sinks:
        if name == "log":
            stream = sys.stdout if settings.log_stream == "stdout" else sys.stderr
            sinks.append(StructlogSink(stream, format=settings.log_format, attempts=settings.attempt_events))
        elif name == "jsonl":
            sinks.append(JsonlSink(settings.jsonl_path))
        elif not isinstance(name, str):
            sinks.append(name)  # a sink object given in code
    return sinks


_lock = threading.Lock()
_pipeline: Pipeline | None = None


def get_pipeline() -> Pipeline:
    """Return the process pipeline, building it from the settings on first use."""
    global _pipeline  # noqa: PLW0603 - this module owns the process pipeline
    current = _pipeline
    if current is None:
        settings = get_settings()
        with _lock:
            if _pipeline is None:
                _pipeline = Pipeline(settings)
                _start_metrics_server(settings)
            current = _pipeline
    return current


def _reconfigure(settings: Settings) -> None:
    # New settings: keep the metrics objects (Prometheus series must not
    # vanish), swap the default sinks after delivering what they hold.
    with _lock:
        old = _pipeline
        if old is None:
            return
        old.dispatcher.flush(2.0)
        old.dispatcher.capacity = settings.buffer_size
        # The new routes first: a sink object in both lists keeps its route, counts and thread.
        previous, old.default_routes = old.default_routes, old.routes_for(default_sinks(settings))
        old.dispatcher.remove(previous)
        for route in previous:
            close = getattr(route.sink, "close", None)
            if callable(close) and route.sink not in settings.sinks:
                with contextlib.suppress(Exception):  # a sink failing to close must not fail configure()
                    close()
        old.settings = settings
        if settings.metrics and old.metrics is None:
            old.metrics = make_metrics(None, settings)
        elif not settings.metrics:
            old.metrics = None
        if old.alerts is not None:
            old.alerts.close()
        old.sampler = make_sampler(settings)
        old.scrubber = make_scrubber(settings)
        old.alerts = make_alerts(settings, old.stats, old.sampler, old.scrubber)
    _start_metrics_server(settings)


def _start_metrics_server(settings: Settings) -> None:
    if settings.metrics_port is None or exiting():
        return
    from ._metrics_server import maybe_start_from_env  # noqa: PLC0415

    maybe_start_from_env(settings.metrics_port)


on_configure(_reconfigure)


def emit_interaction(
    name: str, ctx: Context, totals: InteractionTotals, latency_s: float, *, failed: bool
) -> None:
    """Emit the `InteractionSummary` of a finished `llmpulse.interaction()` block."""
    summary = InteractionSummary(
        interaction_id=ctx.interaction_id or "",
        name=name,
        correlation_id=ctx.correlation_id or "",
        tenant=ctx.tenant,
        route=ctx.route,
        feature=ctx.feature,
        calls=totals.calls,
        errors=totals.errors,
        input_tokens=totals.input_tokens,
        output_tokens=totals.output_tokens,
        cost_usd=totals.cost_usd if totals.priced_calls else None,
        unpriced_calls=totals.unpriced_calls,
        latency_s=latency_s,
        outcome="error" if failed else "ok",
        tags=dict(ctx.tags),
    )
    get_pipeline().emit_other(summary)


def flush(timeout: float | None = 5.0) -> bool:
    """Wait until every queued event and alert has reached its sink.

    Every sink delivers at the same time, on its own thread; which sink
    still holds events is in `sink_stats`.

    Args:
        timeout: Seconds to wait at most, for all sinks together (None: no
            limit for the output sinks, 5 s for the alert sinks).

    Returns:
        True if nothing is left pending.

    """
    from ._call import finish_collected  # noqa: PLC0415
    from .state import WRITE_BACK  # noqa: PLC0415

    finish_collected()
    deadline = None if timeout is None else time.monotonic() + timeout
    current = _pipeline
    delivered = True if current is None else current.dispatcher.flush(timeout)
    if current is not None and current.alerts is not None:
        left = 5.0 if deadline is None else max(0.0, deadline - time.monotonic())
        delivered = current.alerts.flush(left) and delivered
    left_for_store = None if deadline is None else max(0.0, deadline - time.monotonic())
    return WRITE_BACK.join(left_for_store) and delivered


async def aflush(timeout: float | None = 5.0) -> bool:
    """`flush` for async code: waits in a thread, never blocks the event loop."""
    import asyncio  # noqa: PLC0415 - keep `import llmpulse` light for sync apps

    return await asyncio.to_thread(flush, timeout)


def shutdown(timeout: float | None = 5.0) -> bool:
    """Deliver pending events and stop the sinks' delivery threads (they restart on the next event).

    Call it from a SIGTERM handler or at the end of a worker's life; at
    interpreter exit llmpulse's ``atexit`` hook does more (see `_at_exit`).
    """
    from ._call import finish_collected  # noqa: PLC0415

    finish_collected()
    current = _pipeline
    return True if current is None else current.dispatcher.stop(timeout)


def stats(window_s: float = 300.0) -> StatsSnapshot:
    """Rolling in-process statistics over the last ``window_s`` seconds.

    p50/p95/p99 latency, time to first token, error and 429 rates, tokens and
    cost, overall and per model, route and tenant, in bounded memory.
    Percentiles are within 1 % of the exact ones; see docs/stats.md.

    Args:
        window_s: How far back to look, in seconds (clamped to 10 s ... 3600 s;
            not positive: ``ValueError``). Windows up to 10 minutes are served
            from 10-second buckets, longer ones from 5-minute buckets, so a
            call up to one bucket younger than ``window_s`` may have dropped out.

    Returns:
        A snapshot: ``total`` over every call of every wrapped client in the
        process, and ``by_model``, ``by_route`` and ``by_tenant``, each ordered
        by calls, most first. ``str()`` of it is one line per group.

    Example:
        ```python
        import llmpulse

        snap = llmpulse.stats(60)  # the last minute
        print(snap.total.calls, snap.total.p95_s, snap.total.error_rate)
        for tenant, group in snap.by_tenant.items():
            print(tenant, group.calls, group.cost_usd)
        ```
    """
    from ._call import finish_collected  # noqa: PLC0415

    finish_collected()
    return get_pipeline().stats.snapshot(window_s)


def sink_stats() -> list[SinkStats]:
    """Emitted / exported / dropped / pending counts per output sink."""
    current = _pipeline
    return [] if current is None else current.dispatcher.stats()


def _at_exit() -> None:
    # Interpreter exit (see `llmpulse._exit`). The app will read no body it
    # left open: end those calls ("abandoned") while imports and the sinks
    # still work, give every sink (alert sinks too) the same
    # `flush_timeout_s`, delivering on this thread what no delivery thread
    # took, and from then on count calls that end as dropped ("shutdown").
    from ._call import finish_collected  # noqa: PLC0415
    from ._transport import report_open_bodies  # noqa: PLC0415

    if _exit.STATE.exiting:
        return
    _exit.begin()
    try:
        report_open_bodies()
        finish_collected()
        current = _pipeline
        if current is not None:
            timeout = current.settings.flush_timeout_s
            deadline = time.monotonic() + timeout
            current.dispatcher.close(timeout)
            if current.alerts is not None:
                current.alerts.close(max(0.0, deadline - time.monotonic()))
    finally:
        _exit.end()


def run_exit_hook_first() -> None:
    """Move llmpulse's exit hook ahead of every atexit handler registered so far.

    `wrap` calls it. What the sinks need at exit (an OpenTelemetry provider,
    a connection) usually exists before the client is wrapped, and its own
    atexit handler (the last registered runs first) must run after ours.
    Not once the interpreter is exiting (the main thread no longer alive): a
    handler registered while the handlers run is never run.
    """
    if threading.main_thread().is_alive():
        atexit.unregister(_at_exit)
        atexit.register(_at_exit)


atexit.register(_at_exit)
