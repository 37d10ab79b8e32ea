"""③→④ One logical call: attempts, the response body, and the `CallEvent` they make.

Everything here is colour-blind: the sync and async transports drive the
same `Call` and only differ in how they wait and read. A `Call` is created
when the SDK hands a request to the transport (the SDK's own retries are
off, so one request is one logical call) and finishes exactly once: when
the body ends or is closed, when the caller drops it, or when an exception
or cancellation escapes.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import orjson

from ._body import BodyWatcher
from ._content import output_content
from ._context import Context, InteractionTotals, context, current_interaction
from ._deadlines import AttemptDeadlines, DeadlineKey, capped_read, own_timeout
from ._redact import Scrubber, redact
from .events import AttemptEvent, CallEvent, NetworkTimings, Outcome
from .exceptions import (
    BudgetExceededError,
    CircuitOpenError,
    DeadlineExceededError,
    OverloadedError,
    PolicyError,
    RateLimitedError,
    sdk_error,
)
from .policies import (
    AdaptiveLimiter,
    BudgetCheck,
    CacheEntry,
    Fallback,
    RateCheck,
    Refused,
    RemoteCache,
    RetryDecision,
    Slot,
    budget_checks,
    cache_key,
    chain_for,
    classify_exception,
    decide_retry,
    parse_retry_after,
    rate_checks,
    rewrite_body,
)
from .policies._elsewhere import (
    Served,
    ServeElsewhere,
    UnavailableCall,
    UnavailableReason,
    collecting_served,
    encode_answer,
    record_served,
    stop_collecting,
)
from .policies._stream_usage import rejects_stream_options
from .providers._base import is_stream, json_malformed
from .state import WRITE_BACK, MemoryStore

_log = logging.getLogger("llmpulse")

if TYPE_CHECKING:
    from ._hook import Hook
    from .policies import CircuitBreaker, Permit
    from .providers import RequestInfo, ResponseInfo
    from .state import GcraResult

__all__ = ["Call"]

# Answers that say the model is out of capacity: a fallback model may have some.
_OVERLOADED = frozenset({503, 529})
# Answers that tell the concurrency limiter to back off.
_SLOWDOWN = frozenset({429, 503, 529})
# The part of a budget background calls may spend; the rest is kept for interactive ones.
_BACKGROUND_BUDGET_SHARE = 0.9
# A Retry-After longer than this pauses only the call that got it, not the process.
_MAX_SHARED_PAUSE_S = 60.0
# The answer a cross-provider function returns is handed to the SDK as this.
_JSON_HEADERS = (("content-type", "application/json"),)
# Headers that describe the bytes on the wire, not the (decoded) body handed over again.
_REENCODED_HEADERS = frozenset({"content-length", "content-encoding", "transfer-encoding"})
_ELSEWHERE_WARN_EVERY_S = 60.0
_elsewhere_warned: dict[str, float] = {}
_budget_warned: set[tuple[str, str, int]] = set()
_budget_warned_lock = threading.Lock()


def _warn_budget_once(tenant: str, check: BudgetCheck, message: str) -> None:
    # One warning per tenant, budget and window, not one per call.
    key = (tenant, check.key, int(time.time() // check.window_s))
    with _budget_warned_lock:
        if key in _budget_warned:
            return
        if len(_budget_warned) > 10_000:
            _budget_warned.clear()
        _budget_warned.add(key)
    _log.warning("llmpulse %s; calls go on (action: alert)", message)


def _warn_elsewhere_failed(provider: str, problem: object) -> None:
    # During an outage every call may hit it: one line a minute per provider.
    now = time.monotonic()
    if now - _elsewhere_warned.get(provider, -_ELSEWHERE_WARN_EVERY_S) < _ELSEWHERE_WARN_EVERY_S:
        return
    _elsewhere_warned[provider] = now
    detail = f"{type(problem).__name__}: {redact(str(problem))}"
    _log.warning("llmpulse cross_provider function failed for %s; going on without it: %s", provider, detail)


_COLLECTED: deque[Call] = deque()


def finish_collected() -> None:
    """Finish the calls whose responses were garbage-collected unclosed."""
    while _COLLECTED:
        try:
            call = _COLLECTED.popleft()
        except IndexError:
            return
        call._finish_collected()


class Call:
    """State of one logical call, from the first attempt to its event."""

    __slots__ = (
        "_app_ctx",
        "_attempt_log",
        "_attempt_started",
        "_attempt_timeout",
        "_backoff",
        "_body",
        "_body_done",
        "_body_malformed",
        "_breaker",
        "_budget_action",
        "_budgets",
        "_cache_hit",
        "_cache_key",
        "_capture",
        "_clock",
        "_correlation_id",
        "_ctx",
        "_deadline",
        "_deadlines",
        "_elsewhere_offered",
        "_fallback_next",
        "_fallback_reason",
        "_fallbacks",
        "_finish_lock",
        "_headers",
        "_hook",
        "_info",
        "_input_content",
        "_interaction",
        "_learns_usage",
        "_limiter",
        "_max_retries",
        "_original_body",
        "_permit",
        "_policies",
        "_prev_trace",
        "_prompt_estimate",
        "_queue_wait",
        "_rate_reserved",
        "_rejected_reason",
        "_request",
        "_resend",
        "_retries",
        "_retry_unsent",
        "_sdk_timeout",
        "_served_model",
        "_served_provider",
        "_server_port",
        "_slot",
        "_sse",
        "_status",
        "_stop_reason",
        "_t0",
        "_timed",
        "_trace",
        "_trace_ids",
        "_usage_refused",
        "attempts",
        "call_id",
        "endpoint",
        "reads_whole",
        "sdk_backoff",
    )

    def __init__(
        self,
        hook: Hook,
        info: RequestInfo,
        ctx: Context,
        *,
        correlation_id: str,
        call_id: str,
        prompt_estimate: int | None,
        sdk_timeout: Any = None,
        input_content: str | None = None,
        capture: bool = False,
        reads_whole: bool = False,
        original_body: bytes | None = None,
        address: tuple[str, int | None] = ("", None),
        max_retries: int = 0,
        sdk_backoff: Callable[[int, Mapping[str, str] | None], float] | None = None,
        learns_stream_usage: bool = False,
        trace_ids: tuple[str, str] | None = None,
    ) -> None:
        self._hook = hook
        self._trace_ids = trace_ids  # the caller's span when the call began
        # A stream sent as the caller made it to an endpoint not known yet: it shows whether to ask.
        self._learns_usage = learns_stream_usage
        # The client's own delay before a retry (its backoff and Retry-After rules).
        self.sdk_backoff = sdk_backoff
        self._info = info
        # Where this request goes (a copy may change the base URL but share its original's hook):
        # what policy state is keyed by, with the client's key.
        host, self._server_port = address
        self.endpoint = (hook.provider.name, host, hook.api_key_id or "")
        self._input_content = input_content
        self._capture = capture
        # The SDK will read the answer whole (not a stream): its body is read within the attempt.
        self.reads_whole = reads_whole
        # The caller's own body, when llmpulse sends another (asking a stream for its usage).
        self._original_body = original_body
        self._usage_refused = False
        self._ctx = ctx
        self._correlation_id = correlation_id
        self.call_id = call_id
        self._prompt_estimate = prompt_estimate
        self._t0 = time.perf_counter()
        self._init_policies(hook, info, ctx, sdk_timeout, max_retries)
        # Sinks run in the caller's contextvars (structlog's bound variables,
        # the current span), even though they run on another thread.
        self._app_ctx = contextvars.copy_context()
        self._interaction: InteractionTotals | None = current_interaction()
        self._finish_lock = threading.Lock()
        self.attempts = 0
        self._retries = 0  # attempts that were retries (a negotiation resend is not)
        self._resend = False  # the next attempt resends the caller's request as they made it
        self._backoff: list[float] = []
        self._status: int | None = None
        self._headers: Mapping[str, str] | None = None
        self._trace: list[tuple[str, float]] = []
        self._prev_trace: Any = None
        # Decided once per call: httpcore's ~10 trace callbacks cost more than
        # the rest of an attempt's bookkeeping (see docs/performance.md).
        sampler = hook.network_sampler
        self._timed = sampler is not None and sampler.pick()
        self._attempt_started = 0.0
        self._attempt_log: list[AttemptEvent] | None = None
        self._body_done = False
        self._body: BodyWatcher | None = None
        self._body_malformed = False
        self._sse = False

    def _init_policies(
        self, hook: Hook, info: RequestInfo, ctx: Context, sdk_timeout: Any, max_retries: int
    ) -> None:
        policies = hook.policies
        self._policies = policies
        self._sdk_timeout = sdk_timeout
        # The request entry runs the loop and knows the call's own count (per request or the client's).
        self._max_retries = max_retries if policies.max_retries is None else policies.max_retries
        # The policies' clock (fake in tests) drives every time-based decision;
        # perf_counter only measures what the event reports.
        self._clock = policies.clock
        # No deadline over the whole call unless the user set one: the bare SDK has none.
        total = policies.timeouts.total_for(streamed=info.streamed, max_tokens=info.max_tokens)
        if ctx.total_timeout_s is not None:
            total = ctx.total_timeout_s if total is None else min(total, ctx.total_timeout_s)
        self._deadline = None if total is None else self._clock.monotonic() + total
        timeouts = policies.timeouts
        self._deadlines = AttemptDeadlines(
            policies.deadlines(), learned=timeouts.learned, floor_s=timeouts.learned_floor_s
        )
        self._breaker: CircuitBreaker | None = None
        self._permit: Permit | None = None
        self._attempt_timeout: dict[str, Any] | None = None
        self._stop_reason: str | None = None
        self._rejected_reason: str | None = None
        self._request: Any = None
        self._served_model = info.model
        self._fallbacks: list[Fallback] | None = None  # the chain still untried, made on first need
        self._fallback_next: str | None = None  # why the next attempt switches model
        self._fallback_reason: str | None = None
        self._served_provider: str | None = None  # set when another provider served the call
        self._elsewhere_offered = False
        self._retry_unsent = False  # a retry paid from the budget, not sent yet
        self._cache_key: str | None = None
        self._cache_hit: CacheEntry | None = None
        self._limiter: AdaptiveLimiter | None = None
        self._slot: Slot | None = None
        self._rate_reserved: list[RateCheck] = []
        self._budgets: list[BudgetCheck] = []
        self._queue_wait = 0.0
        self._budget_action: str | None = None

    # -- admission: budgets, rate limits, concurrency ------------------------------
    # The store and the limiter are asked from the sync shell (`admit`,
    # `acquire_slot`) or the async one (`aadmit`, `aacquire_slot`); every
    # decision on their answers is made by the shared helpers below them.

    def admit(self, request: Any) -> None:
        """Check the tenant's budgets, then wait for its rate limits (sync shell).

        Raises:
            BudgetExceededError: A budget with action "block" is spent.
            RateLimitedError: A limit would not admit the call within its wait.

        """
        if not self._has_quotas():
            return
        store = self._policies.state_store()
        budgets = self._budget_checks()
        if budgets:
            self._judge_budgets(
                request, budgets, [store.add(c.key, 0.0, window_s=c.window_s) for c in budgets]
            )
        checks = self._rate_checks()
        waited = 0.0
        while checks:
            results = []
            for check in checks:
                result = store.gcra(
                    check.key, rate_per_s=check.rate_per_s, burst=check.burst, cost=check.cost
                )
                results.append(result)
                if not result.allowed:
                    break
            wait = self._rate_verdict(request, checks, results, waited)
            if wait is None:
                return
            for check, result in zip(checks, results, strict=False):
                if result.allowed:  # give back what the refused round took
                    store.gcra(check.key, rate_per_s=check.rate_per_s, burst=check.burst, cost=-check.cost)
            self._clock.sleep(wait)
            waited += wait
            self._queue_wait += wait

    async def aadmit(self, request: Any) -> None:
        """`admit` for the async shell."""
        if not self._has_quotas():
            return
        store = self._policies.state_store()
        budgets = self._budget_checks()
        if budgets:
            totals = [await store.aadd(c.key, 0.0, window_s=c.window_s) for c in budgets]
            self._judge_budgets(request, budgets, totals)
        checks = self._rate_checks()
        waited = 0.0
        while checks:
            results = []
            for check in checks:
                result = await store.agcra(
                    check.key, rate_per_s=check.rate_per_s, burst=check.burst, cost=check.cost
                )
                results.append(result)
                if not result.allowed:
                    break
            wait = self._rate_verdict(request, checks, results, waited)
            if wait is None:
                return
            for check, result in zip(checks, results, strict=False):
                if result.allowed:
                    await store.agcra(
                        check.key, rate_per_s=check.rate_per_s, burst=check.burst, cost=-check.cost
                    )
            await self._clock.asleep(wait)
            waited += wait
            self._queue_wait += wait

    def acquire_slot(self, request: Any) -> None:
        """Wait for a concurrency slot for the next attempt (sync shell)."""
        limiter = self._find_limiter()
        if limiter is None or self._slot is not None:
            return
        self._slot = limiter.try_acquire(self._priority())  # the common case: a free slot, no wait
        if self._slot is not None:
            return
        started = self._clock.monotonic()
        try:
            self._slot = limiter.acquire(self._priority(), timeout_s=self._wait_budget())
        except Refused as refused:
            self._slot_refused(request, refused)
        finally:
            self._queue_wait += self._clock.monotonic() - started

    async def aacquire_slot(self, request: Any) -> None:
        """`acquire_slot` for the async shell."""
        limiter = self._find_limiter()
        if limiter is None or self._slot is not None:
            return
        self._slot = limiter.try_acquire(self._priority())
        if self._slot is not None:
            return
        started = self._clock.monotonic()
        try:
            self._slot = await limiter.aacquire(self._priority(), timeout_s=self._wait_budget())
        except Refused as refused:
            self._slot_refused(request, refused)
        finally:
            self._queue_wait += self._clock.monotonic() - started

    def _has_quotas(self) -> bool:
        # Most clients set no limits: skip building checks on every call.
        p = self._policies
        limits = p.rate_limit or p.tenant_rate_limits or p.key_rate_limit or p.has_throttles()
        return bool(limits or p.budget or p.tenant_budgets)

    def _priority(self) -> Literal["interactive", "background"]:
        return "background" if self._ctx.priority == "background" else "interactive"

    def _find_limiter(self) -> AdaptiveLimiter | None:
        hook = self._hook
        try:
            if self._limiter is None:
                self._limiter = self._policies.limiter(self.endpoint, hook.limit_listener(self.endpoint[1]))
            signals = self._policies.shared_signals()
            if signals is not None and self._limiter is not None:
                until = signals.pause_until(self.endpoint)  # another replica's Retry-After
                if until is not None:
                    self._limiter.pause(until)
        except Exception:  # noqa: BLE001 - a bug in a policy must not stop the call
            hook.pipeline.internal_error("policies")
        return self._limiter

    def _slot_refused(self, request: Any, refused: Refused) -> NoReturn:
        endpoint = f"{self._hook.provider.name} at {self.endpoint[1]}"
        if refused.reason == "queue_full":
            self._refuse(request, OverloadedError, f"too many calls waiting for {endpoint}: shed at once")
        if refused.reason == "paused":
            wait = refused.retry_after_s
            message = (
                f"{endpoint} asked every caller to wait {wait or 0:.1f} s (Retry-After), "
                "longer than this call may wait (its pool timeout or deadline)"
            )
            self._refuse(request, RateLimitedError, message, wait)
        self._refuse(
            request,
            DeadlineExceededError,
            f"no free slot at {endpoint} within the call's pool timeout or deadline",
        )

    def _release_slot(self, status: int | None) -> None:
        slot, self._slot = self._slot, None
        if slot is None or self._limiter is None:
            return
        signal: Literal["success", "overload", "ignored"] = (
            "overload"
            if status in _SLOWDOWN
            else "success"
            if status is not None and status < 400
            else "ignored"
        )
        try:
            self._limiter.release(slot, signal)
            if status == 429 and self._headers is not None:
                pause = parse_retry_after(self._headers)
                if pause is not None and 0 < pause <= _MAX_SHARED_PAUSE_S:
                    self._limiter.pause(self._clock.monotonic() + pause)  # for everybody in the process
                    signals = self._policies.shared_signals()
                    if signals is not None:
                        signals.publish_pause(self.endpoint, pause)  # and every replica
        except Exception:  # noqa: BLE001 - a bug in a policy must not stop the call
            self._hook.pipeline.internal_error("policies")

    def _reserved_tokens(self) -> int:
        info = self._info
        answer = (
            info.max_tokens if info.max_tokens is not None else self._policies.timeouts.assumed_max_tokens
        )
        return (self._prompt_estimate or 0) + answer

    def _rate_checks(self) -> list[RateCheck]:
        policies, tenant = self._policies, self._ctx.tenant
        return rate_checks(
            policies.tenant_limit(tenant),
            policies.key_rate_limit,
            tenant=tenant,
            key_id=self.endpoint[2],
            tokens=self._reserved_tokens(),
            throttle_rpm=policies.throttle_of(tenant, time.time()) if tenant else None,
        )

    def _rate_verdict(
        self, request: Any, checks: list[RateCheck], results: list[GcraResult], waited: float
    ) -> float | None:
        """None when every bucket admitted the call; else how long to wait (or refuse now)."""
        refused = next(((c, r) for c, r in zip(checks, results, strict=False) if not r.allowed), None)
        if refused is None:
            self._rate_reserved = checks
            return None
        check, result = refused
        hook = self._hook
        hook.pipeline.count_rate_limited(hook.metrics, hook.provider.name, check.what)
        budget = self._policies.rate_limit_wait_s - waited
        remaining = self._remaining()
        if remaining is not None:
            budget = min(budget, remaining)
        if result.retry_after_s > budget:
            tenant = self._ctx.tenant or "(no tenant)"
            message = f"{check.what} limit for {tenant}: next admission in {result.retry_after_s:.2f} s"
            self._refuse(request, RateLimitedError, message, result.retry_after_s)
        return result.retry_after_s

    def _budget_checks(self) -> list[BudgetCheck]:
        return budget_checks(self._policies.tenant_budget(self._ctx.tenant), self._ctx.tenant)

    def _judge_budgets(self, request: Any, checks: list[BudgetCheck], totals: list[float]) -> None:
        self._budgets = checks
        # Background calls stop at 90 % of a budget: the rest is kept for interactive ones.
        share = _BACKGROUND_BUDGET_SHARE if self._priority() == "background" else 1.0
        spent = [c for c, total in zip(checks, totals, strict=True) if total >= c.limit * share]
        if not spent:
            return
        budget = self._policies.tenant_budget(self._ctx.tenant)
        action = budget.action if budget is not None else "alert"
        hook, tenant = self._hook, self._ctx.tenant or ""
        what = spent[0].what
        hook.pipeline.count_budget_action(hook.metrics, action, what)
        self._budget_action = action
        message = f"budget {what} of {tenant} is spent ({spent[0].limit:g})"
        if action == "block":
            self._refuse(request, BudgetExceededError, message)
        if action == "downgrade" and self._switch(request, "budget"):
            return
        _warn_budget_once(tenant, spent[0], message)

    def _settle_later(self, event: CallEvent) -> None:
        # In memory it costs microseconds: inline. A remote store is a round
        # trip: a background thread does it, off the caller's thread and loop.
        if isinstance(self._policies.state_store(), MemoryStore):
            try:
                self._settle(event)
            except Exception:  # noqa: BLE001 - a store failure must not reach the caller
                self._hook.pipeline.internal_error("settle")
        else:
            WRITE_BACK.submit(lambda: self._settle(event))

    def _settle(self, event: CallEvent) -> None:
        """After the call: charge the budgets, and correct the token reservation with the actual usage."""
        store = self._policies.state_store()
        used = (event.input_tokens or 0) + (event.output_tokens or 0)
        for check in self._budgets:
            amount = used if check.unit == "tokens" else event.cost_usd or 0.0
            if amount:
                store.add(check.key, amount, window_s=check.window_s)
        for bucket in self._rate_reserved:
            if event.attempts == 0 and event.outcome != "ok":  # never sent: give it all back
                store.gcra(bucket.key, rate_per_s=bucket.rate_per_s, burst=bucket.burst, cost=-bucket.cost)
            elif bucket.key.startswith("rl:tok:") and event.input_tokens is not None:
                delta = used - bucket.cost  # a refund when the estimate was high
                if delta:
                    store.gcra(bucket.key, rate_per_s=bucket.rate_per_s, burst=bucket.burst, cost=delta)

    # -- the response cache ---------------------------------------------------

    def cached_answer(self, request: Any) -> CacheEntry | None:
        """The cached answer to this request, when caching is allowed and there is one (sync shell)."""
        key = self._cacheable_key(request)
        if key is None:
            return None
        try:
            entry = self._policies.cache().get(key)
        except Exception:  # noqa: BLE001 - a bug in the cache must not stop the call
            self._hook.pipeline.internal_error("cache")
            return None
        return self._counted_lookup(entry)

    async def acached_answer(self, request: Any) -> CacheEntry | None:
        """`cached_answer` for the async shell."""
        key = self._cacheable_key(request)
        if key is None:
            return None
        try:
            entry = await self._policies.cache().aget(key)
        except Exception:  # noqa: BLE001 - a bug in the cache must not stop the call
            self._hook.pipeline.internal_error("cache")
            return None
        return self._counted_lookup(entry)

    def _cacheable_key(self, request: Any) -> str | None:
        ctx, policies = self._ctx, self._policies
        cacheable = ctx.cache or (ctx.route is not None and ctx.route in policies.cache_routes)
        if not cacheable or ctx.private or self._info.streamed:
            return None
        try:
            provider, host, key_id = self.endpoint
            self._cache_key = cache_key(provider, host, key_id, self._info.path, request.content)
        except Exception:  # noqa: BLE001 - a streamed upload has no readable content
            self._cache_key = None
        return self._cache_key

    def _counted_lookup(self, entry: CacheEntry | None) -> CacheEntry | None:
        hook = self._hook
        hook.pipeline.count_cache(hook.metrics, hook.provider.name, "hit" if entry is not None else "miss")
        return entry

    def serve_cached(self, entry: CacheEntry) -> None:
        """Record a call answered from the cache: no attempt, nothing billed, the original cost saved."""
        self._cache_hit = entry
        self._status = entry.status
        self._headers = dict(entry.headers)
        self._watch_decoded(entry.body)
        try:
            parsed = self._hook.provider.parse_body(self._info, entry.body)
        except Exception:  # noqa: BLE001 - the answer is already on its way to the caller
            parsed = None
        self._finish("ok", parsed, data=entry.body)

    def _store_answer(self, data: bytes, cost: float | None) -> None:
        key = self._cache_key
        if (
            key is None
            or self._cache_hit is not None
            or self._served_provider is not None  # another provider's stand-in answer
            or self._status is None
            or not 200 <= self._status < 300
            or self._body is None
            or self._body.partial  # only a whole body can be served again
            or self._body.unread_reason is not None
        ):
            return
        status, hook = self._status, self._hook
        # The body is kept decoded: the headers that described its wire form go.
        headers = tuple((k, v) for k, v in (self._headers or {}).items() if k not in _REENCODED_HEADERS)
        cache = self._policies.cache()

        def store() -> None:
            if cache.put(key, status, headers, data, cost):
                hook.pipeline.count_cache(hook.metrics, hook.provider.name, "store")

        if isinstance(cache, RemoteCache):
            WRITE_BACK.submit(store)  # a network round trip: not on the caller's thread
            return
        try:
            store()
        except Exception:  # noqa: BLE001 - a bug in the cache must not stop the call
            self._hook.pipeline.internal_error("cache")

    # -- serving elsewhere: the cross-provider fallback -----------------------
    # Offered where the call would otherwise fail because its provider cannot
    # serve it; the shell calls the user's function (sync or awaited), and
    # `_served_elsewhere` makes every decision on what it returned.

    def _offer_elsewhere(
        self, request: Any, reason: UnavailableReason, refuse: Callable[[], tuple[int, Any, bytes]]
    ) -> None:
        """Raise `ServeElsewhere` when the user's cross-provider function may serve this call."""
        if self._policies.cross_provider is None or self._info.streamed or self._elsewhere_offered:
            return
        self._elsewhere_offered = True
        try:
            body = orjson.loads(request.content)
        except Exception:  # noqa: BLE001 - not a JSON request (or a streamed upload): nothing to translate
            return
        if not isinstance(body, dict):
            return
        info, hook = self._info, self._hook
        offer = UnavailableCall(
            hook.provider.name, info.model, info.operation, info.path, body, reason, self._ctx.tenant
        )
        raise ServeElsewhere(offer, refuse)

    def serve_elsewhere(self, offer: ServeElsewhere) -> tuple[int, Any, bytes]:
        """Run the cross-provider function (sync shell); the answer to hand over, or the original failure."""
        serve = self._policies.cross_provider
        assert serve is not None
        served, token = collecting_served()
        try:
            # Its calls belong to this one: same tenant, same correlation id.
            with context(correlation_id=self._correlation_id):
                answer = serve(offer.call)
            if inspect.isawaitable(answer):
                getattr(answer, "close", lambda: None)()  # never awaited: no "was never awaited" warning
                answer = TypeError("an async cross_provider function needs a wrapped async client")
        except Exception as exc:  # noqa: BLE001 - the user's function failed: the call fails as it would have
            answer = exc
        finally:
            stop_collecting(token)
        return self._served_elsewhere(offer, answer, served)

    async def aserve_elsewhere(self, offer: ServeElsewhere) -> tuple[int, Any, bytes]:
        """`serve_elsewhere` for the async shell: the function may be sync or ``async def``."""
        serve = self._policies.cross_provider
        assert serve is not None
        served, token = collecting_served()
        try:
            with context(correlation_id=self._correlation_id):
                answer = serve(offer.call)
                if inspect.isawaitable(answer):
                    answer = await answer
        except Exception as exc:  # noqa: BLE001 - the user's function failed: the call fails as it would have
            answer = exc
        finally:
            stop_collecting(token)
        return self._served_elsewhere(offer, answer, served)

    def _served_elsewhere(
        self, offer: ServeElsewhere, answer: object, served: list[Served]
    ) -> tuple[int, Any, bytes]:
        hook, reason = self._hook, offer.call.reason
        body = None
        if answer is not None and not isinstance(answer, BaseException):
            try:
                body = encode_answer(answer)
            except (TypeError, orjson.JSONEncodeError) as exc:
                answer = exc
        if body is None:
            if answer is not None:
                _warn_elsewhere_failed(hook.provider.name, answer)
            return offer.refuse()  # declined: as if there were no function
        # Who served it: the last wrapped call the function made (its own event has the tokens and cost).
        by = next((s for s in reversed(served) if s.ok), served[-1] if served else None)
        provider = by.provider if by is not None else "unknown"
        model = by.model if by is not None else None
        hook.pipeline.count_fallback(
            hook.metrics, hook.provider.name, self._served_model, model or "unknown", reason, provider
        )
        self._served_provider, self._served_model, self._fallback_reason = provider, model, reason
        self._release_slot(self._status)  # its own provider's slot goes back with its own answer (a 529)
        self._status, self._headers = 200, dict(_JSON_HEADERS)
        self._watch_decoded(body)
        self._finish("ok", None, data=body)
        return 200, _JSON_HEADERS, body

    def _original_answer(self, status: int, raw_headers: Any, body: bytes) -> tuple[int, Any, bytes]:
        """Hand over the provider's own error answer, as if no cross-provider function were set."""
        self.observe_body(None, decoded=True)
        body = self.consume(body)
        headers = [(k, v) for k, v in raw_headers.multi_items() if k.lower() not in _REENCODED_HEADERS]
        return status, headers, body

    # -- attempts -------------------------------------------------------------

    def begin_attempt(self, request: Any, extensions: dict[str, Any], *, is_async: bool) -> dict[str, Any]:
        """Admit and count an attempt; return the request extensions to send it with.

        Raises:
            CircuitOpenError: The endpoint's breaker refuses the attempt (the
                call ends: "rejected" if nothing was sent yet).
            DeadlineExceededError: The call's deadline passed while waiting.

        """
        first = self.attempts == 0
        self._request = request
        if first:
            self._find_breaker()
        if self._fallback_next is not None:
            self._switch(request, self._fallback_next)
        refusal = self._acquire_permit()
        # An open breaker sends the call down its fallback chain, if it has one.
        while refusal is CircuitOpenError and self._switch(request, "circuit_open"):
            refusal = self._acquire_permit()
        if refusal is not None:
            self._refuse(request, refusal)
        if first:
            self._earn_retry_budget()  # only calls actually sent earn retries
        elif not self._resend:
            self._retries += 1
        self._retry_unsent = self._resend = False
        self.attempts += 1
        self._trace = []
        self._attempt_started = time.perf_counter()
        if first:
            self._prev_trace = extensions.get("trace")
        extensions = dict(extensions)
        # A retry is timed whenever timings are on: something already went wrong.
        if self._timed or (self._retries > 0 and self._hook.network_sampler is not None):
            extensions["trace"] = self._async_trace if is_async else self._sync_trace
        info = self._info
        timeouts = self._policies.timeouts
        timeout = timeouts.attempt_extension(
            self._sdk_timeout,
            streamed=info.streamed,
            max_tokens=info.max_tokens,
            remaining_s=self._remaining(),
        )
        try:
            learned = self._deadlines.begin(
                self._deadline_key(), self._clock.monotonic(), tokens=timeouts.tokens_for(info.max_tokens)
            )
        except Exception:  # noqa: BLE001 - a bug of ours: the attempt goes with the limits it has
            self._hook.pipeline.internal_error("deadlines")
            learned = None
        if learned is not None:
            timeout = capped_read(timeout, learned)
        elif timeouts.learned and info.streamed and timeout is self._sdk_timeout:
            timeout = own_timeout(timeout)  # its body's reads may get a learned gap once the headers are in
        # Only a limit of llmpulse's makes a new dict: the SDK's own is never changed.
        self._attempt_timeout = None if timeout is self._sdk_timeout else timeout
        if self._attempt_timeout is not None:
            extensions["timeout"] = self._attempt_timeout
        return extensions

    def _deadline_key(self) -> DeadlineKey:
        provider, host, key_id = self.endpoint
        info = self._info
        return (provider, host, key_id, self._served_model or "", info.streamed, info.reasoning)

    def _stream_body_timeout(self) -> None:
        """A stream's headers are in: from here on every read waits at most the idle gap (learned or set)."""
        gap = self._deadlines.body_started()
        timeout = self._attempt_timeout
        if timeout is None:
            return
        timeouts = self._policies.timeouts
        idle = timeouts.body_read_s(self._sdk_timeout, streamed=True)
        if timeouts.learned:
            # Never longer than the user's own limit: the idle gap set, else the SDK's read timeout.
            theirs = self._sdk_timeout.get("read") if isinstance(self._sdk_timeout, dict) else None
            mine = idle if idle is not None else theirs
            timeout["read"] = mine if gap is None or (mine is not None and mine < gap) else gap
        elif idle is not None:
            timeout["read"] = idle

    def _find_breaker(self) -> None:
        hook = self._hook
        try:
            self._breaker = self._policies.circuit(self.endpoint, self._served_model, hook.circuit_changed)
        except Exception:  # noqa: BLE001 - a bug in a policy must not stop the call
            hook.pipeline.internal_error("policies")

    def _fallback_chain(self) -> list[Fallback]:
        if self._fallbacks is None:
            chains = self._policies.fallbacks
            # Azure names its deployment in the URL, not the body: no fallback there
            # (nor where the body is signed, or the model is in the URL).
            usable = chains and self._hook.provider.name != "azure" and self._hook.provider.rewrites_body
            self._fallbacks = chain_for(chains, self._info.model) if usable else []
        return self._fallbacks

    def _switch(self, request: Any, reason: str) -> bool:
        """Send the next attempts to the next fallback model; False when the chain is spent."""
        self._fallback_next = None
        chain = self._fallback_chain()
        while chain:
            fallback = chain.pop(0)
            try:
                body = rewrite_body(request.content, fallback)
            except Exception:  # noqa: BLE001 - a streamed upload has no readable content
                body = None
            if body is None:
                continue
            hook = self._hook
            hook.set_body(request, body)
            name = hook.provider.name
            hook.pipeline.count_fallback(hook.metrics, name, self._served_model, fallback.model, reason, name)
            self._served_model = fallback.model
            self._fallback_reason = reason
            self._find_breaker()
            return True
        return False

    def _earn_retry_budget(self) -> None:
        try:
            self._policies.retry_budget(self.endpoint).on_request()
        except Exception:  # noqa: BLE001 - a bug in a policy must not stop the call
            self._hook.pipeline.internal_error("policies")

    def _acquire_permit(self) -> type[PolicyError] | None:
        remaining = self._remaining()
        if remaining is not None and remaining <= 0:
            return DeadlineExceededError
        breaker = self._breaker
        if breaker is None:
            return None
        try:
            # A recovering endpoint is probed by interactive calls: background work waits for it.
            if self._priority() == "background" and breaker.state == "half_open":
                return CircuitOpenError
            permit = breaker.acquire()
        except Exception:  # noqa: BLE001 - a bug in a policy must not stop the call
            self._hook.pipeline.internal_error("policies")
            return None
        if permit is None:
            return CircuitOpenError
        self._permit = permit
        return None

    def _refuse(
        self,
        request: Any,
        cls: type[PolicyError],
        message: str | None = None,
        retry_after_s: float | None = None,
    ) -> NoReturn:
        if cls is CircuitOpenError or cls is OverloadedError:
            reason: UnavailableReason = "circuit_open" if cls is CircuitOpenError else "queue_full"
            self._offer_elsewhere(request, reason, lambda: self._refuse(request, cls, message, retry_after_s))
        hook, info = self._hook, self._info
        wait = retry_after_s
        if message is not None:
            pass
        elif cls is CircuitOpenError and self._breaker is not None:
            wait = self._breaker.retry_after_s()
            what = f"{hook.provider.name} {self._served_model or info.operation} at {self.endpoint[1]}"
            message = (
                f"circuit open for {what}: failing fast for {wait:.1f} s more"
                if wait > 0
                else f"circuit half-open for {what}: its probe calls are in flight"
            )
        else:
            wait = None
            message = (
                f"deadline exceeded after {self.attempts} attempt(s) and "
                f"{sum(self._backoff):.2f} s of backoff"
            )
        exc = sdk_error(
            cls,
            hook.connection_error,
            request,
            message,
            provider=hook.provider.name,
            model=info.model,
            retry_after_s=wait,
        )
        self._rejected_reason = cls.reason
        outcome: Outcome = "rejected" if self.attempts == 0 else "error"
        self._finish(outcome, None, error_type=cls.__name__, error_message=message)
        raise exc

    def retry_for_credentials(self) -> float:
        """The SDK's own rule retries this 401 once, with a refreshed credential: go again, at once."""
        self._stop_reason = None
        self._release_slot(401)
        self._backoff.append(0.0)
        return 0.0

    @property
    def resending(self) -> bool:
        """Whether the next attempt resends the caller's request as made (not a retry)."""
        return self._resend

    @property
    def retries(self) -> int:
        """Attempts so far that were retries (what the SDK's ``x-stainless-retry-count`` numbers)."""
        return self._retries

    def _remaining(self) -> float | None:
        """Seconds left before the call's deadline; None: it has none."""
        return None if self._deadline is None else self._deadline - self._clock.monotonic()

    def _wait_budget(self) -> float | None:
        # A slot is llmpulse's analog of a pooled connection: bounded, as that wait
        # is, by the SDK's pool timeout, and by the call's deadline when it has one.
        pool = self._sdk_timeout.get("pool") if isinstance(self._sdk_timeout, dict) else None
        remaining = self._remaining()
        if remaining is not None:
            remaining = max(remaining, 0.0)
            return remaining if pool is None else min(pool, remaining)
        return pool

    def _release(self, outcome: Literal["success", "failure", "ignored"]) -> None:
        permit, self._permit = self._permit, None
        if permit is None or self._breaker is None:
            return
        try:
            duration = self._clock.monotonic() - permit.started
            self._breaker.release(permit, outcome, duration, self._deadlines.allowed_s)
        except Exception:  # noqa: BLE001 - a bug in a policy must not stop the call
            self._hook.pipeline.internal_error("policies")

    def _sync_trace(self, name: str, info: Mapping[str, Any]) -> None:
        self._trace.append((name, time.perf_counter()))
        if self._prev_trace is not None:
            self._prev_trace(name, info)

    async def _async_trace(self, name: str, info: Mapping[str, Any]) -> None:
        self._trace.append((name, time.perf_counter()))
        if self._prev_trace is not None:
            await self._prev_trace(name, info)

    def wants_error_body(self, status: int) -> bool:
        """Whether the call's decisions need the body of a response with this status."""
        if status in (400, 422) and self._original_body is not None:
            return True  # it may refuse the stream_options llmpulse added
        if status == 429 and not self._policies.retry_quota_exhausted:
            return True  # only its error code tells a spent quota from a rate limit
        # An overloaded answer may be replaced by another provider's: keep it to hand over otherwise.
        return status in _OVERLOADED and self._policies.cross_provider is not None and not self._info.streamed

    def attempt_answered(self, status: int, raw_headers: Any, body: bytes | None = None) -> float | None:
        """Record response headers; return the sleep before a retry, or None to keep this response."""
        self._status = status
        self._deadlines.headers(self._clock.monotonic())
        # One pass into a plain dict: an httpx Headers lookup scans every
        # header, and an event reads half a dozen of them.
        headers = self._headers = dict(raw_headers.multi_items())
        # Only provider-side failures count against the breaker; a 4xx is the caller's.
        self._release("failure" if status >= 500 else "success" if status < 400 else "ignored")
        delay = None
        if self._original_body is not None and rejects_stream_options(status, body):
            delay = self._send_as_made()
        elif status >= 400:
            quota = False
            if body is not None and not self._policies.retry_quota_exhausted:
                try:
                    quota = self._hook.provider.quota_exhausted(status, body)
                except Exception:  # noqa: BLE001 - a bug of ours: decide without it
                    self._hook.pipeline.internal_error("retry_decision")
            delay = self._retry_delay(status, headers, None, quota=quota)
        elif self._info.streamed:
            self._stream_body_timeout()
        if delay is not None:
            self._release_slot(status)  # backoff does not hold a slot
        self._attempt_event(status, None, headers, delay)
        if delay is None and body is not None and status in _OVERLOADED:
            self._offer_elsewhere(
                self._request, "overloaded", lambda: self._original_answer(status, raw_headers, body)
            )
        return delay

    def _send_as_made(self) -> float:
        """The server refused the stream_options llmpulse added: resend the caller's request, as made."""
        body, self._original_body = self._original_body, None
        assert body is not None
        hook = self._hook
        url = self._request.url
        self._policies.stream_usage().remember(url.host, url.port, url.path)
        hook.set_body(self._request, body)
        self._info.strip_usage_chunk = False
        self._usage_refused = self._resend = True
        return 0.0  # not a retry: no backoff, no budget, not counted against max_retries

    def attempt_failed(self, exc: Exception) -> float | None:
        """Record a transport failure; return the sleep before a retry, or None to raise it."""
        self._status = None
        self._headers = None
        self._deadlines.headers(self._clock.monotonic())  # how long it lasted before failing
        failure = classify_exception(exc)
        self._release("failure" if failure in ("timeout", "connect") else "ignored")
        delay = self._retry_delay(None, None, failure, retried=self._hook.provider.retries_exception(exc))
        if delay is not None:
            self._release_slot(None)
        self._attempt_event(None, type(exc).__name__, None, delay)
        return delay

    def _retry_delay(
        self,
        status: int | None,
        headers: Mapping[str, str] | None,
        failure: str | None,
        *,
        quota: bool = False,
        retried: bool = True,
    ) -> float | None:
        try:
            decision = self._decide(status, headers, failure, quota, retried)
        except Exception:  # noqa: BLE001 - a bug of ours: hand over what we have, as it is
            self._hook.pipeline.internal_error("retry_decision")
            return None
        hook = self._hook
        hook.pipeline.count_retry(hook.metrics, hook.provider.name, self._info.model, decision)
        if decision.delay_s is None:
            self._stop_reason = decision.reason
            return None
        self._backoff.append(decision.delay_s)
        return decision.delay_s

    def _decide(
        self,
        status: int | None,
        headers: Mapping[str, str] | None,
        failure: str | None,
        quota: bool,
        retried: bool,
    ) -> RetryDecision:
        policies = self._policies
        decision = decide_retry(
            retries_taken=self._retries,
            max_retries=self._max_retries,
            status=status,
            headers=headers,
            failure=failure,
            failure_retried=retried,
            quota_exhausted=quota,
            max_retry_after_s=self._hook.provider.max_retry_after_s,
            remaining_s=self._remaining(),
            backoff_base_s=policies.backoff_base_s,
            backoff_max_s=policies.backoff_max_s,
            random=policies.random,
            sdk_backoff=self.sdk_backoff,
        )
        breaker_open = self._breaker is not None and self._breaker.state == "open"
        overloaded = status in _OVERLOADED
        # Another model may serve what this one cannot: it is out of capacity,
        # or this very failure opened its breaker.
        fall_back = overloaded or (breaker_open and decision.delay_s is not None)
        if fall_back and decision.reason != "max_retries" and self._fallback_chain():
            if not self._spend_retry():
                return RetryDecision(None, "budget")
            self._fallback_next = "overloaded" if overloaded else "circuit_open"
            return RetryDecision(0.0, "fallback")  # another model: no need to wait
        if decision.delay_s is None:
            return decision
        if breaker_open:
            return RetryDecision(None, "circuit_open")  # this very failure may have opened it
        if not self._spend_retry():
            return RetryDecision(None, "budget")
        return decision

    def _spend_retry(self) -> bool:
        self._retry_unsent = self._policies.retry_budget(self.endpoint).try_spend()
        return self._retry_unsent

    def _refund_unsent_retry(self) -> None:
        # Cancelled or refused in backoff (or waiting for a slot): the retry never reached the provider.
        self._retry_unsent = False
        try:
            self._policies.retry_budget(self.endpoint).refund()
        except Exception:  # noqa: BLE001 - a bug in a policy must not stop the call
            self._hook.pipeline.internal_error("policies")

    def _attempt_event(
        self,
        status: int | None,
        error_type: str | None,
        headers: Mapping[str, str] | None,
        delay: float | None,
    ) -> None:
        hook = self._hook
        pipeline = hook.pipeline
        info = self._info
        try:
            pipeline.count_attempt(hook.metrics, hook.provider.name, info.model, info.operation, status)
            if not pipeline.wants_attempts(hook.routes):
                return  # most apps log calls, not attempts: build nothing
            event = AttemptEvent(
                call_id=self.call_id,
                correlation_id=self._correlation_id,
                attempt=self.attempts,
                provider=hook.provider.name,
                operation=info.operation,
                model=info.model,
                http_status=status,
                error_type=error_type,
                request_id=None if headers is None else headers.get(hook.provider.request_id_header),
                latency_s=time.perf_counter() - self._attempt_started,
                retry_after_s=None if headers is None else parse_retry_after(headers),
                will_retry=delay is not None,
                backoff_s=delay or 0.0,
                network=self._network(),
            )
            if self._attempt_log is None:
                self._attempt_log = []
            self._attempt_log.append(event)  # sent with the call's event, if the call is sampled
        except Exception:  # noqa: BLE001 - telemetry must never break the call
            pipeline.internal_error("attempt_event")

    # -- the response body ----------------------------------------------------

    def observe_body(self, headers: MutableMapping[str, str] | None, *, decoded: bool = False) -> BodyWatcher:
        """Start watching the body of the response the caller will get.

        Args:
            headers: The response's headers, as the SDK will read them (a
                compressed stream whose bytes llmpulse filters loses its
                ``Content-Encoding`` there: it is handed over decoded).
            decoded: The body will be fed already decoded (read in full by the HTTP stack).

        """
        content_type = (self._headers or {}).get("content-type", "")
        self._sse = is_stream(content_type)
        stream = self._hook.provider.stream_watch(self._info) if self._sse else None
        strip = stream is not None and stream.strips
        # A stream's gaps between reads teach its learned deadline (a body read whole has none).
        clock = self._clock.monotonic if self._sse and not decoded else None
        self._body = body = BodyWatcher(headers, stream=stream, rewrites=strip, decoded=decoded, clock=clock)
        return body

    def _watch_decoded(self, body: bytes) -> None:
        # An answer made here (cache, another provider): counted and kept like any body.
        self._body = BodyWatcher(None, decoded=True)
        self._body.feed(body)

    def consume(self, content: bytes) -> bytes:
        """Watch a body the inner transport had already read (and decoded) in full; return what to keep."""
        body = self._body
        assert body is not None
        out = body.feed(content) + body.drain()
        self.body_ended()
        return out

    # -- finishing --------------------------------------------------------------

    def body_ended(self) -> None:
        """The provider's body arrived in full."""
        self._body_done = True
        self._finish_body("ended", None)

    def body_closed(self) -> None:
        """The caller (or the SDK) closed the body, possibly before its end."""
        self._finish_body("closed", None)

    def body_failed(self, exc: BaseException) -> None:
        """Reading the body raised (connection reset, cancellation)."""
        self._finish_body("failed", exc)

    def body_collected(self) -> None:
        """The response was garbage-collected without being closed.

        Called from ``__del__``, i.e. from inside the garbage collector, which
        may run while this very thread holds a lock of ours or of
        prometheus_client: so only queue the call here (``deque.append`` takes
        no lock) and finish it later, from `finish_collected`.
        """
        if not self._finish_lock.locked():
            _COLLECTED.append(self)

    def _finish_collected(self) -> None:
        self._finish_body("collected", None)

    def abort(self, exc: BaseException) -> None:
        """An exception escaped before a response was handed over."""
        # Cancelled mid-attempt: give the breaker its permit back, counting nothing.
        self._release("ignored")
        if self._finish_lock.locked():
            return
        if isinstance(exc, Exception):
            outcome: Outcome = "error"
            error_type = self._hook.sdk_error_name(exc)
        else:
            outcome, error_type = "cancelled", type(exc).__name__
        self._finish(outcome, None, error_type=error_type, error_message=_safe_message(exc))

    def _finish_body(self, how: str, exc: BaseException | None) -> None:
        if self._finish_lock.locked():
            return
        try:
            self._classify_body(how, exc)
        except Exception:  # noqa: BLE001 - runs inside the caller's read: never raise there
            if self._finish_lock.acquire(blocking=False):
                self._hook.pipeline.internal_error("finish_body")

    def _classify_body(self, how: str, exc: BaseException | None) -> None:
        body = self._body
        data = body.data if body is not None else b""
        provider = self._hook.provider
        status = self._status or 0
        interrupted = False
        parsed: ResponseInfo
        if status >= 400:
            parsed = provider.parse_error(status, data)
            outcome: Outcome = "error"
        elif self._sse:
            parsed = provider.parse_stream(self._info, data)
            terminal = parsed.terminal is True
            outcome = "ok" if terminal else "abandoned"
            if parsed.error_type is not None:
                outcome = "error"
            elif how == "ended" and not terminal:
                outcome, parsed.error_type = "error", "IncompleteStream"
        else:
            parsed = provider.parse_body(self._info, data)
            outcome = "ok" if self._body_done or how == "ended" else "abandoned"
            if how == "ended" and self._malformed_body(parsed, data):
                # The SDK raises its own error parsing it (json.JSONDecodeError, in both SDKs).
                self._body_malformed = True
                outcome, parsed.error_type = "error", "JSONDecodeError"
                parsed.error_message = f"the {status} response's body is not JSON ({len(data)} bytes)"
        if exc is not None and outcome != "ok":
            outcome = "error" if isinstance(exc, Exception) else "cancelled"
            parsed.error_type = type(exc).__name__
            parsed.error_message = _safe_message(exc)
        if outcome in ("error", "cancelled") and self._sse:
            interrupted = body is not None and body.content_at is not None
        self._finish(outcome, parsed, data=data, stream_interrupted=interrupted)

    def _malformed_body(self, parsed: ResponseInfo, data: bytes) -> bool:
        # Only bodies that say they are JSON (file contents and audio are not), and that were read.
        if not (self._headers or {}).get("content-type", "").startswith("application/json"):
            return False
        if self._body is None or self._body.unread_reason is not None:
            return False
        return parsed.malformed if parsed.malformed is not None else json_malformed(data)

    def _finish(
        self,
        outcome: Outcome,
        parsed: ResponseInfo | None,
        *,
        data: bytes = b"",
        stream_interrupted: bool = False,
        error_type: str | None = None,
        error_message: str | None = None,
    ) -> None:
        if not self._finish_lock.acquire(blocking=False):
            return  # finished already (close after end, GC after close)
        self._release_slot(self._status)  # the provider is done with this call
        if self._retry_unsent:
            self._refund_unsent_retry()
        if self._body is not None and self._sse:
            self._deadlines.body_gap(self._body.max_gap_s)
        try:
            event = self._build_event(outcome, parsed, data, stream_interrupted, error_type, error_message)
        except Exception:  # noqa: BLE001 - a bug of ours must never reach the caller
            self._hook.pipeline.internal_error("build_event")
            return
        self._teach_deadlines(event)
        if self._budgets or self._rate_reserved:
            self._settle_later(event)
        if self._interaction is not None:
            self._interaction.add(event)
        hook = self._hook
        if self._attempt_log is not None and event.sampled:
            for attempt in self._attempt_log:
                hook.pipeline.emit_attempt(attempt, hook.routes, self._app_ctx)
        hook.pipeline.emit_call(event, hook.routes, hook.metrics, self._app_ctx)
        record_served(event.provider, event.served_model, event.outcome == "ok")

    def _teach_deadlines(self, event: CallEvent) -> None:
        # Only a healthy answer from the provider itself teaches what healthy takes.
        status = self._status or 0
        if event.outcome != "ok" or not 200 <= status < 300 or event.attempts == 0:
            return
        if self._cache_hit is not None or self._served_provider is not None:
            return
        try:
            self._deadlines.teach(event.output_tokens)
        except Exception:  # noqa: BLE001 - a bug of ours must never reach the caller
            self._hook.pipeline.internal_error("deadlines")

    def _build_event(
        self,
        outcome: Outcome,
        parsed: ResponseInfo | None,
        data: bytes,
        stream_interrupted: bool,
        error_type: str | None,
        error_message: str | None,
    ) -> CallEvent:
        now = time.perf_counter()
        hook = self._hook
        info = self._info
        body = self._body
        headers = self._headers
        model = info.model
        input_tokens = output_tokens = cached = cache_write = reasoning = None
        response_model = finish_reason = None
        estimated = False
        if parsed is not None:
            input_tokens, output_tokens = parsed.input_tokens, parsed.output_tokens
            cached, cache_write = parsed.cached_input_tokens, parsed.cache_write_tokens
            reasoning = parsed.reasoning_tokens
            response_model, finish_reason = parsed.response_model, parsed.finish_reason
            error_type = error_type or parsed.error_type
            error_message = error_message or parsed.error_message
        if self._sse and self._learns_usage and self._request is not None:
            # A stream the caller read to its end without usage: later ones to this endpoint ask.
            whole = outcome == "ok" and not stream_interrupted and bool(data)
            if output_tokens is not None or whole:
                url = self._request.url
                self._policies.stream_usage().saw_stream(
                    url.host, url.port, url.path, had_usage=output_tokens is not None
                )
        if self._sse and output_tokens is None and data:
            # No usage arrived (the stream dropped or reset, or the server sends none
            # and refused to be asked): estimate what was generated and billed, and say so.
            output_tokens = hook.count_tokens(hook.provider.stream_text(data), model)
            if input_tokens is None:
                input_tokens = self._prompt_estimate
            estimated = True
        output = None
        if self._capture and outcome != "error" and data:
            text = hook.provider.stream_text(data) if self._sse else hook.provider.output_text(info, data)
            output = output_content(text, partial=body is not None and body.partial)
        cost = None
        if input_tokens is not None and output_tokens is not None:
            cost = hook.price(
                response_model,
                model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cached_input_tokens=cached or 0,
                cache_write_tokens=cache_write or 0,
                reasoning_tokens=reasoning or 0,
                cache_write_1h_tokens=(parsed.cache_write_1h_tokens or 0) if parsed is not None else 0,
            )
        elif self._status is not None and self._status >= 400:
            cost = 0.0  # rejected by the provider before generating: not billed
        elif self._served_provider is not None:
            cost = 0.0  # billed on the call that served it, which has its own event
        saved = None
        if self._cache_hit is not None:
            saved, cost = self._cache_hit.cost_usd if self._cache_hit.cost_usd is not None else cost, 0.0
        elif outcome == "ok" and not self._sse and self._cache_key is not None:
            self._store_answer(data, cost)
        ctx = self._ctx
        deadlines = self._deadlines
        scrubber = hook.pipeline.scrubber
        # Decided once, here: traces, attempt events and content follow it.
        sampled = hook.pipeline.sampler.keep(
            failed=outcome == "error" or (self._status or 0) >= 400,
            retried=self._retries > 0,
            latency_s=now - self._t0,
            model=model,
        )
        return CallEvent(
            call_id=self.call_id,
            correlation_id=self._correlation_id,
            interaction_id=ctx.interaction_id,
            provider=hook.provider.name,
            operation=info.operation,
            model=model,
            response_model=response_model,
            tenant=ctx.tenant,
            route=ctx.route,
            feature=ctx.feature,
            tags=dict(ctx.tags),
            priority=ctx.priority or "interactive",
            streamed=self._sse or info.streamed,
            outcome=outcome,
            stream_interrupted=stream_interrupted,
            http_status=self._status,
            error_type=error_type if outcome != "ok" else None,
            attempts=self.attempts,
            retries=self._retries,
            stream_usage_refused=self._usage_refused,
            trace_id=None if self._trace_ids is None else self._trace_ids[0],
            span_id=None if self._trace_ids is None else self._trace_ids[1],
            backoff_s=tuple(self._backoff),
            request_id=None if headers is None else headers.get(hook.provider.request_id_header),
            latency_s=now - self._t0,
            provider_latency_s=None if headers is None else hook.provider.provider_latency(headers),
            ttft_s=None if body is None or body.content_at is None else body.content_at - self._t0,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=cached,
            cache_write_tokens=cache_write,
            reasoning_tokens=reasoning,
            tokens_estimated=estimated,
            cost_usd=cost,
            finish_reason=finish_reason,
            max_tokens=info.max_tokens,
            prompt_tokens_estimate=self._prompt_estimate,
            response_bytes=0 if body is None else body.wire_bytes,
            content_encoding=None if body is None else body.content_encoding,
            body_unread_reason=None if body is None else body.unread_reason,
            body_malformed=self._body_malformed,
            api_key_id=hook.api_key_id,
            network=self._network(),
            ratelimit=None if headers is None else hook.provider.ratelimit(headers),
            started_at=datetime.fromtimestamp(time.time() - (now - self._t0), UTC),
            server_address=self.endpoint[1],
            server_port=self._server_port,
            error_message=scrubber.error(error_message, hook.secrets) if outcome != "ok" else None,
            path=info.path,
            retry_stop_reason=self._stop_reason if outcome != "ok" else None,
            rejected_reason=self._rejected_reason,
            served_model=self._served_model,
            served_provider=self._served_provider or hook.provider.name,
            fallback_reason=self._fallback_reason,
            cache_hit=self._cache_hit is not None,
            cost_saved_usd=saved,
            queue_wait_s=self._queue_wait,
            budget_action=self._budget_action,
            input_content=_scrubbed(scrubber, self._input_content, hook) if sampled else None,
            output_content=_scrubbed(scrubber, output, hook) if sampled else None,
            sampled=sampled,
            deadline_phase=deadlines.phase,
            deadline_learned_s=deadlines.allowed_s,
            deadline_exceeded=deadlines.exceeded,
        )

    def _network(self) -> NetworkTimings | None:
        if not self._trace:
            return None
        marks = dict(self._trace)
        http = "http2." if "http2.send_request_headers.started" in marks else "http11."
        return NetworkTimings(
            connect_s=_between(marks, "connection.connect_tcp.started", "connection.connect_tcp.complete"),
            tls_s=_between(marks, "connection.start_tls.started", "connection.start_tls.complete"),
            request_s=_between(
                marks, http + "send_request_headers.started", http + "send_request_body.complete"
            ),
            time_to_headers_s=_between(
                marks, http + "receive_response_headers.started", http + "receive_response_headers.complete"
            ),
            body_s=_between(
                marks, http + "receive_response_body.started", http + "receive_response_body.complete"
            ),
            connection_reused="connection.connect_tcp.started" not in marks,
        )


def _between(marks: dict[str, float], start: str, end: str) -> float | None:
    a, b = marks.get(start), marks.get(end)
    return None if a is None or b is None else b - a


def _safe_message(exc: BaseException) -> str | None:
    return str(exc) or None


def _scrubbed(scrubber: Scrubber, text: str | None, hook: Hook) -> str | None:
    # Captured content (opt-in) may hold a key the user pasted or a PII rule's target.
    return None if text is None else scrubber.scrub(text, hook.secrets)
