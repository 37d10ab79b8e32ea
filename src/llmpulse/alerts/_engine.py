"""The alert engine: counts every call, evaluates the rules, and says each change once.

`AlertEngine.record` runs on the caller's path for every finished call and
only bumps counters (see `_windows`). `AlertEngine.evaluate` runs every
``evaluate_every_s`` on the engine's own thread: it turns the windows into
readings (a value per rule and scope), readings into state changes, and
state changes into `Alert` s, handed to each alert sink's own delivery thread.

A rule's state per scope (model, tenant or everything) is none, warning or
page. An alert is sent when it starts firing, when it escalates to page, and
when it resolves; a key that fired once does not fire again within its
window (one alert per rule per window, however it flaps).

Hourly totals per tenant are written to the state store when the clock hour
ends (memory, or Redis so that every replica adds to the same hour), and the
baselines are read back from it once an hour: the per-tenant median of its
hourly totals over ``baseline_days``, and the same hour of the week before
for the expected token burn. No call is ever stored.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .._exit import start_daemon
from ..policies._shared import is_shared
from ..state import MemoryStore
from ._alert import Alert, AlertSink, Evidence, Severity
from ._config import AlertConfig
from ._sinks import _Delivery
from ._windows import Counts, Ring, Totals

if TYPE_CHECKING:
    from .._stats import RollingStats
    from ..events import CallEvent
    from ..state import StateStore

__all__ = ["AlertEngine"]

_log = logging.getLogger("llmpulse")

_SHORT_MINUTES = 70  # per-model windows: 5 min, 3 min, 2 min and the hour before
_LONG_MINUTES = 360  # the SLO's 6 hours
_MAX_MODELS = 50  # beyond: "other"
_MAX_TENANTS = 10_000  # per clock hour, beyond: "other"
_ALL = ""  # the scope of every call
_HOUR = 3600
_WEEK_HOURS = 168
_EXAMPLES = 5
_QUEUE = 1000  # alerts and rule checks waiting for the engine's thread
_KEY_PREFIX = "alerts:hour:"
_MINUTE_PREFIX = "alerts:minute:"
# The SRE workbook's multiwindow burn-rate pairs: (long, short, burn rate, severity).
_BURN_WINDOWS: tuple[tuple[int, int, float, Severity], ...] = (
    (60, 5, 14.4, "page"),
    (360, 30, 6.0, "warning"),
)


@dataclass(slots=True)
class _Reading:
    """One rule measured on one scope at one evaluation."""

    rule: str
    labels: dict[str, str]
    value: float
    warning: float
    page: float
    window_s: float
    text: str  # what was measured, with the numbers
    unit: str  # how the threshold reads: "s", "ms", "%", "x", "share" (of a budget), "burn"
    examples: str = "error"  # which recent calls serve as evidence
    spike_p95: float | None = None  # for latency rules: the p95 slow calls are measured against
    severity: Severity | None = None  # set when the rule decides its own tier (burn rates)


@dataclass(slots=True)
class _Firing:
    severity: Severity
    since: float
    fired_at: float
    reading: _Reading


class AlertEngine:
    """In-process alerting over every call of this process (see the module docstring).

    Args:
        config: Thresholds and windows.
        sinks: Where alerts go (anything with ``emit(alert)``).
        store: Where hourly totals and baselines live (default: this process's memory).
        stats: The rolling stats the evidence's top tenants come from.
        clock: Epoch seconds (tests pass a fake one).
        background: Evaluate on the engine's own thread and deliver on each sink's
            (False: the caller of `evaluate` does both, which tests use).
        on_delivery: Called with (sink name, "ok" | "failed" | "dropped") for metrics.
        on_spike: Called with (model, p95 seconds) when a latency rule starts
            firing: the sampler then keeps the details of that model's slow calls.

    """

    def __init__(
        self,
        config: AlertConfig | None = None,
        sinks: Sequence[AlertSink] = (),
        *,
        store: StateStore | None = None,
        stats: RollingStats | None = None,
        clock: Callable[[], float] = time.time,
        background: bool = True,
        on_delivery: Callable[[str, str], None] | None = None,
        on_spike: Callable[[str, float], None] | None = None,
    ) -> None:
        self.config = config or AlertConfig()
        self.sinks = tuple(sinks)
        self._store: Any = store if store is not None else MemoryStore(clock)
        self._stats = stats
        self._clock = clock
        self._background = background
        self._on_delivery = on_delivery
        self._on_spike = on_spike
        self._short: Ring[Counts] = Ring(_SHORT_MINUTES, Counts)
        self._long: Ring[Totals] = Ring(_LONG_MINUTES, Totals)
        self._models: set[str] = set()
        self._hour = int(clock() // _HOUR)
        self._tenants: dict[str, list[float]] = {}  # this clock hour: tenant -> [tokens, cost]
        # With a shared store: this minute's tenants, written out each minute for top_tenants().
        self.shared = is_shared(store)
        self._minute = int(clock() // 60)
        self._minute_tenants: dict[str, list[float]] = {}  # tenant -> [calls, tokens, cost]
        self._examples: dict[str, deque[tuple[str, str | None]]] = {}
        self._per_call: dict[str, tuple[float, int, float, str]] = {}  # key -> (first, count, worst, text)
        self._firing: dict[str, _Firing] = {}
        self._resolved_at: dict[str, float] = {}  # a key resolved this recently does not fire again yet
        self._baselines: dict[str, float] = {}  # tenant -> median hourly tokens
        self._expected_tokens: float | None = None
        self._baselines_for = -1  # the hour the baselines were read for
        self._new_thread_state()
        reset = weakref.WeakMethod(self._new_thread_state)  # an engine replaced by configure() may go
        os.register_at_fork(after_in_child=lambda: _call_if_alive(reset))
        self.dropped = 0
        self.suppressed = 0  # changes another replica had already sent
        self.sent: list[Alert] = []  # the last alerts sent, for tests and `llmpulse.alerts()`

    # -- the caller's path -------------------------------------------------------

    def record(self, event: CallEvent) -> None:
        """Count one finished call; O(1), never blocks on I/O."""
        now = self._clock()
        minute = int(now // 60)
        sent = event.attempts > 0 and event.outcome in ("ok", "error")
        failed = event.outcome == "error"
        status = event.http_status or 0
        tokens = (event.input_tokens or 0) + (event.output_tokens or 0)
        cost = event.cost_usd or 0.0
        with self._lock:
            for scope in (_ALL, self._model_scope(event.model)):
                c = self._short.scope(minute, scope)
                c.tokens += tokens
                c.cost += cost
                c.attempts += event.attempts
                if sent:
                    c.sent += 1
                    c.latency.add(event.latency_s)
                    c.errors += failed
                    c.s5xx += failed and status >= 500
                    c.s429 += failed and status == 429
            if sent:
                t = self._long.scope(minute, _ALL)
                t.sent += 1
                t.errors += failed
            self._count_tenant(event.tenant, now, tokens, cost)
            if failed or status >= 400:
                self._example("5xx" if status >= 500 else "429" if status == 429 else "error", event)
            slow = self.config.p95_latency_s
            if slow is not None and event.latency_s > slow:
                self._example("slow", event)
        self._per_call_rules(event, now)
        if self._background:
            self._ensure_thread()

    def record_attempt(self, model: str | None, status: int | None) -> None:
        """Count an attempt answered 5xx or 429, retries included (the provider's side); O(1).

        Other statuses change nothing: the attempts themselves are counted
        from each finished call's ``attempts``, so a healthy call costs one
        update, not one per attempt.
        """
        if status is None or not (status >= 500 or status == 429):
            return
        minute = int(self._clock() // 60)
        with self._lock:
            for scope in (_ALL, self._model_scope(model)):
                c = self._short.scope(minute, scope)
                c.a5xx += status >= 500
                c.a429 += status == 429

    def _model_scope(self, model: str | None) -> str:
        name = model or "unknown"
        if name not in self._models:
            if len(self._models) >= _MAX_MODELS:
                return "other"
            self._models.add(name)
        return name

    def _count_tenant(self, tenant: str | None, now: float, tokens: int, cost: float) -> None:
        hour = int(now // _HOUR)
        if hour != self._hour:
            self._roll_hour(hour)
        name = tenant or "unknown"
        row = self._tenants.get(name)
        if row is None:
            if len(self._tenants) >= _MAX_TENANTS:
                name = "other"
            row = self._tenants.setdefault(name, [0.0, 0.0])
        row[0] += tokens
        row[1] += cost
        if self.shared:
            minute = int(now // 60)
            if minute != self._minute:
                self._roll_minute(minute)
            found = self._minute_tenants.get(name)
            if found is None:
                found = self._minute_tenants[name] = [0.0, 0.0, 0.0]
            found[0] += 1
            found[1] += tokens
            found[2] += cost

    def _roll_minute(self, minute: int) -> None:
        finished, tenants = self._minute, self._minute_tenants
        self._minute, self._minute_tenants = minute, {}
        if tenants:
            fields = {f"{k}:{t}": row[i] for t, row in tenants.items() for i, k in enumerate("rtc")}
            store = self._store
            self._submit(lambda: store.add_fields(_MINUTE_PREFIX + str(finished), fields, ttl_s=2 * _HOUR))

    def top_tenants(self, window_s: float, by: str, n: int) -> list[tuple[str, float]]:
        """The top tenants of every replica over the last ``window_s`` (whole minutes; shared store only)."""
        field = {"requests": "r", "tokens": "t", "cost": "c"}[by]
        now_minute = int(self._clock() // 60)
        totals: dict[str, float] = {}
        for minute in range(now_minute - max(1, math.ceil(window_s / 60)) + 1, now_minute):
            for name, value in self._store.get_fields(_MINUTE_PREFIX + str(minute)).items():
                kind, _, tenant = name.partition(":")
                if kind == field:
                    totals[tenant] = totals.get(tenant, 0.0) + value
        with self._lock:
            if self._minute == now_minute:  # this process's current minute, not written out yet
                for tenant, row in self._minute_tenants.items():
                    totals[tenant] = totals.get(tenant, 0.0) + row["rtc".index(field)]
        return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[: max(0, n)]

    def _example(self, kind: str, event: CallEvent) -> None:
        ring = self._examples.get(kind)
        if ring is None:
            ring = self._examples[kind] = deque(maxlen=_EXAMPLES)
        ring.append((event.correlation_id, event.request_id))

    def _per_call_rules(self, event: CallEvent, now: float) -> None:
        config = self.config
        if config.slow_call_s is not None and event.latency_s > config.slow_call_s:
            self._trip("slow_call", event, now, event.latency_s, f"{event.latency_s:.1f} s")
        if config.max_output_tokens is not None and (event.output_tokens or 0) > config.max_output_tokens:
            tokens = float(event.output_tokens or 0)
            self._trip("large_output", event, now, tokens, f"{tokens:,.0f} output tokens")
        if config.rules:
            self._submit(lambda: self._user_rules(event, now))  # your code: never on the caller's path

    def _user_rules(self, event: CallEvent, now: float) -> None:
        for rule in self.config.rules:
            try:
                message = rule(event)
            except Exception:  # noqa: BLE001 - a broken rule must not stop the others
                _log.warning("llmpulse alert rule %r raised", getattr(rule, "__name__", rule), exc_info=True)
                continue
            if message:
                self._trip(getattr(rule, "__name__", "rule"), event, now, 1.0, str(message))

    def _trip(self, rule: str, event: CallEvent, now: float, value: float, text: str) -> None:
        model = event.model or "unknown"
        key = f"{rule},model={model}"
        with self._lock:
            self._example(rule, event)
            found = self._per_call.get(key)
            if found is None:
                self._per_call[key] = (now, 1, value, text)
                first = True
            else:
                self._per_call[key] = (found[0], found[1] + 1, max(found[2], value), found[3])
                first = False
        if first and key not in self._firing:
            threshold = self.config.slow_call_s if rule == "slow_call" else self.config.max_output_tokens
            reading = _Reading(
                rule,
                {"model": model},
                value,
                float(threshold or 1.0),
                float(threshold or 1.0),
                self.config.p95_window_s,
                f"{rule.replace('_', ' ')} on {model}: {text}",
                "",
                examples=rule,
                severity="warning",
            )
            self._submit(lambda: self._change_locked(key, reading, now))

    # -- the engine's thread ----------------------------------------------------------

    def evaluate(self) -> list[Alert]:
        """Evaluate every windowed rule now; deliver and return the alerts it sends."""
        with self._eval_lock:
            return self._evaluate()

    def _evaluate(self) -> list[Alert]:
        now = self._clock()
        hour = int(now // _HOUR)
        with self._lock:
            if hour != self._hour:
                self._roll_hour(hour)
        if self._baselines_for != hour:
            self._read_baselines(hour)
        with self._lock:
            readings = list(self._readings(now))
        before = len(self.sent)
        seen: set[str] = set()
        for reading in readings:
            key = _key(reading.rule, reading.labels)
            seen.add(key)
            self._change(key, reading, _level(reading), now)
        for key, firing in list(self._firing.items()):
            if key not in seen and not self._per_call_active(key, now):
                self._change(key, firing.reading, None, now)
        # A resolved key only matters for one window (6 h at most): tenants come and go.
        stale = [key for key, at in self._resolved_at.items() if now - at > _LONG_MINUTES * 60]
        for key in stale:
            del self._resolved_at[key]
        return self.sent[before:]

    def _readings(self, now: float) -> Iterable[_Reading]:
        minute = int(now // 60)
        for scope in (*sorted(self._models), "other"):
            yield from self._model_readings(scope, minute)
        yield from self._slo_readings(minute)
        yield from self._volume_readings(minute)

    def _model_readings(self, scope: str, minute: int) -> Iterable[_Reading]:
        config, labels = self.config, {"model": scope}
        if config.p95_latency_s is not None:
            minutes = max(1, round(config.p95_window_s / 60))
            counts = self._merged(scope, minute - minutes + 1, minute)
            p95 = counts.latency.quantile(0.95) if counts.sent >= config.min_calls else None
            if p95 is not None:
                text = f"p95 latency of {scope} is {p95:.2f} s over {minutes} min"
                reading = self._reading(
                    "latency_p95", labels, p95, config.p95_latency_s, minutes, text, "s", "slow"
                )
                reading.spike_p95 = p95
                yield reading
        for rule, threshold, minutes, name in (
            ("error_5xx_rate", config.rate_5xx, 5, "5xx"),
            ("rate_429", config.rate_429, 3, "429"),
        ):
            if threshold is None:
                continue
            counts = self._merged(scope, minute - minutes + 1, minute)
            if counts.sent >= config.min_calls:
                share = (counts.s5xx if name == "5xx" else counts.s429) / counts.sent
                text = f"{share:.1%} of {counts.sent} calls to {scope} ended in {name} over {minutes} min"
                yield self._reading(rule, labels, share, threshold, minutes, text, "%", name)
            # The provider's side: retries hide its 5xx and 429 from callers, not from the latency.
            if counts.attempts >= config.min_calls:
                share = (counts.a5xx if name == "5xx" else counts.a429) / counts.attempts
                text = (
                    f"{share:.1%} of {counts.attempts} attempts to {scope} were answered {name} "
                    f"over {minutes} min (retries included)"
                )
                yield self._reading(f"provider_{rule}", labels, share, threshold, minutes, text, "%", name)
        if config.latency_jump_s is not None:
            recent = self._merged(scope, minute - 1, minute)
            before = self._merged(scope, minute - 61, minute - 2)
            if recent.sent >= config.min_calls and before.sent >= config.min_calls:
                now_p95, then_p95 = recent.latency.quantile(0.95), before.latency.quantile(0.95)
                if now_p95 is not None and then_p95 is not None:
                    jump = now_p95 - then_p95
                    text = (
                        f"p95 latency of {scope} jumped by {jump * 1000:.0f} ms in 2 min "
                        f"({then_p95:.2f} s -> {now_p95:.2f} s)"
                    )
                    reading = self._reading(
                        "latency_jump", labels, jump, config.latency_jump_s, 2, text, "ms", "slow"
                    )
                    reading.spike_p95 = then_p95  # slower than the hour before: the calls worth a trace
                    yield reading

    def _reading(
        self,
        rule: str,
        labels: dict[str, str],
        value: float,
        warning: float,
        minutes: float,
        text: str,
        unit: str,
        examples: str = "error",
    ) -> _Reading:
        page = warning * self.config.page_factor
        return _Reading(rule, labels, value, warning, page, minutes * 60.0, text, unit, examples)

    def _merged(self, scope: str, first: int, last: int) -> Counts:
        out = Counts()
        for bucket in self._short.window(first, last):
            found = bucket.get(scope)
            if found is not None:
                out.merge(found)
        return out

    def _slo_readings(self, minute: int) -> Iterable[_Reading]:
        config = self.config
        if config.slo is None:
            return
        budget = 1.0 - config.slo
        for long_m, short_m, burn, severity in _BURN_WINDOWS:
            long_rate = self._burn_rate(minute, long_m, budget)
            short_rate = self._burn_rate(minute, short_m, budget)
            if long_rate is None or short_rate is None:
                continue
            text = (
                f"error budget of the {config.slo:.2%} SLO burning at {long_rate:.1f}x over {long_m} min "
                f"and {short_rate:.1f}x over {short_m} min"
            )
            value = min(long_rate, short_rate)  # both windows must burn
            reading = self._reading(f"slo_burn_{severity}", {}, value, burn, long_m, text, "x")
            reading.page, reading.severity = burn, severity  # the window pair sets the tier
            yield reading

    def _burn_rate(self, minute: int, minutes: int, budget: float) -> float | None:
        sent = errors = 0
        for bucket in self._long.window(minute - minutes + 1, minute):
            t = bucket.get(_ALL)
            if t is not None:
                sent, errors = sent + t.sent, errors + t.errors
        return errors / sent / budget if sent >= self.config.min_calls else None

    def _volume_readings(self, minute: int) -> Iterable[_Reading]:
        config = self.config
        hour_tokens = self._merged(_ALL, minute - 59, minute).tokens
        expected = config.expected_tokens_per_hour or self._expected_tokens
        if config.token_burn is not None and expected:
            burn = hour_tokens / expected
            text = (
                f"{hour_tokens:,.0f} tokens in the last hour, {burn - 1:+.0%} "
                f"against the expected {expected:,.0f}"
            )
            yield self._reading("token_burn", {}, burn, 1.0 + config.token_burn, 60, text, "burn")
        if config.hourly_budget_usd is not None:
            spent, budget = sum(row[1] for row in self._tenants.values()), config.hourly_budget_usd
            text = f"${spent:,.2f} spent this hour, {spent / budget:.0%} of the ${budget:,.2f} budget"
            yield self._reading("cost_over_budget", {}, spent / budget, 1.0, 60, text, "share")
        for tenant, (tokens, cost) in self._tenants.items():
            labels = {"tenant": tenant}
            if config.tenant_hourly_budget_usd is not None:
                budget = config.tenant_hourly_budget_usd
                text = (
                    f"tenant {tenant} spent ${cost:,.2f} this hour, {cost / budget:.0%} of its ${budget:,.2f}"
                )
                yield self._reading("tenant_cost_over_budget", labels, cost / budget, 1.0, 60, text, "share")
            median = self._baselines.get(tenant)
            factor = config.tenant_anomaly_factor
            if factor is not None and median and tokens >= config.tenant_anomaly_min_tokens:
                text = (
                    f"tenant {tenant} used {tokens:,.0f} tokens this hour, {tokens / median:.1f}x its "
                    f"median hour ({median:,.0f})"
                )
                yield self._reading("tenant_token_anomaly", labels, tokens / median, factor, 60, text, "x")

    def _per_call_active(self, key: str, now: float) -> bool:
        found = self._per_call.get(key)
        if found is None:
            return False
        if now - found[0] < self.config.p95_window_s:
            return True
        del self._per_call[key]  # a window without another trip: it resolves
        return False

    def _change_locked(self, key: str, reading: _Reading, now: float) -> None:
        with self._eval_lock:
            self._change(key, reading, "warning", now)

    def _change(self, key: str, reading: _Reading, level: Severity | None, now: float) -> None:
        firing = self._firing.get(key)
        if level is None:
            if firing is not None:
                del self._firing[key]
                self._resolved_at[key] = now
                self._send(key, firing.reading, "resolved", firing.severity, firing.since, now)
            return
        if firing is None:
            if now - self._resolved_at.get(key, -reading.window_s) < reading.window_s:
                return  # flapping: one alert per rule per window
            self._resolved_at.pop(key, None)
            self._firing[key] = _Firing(level, now, now, reading)
            if reading.spike_p95 is not None and self._on_spike is not None:
                self._on_spike(reading.labels.get("model", ""), reading.spike_p95)
            self._send(key, reading, "firing", level, now, now)
        elif level == "page" and firing.severity == "warning":
            firing.severity, firing.fired_at, firing.reading = "page", now, reading
            self._send(key, reading, "firing", "page", firing.since, now)
        else:
            firing.reading = reading  # still firing: nothing new to say

    def _send(
        self, key: str, reading: _Reading, status: str, severity: Severity, since: float, now: float
    ) -> None:
        if self.shared and not self._claim(key, status, severity, reading.window_s):
            self.suppressed += 1
            return  # another replica said it already
        threshold = reading.page if severity == "page" else reading.warning
        summary = reading.text + _threshold_text(threshold, reading.unit)
        if status == "resolved":
            summary = f"resolved: {summary}"
        alert = Alert(
            rule=reading.rule,
            status="resolved" if status == "resolved" else "firing",
            severity=severity,
            summary=summary,
            value=reading.value,
            threshold=threshold,
            window_s=reading.window_s,
            labels=dict(reading.labels),
            at=datetime.fromtimestamp(now, UTC),
            since=datetime.fromtimestamp(since, UTC),
            evidence=self._evidence(reading.examples),
        )
        self.sent.append(alert)
        del self.sent[:-100]
        for delivery in self._deliveries:  # each sink on its own thread: none waits for another
            if self._background:
                delivery.put(alert)
            else:
                delivery.deliver(alert)

    def _claim(self, key: str, status: str, severity: str, window_s: float) -> bool:
        """Whether this replica sends this change: the first to claim it in its window, across replicas."""
        # A GCRA bucket of one per window is an atomic "first one wins" on the shared store.
        window = max(window_s, 60.0)
        try:
            result = self._store.gcra(f"alert:{key}:{status}:{severity}", rate_per_s=1.0 / window, burst=1.0)
        except Exception:  # noqa: BLE001 - no claim possible: better twice than never
            _log.debug("llmpulse alert claim failed", exc_info=True)
            return True
        return bool(result.allowed)

    def _evidence(self, kind: str) -> Evidence:
        stats = self._stats
        by_requests: tuple[tuple[str, float], ...] = ()
        by_tokens: tuple[tuple[str, float], ...] = ()
        if stats is not None:
            try:
                by_requests = tuple(stats.top("tenant", "requests", 5, 300.0))
                by_tokens = tuple(stats.top("tenant", "tokens", 5, 300.0))
            except Exception:  # noqa: BLE001 - evidence is a bonus; the alert goes out without it
                _log.debug("llmpulse alert evidence: top tenants failed", exc_info=True)
        with self._lock:
            examples = list(self._examples.get(kind, ()))
        return Evidence(
            top_tenants_by_requests=by_requests,
            top_tenants_by_tokens=by_tokens,
            correlation_ids=tuple(c for c, _ in examples),
            request_ids=tuple(r for _, r in examples if r),
        )

    def _delivered(self, sink: str, result: str) -> None:
        if self._on_delivery is not None:
            try:
                self._on_delivery(sink, result)
            except Exception:  # noqa: BLE001 - telemetry of telemetry: never raise
                _log.debug("llmpulse alert delivery callback failed", exc_info=True)

    # -- hourly totals and baselines -----------------------------------------------------

    def _roll_hour(self, hour: int) -> None:
        """Start a new clock hour; the finished one's totals go to the store (lock held)."""
        finished, tenants = self._hour, self._tenants
        self._hour, self._tenants = hour, {}
        if not tenants:
            return
        fields: dict[str, float] = {
            "T": sum(r[0] for r in tenants.values()),
            "C": sum(r[1] for r in tenants.values()),
        }
        for tenant, (tokens, cost) in tenants.items():
            fields["t:" + tenant] = tokens
            fields["c:" + tenant] = cost
        ttl = max(self.config.baseline_days, 8) * 86400.0  # the week-before hour outlives a 7-day baseline
        store = self._store
        self._submit(lambda: store.add_fields(_KEY_PREFIX + str(finished), fields, ttl_s=ttl))
        self._baselines_for = -1  # read them again, with this hour in

    def _read_baselines(self, hour: int) -> None:
        """The tenants' median hour and the expected hour, from the stored hourly totals."""
        config, store = self.config, self._store
        hours: dict[str, list[float]] = {}
        try:
            for h in range(hour - config.baseline_days * 24, hour):
                for name, value in store.get_fields(_KEY_PREFIX + str(h)).items():
                    if name.startswith("t:"):
                        hours.setdefault(name[2:], []).append(value)
            week_before = store.get_fields(_KEY_PREFIX + str(hour - _WEEK_HOURS)).get("T")
        except Exception:  # noqa: BLE001 - no baseline this hour rather than no alerts at all
            _log.warning("llmpulse alerts could not read the hourly totals", exc_info=True)
            return
        import statistics  # noqa: PLC0415 - once an hour, and `import llmpulse` stays light

        self._baselines = {
            tenant: statistics.median(values)
            for tenant, values in hours.items()
            if len(values) >= config.baseline_min_hours
        }
        self._expected_tokens = week_before
        self._baselines_for = hour

    # -- the thread ---------------------------------------------------------------------

    def _new_thread_state(self) -> None:
        # After fork() the engine's thread is gone and its locks may be held by
        # a thread that no longer exists: the child starts afresh (its counters
        # are the parent's until the next window, which is what it inherited).
        self._lock = threading.Lock()  # the counters (callers' threads)
        self._eval_lock = threading.Lock()  # rule states and delivery (one evaluation at a time)
        self._queue: queue.Queue[Callable[[], None]] = queue.Queue(_QUEUE)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._deliveries = [_Delivery(sink, type(sink).__name__, self._delivered) for sink in self.sinks]

    def _submit(self, work: Callable[[], None]) -> None:
        if not self._background:
            work()
            return
        try:
            self._queue.put_nowait(work)
        except queue.Full:
            self.dropped += 1
            self._delivered("engine", "dropped")
            return
        self._ensure_thread()

    def _ensure_thread(self) -> bool:
        # False at interpreter exit, when no thread may start: queued work then waits, unrun.
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = start_daemon(self._run, "llmpulse-alerts")
                    return self._thread is not None
        return True

    def _run(self) -> None:
        interval = self.config.evaluate_every_s
        due = time.monotonic() + interval
        while not self._stop.is_set():
            try:
                work = self._queue.get(timeout=max(0.0, due - time.monotonic()))
            except queue.Empty:
                work = None
            try:
                if work is not None:
                    work()
                if time.monotonic() >= due:
                    due = time.monotonic() + interval
                    self.evaluate()
            except Exception:  # noqa: BLE001 - the engine's thread must survive a bug
                _log.warning("llmpulse alert engine error", exc_info=True)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the queued rule checks ran and every sink got its alerts; True if so.

        ``timeout`` bounds the whole wait: the sinks deliver at the same
        time, each on its own thread.
        """
        if not self._background:
            return True
        deadline = time.monotonic() + timeout
        done = self._flush_queue(timeout)
        for delivery in self._deliveries:
            done = delivery.flush(deadline) and done
        return done

    def _flush_queue(self, timeout: float) -> bool:
        if self._thread is None and self._queue.empty():
            return True
        if not self._ensure_thread():
            return self._queue.empty()
        done = threading.Event()
        try:
            self._queue.put(done.set, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the engine's thread after what is queued, within ``timeout``; True if all was delivered.

        Alerts a sink has not taken by then are counted as dropped
        (``on_delivery(sink, "dropped")``).
        """
        done = self.flush(timeout)
        self._stop.set()
        for delivery in self._deliveries:
            delivery.stop()
        return done


def _call_if_alive(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    found = method()
    if found is not None:
        found()


def _key(rule: str, labels: dict[str, str]) -> str:
    return rule + "".join(f",{k}={v}" for k, v in sorted(labels.items()))


def _level(reading: _Reading) -> Severity | None:
    if reading.severity is not None:
        return reading.severity if reading.value > reading.warning else None
    if reading.value > reading.page:
        return "page"
    if reading.value > reading.warning:
        return "warning"
    return None


def _threshold_text(threshold: float, unit: str) -> str:
    shown = {
        "s": f"{threshold:.2f} s",
        "ms": f"{threshold * 1000:.0f} ms",
        "%": f"{threshold:.1%}",
        "x": f"{threshold:g}x",
        "share": f"{threshold:.0%}",
        "burn": f"{threshold - 1:+.0%}",
    }.get(unit)
    return f" (threshold {shown})" if shown else ""
