"""llmpulse: see and control every LLM API call.

``client = llmpulse.wrap(OpenAI())`` returns a client of the same class that
emits one `CallEvent` per call (structured logs, Prometheus metrics, tokens,
cost, latency) while behaving exactly like the SDK's.
"""

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
from ._wrap import unwrap, wrap
from .events import (
    AttemptEvent,
    CallEvent,
    Event,
    InteractionSummary,
    NetworkTimings,
    RateLimitInfo,
)
from .exceptions import ConfigError, LLMPulseError, UnsupportedClientError
from .sinks import JsonlSink, Sink, StructlogSink

__all__ = [
    "AttemptEvent",
    "CallEvent",
    "ConfigError",
    "Context",
    "Event",
    "InteractionSummary",
    "JsonlSink",
    "LLMPulseError",
    "NetworkTimings",
    "RateLimitInfo",
    "Settings",
    "Sink",
    "StructlogSink",
    "UnsupportedClientError",
    "aflush",
    "configure",
    "context",
    "context_from_headers",
    "current_context",
    "flush",
    "interaction",
    "shutdown",
    "sink_stats",
    "stats",
    "unwrap",
    "with_context",
    "wrap",
]

__version__ = "0.1.0"
