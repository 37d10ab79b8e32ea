"""What an alert is, and where alerts go."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = ["Alert", "AlertSink", "Evidence", "Severity", "Status"]

Severity = Literal["warning", "page"]
"""``warning`` at the rule's threshold; ``page`` at 30 % beyond it (by default)."""

Status = Literal["firing", "resolved"]


@dataclass(frozen=True, slots=True)
class Evidence:
    """What an on-call person needs to start: who is calling, and calls to look up.

    All of it is about the alert's own subject: the calls to its model, the
    calls of its tenant, or every call for a rule over everything.

    Attributes:
        top_tenants_by_requests: Up to 5 ``(tenant, calls)`` over ``window_s``.
        top_tenants_by_tokens: Up to 5 ``(tenant, tokens)`` over ``window_s``.
        correlation_ids: Recent calls of the subject that match the rule (to grep the logs for).
        request_ids: The provider's request ids of those calls (to quote to the provider).
        window_s: Seconds of calls the top tenants count: the rule's own window up
            to the last 5 minutes, this clock hour for the clock-hour rules, less
            while the engine is younger than that.

    """

    top_tenants_by_requests: tuple[tuple[str, float], ...] = ()
    top_tenants_by_tokens: tuple[tuple[str, float], ...] = ()
    correlation_ids: tuple[str, ...] = ()
    request_ids: tuple[str, ...] = ()
    window_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Alert:
    """A rule crossed its threshold (``status="firing"``) or came back under it (``"resolved"``).

    One alert is sent when a rule starts firing, one when it escalates from
    warning to page, and one when it resolves: never one per evaluation.

    Attributes:
        rule: The rule's name, e.g. "latency_p95", "error_5xx_rate", "tenant_token_anomaly".
        status: "firing" or "resolved".
        severity: "warning" or "page" (a resolved alert keeps the last one it fired at).
        summary: One line for a chat message or a pager, with the numbers.
        value: The measured value (seconds, a ratio, tokens, USD, a burn rate).
        threshold: The threshold of ``severity`` it was compared with.
        window_s: The rule's window (300.0 for a 5-minute rule).
        labels: What the alert is about: ``model``, ``tenant`` (or nothing: everything).
        evidence: Top tenants and example calls.
        at: When it was evaluated (UTC).
        since: When it started firing (UTC).
        span_s: Seconds of data the value was judged over: the window's whole
            minutes and the current one (so at least ``window_s``; for
            ``token_burn``, 59 whole minutes and the current one, at most the
            hour it is compared with), or less while the engine is younger than
            the window (at least ``AlertConfig.min_coverage`` of it); for the
            clock-hour rules, this hour so far; None for a per-call rule.

    """

    rule: str
    status: Status
    severity: Severity
    summary: str
    value: float
    threshold: float
    window_s: float
    labels: Mapping[str, str]
    at: datetime
    since: datetime
    evidence: Evidence = field(default_factory=Evidence)
    span_s: float | None = None

    @property
    def key(self) -> str:
        """The rule and labels: one alert of each key fires at a time."""
        return self.rule + "".join(f",{k}={v}" for k, v in sorted(self.labels.items()))

    def to_dict(self) -> dict[str, Any]:
        """The alert as plain JSON-serialisable values."""
        out = asdict(self)
        out["labels"] = dict(self.labels)
        out["at"] = self.at.isoformat()
        out["since"] = self.since.isoformat()
        return out


@runtime_checkable
class AlertSink(Protocol):
    """Anything that takes alerts: ``emit(alert)`` is called off the app's threads, one alert at a time."""

    def emit(self, alert: Alert) -> None:
        """Deliver one alert; an exception is counted and logged, never raised into the app."""
