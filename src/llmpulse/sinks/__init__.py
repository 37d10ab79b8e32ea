"""⑤ Where events go: sinks are anything with ``emit(event)``."""

from ._base import Sink
from ._jsonl import JsonlSink
from ._structlog import StructlogSink

__all__ = ["JsonlSink", "Sink", "StructlogSink"]
