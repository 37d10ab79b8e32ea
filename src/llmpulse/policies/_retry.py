"""Whether to retry an attempt, and after how long: one pure function.

The rules, in order (each refusal has a stable ``reason`` for telemetry):

1. ``max_retries`` spent -> no.
2. The server said so: ``x-should-retry: false`` -> no; ``true`` -> yes,
   except for the never-retried statuses below.
3. Statuses: 408, 409, 429, 5xx (529 included) are retried; 400, 401, 403,
   404, 422 never are, whatever the server says; other 4xx are not.
   A 429 whose error code says the quota is spent (OpenAI
   ``insufficient_quota``) is not retried: waiting does not refill it.
4. Failed sends: timeouts and connection errors before any response byte
   are retried; a full local connection pool is not (the provider is fine,
   we are saturated) nor is anything else.
5. The delay: ``Retry-After`` (``retry-after-ms``, then ``retry-after`` in
   seconds or as an HTTP date) when the server sent one, else exponential
   backoff with full jitter, ``random() * min(max_s, base_s * 2**retries)``
   (AWS "full jitter": spreads a thundering herd best).
6. Never sleep past the call's deadline: if the delay would end after it,
   fail now instead of waiting to fail.

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
_NEVER_RETRIED = frozenset({400, 401, 403, 404, 422})


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """The verdict on one failed attempt.

    Attributes:
        delay_s: Seconds to sleep before the next attempt; None: do not retry.
        reason: Why: the failure class when retrying ("5xx", "429", "408",
            "409", "timeout", "connect", "server_asked"), else why not
            ("max_retries", "not_retryable", "server_refused", "quota_exhausted",
            "deadline", "local_pool").

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
            return float(raw) / divisor
        except ValueError:
            continue
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
    so one rule serves both SDK generations.
    """
    names = {cls.__name__ for cls in type(exc).__mro__ if cls.__module__.split(".")[0] in ("httpx", "httpx2")}
    if "PoolTimeout" in names:
        return "local_pool"
    if "TimeoutException" in names:
        return "timeout"
    if "TransportError" in names:
        return "connect"
    return "other"


def _status_reason(status: int) -> str:
    return "5xx" if status >= 500 else str(status)


def decide_retry(
    *,
    retries_taken: int,
    max_retries: int,
    status: int | None,
    headers: Mapping[str, str] | None,
    failure: str | None,
    quota_exhausted: bool,
    remaining_s: float | None,
    backoff_base_s: float,
    backoff_max_s: float,
    random: Callable[[], float],
) -> RetryDecision:
    """Decide on one failed attempt (an error status, or a send that failed).

    Args:
        retries_taken: Retries already made (0 after the first attempt).
        max_retries: Retries allowed after the first attempt.
        status: The response status, None when the send failed.
        headers: The response headers, if any.
        failure: For a failed send, `classify_exception`'s verdict.
        quota_exhausted: The body of a 429 says the quota is spent.
        remaining_s: Seconds left before the call's deadline (None: no deadline).
        backoff_base_s: The first backoff's ceiling.
        backoff_max_s: The largest backoff ceiling.
        random: A ``random.random``-like source (injected for tests).

    """
    if status is not None:
        reason = _status_reason(status)
        should = headers.get("x-should-retry") if headers is not None else None
        if status in _NEVER_RETRIED:
            return RetryDecision(None, "not_retryable")
        if should == "false":
            return RetryDecision(None, "server_refused")
        if quota_exhausted:
            return RetryDecision(None, "quota_exhausted")
        if should == "true":
            reason = "server_asked" if not (status in _RETRYABLE_STATUSES or status >= 500) else reason
        elif not (status in _RETRYABLE_STATUSES or status >= 500):
            return RetryDecision(None, "not_retryable")
    elif failure in ("timeout", "connect"):
        reason = failure
    else:
        return RetryDecision(None, "local_pool" if failure == "local_pool" else "not_retryable")
    if retries_taken >= max_retries:
        return RetryDecision(None, "max_retries")
    retry_after = parse_retry_after(headers) if headers is not None else None
    if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
        delay = retry_after
    else:
        delay = random() * min(backoff_max_s, backoff_base_s * 2.0 ** min(retries_taken, 64))
    if remaining_s is not None and delay >= remaining_s:
        return RetryDecision(None, "deadline")
    return RetryDecision(delay, reason)
