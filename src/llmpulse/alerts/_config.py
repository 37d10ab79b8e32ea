"""Alert thresholds: defaults from production practice, each one configurable."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..exceptions import ConfigError

if TYPE_CHECKING:
    from ..events import CallEvent

__all__ = ["AlertConfig", "Rule"]

Rule = Callable[["CallEvent"], "str | None"]
"""A user rule: looks at one finished call, returns a message when it trips (else None)."""


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """What the in-process alerts watch, and when they fire.

    Every threshold is the warning level; the page level is ``page_factor``
    (1.3) times it, e.g. p95 > 600 ms warns and p95 > 780 ms pages. Rates
    and percentiles need ``min_calls`` calls in their window, so three slow
    calls at 3 a.m. page nobody, and every rule over a sliding window needs
    the engine to have watched ``min_coverage`` of it, so a process 11 s old
    judges no 5-minute rule. None turns a rule off.

    Attributes:
        p95_latency_s: p95 latency per model over ``p95_window_s``.
        p95_window_s: Its window ("sustained 5 min").
        rate_5xx: Share of calls whose final answer was a 5xx, per model, over 5 min.
        rate_429: Share of calls whose final answer was a 429, per model, over 3 min.
        latency_jump_s: p95 latency of the last 2 min above the p95 of the hour
            before, per model (the provider got slower).
        slo: The availability SLO (share of calls sent that succeed); its error
            budget burn is watched over 1 h and 5 min (page at 14.4x) and over
            6 h and 30 min (warning at 6x), the SRE workbook's multiwindow rule.
        token_burn: Tokens of the last hour above the expected hour by this
            share (0.25: 25 % over).
        expected_tokens_per_hour: The expected hour; None: the same hour of the
            week before, from the stored hourly totals.
        hourly_budget_usd: USD per clock hour, all tenants together.
        tenant_hourly_budget_usd: USD per clock hour for each tenant.
        tenant_anomaly_factor: A tenant's tokens this clock hour above this many
            times the median of its stored hourly totals.
        tenant_anomaly_min_tokens: ...and at least this many tokens (no alert
            for a tenant going from 3 to 40 tokens).
        baseline_days: Days of hourly totals the tenant baselines read (at most 90).
        baseline_min_hours: Hourly totals a tenant needs before its baseline is
            trusted (the cold start: no anomaly alert for a tenant seen less).
        slow_call_s: A single call slower than this (per-call rule).
        max_output_tokens: A single answer longer than this (per-call rule).
        rules: Your own per-call rules.
        page_factor: Page level = threshold x this.
        min_calls: Calls a window needs before its rates and percentiles count.
        min_coverage: Share of a sliding window the engine must have watched
            before the rule judges it (0.8: 4 min of a 5 min window, 48 min of
            the SLO's hour, 4 h 48 min of its 6 hours); both windows of a burn
            rate. Clock-hour totals (budgets, tenant anomalies) and per-call
            rules judge at once.
        evaluate_every_s: How often the windowed rules are evaluated.

    Raises:
        ConfigError: A value out of range, naming the field.

    """

    p95_latency_s: float | None = 0.6
    p95_window_s: float = 300.0
    rate_5xx: float | None = 0.02
    rate_429: float | None = 0.01
    latency_jump_s: float | None = 0.3
    slo: float | None = 0.99
    token_burn: float | None = 0.25
    expected_tokens_per_hour: float | None = None
    hourly_budget_usd: float | None = None
    tenant_hourly_budget_usd: float | None = None
    tenant_anomaly_factor: float | None = 10.0
    tenant_anomaly_min_tokens: float = 1000.0
    baseline_days: int = 7
    baseline_min_hours: int = 24
    slow_call_s: float | None = 15.0
    max_output_tokens: int | None = 8000
    rules: Sequence[Rule] = ()
    page_factor: float = 1.3
    min_calls: int = 20
    min_coverage: float = 0.8
    evaluate_every_s: float = 10.0

    def __post_init__(self) -> None:
        self._check_counts()
        for name in (
            "p95_latency_s",
            "rate_5xx",
            "rate_429",
            "latency_jump_s",
            "token_burn",
            "expected_tokens_per_hour",
            "hourly_budget_usd",
            "tenant_hourly_budget_usd",
            "tenant_anomaly_factor",
            "slow_call_s",
            "max_output_tokens",
        ):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"AlertConfig.{name} must be a number > 0 (or None: off), got {value!r}")
        if self.slo is not None and not 0 < self.slo < 1:
            raise ConfigError(f"AlertConfig.slo must be a fraction in (0, 1), e.g. 0.99, got {self.slo!r}")
        if not 1 <= self.baseline_days <= 90:
            raise ConfigError(f"AlertConfig.baseline_days must be 1-90, got {self.baseline_days!r}")
        if not self.page_factor >= 1:
            raise ConfigError(f"AlertConfig.page_factor must be >= 1, got {self.page_factor!r}")
        for name in ("p95_window_s", "evaluate_every_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"AlertConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("min_calls", "baseline_min_hours"):
            if not getattr(self, name) >= 1:
                raise ConfigError(f"AlertConfig.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if isinstance(self.min_coverage, bool) or not 0 < self.min_coverage <= 1:
            raise ConfigError(
                f"AlertConfig.min_coverage must be a share in (0, 1], got {self.min_coverage!r}"
            )
        for rule in self.rules:
            if not callable(rule):
                raise ConfigError(f"AlertConfig.rules: {rule!r} is not callable (a rule takes a CallEvent)")

    def _check_counts(self) -> None:
        # 1.5 calls or True days would pass the range checks.
        for name in ("baseline_days", "baseline_min_hours", "max_output_tokens", "min_calls"):
            value = getattr(self, name)
            if (value is not None or name != "max_output_tokens") and (
                isinstance(value, bool) or not isinstance(value, int)
            ):
                raise ConfigError(f"AlertConfig.{name} must be an integer, got {value!r}")
