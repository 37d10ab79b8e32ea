"""Whether to retry an attempt, and after how long: one pure function, the SDKs' own rules.

With default settings llmpulse retries exactly what the bare SDK would, so a
wrapped client sends the same requests; the rules, in order (each refusal
has a stable ``reason`` for telemetry):

1. ``max_retries`` spent -> no.
2. A response: a ``Retry-After`` longer than the SDK accepts (OpenAI: 120 s)
   -> no; then the server's ``x-should-retry: true`` -> yes, ``false`` -> no,
   whatever the status; then 408, 409, 429 and 5xx (529 included) -> yes,
   anything else -> no. Optionally (``retry_quota_exhausted=False``, off by
   default because the SDKs retry it) a 429 whose error code says the quota
   is spent (OpenAI ``insufficient_quota``) is not retried.
3. A failed send: what the SDK retries (OpenAI: timeouts, connection and
   protocol errors, TLS errors; Anthropic: any error) -> yes, else no.
4. The delay: by default the client's own (the SDK's ``_calculate_retry_timeout``:
   its ``Retry-After`` rules, else 0.5 s doubling to 8 s less up to 25 %
   jitter), so a wrapped client waits as the bare one does. With a backoff
   configured (``backoff_base_s``/``backoff_max_s``): ``Retry-After``
   (``retry-after-ms``, then ``retry-after`` in seconds or as an HTTP date)
   when the server sent one, else exponential backoff with full jitter,
   ``random() * min(max_s, base_s * 2**retries)`` (AWS "full jitter":
   spreads a thundering herd best).
5. Only with a deadline (one the user set): never sleep past it; if the delay
   would end after it, fail now instead of waiting to fail.

Whether the retry budget still allows a retry is asked after this (it is
state, this is not); stream output that reached the caller is never retried
because the attempt loop has handed the response over by then.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["RetryDecision", "classify_exception", "decide_retry", "parse_retry_after"]

_RETRYABLE_STATUSES = frozenset({408, 409, 429})
# A Retry-After that overflowed a float ("1e999") is a very long delay, not a missing one.
_OVERFLOW_S = 1e18


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """The verdict on one failed attempt.

    Attributes:
        delay_s: Seconds to sleep before the next attempt; None: do not retry.
        reason: Why: the failure class when retrying ("5xx", "429", "408",
            "409", "timeout", "connect", "local_pool", "other", "server_asked"),
            else why not ("max_retries", "not_retryable", "server_refused",
            "retry_after_too_long", "quota_exhausted", "deadline").

    """

    delay_s: float | None
    reason: str


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Return the delay the server asked for, in seconds, or None.

    Order as in the SDKs: ``retry-after-ms``, ``retry-after`` as seconds,
    then ``retry-after`` as an HTTP date.
    """
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        if value == math.inf and raw.strip().lstrip("+").lower() not in ("inf", "infinity"):
            return _OVERFLOW_S  # as the SDKs read it: too long to wait, not "no hint"
        return value / divisor
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        return float(email.utils.mktime_tz(parsed) - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def classify_exception(exc: BaseException) -> str:
    """Name the kind of a failed send: "timeout", "connect", "local_pool" or "other".

    Judged by the class names of the HTTP stack (``httpx`` or ``httpx2``),
    so one rule serves both SDK generations. Whether the SDK would retry it
    is the provider's to say (`llmpulse.providers.Provider.retries_exception`).
    """
    names = {cls.__name__ for cls in type(exc).__mro__ if cls.__module__.split(".")[0] in ("httpx", "httpx2")}
    if "PoolTimeout" in names:
        return "local_pool"
    if "TimeoutException" in names:
        return "timeout"
    if "TransportError" in names:
        return "connect"
    return "other"


def _status_verdict(
    status: int,
    headers: Mapping[str, str] | None,
    retry_after: float | None,
    max_retry_after_s: float | None,
    quota_exhausted: bool,
) -> tuple[bool, str]:
    """Whether the SDK would retry a response with this status, and the reason's name."""
    # A literal "inf" (or NaN) is no usable hint, as in the SDK: backoff, not a refusal.
    too_long = (
        retry_after is not None
        and math.isfinite(retry_after)
        and retry_after > (max_retry_after_s or math.inf)
    )
    if too_long:
        return False, "retry_after_too_long"
    should = headers.get("x-should-retry") if headers is not None else None
    retryable = status in _RETRYABLE_STATUSES or status >= 500
    if should == "false":
        return False, "server_refused"
    if should != "true" and not retryable:
        return False, "not_retryable"
    if quota_exhausted:
        return False, "quota_exhausted"
    return True, ("5xx" if status >= 500 else str(status)) if retryable else "server_asked"


def decide_retry(
    *,
    retries_taken: int,
    max_retries: int,
    status: int | None,
    headers: Mapping[str, str] | None,
    failure: str | None,
    failure_retried: bool = True,
    quota_exhausted: bool = False,
    max_retry_after_s: float | None = None,
    remaining_s: float | None,
    backoff_base_s: float | None,
    backoff_max_s: float | None,
    random: Callable[[], float],
    sdk_backoff: Callable[[int, Mapping[str, str] | None], float] | None = None,
) -> RetryDecision:
    """Decide on one failed attempt (an error status, or a send that failed).

    Args:
        retries_taken: Retries already made (0 after the first attempt).
        max_retries: Retries allowed after the first attempt.
        status: The response status, None when the send failed.
        headers: The response headers, if any.
        failure: For a failed send, `classify_exception`'s verdict.
        failure_retried: For a failed send, whether the SDK retries that error.
        quota_exhausted: Refuse this 429: its body says the quota is spent and
            the user asked not to retry that.
        max_retry_after_s: The longest ``Retry-After`` the SDK waits for (None: any).
        remaining_s: Seconds left before the call's deadline (None: no deadline).
        backoff_base_s: The first backoff's ceiling (None: see ``sdk_backoff``).
        backoff_max_s: The largest backoff ceiling (None: 8 s, or see ``sdk_backoff``).
        random: A ``random.random``-like source (injected for tests).
        sdk_backoff: The client's own delay for (retries taken, headers): used
            when neither backoff setting is given.

    """
    retry_after = parse_retry_after(headers) if headers is not None else None
    if status is not None:
        retry, reason = _status_verdict(status, headers, retry_after, max_retry_after_s, quota_exhausted)
    else:
        retry, reason = (
            (True, failure) if failure is not None and failure_retried else (False, "not_retryable")
        )
    if not retry:
        return RetryDecision(None, reason)
    if retries_taken >= max_retries:
        return RetryDecision(None, "max_retries")
    if backoff_base_s is None and backoff_max_s is None and sdk_backoff is not None:
        delay = min(max(sdk_backoff(retries_taken, headers), 0.0), _LONGEST_SLEEP_S)
    elif retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
        delay = min(retry_after, _LONGEST_SLEEP_S)
    else:
        cap = max(_BACKOFF_MAX_S, backoff_base_s or 0.0) if backoff_max_s is None else backoff_max_s
        base = min(_BACKOFF_BASE_S, cap) if backoff_base_s is None else backoff_base_s
        delay = random() * min(cap, base * 2.0 ** min(retries_taken, 64))
    if remaining_s is not None and delay >= remaining_s:
        return RetryDecision(None, "deadline")
    return RetryDecision(delay, reason)


# The SDKs' own constants, for a backoff given only in part.
_BACKOFF_BASE_S, _BACKOFF_MAX_S = 0.5, 8.0
# time.sleep refuses longer waits on some platforms; the Anthropic SDK caps its own the same way.
_LONGEST_SLEEP_S = 4_294_967.0
