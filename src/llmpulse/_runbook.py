"""Runbook helpers: what an on-call person types first.

`top_tenants` answers "who is calling?"; `elevate_sampling` keeps every
call's trace and attempt events for a while, to see what is going on. With a
shared store (Redis) both act across every replica, not just the process
they are called in. The PromQL equivalents are in docs/prometheus-alerts.md.
"""

from __future__ import annotations

import time
from typing import Literal

from ._pipeline import get_pipeline
from .policies._shared import publish_elevation

__all__ = ["elevate_sampling", "top_tenants"]


def top_tenants(
    window_s: float = 300.0, by: Literal["requests", "tokens", "cost"] = "requests", n: int = 5
) -> list[tuple[str, float]]:
    """The tenants with the most calls, tokens or cost over the last ``window_s`` seconds.

    With a shared store (``LLMPULSE_REDIS_URL``) the count is every replica's,
    in whole minutes (plus this process's current minute); without one, this
    process's, to 10 seconds.

    Args:
        window_s: How far back to look.
        by: "requests", "tokens" or "cost" (USD).
        n: How many tenants.

    Returns:
        Up to ``n`` ``(tenant, value)`` pairs, largest first.

    Raises:
        ValueError: For an unknown ``by`` or a window that is not positive.

    """
    if by not in ("requests", "tokens", "cost"):
        raise ValueError(f"by must be 'requests', 'tokens' or 'cost', got {by!r}")
    if not window_s > 0:
        raise ValueError(f"window_s must be positive, got {window_s!r}")
    pipeline = get_pipeline()
    engine = pipeline.alerts
    if engine is not None and engine.shared:
        return engine.top_tenants(window_s, by, n)
    return pipeline.stats.top("tenant", by, n, window_s)


def elevate_sampling(minutes: float = 15.0) -> None:
    """Keep the details (traces, attempt events, captured content) of every call for ``minutes``.

    In this process at once and, with a shared store, in every replica within
    about a second. It ends by itself.

    Raises:
        ValueError: If ``minutes`` is not positive.

    """
    if not minutes > 0:
        raise ValueError(f"minutes must be positive, got {minutes!r}")
    seconds = minutes * 60.0
    get_pipeline().sampler.elevate(seconds)
    publish_elevation(time.time() + seconds)
