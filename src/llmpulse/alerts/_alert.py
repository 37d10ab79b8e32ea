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

    Attributes:
        top_tenants_by_requests: Up to 5 ``(tenant, calls)`` of the last 5 minutes.
        top_tenants_by_tokens: Up to 5 ``(tenant, tokens)`` of the last 5 minutes.
        correlation_ids: Recent calls that match the rule (to grep the logs for).
        request_ids: The provider's request ids of those calls (to quote to the provider).

    """

    top_tenants_by_requests: tuple[tuple[str, float], ...] = ()
    top_tenants_by_tokens: tuple[tuple[str, float], ...] = ()
    correlation_ids: tuple[str, ...] = ()
    request_ids: tuple[str, ...] = ()


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
        window_s: The window the value was measured over.
        labels: What the alert is about: ``model``, ``tenant`` (or nothing: everything).
        evidence: Top tenants and example calls.
        at: When it was evaluated (UTC).
        since: When it started firing (UTC).

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
