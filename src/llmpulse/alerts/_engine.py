"""The alert engine: counts every call, evaluates the rules, and says each change once.

`AlertEngine.record` runs on the caller's path for every finished call and
only bumps counters (see `_windows`). `AlertEngine.evaluate` runs every
``evaluate_every_s`` on the engine's own thread: it turns the windows into
readings (a value per rule and scope), readings into state changes, and
state changes into `Alert` s, handed to each alert sink's own delivery thread.

A rule over a sliding window (N minutes: the N whole minutes before the
current one and the current one so far) judges only once the engine has
watched ``min_coverage`` of it (80 %: 4 min of 5, 48 min of the SLO's hour)
and the window holds ``min_calls`` calls; a burn rate needs both its windows
covered. Each alert states the span it judged, and its evidence (top tenants,
example calls) is its own subject's: the model, the tenant, or every call.

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
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .._exit import start_daemon
from .._redact import redact
from .._units import fmt_duration
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

_SHORT_MINUTES = 70  # per-model windows: 5 min, 3 min, 2 min and the hour before (63 buckets)
_LONG_MINUTES = 361  # the SLO's 6 hours: 360 whole minutes and the current one
_LONGEST_WINDOW_S = 6 * 3600.0
_OTHER = "__other__"  # the shared subject past a cap, as in the metrics and stats()
_MAX_MODELS = 50  # beyond: _OTHER
_MAX_TENANTS = 10_000  # per clock hour, beyond: _OTHER
_ALL = ""  # the scope of every call
_HOUR = 3600
_WEEK_HOURS = 168
_EXAMPLES = 5
# Per-subject tenant counts for the evidence: the last 5 minutes (the rule's window, up to 5 min).
_EVIDENCE_MINUTES = 6  # 5 whole minutes and the current one
_EVIDENCE_TENANTS = 100  # per model and minute, beyond: _OTHER
_EVIDENCE_TENANTS_ALL = 1000  # per minute over every model, beyond: _OTHER
_EXAMPLE_TENANTS = 1000  # tenants whose last calls are kept as examples (least recently seen go)
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
    examples: str = "error"  # which recent calls of the subject serve as evidence
    spike_p95: float | None = None  # for latency rules: the p95 slow calls are measured against
    severity: Severity | None = None  # set when the rule decides its own tier (burn rates)
    span_s: float | None = None  # seconds of data judged (None: a single call)
    first_minute: int | None = None  # the oldest minute bucket judged: the evidence counts from there


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
        stats: Not read any more (the evidence counts each subject's own tenants);
            accepted so that existing callers keep working.
        clock: Epoch seconds (tests pass a fake one).
        background: Evaluate on the engine's own thread and deliver on each sink's
            (False: the caller of `evaluate` does both, which tests use).
        on_delivery: Called with (sink name, "ok" | "failed" | "dropped") for metrics.
        on_spike: Called with (model, p95 seconds) when a latency rule starts
            firing: the sampler then keeps the details of that model's slow calls.
        scrub: The scrubbing step every alert's summary passes (secrets, the
            user's ``redact`` rules): alert text reaches webhooks and logs.

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
        scrub: Callable[[str], str] = redact,
    ) -> None:
        self.config = config or AlertConfig()
        self._scrub = scrub
        self.sinks = tuple(sinks)
        self._store: Any = store if store is not None else MemoryStore(clock)
        self._stats = stats
        self._clock = clock
        self._background = background
        self._on_delivery = on_delivery
        self._on_spike = on_spike
        self._short: Ring[Counts] = Ring(_SHORT_MINUTES, Counts)
        self._long: Ring[Totals] = Ring(_LONG_MINUTES, Totals)
        self._started = clock()  # a window counts once the engine has watched enough of it
        # Per subject (model or everything) and minute: tenant -> [calls, tokens], for the evidence.
        self._subject_tenants: Ring[dict[str, list[float]]] = Ring(_EVIDENCE_MINUTES, dict)
        self._models: set[str] = set()
        self._hour = int(clock() // _HOUR)
        self._tenants: dict[str, list[float]] = {}  # this clock hour: tenant -> [tokens, cost, calls]
        # With a shared store: this minute's tenants, written out each minute for top_tenants().
        self.shared = is_shared(store)
        self._minute = int(clock() // 60)
        self._minute_tenants: dict[str, list[float]] = {}  # tenant -> [calls, tokens, cost]
        self._examples: dict[tuple[str, str], deque[tuple[str, str | None]]] = {}  # (kind, scope) ->
        self._tenant_examples: OrderedDict[str, deque[tuple[str, str | None]]] = OrderedDict()
        self._recent: deque[tuple[str, str | None]] = deque(maxlen=_EXAMPLES)  # every call's last ones
        config = self.config
        self._tenant_rules = (
            config.tenant_hourly_budget_usd is not None or config.tenant_anomaly_factor is not None
        )
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
        tenant = event.tenant or "unknown"
        call = (event.correlation_id, event.request_id)
        with self._lock:
            model = self._model_scope(event.model)
            # Per subject, the tenants of the calls the rules count (inline: the caller's path).
            by_subject = self._subject_tenants.bucket(minute) if sent else None
            for scope in (_ALL, model):
                c = self._short.scope(minute, scope)
                c.tokens += tokens
                c.cost += cost
                c.attempts += event.attempts
                if by_subject is not None:
                    found = by_subject.get(scope)
                    row = None if found is None else found.get(tenant)
                    if row is None:
                        row = self._new_subject_tenant(by_subject, scope, tenant)
                    row[0] += 1
                    row[1] += tokens
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
            self._recent.append(call)
            if failed or status >= 400:
                self._example("5xx" if status >= 500 else "429" if status == 429 else "error", model, call)
                self._example("error", _ALL, call)
            slow = self.config.p95_latency_s
            if slow is not None and event.latency_s > slow:
                self._example("slow", model, call)
            if self._tenant_rules:
                self._tenant_example(tenant, call)
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
                return _OTHER
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
                name = _OTHER
            row = self._tenants.setdefault(name, [0.0, 0.0, 0.0])
        row[0] += tokens
        row[1] += cost
        row[2] += 1
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

    def _new_subject_tenant(
        self, by_subject: dict[str, dict[str, list[float]]], scope: str, tenant: str
    ) -> list[float]:
        counts = by_subject.setdefault(scope, {})
        cap = _EVIDENCE_TENANTS_ALL if scope == _ALL else _EVIDENCE_TENANTS
        if len(counts) >= cap:
            tenant = _OTHER
        return counts.setdefault(tenant, [0.0, 0.0])

    def _example(self, kind: str, scope: str, call: tuple[str, str | None]) -> None:
        ring = self._examples.get((kind, scope))
        if ring is None:
            ring = self._examples[kind, scope] = deque(maxlen=_EXAMPLES)
        ring.append(call)

    def _tenant_example(self, tenant: str, call: tuple[str, str | None]) -> None:
        examples = self._tenant_examples
        ring = examples.get(tenant)
        if ring is None:
            ring = examples[tenant] = deque(maxlen=_EXAMPLES)
            if len(examples) > _EXAMPLE_TENANTS:
                examples.popitem(last=False)  # the least recently seen tenant
        else:
            examples.move_to_end(tenant)
        ring.append(call)

    def _per_call_rules(self, event: CallEvent, now: float) -> None:
        config = self.config
        if config.slow_call_s is not None and event.latency_s > config.slow_call_s:
            text = f"{event.latency_s:.1f} s"
            learned = event.deadline_learned_s
            if learned is not None:
                # What healthy calls of this endpoint and model took lately: an outlier or the norm?
                past = "past" if event.deadline_exceeded else "within"
                phase = event.deadline_phase
                text += f", {past} the {learned:.1f} s its healthy calls lately allow ({phase})"
            self._trip("slow_call", event, now, event.latency_s, text)
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
            self._example(rule, self._model_scope(event.model), (event.correlation_id, event.request_id))
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
                first_minute=int(now // 60) - _EVIDENCE_MINUTES + 1,  # who called that model lately
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
        stale = [key for key, at in self._resolved_at.items() if now - at > _LONGEST_WINDOW_S]
        for key in stale:
            del self._resolved_at[key]
        return self.sent[before:]

    def _readings(self, now: float) -> Iterable[_Reading]:
        minute = int(now // 60)
        for scope in (*sorted(self._models), _OTHER):
            yield from self._model_readings(scope, minute, now)
        yield from self._slo_readings(minute, now)
        yield from self._volume_readings(minute, now)

    def _span(self, first: int, end: float, window_s: float) -> float | None:
        """Seconds of data from minute ``first`` (or the engine's start) to ``end``; None if too few.

        A window of N minutes reads the N whole minutes before the current one
        and the current one so far, so a window the engine watched throughout
        holds at least N minutes; one it watched for less than
        ``min_coverage`` of N minutes is not judged.
        """
        span = end - max(first * 60.0, self._started)
        return span if span >= self.config.min_coverage * window_s else None

    def _model_readings(self, scope: str, minute: int, now: float) -> Iterable[_Reading]:
        config, labels = self.config, {"model": scope}
        if config.p95_latency_s is not None:
            window_s = config.p95_window_s
            first = minute - max(1, round(window_s / 60))
            span = self._span(first, now, window_s)
            counts = self._merged(scope, first, minute)
            p95 = (
                counts.latency.quantile(0.95)
                if span is not None and counts.sent >= config.min_calls
                else None
            )
            if span is not None and p95 is not None:
                text = f"p95 latency of {scope} is {p95:.2f} s over {_over(span, window_s)}"
                reading = self._reading(
                    "latency_p95", labels, p95, config.p95_latency_s, window_s, text, "s", "slow", span, first
                )
                reading.spike_p95 = p95
                yield reading
        for rule, threshold, minutes, name in (
            ("error_5xx_rate", config.rate_5xx, 5, "5xx"),
            ("rate_429", config.rate_429, 3, "429"),
        ):
            first, window_s = minute - minutes, minutes * 60.0
            span = self._span(first, now, window_s)
            if threshold is None or span is None:
                continue
            counts = self._merged(scope, first, minute)
            over = _over(span, window_s)
            if counts.sent >= config.min_calls:
                share = (counts.s5xx if name == "5xx" else counts.s429) / counts.sent
                text = f"{share:.1%} of {counts.sent} calls to {scope} ended in {name} over {over}"
                yield self._reading(rule, labels, share, threshold, window_s, text, "%", name, span, first)
            # The provider's side: retries hide its 5xx and 429 from callers, not from the latency.
            if counts.attempts >= config.min_calls:
                share = (counts.a5xx if name == "5xx" else counts.a429) / counts.attempts
                text = (
                    f"{share:.1%} of {counts.attempts} attempts to {scope} were answered {name} "
                    f"over {over} (retries included)"
                )
                yield self._reading(
                    f"provider_{rule}", labels, share, threshold, window_s, text, "%", name, span, first
                )
        if config.latency_jump_s is not None:
            # The last 2 minutes against the hour before them: both windows must be covered.
            first, before_first = minute - 2, minute - 62
            span = self._span(first, now, 120.0)
            before_span = self._span(before_first, first * 60.0, 3600.0)
            if span is None or before_span is None:
                return
            recent = self._merged(scope, first, minute)
            before = self._merged(scope, before_first, first - 1)
            if recent.sent >= config.min_calls and before.sent >= config.min_calls:
                now_p95, then_p95 = recent.latency.quantile(0.95), before.latency.quantile(0.95)
                if now_p95 is not None and then_p95 is not None:
                    jump = now_p95 - then_p95
                    text = (
                        f"p95 latency of {scope} jumped by {jump * 1000:.0f} ms over {_over(span, 120.0)} "
                        f"({then_p95:.2f} s over the {fmt_duration(before_span)} before -> {now_p95:.2f} s)"
                    )
                    reading = self._reading(
                        "latency_jump",
                        labels,
                        jump,
                        config.latency_jump_s,
                        120.0,
                        text,
                        "ms",
                        "slow",
                        span,
                        first,
                    )
                    reading.spike_p95 = then_p95  # slower than the hour before: the calls worth a trace
                    yield reading

    def _reading(
        self,
        rule: str,
        labels: dict[str, str],
        value: float,
        warning: float,
        window_s: float,
        text: str,
        unit: str,
        examples: str,
        span_s: float,
        first_minute: int | None,
    ) -> _Reading:
        page = warning * self.config.page_factor
        return _Reading(
            rule,
            labels,
            value,
            warning,
            page,
            window_s,
            text,
            unit,
            examples,
            span_s=span_s,
            first_minute=first_minute,
        )

    def _merged(self, scope: str, first: int, last: int) -> Counts:
        out = Counts()
        for bucket in self._short.window(first, last):
            found = bucket.get(scope)
            if found is not None:
                out.merge(found)
        return out

    def _slo_readings(self, minute: int, now: float) -> Iterable[_Reading]:
        config = self.config
        if config.slo is None:
            return
        budget = 1.0 - config.slo
        for long_m, short_m, burn, severity in _BURN_WINDOWS:
            # Multiwindow: both the long and the short window must be covered, and both must burn.
            long_first, short_first = minute - long_m, minute - short_m
            long_span = self._span(long_first, now, long_m * 60.0)
            short_span = self._span(short_first, now, short_m * 60.0)
            if long_span is None or short_span is None:
                continue
            long_rate = self._burn_rate(long_first, minute, budget)
            short_rate = self._burn_rate(short_first, minute, budget)
            if long_rate is None or short_rate is None:
                continue
            text = (
                f"error budget of the {config.slo:.2%} SLO burning at {long_rate:.1f}x over "
                f"{_over(long_span, long_m * 60.0)} and {short_rate:.1f}x over "
                f"{_over(short_span, short_m * 60.0)}"
            )
            value = min(long_rate, short_rate)  # both windows must burn
            reading = self._reading(
                f"slo_burn_{severity}",
                {},
                value,
                burn,
                long_m * 60.0,
                text,
                "x",
                "error",
                long_span,
                short_first,
            )
            reading.page, reading.severity = burn, severity  # the window pair sets the tier
            yield reading

    def _burn_rate(self, first: int, last: int, budget: float) -> float | None:
        sent = errors = 0
        for bucket in self._long.window(first, last):
            t = bucket.get(_ALL)
            if t is not None:
                sent, errors = sent + t.sent, errors + t.errors
        return errors / sent / budget if sent >= self.config.min_calls else None

    def _volume_readings(self, minute: int, now: float) -> Iterable[_Reading]:
        config = self.config
        expected = config.expected_tokens_per_hour or self._expected_tokens
        # 59 whole minutes and this one: never more than the expected hour it is compared with.
        first = minute - 59
        span = self._span(first, now, 3600.0)
        if config.token_burn is not None and expected and span is not None:
            hour_tokens = self._merged(_ALL, first, minute).tokens
            burn = hour_tokens / expected
            text = (
                f"{hour_tokens:,.0f} tokens over {_over(span, 3600.0)}, {burn - 1:+.0%} "
                f"against the expected {expected:,.0f}"
            )
            yield self._reading(
                "token_burn",
                {},
                burn,
                1.0 + config.token_burn,
                3600.0,
                text,
                "burn",
                "call",
                span,
                minute - 5,
            )
        # Clock-hour totals are judged on what was seen: a part of the hour can only add up to less.
        hour_span = now - max(self._hour * _HOUR, self._started)
        this_hour = (
            "this hour"
            if self._started <= self._hour * _HOUR
            else (f"in the {fmt_duration(hour_span)} of this hour since the engine started")
        )
        if config.hourly_budget_usd is not None:
            spent, budget = sum(row[1] for row in self._tenants.values()), config.hourly_budget_usd
            text = f"${spent:,.2f} spent {this_hour}, {spent / budget:.0%} of the ${budget:,.2f} budget"
            yield self._reading(
                "cost_over_budget", {}, spent / budget, 1.0, 3600.0, text, "share", "call", hour_span, None
            )
        for tenant, row in self._tenants.items():
            if tenant == _OTHER:
                continue  # the tenants past the cap together, not one tenant: no budget, no baseline
            tokens, cost = row[0], row[1]
            labels = {"tenant": tenant}
            if config.tenant_hourly_budget_usd is not None:
                budget = config.tenant_hourly_budget_usd
                share = cost / budget
                text = f"tenant {tenant} spent ${cost:,.2f} {this_hour}, {share:.0%} of its ${budget:,.2f}"
                yield self._reading(
                    "tenant_cost_over_budget",
                    labels,
                    cost / budget,
                    1.0,
                    3600.0,
                    text,
                    "share",
                    "call",
                    hour_span,
                    None,
                )
            median = self._baselines.get(tenant)
            factor = config.tenant_anomaly_factor
            if factor is not None and median and tokens >= config.tenant_anomaly_min_tokens:
                text = (
                    f"tenant {tenant} used {tokens:,.0f} tokens {this_hour}, {tokens / median:.1f}x its "
                    f"median hour ({median:,.0f})"
                )
                yield self._reading(
                    "tenant_token_anomaly",
                    labels,
                    tokens / median,
                    factor,
                    3600.0,
                    text,
                    "x",
                    "call",
                    hour_span,
                    None,
                )

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
            summary=self._scrub(summary),  # a user rule's text may quote what a provider said
            value=reading.value,
            threshold=threshold,
            window_s=reading.window_s,
            labels=dict(reading.labels),
            at=datetime.fromtimestamp(now, UTC),
            since=datetime.fromtimestamp(since, UTC),
            evidence=self._evidence(reading, now),
            span_s=reading.span_s,
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

    def _evidence(self, reading: _Reading, now: float) -> Evidence:
        """The subject's own top tenants and example calls: its model, its tenant, or every call."""
        tenant = reading.labels.get("tenant")
        model = reading.labels.get("model")
        scope = _ALL if model is None else model if model in self._models else _OTHER
        calls: dict[str, float] = {}
        tokens: dict[str, float] = {}
        with self._lock:
            if reading.first_minute is None:  # a clock-hour rule: this hour's totals
                hour = self._tenants
                rows = hour.items() if tenant is None else [(tenant, hour.get(tenant, [0.0, 0.0, 0.0]))]
                for name, row in rows:
                    calls[name], tokens[name] = row[2], row[0]
                span = now - max(self._hour * _HOUR, self._started)
            else:
                minute = int(now // 60)
                first = max(reading.first_minute, minute - _EVIDENCE_MINUTES + 1)
                for bucket in self._subject_tenants.window(first, minute):
                    for name, (n, t) in bucket.get(scope, {}).items():
                        if tenant is None or name == tenant:
                            calls[name] = calls.get(name, 0.0) + n
                            tokens[name] = tokens.get(name, 0.0) + t
                span = now - max(first * 60.0, self._started)
            if tenant is not None:
                examples = list(self._tenant_examples.get(tenant, ()))
            elif reading.examples == "call":
                examples = list(self._recent)
            else:
                examples = list(self._examples.get((reading.examples, scope), ()))
        return Evidence(
            top_tenants_by_requests=_top(calls),
            top_tenants_by_tokens=_top(tokens),
            correlation_ids=tuple(c for c, _ in examples),
            request_ids=tuple(r for _, r in examples if r),
            window_s=max(0.0, span),
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
        for tenant, row in tenants.items():
            fields["t:" + tenant] = row[0]
            fields["c:" + tenant] = row[1]
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


def _top(values: dict[str, float]) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:5])


def _over(span_s: float, window_s: float) -> str:
    """The span a rule judged: "the last 5 min 20 s", or "the last 4 min 10 s of a 5 min window"."""
    if span_s >= window_s:
        return f"the last {fmt_duration(span_s)}"
    return f"the last {fmt_duration(span_s)} of a {fmt_duration(window_s)} window"


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
