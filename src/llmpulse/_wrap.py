"""`wrap()` and `unwrap()`: hook a client's HTTP transport, return a new client of the same class.

The hook follows sdk-facts.md §3: clone the SDK's own http client into a
plain httpx/httpx2 client sharing its state (headers, auth, proxies, pool),
wrap its transport and every mounted transport, and re-point a copy of the
SDK client at it with the SDK's retries off. ``with_options()`` copies share
the clone, so they stay instrumented; a copy that sets ``max_retries`` gets
its own hook with that retry count.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import logging
import sys
import threading
import warnings
from collections.abc import Iterable
from typing import Any, TypeVar, cast

from ._config import Settings, get_settings
from ._exit import start_daemon
from ._hook import Hook
from ._loop import install_loop
from ._pipeline import get_pipeline, make_metrics, run_exit_hook_first
from ._redact import secrets_of
from ._runtime import price_table
from ._sampling import Sampler
from ._transport import transport_classes
from .exceptions import UnsupportedClientError
from .policies import BreakerConfig, Budget, ConcurrencyConfig, Policies, RateLimit, Timeouts
from .providers import AnthropicProvider, OpenAIProvider, Provider
from .state import RedisStore

__all__ = ["unwrap", "wrap"]

_log = logging.getLogger("llmpulse")

_SUPPORTED = (
    "openai.OpenAI, openai.AsyncOpenAI, openai.AzureOpenAI, openai.AsyncAzureOpenAI, "
    "anthropic.Anthropic, anthropic.AsyncAnthropic"
)
_HOOK_ATTR = "_llmpulse_hook"
_ORIGINAL_ATTR = "_llmpulse_original"
_warned: set[type] = set()

ClientT = TypeVar("ClientT")


def wrap(
    client: ClientT,
    *,
    sinks: Iterable[Any] | None = None,
    registry: Any = None,
    policies: Policies | None = None,
) -> ClientT:
    """Return an instrumented copy of an openai or anthropic client.

    The copy has the same class and settings; the argument is left untouched
    (assign the result). Wrapping a wrapped client returns it as it is.

    Args:
        client: An ``OpenAI``, ``AsyncOpenAI``, ``AzureOpenAI``,
            ``AsyncAzureOpenAI``, ``Anthropic`` or ``AsyncAnthropic`` client.
        sinks: Output sinks for this client's events, replacing the
            configured defaults (metrics and `llmpulse.stats` still see every call).
        registry: A prometheus_client ``CollectorRegistry`` for this client's
            metrics (default: the global registry).
        policies: Retry, timeout and circuit-breaker settings for this client
            (default: the process's, from the ``LLMPULSE_*`` settings). Clients
            wrapped with the same object share per-endpoint state.

    Returns:
        The instrumented client; if the SDK's internals are not what llmpulse
        expects (an unknown release), the client itself, after one warning.

    Raises:
        UnsupportedClientError: ``client`` is not a supported SDK client (a ``TypeError``).
        ConfigError: An ``LLMPULSE_*`` environment variable is invalid.

    """
    if getattr(client, _HOOK_ATTR, None) is not None:
        return client
    provider = _identify(client)
    settings = get_settings()
    if not settings.enabled:
        return client
    pipeline = get_pipeline()
    run_exit_hook_first()
    _warm_up_prices()
    try:
        hook = _addressed(
            Hook(
                provider=provider,
                http=_http_module(client._client),  # type: ignore[attr-defined]
                pipeline=pipeline,
                max_retries=int(client.max_retries),  # type: ignore[attr-defined]
                routes=None if sinks is None else pipeline.routes_for(sinks),
                metrics=None if registry is None else make_metrics(registry, settings),
                inject_stream_usage=settings.include_stream_usage,
                network_sampler=_network_sampler(settings),
                capture_content=settings.capture_content,
                policies=policies if policies is not None else default_policies(settings),
                connection_error=_connection_error(client),
            ),
            client,
        )
        wrapped = _copy_with_hook(client, client._client, hook)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - an unknown SDK release must not break the app
        return cast("ClientT", _give_up(client, exc, pipeline))
    object.__setattr__(wrapped, _ORIGINAL_ATTR, client)
    return cast("ClientT", wrapped)


_defaults: list[tuple[Settings, Policies]] = []


def default_policies(settings: Settings) -> Policies:
    """The process's `Policies`, built from ``settings`` (rebuilt, with fresh state, by `configure`)."""
    if _defaults and _defaults[0][0] is settings:
        return _defaults[0][1]
    breaker = None
    if settings.breaker:
        breaker = BreakerConfig(
            failure_threshold=settings.breaker_failures,
            open_s=settings.breaker_open_s,
            half_open_probes=settings.breaker_half_open_probes,
        )
    policies = Policies(
        max_retries=_max_retries(settings),
        backoff_base_s=settings.backoff_base_s,
        backoff_max_s=settings.backoff_max_s,
        retry_budget_ratio=settings.retry_budget_ratio,
        retry_budget_reserve=settings.retry_budget_reserve,
        retry_quota_exhausted=settings.retry_quota_exhausted,
        timeouts=_timeouts(settings),
        breaker=breaker,
        fallbacks=dict(settings.fallbacks),
        cache_ttl_s=settings.cache_ttl_s,
        cache_max_entries=settings.cache_max_entries,
        cache_routes=frozenset(settings.cache_routes),
        rate_limit=_rate_limit(settings.tenant_requests_per_min, settings.tenant_tokens_per_min),
        key_rate_limit=_rate_limit(settings.key_requests_per_min, settings.key_tokens_per_min),
        rate_limit_wait_s=settings.rate_limit_wait_s,
        budget=_budget(settings),
        concurrency=ConcurrencyConfig(initial_limit=settings.concurrency_limit)
        if settings.concurrency
        else None,
        store=RedisStore(settings.redis_url, replicas=settings.replicas, on_fallback=_count_store_fallback)
        if settings.redis_url
        else None,
    )
    _defaults[:] = [(settings, policies)]
    return policies


def _timeouts(settings: Settings) -> Timeouts:
    # The preset, or nothing of llmpulse's; each variable set wins for its phase.
    learned = settings.deadlines == "learned"
    base = Timeouts.fixed() if settings.deadlines == "fixed" else Timeouts(learned=learned)
    overrides: dict[str, Any] = {
        "connect_s": settings.connect_timeout_s,
        "read_s": settings.read_timeout_s,
        "stream_first_byte_s": settings.stream_first_byte_timeout_s,
        "stream_idle_s": settings.stream_idle_timeout_s,
        "total_s": settings.total_timeout_s,
    }
    return dataclasses.replace(
        base,
        read_per_token_s=settings.read_timeout_per_token_s,
        **{name: value for name, value in overrides.items() if value is not None},
    )


def _max_retries(settings: Settings) -> int | None:
    if settings.max_retries is not None:
        return settings.max_retries
    return 2 if settings.deadlines == "fixed" else None  # the recipe's 2 retries, whatever the client says


def _count_store_fallback(reason: str) -> None:
    metrics = get_pipeline().metrics
    if metrics is not None:
        metrics.record_store_fallback(reason)


def _rate_limit(requests: float | None, tokens: float | None) -> RateLimit | None:
    return None if requests is None and tokens is None else RateLimit(requests, tokens)


def _budget(settings: Settings) -> Budget | None:
    caps = (
        settings.budget_usd_per_hour,
        settings.budget_usd_per_day,
        settings.budget_tokens_per_hour,
        settings.budget_tokens_per_day,
    )
    if all(cap is None for cap in caps):
        return None
    return Budget(*caps, action=settings.budget_action)  # type: ignore[arg-type]


def _connection_error(client: Any) -> type[BaseException]:
    # llmpulse's own errors must also be this SDK's APIConnectionError (see exceptions.py).
    sdk = sys.modules[type(client).__module__.split(".")[0]]
    error: type[BaseException] = sdk.APIConnectionError
    return error


def _network_sampler(settings: Settings) -> Sampler | None:
    if settings.network_timings == "off":
        return None
    return Sampler(1.0 if settings.network_timings == "all" else settings.network_sample_rate)


_warmed = threading.Event()


def _warm_up_prices() -> None:
    # genai-prices takes ~0.4 s to import and load: do it off the caller's
    # path, once, so the first priced call does not pay for it.
    if _warmed.is_set():
        return
    _warmed.set()

    def warm() -> None:
        with contextlib.suppress(Exception):
            price_table().warm_up()

    start_daemon(warm, "llmpulse-prices")


def unwrap(client: Any) -> Any:
    """Return the client that was passed to `wrap()` (or ``client`` if it is not wrapped)."""
    return getattr(client, _ORIGINAL_ATTR, client)


def _identify(client: Any) -> Provider:
    openai = sys.modules.get("openai")
    anthropic = sys.modules.get("anthropic")
    if openai is not None:
        azure = (openai.AzureOpenAI, openai.AsyncAzureOpenAI)
        if isinstance(client, openai.OpenAI | openai.AsyncOpenAI):
            name = "azure" if isinstance(client, azure) else "openai"
            return OpenAIProvider(name)
    if anthropic is not None and isinstance(client, anthropic.Anthropic | anthropic.AsyncAnthropic):
        return AnthropicProvider()
    raise UnsupportedClientError(
        f"llmpulse.wrap() got {type(client).__module__}.{type(client).__qualname__}; it supports {_SUPPORTED}"
    )


def _http_base(http: Any) -> type[Any]:
    # The plain httpx/httpx2 class under the SDK's subclass: the SDK's
    # wrapper class closes the shared pool in __del__, a plain clone must not.
    return next(
        c
        for c in type(http).__mro__
        if c.__module__.split(".")[0] in ("httpx", "httpx2") and c.__name__ in ("Client", "AsyncClient")
    )


def _http_module(http: Any) -> Any:
    return sys.modules[_http_base(http).__module__.split(".")[0]]


def _clone_http(http: Any, hook: Hook) -> Any:
    sync_cls, async_cls = transport_classes(hook.http)
    base = _http_base(http)
    wrapper = async_cls if base.__name__ == "AsyncClient" else sync_cls

    def wrap_transport(transport: Any) -> Any:
        if transport is None:
            return None
        # Re-wrapping a wrapped transport (a copy with new max_retries) keeps one layer.
        inner = transport.inner if isinstance(transport, sync_cls | async_cls) else transport
        return wrapper(inner, hook)

    clone = object.__new__(base)
    clone.__dict__.update(http.__dict__)
    clone._transport = wrap_transport(http._transport)
    clone._mounts = {pattern: wrap_transport(t) for pattern, t in http._mounts.items()}
    return clone


def _addressed(hook: Hook, client: Any) -> Hook:
    """``hook`` with the key of ``client`` (a copy may change it; the address is read per request)."""
    return dataclasses.replace(
        hook,
        api_key_id=_fingerprint(getattr(client, "api_key", None)),
        secrets=secrets_of(getattr(client, name, None) for name in _CREDENTIALS),
    )


# Where the SDK clients keep what authenticates them: OpenAI and Anthropic keys,
# Anthropic's OAuth token, Azure's AD token, OpenAI's webhook secret.
_CREDENTIALS = ("api_key", "auth_token", "_azure_ad_token", "webhook_secret")


def _copy_with_hook(client: Any, http: Any, hook: Hook) -> Any:
    """Copy ``client`` onto a hooked clone of ``http`` and make its copies do the same."""
    clone = _clone_http(http, hook)
    # max_retries stays the caller's: llmpulse's loop at the request entry reads it per call.
    wrapped = type(client).copy(client, http_client=clone)
    wrapped._strict_response_validation = client._strict_response_validation
    _install(wrapped, hook)
    return wrapped


def _install(wrapped: Any, hook: Hook) -> None:
    if hook.client.get() is None:  # a shared hook reads the max_retries of the client it was made for
        hook.client.bind(wrapped)
    object.__setattr__(wrapped, _HOOK_ATTR, hook)

    def copy(*args: Any, **kwargs: Any) -> Any:
        # As in the SDK, a copy shares its original's http client (and so its hook) unless it
        # changes what the hook knows: the key, max_retries or the http client.
        http_client = kwargs.pop("http_client", None)
        shared = http_client is None
        clone = wrapped._client if shared else _clone_http(http_client, hook)
        result = type(wrapped).copy(wrapped, *args, http_client=clone, **kwargs)  # validates as bare
        retries = hook.max_retries_of(wrapped) if "max_retries" not in kwargs else result.max_retries
        new_hook = _addressed(hook.with_max_retries(int(retries)), result)
        if shared and _same_target(new_hook, hook):
            new_hook = hook
        elif shared:
            clone = _clone_http(wrapped._client, new_hook)
            result = type(wrapped).copy(wrapped, *args, http_client=clone, **kwargs)
        else:
            _rebind(clone, new_hook)
        result._strict_response_validation = wrapped._strict_response_validation
        _install(result, new_hook)
        object.__setattr__(result, _ORIGINAL_ATTR, getattr(wrapped, _ORIGINAL_ATTR, wrapped))
        return result

    # The SDK's own parameters, for whoever inspects them (its tests compare them with __init__'s).
    copy.__signature__ = inspect.signature(type(wrapped).copy.__get__(wrapped))  # type: ignore[attr-defined]
    # Instance attributes: the class (and `type(c) is OpenAI`) stay the SDK's.
    object.__setattr__(wrapped, "copy", copy)
    object.__setattr__(wrapped, "with_options", copy)
    install_loop(wrapped, hook)


def _same_target(a: Hook, b: Hook) -> bool:
    # The address is read from each request: a copy with another base URL may share the hook.
    return (a.api_key_id, a.max_retries) == (b.api_key_id, b.max_retries)


def _rebind(http: Any, hook: Hook) -> None:
    for transport in (http._transport, *http._mounts.values()):
        if transport is not None and hasattr(transport, "hook"):
            transport.hook = hook


def _give_up(client: Any, exc: Exception, pipeline: Any) -> Any:
    reason = type(exc).__name__
    if pipeline.metrics is not None:
        pipeline.metrics.record_wrap_failure(reason)
    if type(client) not in _warned:
        _warned.add(type(client))
        warnings.warn(
            f"llmpulse could not instrument {type(client).__qualname__} ({reason}: {exc}); "
            "this SDK release may be newer than llmpulse knows. The client is returned "
            "unwrapped and works as before, without telemetry.",
            RuntimeWarning,
            stacklevel=3,
        )
    return client


def _fingerprint(api_key: Any) -> str | None:
    if not isinstance(api_key, str) or not api_key:
        return None
    # 8 hex chars of a hash: enough to tell keys apart, useless to recover one.
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:8]
