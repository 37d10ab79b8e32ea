"""Per-tenant and per-key rate limits, emergency throttles and budgets: what to check, what it means.

Rate limits are token buckets (GCRA, see `llmpulse.state`) for requests and
tokens per minute. A call reserves its tokens up front from the pre-flight
estimate (``prompt_tokens_estimate + max_tokens``) and the difference with
its actual usage is settled when it ends. A limited call waits up to
``rate_limit_wait_s`` (never past its deadline) and is otherwise refused with
``llmpulse.RateLimitedError``.

Budgets cap USD and tokens per tenant per hour and per day; when one is
spent, the action decides: "alert" (a warning and a metric; the call goes
on), "downgrade" (the call goes down its fallback chain) or "block"
(``llmpulse.BudgetExceededError``). Spending is recorded when a call ends.

This module only decides which checks apply and names their keys; the
attempt loop talks to the store (one shell for threads, one for tasks).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ._shared import publish_throttle

__all__ = [
    "Budget",
    "BudgetAction",
    "BudgetCheck",
    "RateCheck",
    "RateLimit",
    "budget_checks",
    "rate_checks",
    "throttle",
    "throttles",
]

BudgetAction = Literal["alert", "downgrade", "block"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Requests and tokens per minute (None: unlimited).

    Attributes:
        requests_per_min: Calls admitted per minute (a minute's worth may come at once).
        tokens_per_min: Input + output tokens per minute, reserved from the estimate.

    """

    requests_per_min: float | None = None
    tokens_per_min: float | None = None

    def __post_init__(self) -> None:
        for name in ("requests_per_min", "tokens_per_min"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"RateLimit.{name} must be positive or None, got {value!r}")


@dataclass(frozen=True, slots=True)
class Budget:
    """Spending caps per tenant (None: no cap) and what happens when one is reached.

    Attributes:
        usd_per_hour: USD per clock hour.
        usd_per_day: USD per UTC day.
        tokens_per_hour: Input + output tokens per clock hour.
        tokens_per_day: Input + output tokens per UTC day.
        action: "alert" (default), "downgrade" (use the fallback chain) or "block".

    """

    usd_per_hour: float | None = None
    usd_per_day: float | None = None
    tokens_per_hour: float | None = None
    tokens_per_day: float | None = None
    action: BudgetAction = "alert"

    def __post_init__(self) -> None:
        for name in ("usd_per_hour", "usd_per_day", "tokens_per_hour", "tokens_per_day"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"Budget.{name} must be positive or None, got {value!r}")
        if self.action not in ("alert", "downgrade", "block"):
            raise ValueError(f"Budget.action must be alert, downgrade or block, got {self.action!r}")


@dataclass(frozen=True, slots=True)
class RateCheck:
    """One bucket a call must fit in."""

    key: str
    rate_per_s: float
    burst: float
    cost: float
    what: str  # for messages and metrics: "tenant requests", "key tokens", "throttle"


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """One budget window a call's tenant is checked against and charged to."""

    key: str
    window_s: float
    limit: float
    unit: Literal["usd", "tokens"]
    what: str  # "usd per hour", ...


_HOUR, _DAY = 3600.0, 86400.0


def rate_checks(
    tenant_limit: RateLimit | None,
    key_limit: RateLimit | None,
    *,
    tenant: str | None,
    key_id: str,
    tokens: int,
    throttle_rpm: float | None,
) -> list[RateCheck]:
    """The buckets a call must fit in: its tenant's, its API key's, and any emergency throttle."""
    checks: list[RateCheck] = []
    for scope, name, limit in (("tenant", tenant, tenant_limit), ("key", key_id, key_limit)):
        if limit is None or not name:
            continue
        if limit.requests_per_min is not None:
            rpm = limit.requests_per_min
            checks.append(RateCheck(f"rl:req:{scope}:{name}", rpm / 60.0, rpm, 1.0, f"{scope} requests"))
        if limit.tokens_per_min is not None and tokens > 0:
            tpm = limit.tokens_per_min
            checks.append(
                RateCheck(f"rl:tok:{scope}:{name}", tpm / 60.0, tpm, float(tokens), f"{scope} tokens")
            )
    if tenant and throttle_rpm is not None:
        rpm = throttle_rpm
        checks.append(
            RateCheck(f"rl:throttle:{tenant}:{rpm:g}", rpm / 60.0, max(rpm / 60.0, 1.0), 1.0, "throttle")
        )
    return checks


def budget_checks(budget: Budget | None, tenant: str | None) -> list[BudgetCheck]:
    """The budget windows of a tenant."""
    if budget is None or not tenant:
        return []
    spec = (
        ("usd_per_hour", _HOUR, "usd"),
        ("usd_per_day", _DAY, "usd"),
        ("tokens_per_hour", _HOUR, "tokens"),
        ("tokens_per_day", _DAY, "tokens"),
    )
    checks = []
    for field, window, unit in spec:
        limit = getattr(budget, field)
        if limit is not None:
            what = field.replace("_", " ")
            checks.append(BudgetCheck(f"budget:{unit}:{int(window)}:{tenant}", window, limit, unit, what))  # type: ignore[arg-type]
    return checks


_throttle_lock = threading.Lock()
_throttles: dict[str, tuple[float, float]] = {}


def throttle(tenant: str, *, requests_per_min: float, for_s: float) -> None:
    """Apply an emergency limit to ``tenant``, now, for ``for_s`` seconds.

    The runbook's first move when one tenant floods a provider: it applies on
    top of any configured limit, to every wrapped client of the process and,
    when a shared store (Redis) is configured, of every replica (within about
    a second; the limit itself is then one bucket for all replicas).

    Args:
        tenant: The tenant (as set with ``llmpulse.context(tenant=...)``).
        requests_per_min: Calls per minute it may still make.
        for_s: How long the throttle lasts.

    Raises:
        ValueError: A value is not positive.

    """
    if not requests_per_min > 0 or not for_s > 0:
        raise ValueError("throttle() needs requests_per_min > 0 and for_s > 0")
    until = time.time() + for_s
    with _throttle_lock:
        _throttles[tenant] = (requests_per_min, until)
    publish_throttle(tenant, requests_per_min, until)


def throttles() -> Mapping[str, tuple[float, float]]:
    """The emergency throttles: tenant -> (requests per minute, until, epoch seconds)."""
    return _throttles
