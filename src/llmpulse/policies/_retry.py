"""The retry rule of the openai/anthropic SDKs, as one pure function.

llmpulse switches the SDK's retries off to see every attempt; to change
nothing for the user it then retries exactly as the SDK would have
(``_should_retry`` / ``_calculate_retry_timeout`` in both SDKs).
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable, Mapping

__all__ = ["parse_retry_after", "sdk_retry_delay"]

INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
# openai refuses a Retry-After above two minutes; following it would hold
# the caller for longer than any request timeout they would expect.
MAX_RETRY_AFTER = 120.0
_RETRYABLE_STATUSES = frozenset({408, 409, 429})
# Names of the exception classes both HTTP stacks raise for a failed send.
_TRANSPORT_ERRORS = frozenset({"TransportError", "TimeoutException", "RequestError"})


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


def _is_transport_error(exc: BaseException) -> bool:
    return any(
        cls.__name__ in _TRANSPORT_ERRORS and cls.__module__.split(".")[0] in ("httpx", "httpx2")
        for cls in type(exc).__mro__
    )


def sdk_retry_delay(
    *,
    retries_taken: int,
    max_retries: int,
    status: int | None,
    headers: Mapping[str, str] | None,
    exc: BaseException | None,
    random: Callable[[], float],
) -> float | None:
    """Return how long to sleep before the next attempt, or None for no retry.

    Args:
        retries_taken: Retries already made (0 after the first attempt).
        max_retries: The client's ``max_retries``.
        status: The response status, None when the send failed.
        headers: The response headers, if any.
        exc: The exception of a failed send, if any.
        random: A ``random.random``-like source (injected for tests).

    """
    if retries_taken >= max_retries:
        return None
    retry_after = None
    if headers is not None:
        retry_after = parse_retry_after(headers)
        if retry_after is not None and math.isfinite(retry_after) and retry_after > MAX_RETRY_AFTER:
            return None
        should = headers.get("x-should-retry")
        if should == "false":
            return None
        if should != "true" and not (status in _RETRYABLE_STATUSES or (status or 0) >= 500):
            return None
    elif exc is None or not _is_transport_error(exc):
        return None
    if retry_after is not None and math.isfinite(retry_after) and 0 < retry_after <= MAX_RETRY_AFTER:
        return retry_after
    backoff = min(INITIAL_RETRY_DELAY * 2.0 ** min(retries_taken, 1000), MAX_RETRY_DELAY)
    return max(backoff * (1 - 0.25 * random()), 0.0)
