"""`wrap()` and `unwrap()`: a copy of the client, as the SDK's ``copy()`` makes it, registered as wrapped.

Nothing of llmpulse's is put on the copy or on its http client (it shares the
caller's, as any SDK copy does). Instead, on the first wrap, llmpulse installs
its entry points on the SDK's classes (`llmpulse._loop.instrument_sdk`: the
request entry, request building, response processing, ``copy``) and on the
HTTP module's clients (`llmpulse._transport.instrument_http`: the transport
picked for a send). Each looks the client up in `llmpulse._registry`; an
unwrapped client, and every send outside a wrapped client's call, pass
through. A wrapped client's ``copy()``/``with_options()`` is wrapped too, with
a hook of its own where it changes the credentials.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar, cast

from ._config import Settings, get_settings
from ._exit import start_daemon
from ._hook import Hook
from ._loop import instrument_sdk
from ._pipeline import get_pipeline, make_metrics, run_exit_hook_first
from ._redact import secret_values, secrets_of
from ._registry import hook_of, original_of, register
from ._runtime import price_table
from ._sampling import Sampler
from ._transport import instrument_http
from .exceptions import UnsupportedClientError
from .policies import BreakerConfig, Budget, ConcurrencyConfig, Policies, RateLimit, Timeouts
from .providers import AnthropicProvider, BedrockProvider, OpenAIProvider, Provider, VertexProvider
from .state import RedisStore

__all__ = ["unwrap", "wrap"]

_log = logging.getLogger("llmpulse")

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
        client: An openai or anthropic SDK client: ``OpenAI``, ``AzureOpenAI``,
            ``BedrockOpenAI``, ``Anthropic``, ``AnthropicBedrock``,
            ``AnthropicVertex``, ``AnthropicFoundry``, ``AnthropicBedrockMantle``,
            ``AnthropicAWS``, ``AnthropicGoogleCloud``, their async twins, or a
            subclass of any of them.
        sinks: Output sinks for this client's events, replacing the
            configured defaults (metrics and `llmpulse.stats` still see every call).
        registry: A prometheus_client ``CollectorRegistry`` for this client's
            metrics (default: the global registry).
        policies: Retry, timeout and circuit-breaker settings for this client
            (default: the process's, from the ``LLMPULSE_*`` settings). Clients
            wrapped with the same object share per-endpoint state.

    Returns:
        The instrumented client. The client itself, unwrapped, when
        ``LLMPULSE_ENABLED=0``, or after one warning when the SDK's internals
        are not what llmpulse expects (an unknown release).

    Raises:
        UnsupportedClientError: ``client`` is not a supported SDK client (a ``TypeError``).
        ConfigError: An ``LLMPULSE_*`` environment variable is invalid.

    Example:
        ```python
        import llmpulse
        from openai import OpenAI

        client = llmpulse.wrap(OpenAI())  # every call: an event, metrics, the policies

        # A batch job's client: its events go to a file of their own instead of
        # the configured sinks, it retries 5 times, with no circuit breaker.
        batch = llmpulse.wrap(
            OpenAI(),
            sinks=[llmpulse.JsonlSink("batch-events.jsonl")],
            policies=llmpulse.Policies(max_retries=5, breaker=None),
        )
        assert type(batch) is OpenAI and llmpulse.unwrap(batch) is not batch
        ```
    """
    if hook_of(client) is not None:
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
                routes=None if sinks is None else pipeline.routes_for(sinks),
                metrics=None if registry is None else make_metrics(registry, settings),
                inject_stream_usage=settings.include_stream_usage,
                stream_usage_hosts=frozenset(settings.stream_usage_hosts),
                trace_context=_traces_on(client),
                network_sampler=_network_sampler(settings),
                capture_content=settings.capture_content,
                policies=policies if policies is not None else default_policies(settings),
                connection_error=_connection_error(client),
            ),
            client,
        )
        _instrument(type(client), hook.http)
        wrapped = type(client).copy(client)  # type: ignore[attr-defined]
        _keep_settings(client, wrapped)
    except Exception as exc:  # noqa: BLE001 - an unknown SDK release must not break the app
        return cast("ClientT", _give_up(client, exc, pipeline))
    register(wrapped, hook, client)
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
    error: type[BaseException] = sys.modules[_sdk_package(type(client))].APIConnectionError
    return error


def _sdk_package(cls: type) -> str:
    """The SDK package (openai, anthropic) of client class ``cls`` (or of the SDK class it extends)."""
    for klass in cls.__mro__:
        package = klass.__module__.split(".")[0]
        if package in ("openai", "anthropic"):
            return package
    raise UnsupportedClientError(f"{cls.__qualname__} is not an openai or anthropic client class")


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
    """Return the client that was passed to `wrap()` (or ``client`` if it is not wrapped).

    The original was never changed by `wrap()`: its calls make no events and
    pass through no policies. Copies made from a wrapped client
    (``with_options``, ``copy``) are wrapped too, and unwrap to the client
    first given to `wrap()`.

    Example:
        ```python
        import llmpulse
        from openai import OpenAI

        bare = OpenAI()
        client = llmpulse.wrap(bare)
        assert llmpulse.unwrap(client) is bare
        assert llmpulse.unwrap(bare) is bare  # not wrapped: returned as it is
        ```
    """
    return original_of(client)


def _identify(client: Any) -> Provider:
    # The most specific known class in the client's MRO decides, so a user's
    # subclass of any of them wraps as its base does.
    for cls in type(client).__mro__:
        make = _PROVIDERS.get((cls.__module__.split(".")[0], cls.__qualname__))
        if make is not None:
            return make(type(client))
    raise UnsupportedClientError(_unsupported(type(client)))


def _bedrock_openai(cls: type[Any]) -> Provider:
    # SigV4 signs the body: llmpulse must not add stream_options to it.
    return OpenAIProvider("aws.bedrock", rewrites_body=False)


def _anthropic(cls: type[Any]) -> Provider:
    return AnthropicProvider(_otel_name(cls))


def _signed_anthropic(cls: type[Any]) -> Provider:
    # SigV4 signs the body (Mantle, Claude on AWS): llmpulse must not change it.
    return AnthropicProvider(_otel_name(cls), rewrites_body=False)


def _otel_name(cls: type[Any]) -> str:
    # The name the SDK's own OpenTelemetry spans carry (Foundry, Claude on AWS and
    # on Google Cloud are Anthropic's API through a gateway: "anthropic").
    name = getattr(cls, "_gen_ai_provider_name", None)
    return name if isinstance(name, str) and name else "anthropic"


# (SDK package, class name) -> the adapter of its wire format and its gen_ai.provider.name.
_PROVIDERS: dict[tuple[str, str], Callable[[type[Any]], Provider]] = {
    ("openai", "OpenAI"): lambda cls: OpenAIProvider("openai"),
    ("openai", "AsyncOpenAI"): lambda cls: OpenAIProvider("openai"),
    ("openai", "AzureOpenAI"): lambda cls: OpenAIProvider("azure"),
    ("openai", "AsyncAzureOpenAI"): lambda cls: OpenAIProvider("azure"),
    ("openai", "BedrockOpenAI"): _bedrock_openai,
    ("openai", "AsyncBedrockOpenAI"): _bedrock_openai,
    ("anthropic", "Anthropic"): _anthropic,
    ("anthropic", "AsyncAnthropic"): _anthropic,
    ("anthropic", "AnthropicBedrock"): lambda cls: BedrockProvider(),
    ("anthropic", "AsyncAnthropicBedrock"): lambda cls: BedrockProvider(),
    ("anthropic", "AnthropicVertex"): lambda cls: VertexProvider(),
    ("anthropic", "AsyncAnthropicVertex"): lambda cls: VertexProvider(),
    ("anthropic", "AnthropicBedrockMantle"): _signed_anthropic,
    ("anthropic", "AsyncAnthropicBedrockMantle"): _signed_anthropic,
    ("anthropic", "AnthropicAWS"): _signed_anthropic,
    ("anthropic", "AsyncAnthropicAWS"): _signed_anthropic,
}


_SUPPORTED = (
    ", ".join(f"{package}.{name}" for package, name in _PROVIDERS)
    + " and their subclasses (anthropic.AnthropicFoundry and AnthropicGoogleCloud among them)"
)


def _unsupported(cls: type[Any]) -> str:
    name = f"{cls.__module__}.{cls.__qualname__}"
    try:
        sdk = _sdk_package(cls)
    except UnsupportedClientError:
        return f"llmpulse.wrap() got {name}; it supports {_SUPPORTED}"
    if any(c.__name__ == "BaseClient" for c in cls.__mro__):
        # An SDK client llmpulse has no adapter for (a newer SDK's, or a private base class).
        return (
            f"llmpulse.wrap() does not support {name}: it is an {sdk} SDK client, but llmpulse does not "
            "know its wire format (where its requests put the model, how it streams); wrapping it "
            f"needs a provider adapter for it in llmpulse. Supported: {_SUPPORTED}"
        )
    return f"llmpulse.wrap() got {name}; it supports {_SUPPORTED}"


def _http_base(http: Any) -> type[Any]:
    # The plain httpx/httpx2 class under the SDK's (or the caller's) subclass.
    return next(
        c
        for c in type(http).__mro__
        if c.__module__.split(".")[0] in ("httpx", "httpx2") and c.__name__ in ("Client", "AsyncClient")
    )


def _http_module(http: Any) -> Any:
    return sys.modules[_http_base(http).__module__.split(".")[0]]


def _addressed(hook: Hook, client: Any) -> Hook:
    """``hook`` with the key of ``client`` (a copy may change it; the address is read per request)."""
    return dataclasses.replace(
        hook,
        api_key_id=_fingerprint(getattr(client, "api_key", None)),
        secrets=secrets_of(_credentials(client)),
    )


def _credentials(client: Any) -> Iterator[Any]:
    return (_credential(client, path) for path in _CREDENTIALS)


# Where the SDK clients keep what authenticates them: OpenAI and Anthropic keys
# (Foundry's and Mantle's too), Anthropic's OAuth token, Azure's AD token, OpenAI's
# webhook secret, AWS secret keys and session tokens (BedrockOpenAI keeps them in
# its state object), Vertex AI's GCP access token.
_CREDENTIALS = (
    "api_key",
    "auth_token",
    "_azure_ad_token",
    "webhook_secret",
    "aws_secret_key",
    "aws_session_token",
    "_bedrock_state.aws_secret_access_key",
    "_bedrock_state.aws_session_token",
    "_bedrock_state.environment_bearer_token",
    "access_token",
)


def _credential(client: Any, path: str) -> Any:
    value = client
    for name in path.split("."):
        value = getattr(value, name, None)
    return value


_INSTRUMENTED: set[type] = set()
_INSTRUMENT_LOCK = threading.Lock()


def _instrument(cls: type, http: Any) -> None:
    """Install llmpulse's entry points for clients of ``cls`` on ``http`` (each class and module once)."""
    instrument_http(http)
    if cls in _INSTRUMENTED:
        return
    instrument_sdk(_sdk_package(cls))
    with _INSTRUMENT_LOCK:
        for klass in cls.__mro__:
            if klass in _INSTRUMENTED or "copy" not in vars(klass):
                continue
            original = vars(klass)["copy"]
            copy = _wrapped_copy(original)
            klass.copy = copy  # type: ignore[attr-defined]
            if vars(klass).get("with_options") is original:
                klass.with_options = copy  # type: ignore[attr-defined]
            _INSTRUMENTED.add(klass)
        _INSTRUMENTED.add(cls)  # every class of its MRO is done (one that defines no copy too)


def _wrapped_copy(original: Any) -> Any:
    @functools.wraps(original)
    def copy(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)  # the SDK's copy: validation, sharing, as bare
        hook = hook_of(self)
        # An override's super().copy() may have registered it already.
        if hook is not None and hook_of(result) is None:
            _instrument(type(result), _http_module(result._client))
            register(result, _rehook(hook, result), original_of(self))
        return result

    return copy


_SCALARS = (str, int, float, bool, type(None))
_MISSING = object()


def _keep_settings(client: Any, wrapped: Any) -> None:
    """Give the copy the original's plain settings where the SDK's copy() does not carry them.

    copy() rebuilds the client from its constructor arguments, so a setting that is not one
    (``_strict_response_validation``) or that the constructor normalises (an empty Vertex
    ``project_id`` becomes None, which the bare client would reject at call time) would differ.
    """
    state = vars(wrapped)
    for name, value in vars(client).items():
        if type(value) in _SCALARS and state.get(name, _MISSING) != value:
            state[name] = value


def _traces_on(client: Any) -> bool:
    """Whether the client's own OpenTelemetry option leaves its traces on (anthropic 2.x has one)."""
    option = getattr(client, "open_telemetry", None)
    try:
        return bool(option["traces"]["enabled"])  # type: ignore[index]
    except (TypeError, KeyError):
        return True  # no such option: llmpulse's own default


def _rehook(hook: Hook, client: Any) -> Hook:
    """The hook of ``client``, a copy of a wrapped client: ``hook`` unless its credentials differ."""
    # Compared before anything is built: a with_options() per request must stay cheap.
    http, traces = _http_module(client._client), _traces_on(client)
    same_secrets = secret_values(_credentials(client)) == tuple(s.value for s in hook.secrets)
    same_key = _fingerprint(getattr(client, "api_key", None)) == hook.api_key_id
    if same_secrets and same_key and (http, traces) == (hook.http, hook.trace_context):
        return hook
    return dataclasses.replace(_addressed(hook, client), http=http, trace_context=traces)


def _give_up(client: Any, exc: Exception, pipeline: Any) -> Any:
    reason = type(exc).__name__
    if pipeline.metrics is not None:
        pipeline.metrics.record_wrap_failure(reason)
    if type(client) not in _warned:
        _warned.add(type(client))
        # The SDK's own error (its copy() refusing this client's settings) is not a release llmpulse
        # does not know: say which it is.
        own = type(exc).__module__.split(".")[0] in ("openai", "anthropic")
        why = (
            "the SDK's copy() of it failed, which wrap() needs"
            if own
            else "this SDK release may be newer than llmpulse knows"
        )
        warnings.warn(
            f"llmpulse could not instrument {type(client).__qualname__} ({reason}: {exc}); "
            f"{why}. The client is returned unwrapped and works as before, without telemetry.",
            RuntimeWarning,
            stacklevel=3,
        )
    return client


def _fingerprint(api_key: Any) -> str | None:
    if not isinstance(api_key, str) or not api_key:
        return None
    # 8 hex chars of a hash: enough to tell keys apart, useless to recover one.
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:8]
