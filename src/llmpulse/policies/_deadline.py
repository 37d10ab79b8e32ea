"""How long each attempt may take, and the whole call: the user's limits unless told otherwise.

By default llmpulse sets no time limit of its own. Each attempt gets the
timeout the SDK would give it (``OpenAI(timeout=...)``, ``with_options``,
a per-call ``timeout=``, an ``httpx.Timeout`` per phase, or the SDK's own
default, anthropic's computed non-streaming timeout included), and there
is no deadline over the whole call, because the bare SDK has none: an
answer that takes 25 s with a 600 s timeout arrives after 25 s, once.

Every limit here is a policy the user opts into. When set, it caps the
user's value for its phase (it can shorten an attempt, never lengthen
one):

- ``connect_s``: opening a connection (TCP and TLS).
- ``read_s``: a non-streamed call gets its response headers only once the
  whole answer is generated, so its read budget grows with the answer
  asked for: ``read_s + read_per_token_s * max_tokens``
  (``assumed_max_tokens`` when the request sets none), capped at
  ``read_max_s``.
- ``stream_first_byte_s``: a stream's wait for its response headers.
- ``stream_idle_s``: once a stream's headers are in, its wait for each chunk
  (httpcore reads one timeout per phase: the body's reads use this one).
- ``total_s``: the whole call (attempts, backoff, queueing); a retry that
  would end after it is not made (the call fails at once). For a stream it
  covers the time until a response is handed over. ``derive_total`` makes it
  twice an attempt's budget (connect + read) plus 2 s, room for one full retry.

`Timeouts.fixed` is a widely used production recipe ("timeout <= the
provider's SLA + 500 ms", 8 s for a typical SLA), the preset ``LLMPULSE_DEADLINES=fixed``.

``learned`` (the preset ``LLMPULSE_DEADLINES=learned``) limits each
attempt's read phases by what healthy calls to the same endpoint, model and
reasoning setting took (`llmpulse._deadlines`): a stream's wait for its
headers and each gap between its reads, a non-streamed answer's wait.
Never longer than the limit the phase has otherwise, never below
``learned_floor_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Timeouts"]

_PHASES = ("connect", "read", "write", "pool")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-attempt and per-call time limits (seconds); None: the SDK's (no limit of llmpulse's).

    Attributes:
        connect_s: Opening a connection (TCP and TLS).
        read_s: A non-streamed call's wait for its answer, before the per-token part.
        read_per_token_s: Added to ``read_s`` per requested output token (``max_tokens``).
        assumed_max_tokens: Used when the request sets no ``max_tokens``.
        read_max_s: The largest non-streamed read budget ``read_s`` can grow to.
        stream_first_byte_s: A stream's wait for its response headers.
        stream_idle_s: A stream's wait for each chunk after the headers.
        total_s: The whole call, retries and backoff included.
        derive_total: With no ``total_s``, derive one: twice an attempt's
            connect + read budget, plus 2 s.
        learned: Also limit each attempt's read phases by the deadlines
            learned from healthy calls (see `llmpulse._deadlines`); without
            it they are evidence only (the event's ``deadline_learned_s``).
        learned_floor_s: The shortest read limit ``learned`` sets. 5 s: an
            attempt cut sooner saves little waiting and risks a spurious retry,
            which processes the prompt again (and, for a non-streamed answer,
            bills the tokens generated so far), while a healthy stream's first
            byte or gap seldom takes that long (the ``fixed`` preset allows 10 s
            and 30 s). RFC 6298 keeps a 1 s floor under TCP's timer for the
            same reason.

    Raises:
        ValueError: A value is not positive (or, for the per-token part, negative).

    """

    connect_s: float | None = None
    read_s: float | None = None
    read_per_token_s: float = 0.02
    assumed_max_tokens: int = 500
    read_max_s: float = 300.0
    stream_first_byte_s: float | None = None
    stream_idle_s: float | None = None
    total_s: float | None = None
    derive_total: bool = False
    learned: bool = False
    learned_floor_s: float = 5.0

    def __post_init__(self) -> None:
        for name in (
            "connect_s",
            "read_s",
            "read_max_s",
            "stream_first_byte_s",
            "stream_idle_s",
            "total_s",
            "learned_floor_s",
        ):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"Timeouts.{name} must be a positive number or None, got {value!r}")
        if not (self.read_per_token_s >= 0 and math.isfinite(self.read_per_token_s)):
            raise ValueError(f"Timeouts.read_per_token_s must be >= 0, got {self.read_per_token_s!r}")
        if self.assumed_max_tokens < 0:
            raise ValueError(f"Timeouts.assumed_max_tokens must be >= 0, got {self.assumed_max_tokens!r}")

    @classmethod
    def fixed(cls) -> Timeouts:
        """A production recipe for bounded attempts, the preset ``LLMPULSE_DEADLINES=fixed``.

        5 s to connect, 8 s + 20 ms per output token to answer (at most
        300 s), 10 s to a stream's first byte, 30 s between its chunks, and a
        whole-call deadline with room for one full retry.
        """
        return cls(connect_s=5.0, read_s=8.0, stream_first_byte_s=10.0, stream_idle_s=30.0, derive_total=True)

    def tokens_for(self, max_tokens: int | None) -> int:
        """The output tokens a request may generate: its ``max_tokens``, else ``assumed_max_tokens``."""
        return self.assumed_max_tokens if max_tokens is None else max_tokens

    @property
    def any_attempt_limit(self) -> bool:
        """Whether any per-attempt limit is set (else attempts get the SDK's timeout as it is)."""
        return not (
            self.connect_s is None
            and self.read_s is None
            and self.stream_first_byte_s is None
            and self.stream_idle_s is None
        )

    def attempt_read_s(self, *, streamed: bool, max_tokens: int | None) -> float | None:
        """The read budget of one attempt (for a stream: the wait for its headers); None: not set."""
        if streamed:
            return self.stream_first_byte_s
        if self.read_s is None:
            return None
        return min(self.read_max_s, self.read_s + self.read_per_token_s * self.tokens_for(max_tokens))

    def total_for(self, *, streamed: bool, max_tokens: int | None) -> float | None:
        """The whole call's deadline in seconds; None: there is none."""
        if self.total_s is not None or not self.derive_total:
            return self.total_s
        read = self.attempt_read_s(streamed=streamed, max_tokens=max_tokens)
        if read is None or self.connect_s is None:
            return None
        return 2 * (self.connect_s + read) + 2.0

    def attempt_extension(
        self, sdk_timeout: Any, *, streamed: bool, max_tokens: int | None, remaining_s: float | None
    ) -> Any:
        """The httpcore ``timeout`` extension of one attempt.

        Args:
            sdk_timeout: The request's own ``timeout`` extension (what the SDK
                computed from the client, ``with_options`` and the per-call
                ``timeout=``): each phase set here caps it.
            streamed: Whether the call streams.
            max_tokens: The requested output cap.
            remaining_s: Seconds left before the call's deadline (None: no deadline).

        Returns:
            ``sdk_timeout`` itself when no limit applies, else a new dict.

        """
        if remaining_s is None and not self.any_attempt_limit:
            return sdk_timeout  # the common case: the user's timeout, untouched
        sdk = sdk_timeout if isinstance(sdk_timeout, dict) else dict.fromkeys(_PHASES)
        ours = {
            "connect": self.connect_s,
            "read": self.attempt_read_s(streamed=streamed, max_tokens=max_tokens),
            "write": None,
            "pool": self.connect_s,
        }
        floor = None if remaining_s is None else max(remaining_s, 0.001)
        out = dict(sdk)
        for phase in _PHASES:
            value = _min(sdk.get(phase), ours[phase])
            out[phase] = _min(value, floor)
        return out

    def body_read_s(self, sdk_timeout: Any, *, streamed: bool) -> float | None:
        """A stream's read timeout once its headers arrived (the idle gap); None: leave it as it is."""
        if not streamed or self.stream_idle_s is None:
            return None
        theirs = sdk_timeout.get("read") if isinstance(sdk_timeout, dict) else None
        return _min(theirs, self.stream_idle_s)


def _min(a: float | None, b: float | None) -> float | None:
    # None is "no limit" in httpcore's timeout dict and here alike.
    if a is None:
        return b
    if b is None:
        return a
    return a if a < b else b
