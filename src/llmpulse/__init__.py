"""llmpulse: see and control every LLM API call.

``client = llmpulse.wrap(OpenAI())`` returns a client of the same class that
emits one `CallEvent` per call (structured logs, Prometheus metrics, tokens,
cost, latency), with the SDK's own answers, exceptions and streams
(docs/compatibility.md measures how far that holds).
"""

from typing import TYPE_CHECKING

from ._config import Settings, configure
from ._context import (
    Context,
    context,
    context_from_headers,
    current_context,
    interaction,
    with_context,
)
from ._pipeline import aflush, flush, shutdown, sink_stats, stats
from ._runbook import elevate_sampling, top_tenants
from ._stats import GroupStats, StatsSnapshot
from ._wrap import unwrap, wrap
from .alerts import Alert, AlertConfig, LogAlertSink, WebhookAlertSink
from .events import (
    AttemptEvent,
    CallEvent,
    Event,
    InteractionSummary,
    NetworkTimings,
    RateLimitInfo,
)
from .exceptions import (
    BudgetExceededError,
    CircuitOpenError,
    ConfigError,
    DeadlineExceededError,
    LLMPulseError,
    MalformedResponseError,
    OverloadedError,
    PolicyError,
    RateLimitedError,
    UnsupportedClientError,
)
from .policies import (
    BreakerConfig,
    Budget,
    ConcurrencyConfig,
    Fallback,
    Policies,
    RateLimit,
    Timeouts,
    UnavailableCall,
    throttle,
)
from .sinks import JsonlSink, OtelSink, Sink, StructlogSink
from .sinks._dispatch import SinkStats

__all__ = [
    "Alert",
    "AlertConfig",
    "AttemptEvent",
    "BreakerConfig",
    "Budget",
    "BudgetExceededError",
    "CallEvent",
    "CircuitOpenError",
    "ConcurrencyConfig",
    "ConfigError",
    "Context",
    "DeadlineExceededError",
    "Event",
    "Fallback",
    "GroupStats",
    "InteractionSummary",
    "JsonlSink",
    "LLMPulseError",
    "LogAlertSink",
    "MalformedResponseError",
    "MetricsServer",
    "NetworkTimings",
    "OtelSink",
    "OverloadedError",
    "Policies",
    "PolicyError",
    "RateLimit",
    "RateLimitInfo",
    "RateLimitedError",
    "Settings",
    "Sink",
    "SinkStats",
    "StatsSnapshot",
    "StructlogSink",
    "Timeouts",
    "UnavailableCall",
    "UnsupportedClientError",
    "WebhookAlertSink",
    "aflush",
    "configure",
    "context",
    "context_from_headers",
    "current_context",
    "elevate_sampling",
    "flush",
    "interaction",
    "metrics_asgi_app",
    "metrics_wsgi_app",
    "shutdown",
    "sink_stats",
    "start_metrics_server",
    "stats",
    "throttle",
    "top_tenants",
    "unwrap",
    "with_context",
    "wrap",
]

__version__ = "0.1.0"

_LAZY = {
    "MetricsServer": "._metrics_server",
    "metrics_asgi_app": "._metrics_server",
    "metrics_wsgi_app": "._metrics_server",
    "start_metrics_server": "._metrics_server",
}


def __getattr__(name: str) -> object:
    # prometheus_client's exposition code pulls in http.server: import it
    # only when an app actually serves /metrics.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmpulse' has no attribute {name!r}")
    import importlib  # noqa: PLC0415

    return getattr(importlib.import_module(module, __name__), name)


if TYPE_CHECKING:
    from ._metrics_server import MetricsServer, metrics_asgi_app, metrics_wsgi_app, start_metrics_server
