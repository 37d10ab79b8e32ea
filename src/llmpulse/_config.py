"""Settings from ``LLMPULSE_*`` environment variables, with code overrides.

Global state department: the process-wide `Settings` live here, installed by
`configure()` or, lazily, by the first `wrap()`. Every variable is listed in
docs/configuration.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .alerts._config import AlertConfig
from .exceptions import ConfigError

__all__ = ["Settings", "configure", "get_settings"]

T = TypeVar("T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_SINK_NAMES = ("log", "jsonl", "none")
_LOG_FORMATS = ("json", "console")
_LOG_STREAMS = ("stdout", "stderr")
_NETWORK_TIMINGS = ("sampled", "all", "off")
_BUDGET_ACTIONS = ("alert", "downgrade", "block")
_DEADLINES = ("sdk", "fixed")
_ALERT_SINK_NAMES = ("log", "webhook", "none")
_WEBHOOK_FORMATS = ("json", "slack", "discord")
# The thresholds set as LLMPULSE_ALERT_<NAME>: AlertConfig's fields, with its defaults.
_ALERT = AlertConfig()
_ALERT_FIELDS = (
    "p95_latency_s",
    "rate_5xx",
    "rate_429",
    "latency_jump_s",
    "slo",
    "token_burn",
    "expected_tokens_per_hour",
    "hourly_budget_usd",
    "tenant_hourly_budget_usd",
    "tenant_anomaly_factor",
    "baseline_days",
    "slow_call_s",
    "max_output_tokens",
    "page_factor",
    "min_calls",
)
# Settings that must be > 0 when set.
_POSITIVE = (
    "backoff_base_s",
    "backoff_max_s",
    "connect_timeout_s",
    "read_timeout_s",
    "stream_first_byte_timeout_s",
    "stream_idle_timeout_s",
    "total_timeout_s",
    "breaker_failures",
    "breaker_open_s",
    "breaker_half_open_probes",
    "cache_ttl_s",
    "cache_max_entries",
    "tenant_requests_per_min",
    "tenant_tokens_per_min",
    "key_requests_per_min",
    "key_tokens_per_min",
    "budget_usd_per_hour",
    "budget_usd_per_day",
    "budget_tokens_per_hour",
    "budget_tokens_per_day",
    "concurrency_limit",
    "replicas",
)


@dataclass(frozen=True, slots=True)
class Settings:
    """Process-wide llmpulse settings.

    Build from the environment with `Settings.from_env()`; override in code
    with `llmpulse.configure(**fields)`. Each field's variable is
    ``LLMPULSE_<FIELD NAME IN CAPITALS>``.

    Attributes:
        enabled: When false, `wrap()` returns clients unchanged.
        sinks: Default output sinks: names ("log" for structlog JSON, "jsonl",
            "none") or, in code, sink objects (anything with ``emit(event)``).
        log_format: "json" (one JSON object per line) or "console".
        log_stream: "stdout" or "stderr".
        jsonl_path: File the "jsonl" sink appends to.
        attempt_events: Also log one debug line per HTTP attempt.
        metrics: Record Prometheus metrics.
        metrics_port: Serve /metrics on this port when set (0 picks a free one).
        max_tenants: Distinct tenant label values before "other".
        max_routes: Distinct route label values before "other".
        max_models: Distinct model label values before "other".
        tenant_allowlist: Tenants always kept as label values.
        buffer_size: Events held per I/O sink (queued or being delivered) before drops are counted.
        flush_timeout_s: Seconds the exit hook waits for all sinks together; what is
            left then is counted as dropped ("shutdown").
        prices_file: JSON file of price overrides (see docs/configuration.md).
        prices: Price overrides given in code, same shape as the file (code only).
        capture_content: Capture prompt/completion text (off by default).
        include_stream_usage: Ask OpenAI chat streams for usage (the extra
            chunk is stripped before the caller sees it).
        tiktoken_download: Allow tiktoken to download encodings in the background.
        network_timings: Time connect/TLS/request/headers/body of attempts with
            httpcore's trace hook (the event's ``network``): "sampled" (default:
            ``network_sample_rate`` of calls plus every retry), "all" or "off".
        network_sample_rate: Fraction of calls timed when ``network_timings`` is "sampled".
        max_retries: Retries after the first attempt; None: each client's own
            ``max_retries`` (the SDKs default to 2; 2 with ``deadlines="fixed"``).
        retry_budget_ratio: Retries earned per request, per endpoint.
        retry_budget_reserve: Retries allowed beyond the ratio, per endpoint.
        retry_quota_exhausted: Retry a 429 whose error code says the quota is spent, as the
            SDKs do (waiting does not refill it: 0 spares those retries).
        backoff_base_s: Ceiling of the first backoff (full jitter below it).
        backoff_max_s: Largest backoff ceiling.
        deadlines: "sdk" (default): each attempt gets the client's own timeout
            and a call has no overall deadline, as with the bare SDK; "fixed": the
            field's recipe (`llmpulse.Timeouts.fixed`, and 2 retries). The
            ``*_timeout_s`` settings below override either, phase by phase.
        connect_timeout_s: Opening a connection; None: the client's. Caps it when set.
        read_timeout_s: A non-streamed call's wait for its answer, before the
            per-token part; None: the client's. Caps it when set.
        read_timeout_per_token_s: Added to ``read_timeout_s`` per requested output token.
        stream_first_byte_timeout_s: A stream's wait for its response headers; None: the client's.
        stream_idle_timeout_s: A stream's wait for each chunk; None: the client's.
        total_timeout_s: The whole call, retries included; None: no deadline
            (with ``deadlines="fixed"``: derived, room for one retry).
        breaker: Use circuit breakers (one per endpoint and model).
        breaker_failures: Consecutive provider failures that open a breaker.
        breaker_open_s: How long an open breaker fails calls fast.
        breaker_half_open_probes: Probe calls a half-open breaker lets through before deciding.
        tenant_requests_per_min: Calls per minute per tenant (None: unlimited).
        tenant_tokens_per_min: Tokens per minute per tenant.
        key_requests_per_min: Calls per minute per API key.
        key_tokens_per_min: Tokens per minute per API key.
        rate_limit_wait_s: How long a limited call may wait for its turn.
        budget_usd_per_hour: USD per tenant per hour (None: no budget).
        budget_usd_per_day: USD per tenant per UTC day.
        budget_tokens_per_hour: Tokens per tenant per hour.
        budget_tokens_per_day: Tokens per tenant per UTC day.
        budget_action: "alert", "downgrade" or "block" when a budget is spent.
        concurrency: Adaptive concurrency per endpoint.
        concurrency_limit: Its starting (baseline) limit; the pending queue holds twice as many.
        redis_url: Share rate limits and budgets across replicas through this Redis.
        replicas: Replicas sharing the Redis (each takes limit / replicas while it is unreachable).
        cache_ttl_s: How long a cached answer stays valid.
        cache_max_entries: Answers kept in the in-memory response cache.
        cache_routes: Routes whose calls are cacheable without ``context(cache=True)``.
        fallbacks: Requested model -> models to use instead when it is
            overloaded or its breaker is open (env: ``gpt-4o=gpt-4o-mini|gpt-4.1-mini,...``).
        sample_rate: Share of healthy calls whose traces, attempt events and
            captured content are kept (the summary event, metrics and stats
            always see every call).
        sample_errors: Keep the details of every failed or retried call.
        sample_slow_for_s: After a latency spike, keep the details of every
            call slower than the spike's p95 for this long.
        alerts: Run the in-process alert rules (see `llmpulse.AlertConfig` for each threshold).
        alert_sinks: Where alerts go: "log" (a JSON line), "webhook", "none", or
            in code any object with ``emit(alert)``.
        alert_webhook_url: The "webhook" sink's URL (a secret: never logged).
        alert_webhook_format: "json", "slack" or "discord".
        alert_p95_latency_s: ... and the other ``alert_*`` thresholds: the
            `llmpulse.AlertConfig` field of the same name; "off" (env) or None
            turns a rule off.
        alert_rules: Your own per-call rules (code only).

    """

    enabled: bool = True
    sinks: tuple[Any, ...] = ("log",)
    log_format: str = "json"
    log_stream: str = "stdout"
    jsonl_path: str = "llmpulse-events.jsonl"
    attempt_events: bool = False
    metrics: bool = True
    metrics_port: int | None = None
    max_tenants: int = 100
    max_routes: int = 100
    max_models: int = 200
    tenant_allowlist: tuple[str, ...] = ()
    buffer_size: int = 10_000
    flush_timeout_s: float = 2.0
    prices_file: str | None = None
    prices: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None
    capture_content: bool = False
    include_stream_usage: bool = True
    tiktoken_download: bool = False
    network_timings: str = "sampled"
    network_sample_rate: float = 0.01
    max_retries: int | None = None
    retry_budget_ratio: float = 0.1
    retry_budget_reserve: int = 10
    retry_quota_exhausted: bool = True
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    deadlines: str = "sdk"
    connect_timeout_s: float | None = None
    read_timeout_s: float | None = None
    read_timeout_per_token_s: float = 0.02
    stream_first_byte_timeout_s: float | None = None
    stream_idle_timeout_s: float | None = None
    total_timeout_s: float | None = None
    breaker: bool = True
    breaker_failures: int = 10
    breaker_open_s: float = 60.0
    breaker_half_open_probes: int = 1
    fallbacks: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    tenant_requests_per_min: float | None = None
    tenant_tokens_per_min: float | None = None
    key_requests_per_min: float | None = None
    key_tokens_per_min: float | None = None
    rate_limit_wait_s: float = 2.0
    budget_usd_per_hour: float | None = None
    budget_usd_per_day: float | None = None
    budget_tokens_per_hour: float | None = None
    budget_tokens_per_day: float | None = None
    budget_action: str = "alert"
    concurrency: bool = True
    concurrency_limit: int = 1000
    redis_url: str | None = None
    replicas: int = 1
    cache_ttl_s: float = 3600.0
    cache_max_entries: int = 1000
    cache_routes: tuple[str, ...] = ()
    sample_rate: float = 0.01
    sample_errors: bool = True
    sample_slow_for_s: float = 600.0
    alerts: bool = True
    alert_sinks: tuple[Any, ...] = ("log",)
    alert_webhook_url: str | None = dataclasses.field(default=None, repr=False)
    alert_webhook_format: str = "json"
    alert_p95_latency_s: float | None = _ALERT.p95_latency_s
    alert_rate_5xx: float | None = _ALERT.rate_5xx
    alert_rate_429: float | None = _ALERT.rate_429
    alert_latency_jump_s: float | None = _ALERT.latency_jump_s
    alert_slo: float | None = _ALERT.slo
    alert_token_burn: float | None = _ALERT.token_burn
    alert_expected_tokens_per_hour: float | None = _ALERT.expected_tokens_per_hour
    alert_hourly_budget_usd: float | None = _ALERT.hourly_budget_usd
    alert_tenant_hourly_budget_usd: float | None = _ALERT.tenant_hourly_budget_usd
    alert_tenant_anomaly_factor: float | None = _ALERT.tenant_anomaly_factor
    alert_baseline_days: int = _ALERT.baseline_days
    alert_slow_call_s: float | None = _ALERT.slow_call_s
    alert_max_output_tokens: int | None = _ALERT.max_output_tokens
    alert_page_factor: float = _ALERT.page_factor
    alert_min_calls: int = _ALERT.min_calls
    alert_rules: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        _check_sinks("sinks", self.sinks, _SINK_NAMES)
        _check_choice("log_format", self.log_format, _LOG_FORMATS)
        _check_choice("log_stream", self.log_stream, _LOG_STREAMS)
        _check_choice("network_timings", self.network_timings, _NETWORK_TIMINGS)
        _check_choice("budget_action", self.budget_action, _BUDGET_ACTIONS)
        _check_choice("deadlines", self.deadlines, _DEADLINES)
        for name in _POSITIVE:
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{_var(name)}={value!r} is not valid: use a number greater than 0")
        if not (self.read_timeout_per_token_s >= 0 and math.isfinite(self.read_timeout_per_token_s)):
            raise ConfigError(
                f"{_var('read_timeout_per_token_s')}={self.read_timeout_per_token_s!r} is not valid: "
                "use a number of seconds >= 0"
            )
        for name in ("max_retries", "retry_budget_reserve"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{_var(name)}={value!r} is not valid: use an integer >= 0")
        if self.retry_budget_ratio < 0:
            raise ConfigError(
                f"{_var('retry_budget_ratio')}={self.retry_budget_ratio!r} is not valid: use >= 0"
            )
        if self.backoff_base_s > self.backoff_max_s:
            raise ConfigError(
                f"{_var('backoff_base_s')}={self.backoff_base_s!r} is larger than "
                f"{_var('backoff_max_s')}={self.backoff_max_s!r}"
            )
        for name in ("sample_rate", "network_sample_rate"):
            rate = getattr(self, name)
            if not 0.0 < rate <= 1.0:
                raise ConfigError(
                    f"{_var(name)}={rate!r} is not valid: "
                    "use a fraction greater than 0 and at most 1 (0.01 = one call in 100)"
                )
        for name in ("max_tenants", "max_routes", "max_models", "buffer_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_var(name)} must be a positive integer, got {getattr(self, name)}")
        _check_positive_finite("flush_timeout_s", self.flush_timeout_s)
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"{_var('metrics_port')} must be a port number 0-65535")
        self._check_alerts()

    def _check_alerts(self) -> None:
        names = _check_sinks("alert_sinks", self.alert_sinks, _ALERT_SINK_NAMES)
        _check_choice("alert_webhook_format", self.alert_webhook_format, _WEBHOOK_FORMATS)
        if "webhook" in names and not self.alert_webhook_url:
            raise ConfigError(
                f"{_var('alert_sinks')} names webhook but {_var('alert_webhook_url')} is not set"
            )
        try:
            self.alert_config()
        except ConfigError as exc:
            # "AlertConfig.slo must be ..." -> "LLMPULSE_ALERT_SLO must be ...", the name the user set.
            raise ConfigError(
                re.sub(r"AlertConfig\.(\w+)", lambda m: _var("alert_" + m[1]), str(exc))
            ) from None

    def alert_config(self) -> AlertConfig:
        """The `llmpulse.AlertConfig` these settings describe."""
        values = {name: getattr(self, "alert_" + name) for name in _ALERT_FIELDS}
        return AlertConfig(**values, rules=self.alert_rules)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every ``LLMPULSE_*`` variable; unset ones keep their defaults.

        Raises:
            ConfigError: Naming the variable, its value and what is accepted.

        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in _PARSERS:
                continue  # settable in code only
            raw = env.get(_var(f.name))
            if raw is not None:
                values[f.name] = _PARSERS[f.name](f.name, raw.strip())
        if "capture_content" not in values:
            otel = env.get(_OTEL_CAPTURE)
            if otel is not None:
                values["capture_content"] = _parse_otel_capture(otel.strip())
        return cls(**values)

    def replace(self, **overrides: Any) -> Settings:
        """Return a copy with ``overrides`` applied (validated like the environment)."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        for name in ("sinks", "alert_sinks"):
            if name in overrides:
                sinks = overrides[name]
                overrides[name] = (
                    (sinks,) if isinstance(sinks, str) or hasattr(sinks, "emit") else tuple(sinks)
                )
        if "alert_rules" in overrides and callable(overrides["alert_rules"]):
            overrides["alert_rules"] = (overrides["alert_rules"],)
        return dataclasses.replace(self, **overrides)


def _var(name: str) -> str:
    return f"LLMPULSE_{name.upper()}"


def _check_sinks(name: str, sinks: tuple[Any, ...], accepted: tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(s for s in sinks if isinstance(s, str))
    _check_choice(name, names, accepted, many=True)
    for sink in sinks:
        if not isinstance(sink, str) and not callable(getattr(sink, "emit", None)):
            raise ConfigError(f"{name}: {sink!r} is neither a sink name nor an object with emit()")
    return names


def _check_choice(name: str, value: Any, accepted: tuple[str, ...], *, many: bool = False) -> None:
    values = value if many else (value,)
    bad = [v for v in values if v not in accepted]
    if bad:
        raise ConfigError(
            f"{_var(name)}={','.join(map(str, values))!s} is not valid: "
            f"accepted values are {', '.join(accepted)}"
        )


def _parse_bool(name: str, raw: str) -> bool:
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"{_var(name)}={raw!r} is not a boolean: use one of 1/0, true/false, yes/no, on/off")


_OTEL_CAPTURE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
# The variable's newer values (with OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental)
# say where content goes; for llmpulse any of them but NO_CONTENT means "capture".
_OTEL_CAPTURE_MODES = {"no_content": False, "span_only": True, "event_only": True, "span_and_event": True}


def _parse_otel_capture(raw: str) -> bool:
    mode = _OTEL_CAPTURE_MODES.get(raw.lower())
    if mode is not None:
        return mode
    low = raw.lower()
    if low in _TRUE or low in _FALSE:
        return low in _TRUE
    raise ConfigError(
        f"{_OTEL_CAPTURE}={raw!r} is not valid: use true/false or one of "
        "NO_CONTENT, SPAN_ONLY, EVENT_ONLY, SPAN_AND_EVENT"
    )


def _parse_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{_var(name)}={raw!r} is not an integer") from None


def _check_positive_finite(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{_var(name)}={value!r} is not valid: use a number of seconds > 0")


def _parse_float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{_var(name)}={raw!r} is not a number") from None


def _parse_fallbacks(name: str, raw: str) -> dict[str, tuple[str, ...]]:
    chains: dict[str, tuple[str, ...]] = {}
    for entry in filter(None, (part.strip() for part in raw.split(","))):
        model, sep, rest = entry.partition("=")
        steps = tuple(step.strip() for step in rest.split("|") if step.strip())
        if not sep or not model.strip() or not steps:
            raise ConfigError(
                f"{_var(name)}={raw!r} is not valid: use model=fallback[|fallback...][,model=...], "
                "e.g. gpt-4o=gpt-4o-mini,claude-sonnet-4-6=claude-haiku-4-5"
            )
        chains[model.strip()] = steps
    return chains


def _parse_optional_float(name: str, raw: str) -> float | None:
    return None if raw == "" else _parse_float(name, raw)


def _parse_optional_int(name: str, raw: str) -> int | None:
    return None if raw == "" else _parse_int(name, raw)


def _parse_threshold(name: str, raw: str) -> float | None:
    return None if raw.lower() in ("", "off") else _parse_float(name, raw)


def _parse_int_threshold(name: str, raw: str) -> int | None:
    return None if raw.lower() in ("", "off") else _parse_int(name, raw)


def _parse_list(name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse_str(name: str, raw: str) -> str:
    return raw


def _parse_optional_str(name: str, raw: str) -> str | None:
    return raw or None


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "enabled": _parse_bool,
    "sinks": _parse_list,
    "log_format": _parse_str,
    "log_stream": _parse_str,
    "jsonl_path": _parse_str,
    "attempt_events": _parse_bool,
    "metrics": _parse_bool,
    "metrics_port": _parse_optional_int,
    "max_tenants": _parse_int,
    "max_routes": _parse_int,
    "max_models": _parse_int,
    "tenant_allowlist": _parse_list,
    "buffer_size": _parse_int,
    "flush_timeout_s": _parse_float,
    "prices_file": _parse_optional_str,
    "capture_content": _parse_bool,
    "include_stream_usage": _parse_bool,
    "tiktoken_download": _parse_bool,
    "network_timings": _parse_str,
    "network_sample_rate": _parse_float,
    "max_retries": _parse_optional_int,
    "retry_budget_ratio": _parse_float,
    "retry_budget_reserve": _parse_int,
    "retry_quota_exhausted": _parse_bool,
    "backoff_base_s": _parse_float,
    "backoff_max_s": _parse_float,
    "deadlines": _parse_str,
    "connect_timeout_s": _parse_optional_float,
    "read_timeout_s": _parse_optional_float,
    "read_timeout_per_token_s": _parse_float,
    "stream_first_byte_timeout_s": _parse_optional_float,
    "stream_idle_timeout_s": _parse_optional_float,
    "total_timeout_s": _parse_optional_float,
    "breaker": _parse_bool,
    "breaker_failures": _parse_int,
    "breaker_open_s": _parse_float,
    "breaker_half_open_probes": _parse_int,
    "fallbacks": _parse_fallbacks,
    "tenant_requests_per_min": _parse_optional_float,
    "tenant_tokens_per_min": _parse_optional_float,
    "key_requests_per_min": _parse_optional_float,
    "key_tokens_per_min": _parse_optional_float,
    "rate_limit_wait_s": _parse_float,
    "budget_usd_per_hour": _parse_optional_float,
    "budget_usd_per_day": _parse_optional_float,
    "budget_tokens_per_hour": _parse_optional_float,
    "budget_tokens_per_day": _parse_optional_float,
    "budget_action": _parse_str,
    "concurrency": _parse_bool,
    "concurrency_limit": _parse_int,
    "redis_url": _parse_optional_str,
    "replicas": _parse_int,
    "cache_ttl_s": _parse_float,
    "cache_max_entries": _parse_int,
    "cache_routes": _parse_list,
    "sample_rate": _parse_float,
    "sample_errors": _parse_bool,
    "sample_slow_for_s": _parse_float,
    "alerts": _parse_bool,
    "alert_sinks": _parse_list,
    "alert_webhook_url": _parse_optional_str,
    "alert_webhook_format": _parse_str,
    "alert_p95_latency_s": _parse_threshold,
    "alert_rate_5xx": _parse_threshold,
    "alert_rate_429": _parse_threshold,
    "alert_latency_jump_s": _parse_threshold,
    "alert_slo": _parse_threshold,
    "alert_token_burn": _parse_threshold,
    "alert_expected_tokens_per_hour": _parse_threshold,
    "alert_hourly_budget_usd": _parse_threshold,
    "alert_tenant_hourly_budget_usd": _parse_threshold,
    "alert_tenant_anomaly_factor": _parse_threshold,
    "alert_baseline_days": _parse_int,
    "alert_slow_call_s": _parse_threshold,
    "alert_max_output_tokens": _parse_int_threshold,
    "alert_page_factor": _parse_float,
    "alert_min_calls": _parse_int,
}

_lock = threading.Lock()
_settings: Settings | None = None
_listeners: list[Callable[[Settings], None]] = []


def configure(settings: Settings | None = None, **overrides: Any) -> Settings:
    """Install process-wide settings: the environment's, with ``overrides`` on top.

    Args:
        settings: A complete `Settings` to start from instead of the environment.
        **overrides: Field values that win over both.

    Returns:
        The installed settings.

    Raises:
        ConfigError: For a bad environment variable or override.

    """
    global _settings  # noqa: PLW0603 - this module owns the process settings
    base = settings if settings is not None else Settings.from_env()
    new = base.replace(**overrides) if overrides else base
    with _lock:
        _settings = new
        listeners = list(_listeners)
    for listener in listeners:
        listener(new)
    return new


def get_settings() -> Settings:
    """Return the installed settings, configuring from the environment on first use."""
    current = _settings
    if current is None:
        with _lock:
            current = _settings
        if current is None:
            return configure()
    return current


def on_configure(listener: Callable[[Settings], None]) -> None:
    """Call ``listener`` with the new settings each time `configure()` runs."""
    with _lock:
        _listeners.append(listener)


def reset_for_tests() -> None:
    """Forget the installed settings (the next use reads the environment again)."""
    global _settings  # noqa: PLW0603
    with _lock:
        _settings = None
