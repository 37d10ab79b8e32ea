"""How long each attempt may take, and the whole call.

The field's advice is "timeout <= the provider's SLA + 500 ms" (8 s in its
example), but one number does not fit every call:

- A non-streamed call gets its response headers only once the whole answer
  is generated, so its read budget grows with the answer it asked for:
  ``read_s + read_per_token_s * max_tokens`` (``assumed_max_tokens`` when
  the request sets none), capped at ``read_max_s``. The defaults, 8 s plus
  20 ms per token (a 50 tokens/s floor), give 8.3 s for a 16-token answer
  and 18 s for an unbounded one.
- A stream gets its headers at once; then each chunk should follow the last
  within ``stream_idle_s``. httpcore reads one timeout per phase, so the
  wait for the headers uses ``stream_first_byte_s`` and every body read
  (the first token included) ``stream_idle_s``. Reasoning models that think
  silently for long need a larger ``stream_idle_s``.
- Connecting: ``connect_s`` (5 s, the SDKs' default): longer means the
  network, not the provider, is the problem.
- The whole call (attempts, backoff, queueing): ``total_s``, by default
  twice an attempt's budget (connect + read) plus 2 s, room for one full retry;
  a retry that would end after it is not made (the call fails at once).
  For a stream the total covers the time until a response is handed over.

A per-call ``timeout=`` (the SDK's ``read`` timeout of the request) caps
every one of these: it can shorten them, never lengthen them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Timeouts"]

_NONE: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-attempt and per-call time limits (seconds).

    Attributes:
        connect_s: Opening a connection (TCP and TLS).
        read_s: A non-streamed call's wait for its answer, before the per-token part.
        read_per_token_s: Added per requested output token (``max_tokens``).
        assumed_max_tokens: Used when the request sets no ``max_tokens``.
        read_max_s: The largest non-streamed read budget.
        stream_first_byte_s: A stream's wait for its response headers.
        stream_idle_s: A stream's wait for each chunk, the first one included.
        total_s: The whole call, retries and backoff included; None: derived
            (twice an attempt's connect + read budget, plus 2 s).

    Raises:
        ValueError: A value is not positive.

    """

    connect_s: float = 5.0
    read_s: float = 8.0
    read_per_token_s: float = 0.02
    assumed_max_tokens: int = 500
    read_max_s: float = 300.0
    stream_first_byte_s: float = 10.0
    stream_idle_s: float = 30.0
    total_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("connect_s", "read_s", "read_max_s", "stream_first_byte_s", "stream_idle_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Timeouts.{name} must be positive, got {getattr(self, name)!r}")
        if self.read_per_token_s < 0 or self.assumed_max_tokens < 0:
            raise ValueError("Timeouts.read_per_token_s and assumed_max_tokens must be >= 0")
        if self.total_s is not None and not self.total_s > 0:
            raise ValueError(f"Timeouts.total_s must be positive or None, got {self.total_s!r}")

    def attempt_read_s(self, *, streamed: bool, max_tokens: int | None) -> float:
        """The read budget of one attempt (for a stream: the wait for its headers)."""
        if streamed:
            return self.stream_first_byte_s
        tokens = self.assumed_max_tokens if max_tokens is None else max_tokens
        return min(self.read_max_s, self.read_s + self.read_per_token_s * tokens)

    def total_for(self, *, streamed: bool, max_tokens: int | None) -> float:
        """The whole call's deadline, before any per-call ``timeout=`` cap."""
        if self.total_s is not None:
            return self.total_s
        attempt = self.connect_s + self.attempt_read_s(streamed=streamed, max_tokens=max_tokens)
        return 2 * attempt + 2.0

    def attempt_extension(
        self, sdk_timeout: Any, *, streamed: bool, max_tokens: int | None, remaining_s: float
    ) -> dict[str, Any]:
        """The httpcore ``timeout`` extension of one attempt.

        Args:
            sdk_timeout: The request's own ``timeout`` extension (from the
                client or the per-call ``timeout=``): caps every phase.
            streamed: Whether the call streams.
            max_tokens: The requested output cap.
            remaining_s: Seconds left before the call's deadline.

        """
        sdk = sdk_timeout if isinstance(sdk_timeout, dict) else _NONE
        floor = max(remaining_s, 0.001)

        def cap(ours: float, phase: str) -> float:
            # Runs four times per attempt: plain comparisons, no min()/max() calls.
            theirs = sdk.get(phase)
            value = ours if theirs is None or ours < theirs else theirs
            return value if value < floor else floor

        return {
            "connect": cap(self.connect_s, "connect"),
            "read": cap(self.attempt_read_s(streamed=streamed, max_tokens=max_tokens), "read"),
            "write": cap(self.connect_s + self.read_s, "write"),
            "pool": cap(self.connect_s, "pool"),
        }

    def body_read_s(self, sdk_timeout: Any, *, streamed: bool) -> float | None:
        """The read timeout for the body once headers arrived (streams: the idle gap)."""
        if not streamed:
            return None
        theirs = sdk_timeout.get("read") if isinstance(sdk_timeout, dict) else None
        return self.stream_idle_s if theirs is None else min(self.stream_idle_s, theirs)
