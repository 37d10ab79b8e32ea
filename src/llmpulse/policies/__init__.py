"""② Decisions taken in the call path, before and between attempts.

Each policy is a pure decision object with an injected clock, shared by the
sync and async attempt loops; `Policies` bundles their settings and keeps
their state per endpoint.
"""

from ._breaker import BreakerConfig, BreakerState, CircuitBreaker, Permit
from ._budget import RetryBudget
from ._cache import BlobStore, CacheEntry, RemoteCache, ResponseCache, cache_key
from ._concurrency import AdaptiveLimiter, ConcurrencyConfig, Refused, Slot
from ._deadline import Timeouts
from ._elsewhere import CrossProvider, UnavailableCall
from ._fallback import Fallback, FallbackChains, chain_for, rewrite_body
from ._policies import Clock, Policies, SystemClock
from ._quota import Budget, BudgetCheck, RateCheck, RateLimit, budget_checks, rate_checks, throttle
from ._retry import RetryDecision, classify_exception, decide_retry, parse_retry_after

__all__ = [
    "AdaptiveLimiter",
    "BlobStore",
    "BreakerConfig",
    "BreakerState",
    "Budget",
    "BudgetCheck",
    "CacheEntry",
    "CircuitBreaker",
    "Clock",
    "ConcurrencyConfig",
    "CrossProvider",
    "Fallback",
    "FallbackChains",
    "Permit",
    "Policies",
    "RateCheck",
    "RateLimit",
    "Refused",
    "RemoteCache",
    "ResponseCache",
    "RetryBudget",
    "RetryDecision",
    "Slot",
    "SystemClock",
    "Timeouts",
    "UnavailableCall",
    "budget_checks",
    "cache_key",
    "chain_for",
    "classify_exception",
    "decide_retry",
    "parse_retry_after",
    "rate_checks",
    "rewrite_body",
    "throttle",
]
