"""Deadlines learned from healthy calls: evidence by default, attempt limits when asked.

Per key, ``(provider, host, api_key_id, model, streamed, reasoning)``, an
estimator keeps how long healthy attempts took, phase by phase:

- ``headers``: a stream's wait for its response headers;
- ``gap``: a stream's largest gap between two reads of its body (every read
  counts as life: SSE comments and pings too), measured from the headers on,
  as the caller's reads see it (time the caller spends between two reads
  counts, which only makes the learned gap longer);
- ``answer``: a non-streamed answer's seconds *per output token* (the
  response headers come once the whole answer is generated). Its allowance
  is that rate times the tokens the request may generate (``max_tokens``, or
  `Timeouts.assumed_max_tokens`). A rate learned from a short answer includes
  the prompt's processing, so it overstates the rate: the error is on the
  long side. Answers without output tokens (embeddings, images) teach nothing.

Each phase is RFC 6298's retransmission timer (section 2): the first sample
R sets SRTT = R and RTTVAR = R/2; each later one sets
RTTVAR = (1 - beta) RTTVAR + beta |SRTT - R|, then SRTT = (1 - alpha) SRTT + alpha R,
with alpha = 1/8, beta = 1/4, and the allowance is SRTT + K RTTVAR with K = 4
(the RFC's G, the clock granularity, is nil here). The RFC's constants,
because they are what TCP has run on for decades: a mean that follows a
change within about 8 samples, and a margin of four mean deviations that a
healthy sample seldom crosses (for a normal distribution the mean deviation
is 0.8 sigma: K = 4 is about 3.2 sigma). The estimator claims nothing before
`MIN_SAMPLES` samples: the first one alone sets the mean, and after 10 its
weight in SRTT is (7/8)^9, about 30 %, and in RTTVAR (3/4)^9, under 8 %.

Only attempts of calls that ended "ok" teach (a timeout must not teach that
timeouts are normal), and only the attempt that answered. Reasoning effort
(OpenAI's ``reasoning_effort`` / ``reasoning.effort``) and extended thinking
(anthropic's ``thinking``) make a key of their own rather than a scaled one:
how long a model thinks is not a factor of how long it answers.

Keys are kept least recently taught first, at most `MAX_KEYS`; a new key
beyond that forgets the oldest one. One lock guards them all: a lookup or an
update is a dict access and a few float operations under it (see
``benchmarks/deadlines.py``), so threads and tasks share one estimator per
`Policies`.

By default the allowance is evidence only: the call's event says what it was
(`AttemptDeadlines.allowed_s`) and whether the attempt took longer, and a
breaker with ``slow_call_learned`` counts such attempts as slow. With
``Timeouts(learned=True)`` (``LLMPULSE_DEADLINES=learned``) it also limits
the attempt's read timeout: never longer than the user's own timeout for the
phase, never below ``Timeouts.learned_floor_s``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Literal

__all__ = [
    "ALPHA",
    "BETA",
    "MAX_KEYS",
    "MIN_SAMPLES",
    "AttemptDeadlines",
    "DeadlineEstimator",
    "DeadlineKey",
    "K",
    "Phase",
    "capped_read",
    "own_timeout",
]

ALPHA = 0.125
"""RFC 6298's gain of the smoothed mean (1/8)."""
BETA = 0.25
"""RFC 6298's gain of the mean deviation (1/4)."""
K = 4.0
"""Mean deviations added to the mean (RFC 6298's K)."""
MIN_SAMPLES = 10
"""Samples a phase needs before it claims an allowance."""
MAX_KEYS = 1024
"""Keys one estimator keeps; beyond, the least recently taught one goes."""

Phase = Literal["headers", "gap", "answer"]
"""The part of an attempt an allowance is for (see the module docstring)."""

DeadlineKey = tuple[str, str, str, str, bool, str]
"""``(provider, host, api_key_id, model, streamed, reasoning)``; "" for none."""

_PHASES: tuple[Phase, ...] = ("headers", "gap", "answer")
_TIMEOUT_PHASES = ("connect", "read", "write", "pool")


class _Estimate:
    """One phase's RFC 6298 state."""

    __slots__ = ("n", "rttvar", "srtt")

    def __init__(self) -> None:
        self.n = 0
        self.srtt = 0.0
        self.rttvar = 0.0

    def add(self, r: float) -> None:
        if self.n == 0:
            self.srtt, self.rttvar = r, r / 2
        else:
            # RTTVAR first: it measures the deviation from the SRTT before this sample.
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - r)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * r
        self.n += 1


class DeadlineEstimator:
    """Learned allowances per key and phase; thread-safe, bounded (see the module docstring).

    Args:
        max_keys: Keys kept (least recently taught go first).
        min_samples: Samples a phase needs before it claims an allowance.

    """

    __slots__ = ("_keys", "_lock", "_max_keys", "_min_samples")

    def __init__(self, max_keys: int = MAX_KEYS, min_samples: int = MIN_SAMPLES) -> None:
        if max_keys < 1 or min_samples < 1:
            raise ValueError(f"max_keys and min_samples must be >= 1, got {max_keys!r}, {min_samples!r}")
        self._max_keys = max_keys
        self._min_samples = min_samples
        # Per key, one estimate per phase, in `_PHASES` order (None: never taught).
        self._keys: OrderedDict[DeadlineKey, list[_Estimate | None]] = OrderedDict()
        self._lock = threading.Lock()

    def allowances(self, key: DeadlineKey) -> tuple[float | None, float | None, float | None]:
        """SRTT + K RTTVAR of each phase, in `_PHASES` order; None before enough samples (one lock)."""
        with self._lock:
            phases = self._keys.get(key)
            if phases is None:
                return (None, None, None)
            least = self._min_samples
            h, g, a = phases  # spelt out: a generator costs more than the rest of the lookup
            return (
                None if h is None or h.n < least else h.srtt + K * h.rttvar,
                None if g is None or g.n < least else g.srtt + K * g.rttvar,
                None if a is None or a.n < least else a.srtt + K * a.rttvar,
            )

    def allowed(self, key: DeadlineKey, phase: Phase) -> float | None:
        """SRTT + K RTTVAR of ``phase`` (for "answer": per output token); None before enough samples."""
        return self.allowances(key)[_PHASES.index(phase)]

    def teach(
        self,
        key: DeadlineKey,
        *,
        headers: float | None = None,
        gap: float | None = None,
        answer: float | None = None,
    ) -> None:
        """Teach one healthy attempt's samples; None: not measured (a negative one is dropped)."""
        with self._lock:
            keys = self._keys
            phases = keys.get(key)
            if phases is None:
                if len(keys) >= self._max_keys:
                    keys.popitem(last=False)
                phases = keys[key] = [None, None, None]
            else:
                keys.move_to_end(key)
            if headers is not None:
                _add(phases, 0, headers)
            if gap is not None:
                _add(phases, 1, gap)
            if answer is not None:
                _add(phases, 2, answer)

    def observe(self, key: DeadlineKey, phase: Phase, seconds: float) -> None:
        """Teach one sample of ``phase``."""
        self.teach(key, **{phase: seconds})

    def state(self, key: DeadlineKey, phase: Phase) -> tuple[int, float, float] | None:
        """``(samples, srtt, rttvar)`` of ``phase``, for tests and health pages; None: never taught."""
        with self._lock:
            phases = self._keys.get(key)
            est = None if phases is None else phases[_PHASES.index(phase)]
            return None if est is None else (est.n, est.srtt, est.rttvar)

    def taught_keys(self) -> list[DeadlineKey]:
        """The keys kept, least recently taught first."""
        with self._lock:
            return list(self._keys)

    def __len__(self) -> int:
        """Keys kept."""
        return len(self._keys)


def _add(phases: list[_Estimate | None], i: int, seconds: float) -> None:
    if not seconds >= 0:
        return  # a clock gone back (or NaN): no sample
    est = phases[i]
    if est is None:
        est = phases[i] = _Estimate()
    est.add(seconds)


class AttemptDeadlines:
    """One call's view of the estimator: its current attempt's phase, allowance and measurements.

    The `Call` drives it with its policies' clock and makes every decision
    on what it returns; nothing here sends or waits.
    """

    __slots__ = (
        "_estimator",
        "_floor_s",
        "_gap_allowed",
        "_gap_s",
        "_headers_s",
        "_key",
        "_learned",
        "_started",
        "_tokens",
        "allowed_s",
        "phase",
    )

    def __init__(self, estimator: DeadlineEstimator, *, learned: bool, floor_s: float) -> None:
        self._estimator = estimator
        self._learned = learned
        self._floor_s = floor_s
        self._key: DeadlineKey | None = None
        self._started = 0.0
        self._tokens = 0
        self._headers_s: float | None = None
        self._gap_s: float | None = None
        self._gap_allowed: float | None = None
        self.phase: Phase | None = None
        """The phase of the last attempt the allowance is for; None before any attempt."""
        self.allowed_s: float | None = None
        """The estimator's allowance for it (seconds); None before enough samples."""

    def begin(self, key: DeadlineKey, now: float, *, tokens: int) -> float | None:
        """An attempt starts; return the read timeout learned mode gives it (None: no limit of ours).

        Args:
            key: The attempt's key (its model may be a fallback).
            now: The policies' clock.
            tokens: The output tokens the request may generate (``max_tokens`` or the assumed one).

        """
        self._key, self._started, self._tokens = key, now, tokens
        self._headers_s = self._gap_s = None
        headers, self._gap_allowed, per_token = self._estimator.allowances(key)
        if key[4]:
            self.phase, self.allowed_s = "headers", headers
        else:
            self.phase = "answer"
            self.allowed_s = None if per_token is None else per_token * max(tokens, 1)
        return self._limit(self.allowed_s)

    def headers(self, now: float) -> None:
        """The attempt's response headers arrived (or it failed before them)."""
        if self._key is not None and self._headers_s is None:
            self._headers_s = now - self._started

    def body_started(self) -> float | None:
        """A stream's body is handed over: its phase is now the gap; return learned mode's read timeout."""
        if self._key is None or not self._key[4]:
            return None
        self.phase, self.allowed_s = "gap", self._gap_allowed  # looked up with the headers' one
        return self._limit(self.allowed_s)

    def body_gap(self, gap_s: float) -> None:
        """The largest gap between two reads of the stream's body so far."""
        self._gap_s = gap_s

    @property
    def exceeded(self) -> bool:
        """Whether the attempt took longer than its allowance (False without one)."""
        allowed = self.allowed_s
        if allowed is None:
            return False
        measured = self._gap_s if self.phase == "gap" else self._headers_s
        return measured is not None and measured > allowed

    def teach(self, output_tokens: int | None) -> None:
        """The call ended "ok": teach the estimator what its answering attempt measured."""
        key, headers = self._key, self._headers_s
        if key is None or headers is None:
            return
        if key[4]:
            self._estimator.teach(key, headers=headers, gap=self._gap_s)
        elif output_tokens:
            self._estimator.teach(key, answer=headers / output_tokens)

    def _limit(self, allowed: float | None) -> float | None:
        if not self._learned or allowed is None:
            return None
        return max(allowed, self._floor_s)


def capped_read(timeout: Any, read_s: float) -> dict[str, Any]:
    """A copy of an httpcore ``timeout`` extension whose read phase waits at most ``read_s``.

    The user's own read timeout stays when it is shorter (None there is no limit).
    """
    out = own_timeout(timeout)
    theirs = out.get("read")
    out["read"] = read_s if theirs is None or read_s < theirs else theirs
    return out


def own_timeout(timeout: Any) -> dict[str, Any]:
    """A copy of an httpcore ``timeout`` extension, for llmpulse to change (the SDK's is never changed)."""
    return dict(timeout) if isinstance(timeout, dict) else dict.fromkeys(_TIMEOUT_PHASES)
