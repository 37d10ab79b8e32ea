"""`Policies`: the resilience settings of a wrapped client, and the state they keep per endpoint.

State is keyed by endpoint, ``(provider, host, api_key_id)``, for the retry
budget, plus the model for circuit breakers: Azure, a proxy and a second
key never share a breaker with the public endpoint. Clients wrapped with
the same `Policies` object share that state, as calls to one endpoint from
one process should; the process default `Policies` comes from the settings.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .._deadlines import DeadlineEstimator
from ..state import MemoryStore

if TYPE_CHECKING:
    from ..state import StateStore

from ._breaker import BreakerConfig, BreakerState, CircuitBreaker
from ._budget import RetryBudget
from ._cache import RemoteCache, ResponseCache
from ._concurrency import AdaptiveLimiter, ConcurrencyConfig
from ._deadline import Timeouts
from ._elsewhere import CrossProvider
from ._fallback import FallbackChains
from ._quota import Budget, RateLimit, throttles
from ._shared import SharedSignals, is_shared, register
from ._stream_usage import StreamUsageMemory

__all__ = ["Clock", "Policies", "SystemClock"]

_log = logging.getLogger("llmpulse")

# Breakers are per model; a caller inventing model names must not grow memory forever.
_MAX_BREAKERS = 4096
_OVERFLOW_MODEL = "__other__"  # as in the metrics: a real model called "other" keeps its breaker

Endpoint = tuple[str, str, str]
"""``(provider, host, api_key_id)``."""


class Clock(Protocol):
    """Time as the policies see it; tests pass a fake one (``llmpulse.testing.FakeClock``)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""

    def sleep(self, seconds: float) -> None:
        """Block the calling thread."""

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task."""


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.sleep`` and ``anyio.sleep``."""

    monotonic = staticmethod(time.monotonic)

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        # Looked up per call, as the SDKs do: a test that patches time.sleep patches this too.
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds`` (asyncio or trio, like the SDKs)."""
        import anyio  # noqa: PLC0415 - the SDKs' own dependency, loaded with them

        await anyio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()

TransitionListener = Callable[[str, str, str, str, BreakerState, BreakerState], None]
"""Called with (provider, host, api_key_id, model, old state, new state)."""


@dataclass(frozen=True)
class Policies:
    """How calls through a wrapped client are retried, timed out and cut off.

    Pass one to ``llmpulse.wrap(client, policies=...)``; without one, the
    process default built from the ``LLMPULSE_*`` settings applies. Clients
    wrapped with the same object share per-endpoint state (retry budgets,
    circuit breakers).

    Attributes:
        max_retries: Retries after the first attempt; None: the client's own
            ``max_retries`` (the SDKs default to 2).
        backoff_base_s: Ceiling of the first backoff (full jitter below it); None
            (with ``backoff_max_s`` None): the client's own backoff, as bare.
        backoff_max_s: Largest backoff ceiling; None: 8 s, or the client's own
            backoff when ``backoff_base_s`` is None too.
        retry_budget_ratio: Retries earned per request, per endpoint.
        retry_budget_reserve: Retries allowed beyond the ratio, per endpoint.
        retry_quota_exhausted: Retry a 429 whose error code says the quota is spent
            (OpenAI ``insufficient_quota``), as the SDKs do; False spares those retries.
        timeouts: Per-attempt and per-call time limits.
        breaker: Circuit breaker settings, one breaker per endpoint and model;
            None: no breaker.
        rate_limit: Requests/tokens per minute for each tenant (None: unlimited).
        tenant_rate_limits: Per-tenant overrides of ``rate_limit``.
        key_rate_limit: Requests/tokens per minute for each API key.
        rate_limit_wait_s: How long a limited call may wait for its turn
            (never past its deadline) before `RateLimitedError`.
        budget: USD/token caps per tenant per hour and day, and the action.
        tenant_budgets: Per-tenant overrides of ``budget``.
        concurrency: Adaptive concurrency per endpoint (None: unlimited).
        store: Where rate limits and budgets live (None: this process's
            memory; a `llmpulse.state.RedisStore` shares them across replicas).
        cache_ttl_s: How long a cached answer stays valid (opt-in per call:
            ``llmpulse.context(cache=True)`` or ``cache_routes``).
        cache_max_entries: Answers kept in the in-memory cache.
        cache_routes: Routes whose calls are cacheable without ``cache=True``.
        fallbacks: Requested model -> models to serve the call instead when it
            is overloaded (503/529) or its breaker is open, in order
            (``"gpt-4o-mini"`` or ``Fallback("claude-haiku-4-5", max_tokens=1024)``).
        cross_provider: Serves a non-streaming call on another provider when
            its own is overloaded, its breaker open or its queue full, after
            the fallback models: ``fn(llmpulse.UnavailableCall)`` returns the
            answer's JSON body in the requested provider's format (a dict or
            an SDK model), or None to decline. May be ``async def`` for async
            clients. See docs/resilience.md.
        clock: Time source (tests inject a fake one).
        random: Jitter source.

    """

    max_retries: int | None = None
    backoff_base_s: float | None = None
    backoff_max_s: float | None = None
    retry_budget_ratio: float = 0.1
    retry_budget_reserve: int = 10
    retry_quota_exhausted: bool = True
    timeouts: Timeouts = field(default_factory=Timeouts)
    breaker: BreakerConfig | None = field(default_factory=BreakerConfig)
    fallbacks: FallbackChains = field(default_factory=dict)
    cross_provider: CrossProvider | None = None
    rate_limit: RateLimit | None = None
    tenant_rate_limits: Mapping[str, RateLimit] = field(default_factory=dict)
    key_rate_limit: RateLimit | None = None
    rate_limit_wait_s: float = 2.0
    budget: Budget | None = None
    tenant_budgets: Mapping[str, Budget] = field(default_factory=dict)
    concurrency: ConcurrencyConfig | None = field(
        default_factory=lambda: ConcurrencyConfig(initial_limit=1000)
    )
    store: StateStore | None = None
    cache_ttl_s: float = 3600.0
    cache_max_entries: int = 1000
    cache_routes: frozenset[str] = frozenset()
    clock: Clock = SYSTEM_CLOCK
    random: Callable[[], float] = random.random
    _state: _State = field(default_factory=lambda: _State(), init=False, repr=False, compare=False)  # noqa: PLW0108 - _State is defined below

    def __post_init__(self) -> None:
        if self.max_retries is not None and self.max_retries < 0:
            raise ValueError(f"Policies.max_retries must be >= 0 or None, got {self.max_retries!r}")
        base, cap = self.backoff_base_s, self.backoff_max_s
        given = [value for value in (base, cap) if value is not None]
        if any(value <= 0 for value in given) or (len(given) == 2 and given[0] > given[1]):
            raise ValueError(
                f"Policies needs 0 < backoff_base_s <= backoff_max_s, got {self.backoff_base_s!r}"
                f" and {self.backoff_max_s!r}"
            )
        RetryBudget(self.retry_budget_ratio, self.retry_budget_reserve)  # validates both
        if is_shared(self.store):
            register(self.store)  # throttle() publishes to it, even before this process makes a call

    def retry_budget(self, endpoint: Endpoint) -> RetryBudget:
        """The retry budget of ``endpoint``."""
        return self._state.budget(endpoint, self)

    def limiter(self, endpoint: Endpoint, on_change: Callable[[int, int], None]) -> AdaptiveLimiter | None:
        """The concurrency limiter of ``endpoint`` (None without a concurrency config)."""
        if self.concurrency is None:
            return None
        return self._state.limiter(endpoint, self, on_change)

    def deadlines(self) -> DeadlineEstimator:
        """The deadlines learned from healthy calls (see `llmpulse._deadlines`)."""
        return self._state.deadlines

    def stream_usage(self) -> StreamUsageMemory:
        """The endpoints that refused ``stream_options`` (see `llmpulse.policies._stream_usage`)."""
        return self._state.stream_usage

    def state_store(self) -> StateStore:
        """The store of rate limits and budgets (this process's memory unless one was given)."""
        return self.store if self.store is not None else self._state.memory(self)

    def tenant_limit(self, tenant: str | None) -> RateLimit | None:
        """The rate limit of ``tenant``."""
        return self.tenant_rate_limits.get(tenant, self.rate_limit) if tenant else None

    def tenant_budget(self, tenant: str | None) -> Budget | None:
        """The budget of ``tenant``."""
        return self.tenant_budgets.get(tenant, self.budget) if tenant else None

    def cache(self) -> ResponseCache | RemoteCache:
        """The response cache: on the store when it is shared (Redis), else in memory."""
        return self._state.cache(self)

    def shared_signals(self) -> SharedSignals | None:
        """Throttles and Retry-After pauses every replica sees (None without a shared store)."""
        return self._state.signals(self) if is_shared(self.store) else None

    def has_throttles(self) -> bool:
        """Whether any emergency throttle may apply (this process's, or the shared ones)."""
        if throttles():
            return True
        signals = self.shared_signals()
        return signals is not None and bool(signals.throttles())

    def throttle_of(self, tenant: str, now: float) -> float | None:
        """The emergency requests-per-minute limit on ``tenant`` at epoch ``now`` (the strictest on)."""
        signals = self.shared_signals()
        tables = (throttles(), signals.throttles()) if signals is not None else (throttles(),)
        limits = [t[0] for table in tables if (t := table.get(tenant)) is not None and t[1] > now]
        return min(limits) if limits else None

    def circuit(
        self, endpoint: Endpoint, model: str | None, on_transition: TransitionListener
    ) -> CircuitBreaker | None:
        """The breaker of ``endpoint`` and ``model`` (None without a breaker config).

        ``on_transition`` is kept by the breaker when it is first made.
        """
        if self.breaker is None:
            return None
        return self._state.circuit(endpoint, model or "", self, on_transition)


class _State:
    """Per-endpoint budgets and per-(endpoint, model) breakers, made on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._budgets: dict[Endpoint, RetryBudget] = {}
        self._breakers: dict[tuple[str, str, str, str], CircuitBreaker] = {}
        self._cache: ResponseCache | RemoteCache | None = None
        self._limiters: dict[Endpoint, AdaptiveLimiter] = {}
        self._memory: MemoryStore | None = None
        self._signals: SharedSignals | None = None
        self.stream_usage = StreamUsageMemory()
        self.deadlines = DeadlineEstimator()

    def limiter(
        self, endpoint: Endpoint, policies: Policies, on_change: Callable[[int, int], None]
    ) -> AdaptiveLimiter:
        found = self._limiters.get(endpoint)
        if found is None:
            with self._lock:
                found = self._limiters.get(endpoint)
                if found is None:
                    assert policies.concurrency is not None
                    found = self._limiters[endpoint] = AdaptiveLimiter(
                        policies.concurrency, clock=policies.clock.monotonic, on_change=on_change
                    )
        return found

    def memory(self, policies: Policies) -> MemoryStore:
        if self._memory is None:
            with self._lock:
                if self._memory is None:
                    self._memory = MemoryStore(policies.clock.monotonic)
        return self._memory

    def signals(self, policies: Policies) -> SharedSignals:
        if self._signals is None:
            with self._lock:
                if self._signals is None:
                    store = policies.store
                    assert is_shared(store)
                    self._signals = SharedSignals(store, policies.clock.monotonic)
        return self._signals

    def cache(self, policies: Policies) -> ResponseCache | RemoteCache:
        if self._cache is None:
            with self._lock:
                if self._cache is None:
                    store = policies.store
                    if store is not None and hasattr(store, "set_blob"):
                        self._cache = RemoteCache(store, ttl_s=policies.cache_ttl_s)  # type: ignore[arg-type]
                    else:
                        self._cache = ResponseCache(
                            ttl_s=policies.cache_ttl_s,
                            max_entries=policies.cache_max_entries,
                            clock=policies.clock.monotonic,
                        )
        return self._cache

    def budget(self, endpoint: Endpoint, policies: Policies) -> RetryBudget:
        found = self._budgets.get(endpoint)
        if found is not None:
            return found
        with self._lock:
            found = self._budgets.get(endpoint)
            if found is None:
                found = self._budgets[endpoint] = RetryBudget(
                    policies.retry_budget_ratio, policies.retry_budget_reserve
                )
            return found

    def circuit(
        self, endpoint: Endpoint, model: str, policies: Policies, on_transition: TransitionListener
    ) -> CircuitBreaker:
        key = (*endpoint, model)
        found = self._breakers.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._breakers.get(key)
            if found is not None:
                return found
            if len(self._breakers) >= _MAX_BREAKERS:
                key = (*endpoint, _OVERFLOW_MODEL)
                found = self._breakers.get(key)
                if found is not None:
                    return found
            assert policies.breaker is not None
            provider, host, key_id, name = key

            def transition(old: BreakerState, new: BreakerState) -> None:
                _log_transition(provider, host, name, old, new, policies.breaker)
                on_transition(provider, host, key_id, name, old, new)

            found = self._breakers[key] = CircuitBreaker(
                policies.breaker, clock=policies.clock.monotonic, on_transition=transition
            )
            return found


def _log_transition(
    provider: str, host: str, model: str, old: BreakerState, new: BreakerState, config: BreakerConfig | None
) -> None:
    # On-call people want to read this in the logs without a dashboard.
    if new == "open":
        wait = config.open_s if config is not None else 0.0
        _log.warning(
            "llmpulse circuit OPEN for %s %s at %s (was %s): calls fail fast for %.0f s",
            provider,
            model or "(no model)",
            host,
            old,
            wait,
        )
    else:
        _log.info(
            "llmpulse circuit %s -> %s for %s %s at %s", old, new, provider, model or "(no model)", host
        )
