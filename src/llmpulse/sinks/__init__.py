"""⑤ Where events go: sinks are anything with ``emit(event)``."""

from ._base import Sink
from ._jsonl import JsonlSink
from ._otel import OtelSink
from ._structlog import StructlogSink

__all__ = ["JsonlSink", "OtelSink", "Sink", "StructlogSink"]
