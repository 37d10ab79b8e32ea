"""Settings from ``LLMPULSE_*`` environment variables, with code overrides.

Global state department: the process-wide `Settings` live here, installed by
`configure()` or, lazily, by the first `wrap()`. Every variable is listed in
docs/configuration.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ._redact import ERROR_TEXT_MODES, PII_RULES
from .alerts._config import AlertConfig
from .exceptions import ConfigError

__all__ = ["Settings", "configure", "get_settings"]

T = TypeVar("T")
_log = logging.getLogger("llmpulse")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_SINK_NAMES = ("log", "jsonl", "none")
_LOG_FORMATS = ("json", "console")
_LOG_STREAMS = ("stdout", "stderr")
_NETWORK_TIMINGS = ("sampled", "all", "off")
_BUDGET_ACTIONS = ("alert", "downgrade", "block")
_DEADLINES = ("sdk", "fixed", "learned")
_ALERT_SINK_NAMES = ("log", "webhook", "none")
_WEBHOOK_FORMATS = ("json", "slack", "discord")
_HISTOGRAM_LABELS = ("tenant", "route")
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
    "min_coverage",
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
        max_tenants: Distinct tenant label values before "__other__".
        max_routes: Distinct route label values before "__other__".
        max_models: Distinct model label values before "__other__".
        tenant_allowlist: Tenants always kept as label values.
        histogram_labels: Labels added to the GenAI histograms ("tenant",
            "route"); by default they carry the conventions' attributes only.
        metrics_max_series: The series budget of the metrics registry, shared
            out per metric family (docs/performance.md).
        buffer_size: Events held per I/O sink (queued or being delivered) before drops are counted.
        flush_timeout_s: Seconds the exit hook waits for all sinks together; what is
            left then is counted as dropped ("shutdown").
        prices_file: JSON file of price overrides (see docs/configuration.md).
        prices: Price overrides given in code, same shape as the file (code only).
        capture_content: Capture prompt/completion text (off by default).
        capture_error_text: How much of the provider's error text events carry:
            "none", "scrubbed" (default: secrets removed, ``redact`` rules
            applied, at most 500 characters) or "full" (secrets removed, up to 8 KiB).
        redact: Your own scrubbing rules, applied after the secrets are removed:
            "pii" (built-in: emails, phone and card numbers) or, in code, any
            ``str -> str`` callable.
        include_stream_usage: Ask OpenAI chat streams for usage (the extra
            chunk is stripped before the caller sees it).
        stream_usage_hosts: Hosts besides api.openai.com whose chat streams send
            usage only when asked and accept being asked: asked from the first
            call (others are learned from their first stream).
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
        backoff_base_s: Ceiling of the first backoff (full jitter below it); None
            (and ``backoff_max_s`` None): each client's own backoff, as bare.
        backoff_max_s: Largest backoff ceiling; None: 8 s (or the client's own
            backoff when ``backoff_base_s`` is None too).
        deadlines: "sdk" (default): each attempt gets the client's own timeout
            and a call has no overall deadline, as with the bare SDK; "fixed": a
            production recipe for bounded attempts (`llmpulse.Timeouts.fixed`, and 2 retries); "learned":
            the client's timeouts, each attempt's read phases also cut at what
            healthy calls took (``Timeouts(learned=True)``). The
            ``*_timeout_s`` settings below override any, phase by phase.
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
    histogram_labels: tuple[str, ...] = ()
    metrics_max_series: int = 10_000
    buffer_size: int = 10_000
    flush_timeout_s: float = 2.0
    prices_file: str | None = None
    prices: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None
    capture_content: bool = False
    capture_error_text: str = "scrubbed"
    redact: tuple[Any, ...] = ()
    include_stream_usage: bool = True
    stream_usage_hosts: tuple[str, ...] = ()
    tiktoken_download: bool = False
    network_timings: str = "sampled"
    network_sample_rate: float = 0.01
    max_retries: int | None = None
    retry_budget_ratio: float = 0.1
    retry_budget_reserve: int = 10
    retry_quota_exhausted: bool = True
    backoff_base_s: float | None = None
    backoff_max_s: float | None = None
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
    tenant_requests_per_min: int | None = None
    tenant_tokens_per_min: int | None = None
    key_requests_per_min: int | None = None
    key_tokens_per_min: int | None = None
    rate_limit_wait_s: float = 2.0
    budget_usd_per_hour: float | None = None
    budget_usd_per_day: float | None = None
    budget_tokens_per_hour: int | None = None
    budget_tokens_per_day: int | None = None
    budget_action: str = "alert"
    concurrency: bool = True
    concurrency_limit: int = 1000
    redis_url: str | None = dataclasses.field(default=None, repr=False)  # may hold a password
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
    alert_expected_tokens_per_hour: int | None = None  # AlertConfig's: the week before
    alert_hourly_budget_usd: float | None = _ALERT.hourly_budget_usd
    alert_tenant_hourly_budget_usd: float | None = _ALERT.tenant_hourly_budget_usd
    alert_tenant_anomaly_factor: float | None = _ALERT.tenant_anomaly_factor
    alert_baseline_days: int = _ALERT.baseline_days
    alert_slow_call_s: float | None = _ALERT.slow_call_s
    alert_max_output_tokens: int | None = _ALERT.max_output_tokens
    alert_page_factor: float = _ALERT.page_factor
    alert_min_calls: int = _ALERT.min_calls
    alert_min_coverage: float = _ALERT.min_coverage
    alert_rules: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        # Each field against its domain (normalising code values: a single sink
        # becomes a tuple), then the checks that span fields.
        for name, spec in _PARSERS.items():
            value = getattr(self, name)
            try:
                checked = spec.check(value)
            except _Invalid as exc:
                raise ConfigError(f"{_label(name, value, spec)} is not valid: {exc}") from None
            if checked is not value:
                object.__setattr__(self, name, checked)
        if (
            self.backoff_base_s is not None
            and self.backoff_max_s is not None
            and self.backoff_base_s > self.backoff_max_s
        ):
            raise ConfigError(
                f"{_label('backoff_base_s', self.backoff_base_s)} is larger than "
                f"{_label('backoff_max_s', self.backoff_max_s)}"
            )
        self._check_alerts()

    def _check_alerts(self) -> None:
        if "webhook" in self.alert_sinks and not self.alert_webhook_url:
            raise ConfigError(
                f"{_name('alert_sinks')} names webhook but {_name('alert_webhook_url')} is not set"
            )
        try:
            self.alert_config()
        except ConfigError as exc:
            # "AlertConfig.slo must be ..." -> "LLMPULSE_ALERT_SLO must be ...", the name the user set.
            raise ConfigError(
                re.sub(r"AlertConfig\.(\w+)", lambda m: _name("alert_" + m[1]), str(exc))
            ) from None

    def alert_config(self) -> AlertConfig:
        """The `llmpulse.AlertConfig` these settings describe."""
        values = {name: getattr(self, "alert_" + name) for name in _ALERT_FIELDS}
        return AlertConfig(**values, rules=self.alert_rules)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every ``LLMPULSE_*`` variable; unset ones keep their defaults.

        A variable named ``LLMPULSE_*`` that is no setting is an error too (a
        warning with ``LLMPULSE_STRICT_ENV=0``).

        Raises:
            ConfigError: Naming the variable, its value and what is accepted.

        """
        env = os.environ if environ is None else environ
        _check_names(env)
        values: dict[str, Any] = {}
        for name, spec in _PARSERS.items():
            raw = env.get(_var(name))
            if raw is not None and spec.parse is not None:  # parse None: settable in code only
                values[name] = spec.read(name, raw.strip())
        if "capture_content" not in values:
            otel = env.get(_OTEL_CAPTURE)
            if otel is not None:
                values["capture_content"] = _parse_otel_capture(otel.strip())
        token = _in_code.set(frozenset())
        try:
            return cls(**values)
        finally:
            _in_code.reset(token)

    def replace(self, **overrides: Any) -> Settings:
        """Return a copy with ``overrides`` applied (validated like the environment)."""
        fields = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(_with_guess(n, fields) for n in unknown)}")
        token = _in_code.set(frozenset(overrides))
        try:
            return dataclasses.replace(self, **overrides)
        finally:
            _in_code.reset(token)


def _var(name: str) -> str:
    return f"LLMPULSE_{name.upper()}"


# The fields whose values being checked were given in code (the rest came from
# the environment or are defaults): errors name the argument for those and
# the variable for the rest. None, outside from_env() and replace(): Settings(...)
# was called directly, so every field is an argument.
_in_code: ContextVar[frozenset[str] | None] = ContextVar("llmpulse_settings_in_code", default=None)


def _given_in_code(name: str) -> bool:
    names = _in_code.get()
    return names is None or name in names


def _name(name: str) -> str:
    """What the user set: the argument ``name`` or the variable ``LLMPULSE_NAME``."""
    return name if _given_in_code(name) else _var(name)


def _label(name: str, value: Any, spec: _Spec | None = None) -> str:
    """``name=value`` as the user wrote it (a secret's value is never shown)."""
    if spec is not None and spec.secret:
        return _name(name)
    if _given_in_code(name):
        return f"{name}={value!r}"
    if isinstance(value, str):
        return f"{_var(name)}={value}"
    if isinstance(value, tuple):
        return f"{_var(name)}={','.join(map(str, value))}"
    return f"{_var(name)}={value!r}"


class _Invalid(Exception):
    """A value its setting does not accept.

    From a spec's ``parse``: the rest of the sentence after ``VAR='text'``
    ("is not a number"); from its ``check``: what is accepted ("use a number > 0").
    """


@dataclass(frozen=True, slots=True)
class _Spec:
    """How a setting is read from its variable, and the values it accepts.

    Attributes:
        kind: The family of values, for messages and tests ("flag", "integer", ...).
        parse: The variable's text -> a value (raises `_Invalid`); None: code only.
        check: A value (parsed, or given in code) -> the value to keep, normalised
            (raises `_Invalid` saying what is accepted).
        secret: The value is never shown in errors (it may hold a token or password).
        above: Numbers: the value must be greater than this.
        low: Numbers: the value must be at least this.
        high: Numbers: the value must be at most this.

    """

    kind: str
    parse: Callable[[str], Any] | None
    check: Callable[[Any], Any]
    secret: bool = False
    above: float | None = None
    low: float | None = None
    high: float | None = None

    def read(self, name: str, raw: str) -> Any:
        """Parse ``raw``, the text of ``name``'s variable; ConfigError naming it if bad."""
        if self.parse is None:
            raise ConfigError(f"{name} can only be set in code")
        try:
            return self.parse(raw)
        except _Invalid as exc:
            shown = _var(name) if self.secret else f"{_var(name)}={raw!r}"
            raise ConfigError(f"{shown} {exc}") from None


def _flag() -> _Spec:
    def parse(raw: str) -> bool:
        low = raw.lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise _Invalid("is not a boolean: use one of 1/0, true/false, yes/no, on/off")

    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise _Invalid("use True or False")
        return value

    return _Spec("flag", parse, check)


def _number(
    *,
    integer: bool = False,
    above: float | None = None,
    low: float | None = None,
    high: float | None = None,
    optional: bool = False,
    off: bool = False,
    hint: str = "",
) -> _Spec:
    """A finite number (``integer``: a whole one) within the bounds given.

    ``optional``: an empty variable (or None in code) means unset; ``off``: so
    does "off". Without bounds only the type is checked here (alert thresholds:
    `AlertConfig` checks their ranges).
    """
    bounds = [f"> {above:g}" if above is not None else "", f">= {low:g}" if low is not None else ""]
    bounds.append(f"<= {high:g}" if high is not None else "")
    what = "an integer" if integer else "a number" if any(bounds) else "a finite number"
    use = f"use {what} {' and '.join(b for b in bounds if b)}".rstrip()
    notes = [f"{'off' if off else 'empty'} or None: unset"] if optional or off else []
    if hint:
        notes.append(hint)
    if notes:
        use += f" ({'; '.join(notes)})"
    unset = ("", "off") if off else ("",) if optional else ()

    def parse(raw: str) -> int | float | None:
        if raw.lower() in unset:
            return None
        try:
            return int(raw) if integer else float(raw)
        except ValueError:
            raise _Invalid("is not an integer" if integer else "is not a number") from None

    def check(value: Any) -> Any:
        if value is None and unset:
            return None
        if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
            raise _Invalid(use)
        if not math.isfinite(value):
            raise _Invalid(use)
        if (above is not None and not value > above) or (low is not None and not value >= low):
            raise _Invalid(use)
        if high is not None and not value <= high:
            raise _Invalid(use)
        return value

    return _Spec("integer" if integer else "number", parse, check, above=above, low=low, high=high)


def _choice(accepted: tuple[str, ...]) -> _Spec:
    def check(value: Any) -> str:
        if value not in accepted or not isinstance(value, str):
            raise _Invalid(f"accepted values are {', '.join(accepted)}")
        return value

    return _Spec("choice", str, check)


def _choices(accepted: tuple[str, ...]) -> _Spec:
    """Names from ``accepted`` (comma-separated in the variable)."""

    def check(value: Any) -> tuple[str, ...]:
        names = (value,) if isinstance(value, str) else _as_tuple(value)
        if not all(isinstance(name, str) and name in accepted for name in names):
            raise _Invalid(f"accepted values are {', '.join(accepted)}")
        return names

    return _Spec("choices", _split, check)


def _split(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _sinks(accepted: tuple[str, ...], what: str) -> _Spec:
    """Names from ``accepted`` or, in code, objects with an ``emit`` method."""

    def check(value: Any) -> tuple[Any, ...]:
        sinks = (value,) if isinstance(value, str) or hasattr(value, "emit") else _as_tuple(value)
        for sink in sinks:
            if isinstance(sink, str):
                if sink not in accepted:
                    raise _Invalid(f"accepted values are {', '.join(accepted)}")
            elif not callable(getattr(sink, "emit", None)):
                raise _Invalid(f"{sink!r} is neither a sink name nor an object with emit({what})")
        return sinks

    return _Spec("sinks", _split, check)


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if isinstance(value, tuple):
        return value
    if isinstance(value, list | set | frozenset):
        return tuple(value)
    raise _Invalid("use a list")


def _names() -> _Spec:
    """A list of names (comma-separated in the variable)."""

    def check(value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            raise _Invalid("use a list of names, not one string")
        names = _as_tuple(value)
        if not all(isinstance(name, str) and name for name in names):
            raise _Invalid("use a list of non-empty strings")
        return names

    return _Spec("names", _split, check)


def _file_path() -> _Spec:
    """A file to write, in a directory that exists."""

    def check(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise _Invalid("use the path of a file")
        directory = os.path.dirname(value) or "."
        if not os.path.isdir(directory):
            raise _Invalid(f"the directory {directory} does not exist")
        if os.path.isdir(value):
            raise _Invalid("it is a directory: use the path of a file")
        return value

    return _Spec("path", str, check)


def _prices_file() -> _Spec:
    """A JSON file of price overrides, read (and its entries checked) now."""

    def check(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise _Invalid("use the path of a JSON file")
        from ._pricing import load_price_overrides  # noqa: PLC0415 - only when a file is set

        try:
            load_price_overrides(value)
        except ValueError as exc:
            raise _Invalid(str(exc).removeprefix(f"price file {value}: ")) from None
        return value

    return _Spec("prices_file", lambda raw: raw or None, check)


def _prices() -> _Spec:
    def check(value: Any) -> Any:
        if value is None:
            return None
        from ._pricing import _parse_overrides  # noqa: PLC0415

        try:
            _parse_overrides(value, "prices")
        except ValueError as exc:
            raise _Invalid(str(exc).removeprefix("prices: ")) from None
        return value

    return _Spec("prices", None, check)


def _webhook_url() -> _Spec:
    def check(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise _Invalid("use an http(s) URL")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # The URL is a secret (Slack's and Discord's carry their token): at most its scheme.
            scheme = f"its scheme is {parts.scheme!r}" if parts.scheme else "it has no scheme"
            raise _Invalid(f"it is not an http(s) URL with a host ({scheme}; the URL is not shown)")
        return value

    return _Spec("url", lambda raw: raw or None, check, secret=True)


def _redis_url() -> _Spec:
    def check(value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise _Invalid("use a redis://, rediss:// or unix:// URL")
        from .state._redis import url_problem  # noqa: PLC0415

        problem = url_problem(value)
        if problem is not None:
            raise _Invalid(f"{problem} (the URL is not shown: it may hold a password)")
        if importlib.util.find_spec("redis") is None:
            raise _Invalid("it needs the redis package: pip install 'llmpulse[redis]'")
        return value

    return _Spec("redis_url", lambda raw: raw or None, check, secret=True)


_FALLBACK_FORMAT = (
    "use model=fallback[|fallback...][,model=...], e.g. gpt-4o=gpt-4o-mini,claude-sonnet-4-6=claude-haiku-4-5"
)


def _fallbacks() -> _Spec:
    def parse(raw: str) -> dict[str, tuple[str, ...]]:
        chains: dict[str, tuple[str, ...]] = {}
        for entry in filter(None, (part.strip() for part in raw.split(","))):
            model, sep, rest = (part.strip() for part in entry.partition("="))
            steps = tuple(step.strip() for step in rest.split("|"))
            # "a=b=c" or "a=b|" is a typo, not a model called "b=c" or an empty one.
            if not sep or not model or not all(steps) or any("=" in step for step in steps):
                raise _Invalid(f"is not valid: {_FALLBACK_FORMAT}")
            if model in chains:
                raise _Invalid(f"is not valid: {model} is given twice")
            chains[model] = steps
        return chains

    def check(value: Any) -> Mapping[str, tuple[Any, ...]]:
        if not isinstance(value, Mapping):
            raise _Invalid("use a mapping of model -> fallback models")
        chains: dict[str, tuple[Any, ...]] = {}
        for model, steps in value.items():
            if not isinstance(model, str) or not model or isinstance(steps, str):
                raise _Invalid("use a mapping of model -> a list of fallback models")
            chain = _as_tuple(steps)
            if not chain or not all((isinstance(s, str) and s) or hasattr(s, "model") for s in chain):
                raise _Invalid(f"the chain of {model} must list models (names or llmpulse.Fallback)")
            chains[model] = chain
        return value if all(chains[m] is value[m] for m in chains) else chains

    return _Spec("fallbacks", parse, check)


def _redact_rules() -> _Spec:
    """Built-in rule set names or, in code, ``str -> str`` callables."""

    def check(value: Any) -> tuple[Any, ...]:
        rules = (value,) if isinstance(value, str) or callable(value) else _as_tuple(value)
        for rule in rules:
            if isinstance(rule, str):
                if rule not in PII_RULES:
                    raise _Invalid(
                        f"accepted values are {', '.join(PII_RULES)} (in code also a str -> str callable)"
                    )
            elif not callable(rule):
                raise _Invalid(f"{rule!r} is neither a rule name nor a str -> str callable")
        return rules

    return _Spec("redact", _split, check)


def _rules() -> _Spec:
    def check(value: Any) -> tuple[Any, ...]:
        rules = (value,) if callable(value) else _as_tuple(value)
        for rule in rules:
            if not callable(rule):
                raise _Invalid(f"{rule!r} is not callable (a rule takes a CallEvent)")
        return rules

    return _Spec("rules", None, check)


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


_ABOVE_0 = _number(above=0)
_COUNT = _number(integer=True, low=1)
_OPTIONAL_ABOVE_0 = _number(above=0, optional=True)
_OPTIONAL_COUNT = _number(integer=True, low=1, optional=True)
_THRESHOLD = _number(off=True)  # AlertConfig checks the range

# Every setting: how its variable is read and what it accepts. A new setting
# needs its field on Settings (with its docstring line), its entry here, and
# its row in docs/configuration.md (tests/test_config.py checks all three agree).
_PARSERS: dict[str, _Spec] = {
    "enabled": _flag(),
    "sinks": _sinks(_SINK_NAMES, "event"),
    "log_format": _choice(_LOG_FORMATS),
    "log_stream": _choice(_LOG_STREAMS),
    "jsonl_path": _file_path(),
    "attempt_events": _flag(),
    "metrics": _flag(),
    "metrics_port": _number(integer=True, low=0, high=65535, optional=True, hint="0 picks a free port"),
    "max_tenants": _COUNT,
    "max_routes": _COUNT,
    "max_models": _COUNT,
    "tenant_allowlist": _names(),
    "histogram_labels": _choices(_HISTOGRAM_LABELS),
    "metrics_max_series": _COUNT,
    "buffer_size": _COUNT,
    "flush_timeout_s": _ABOVE_0,
    "prices_file": _prices_file(),
    "prices": _prices(),
    "capture_content": _flag(),
    "capture_error_text": _choice(ERROR_TEXT_MODES),
    "redact": _redact_rules(),
    "include_stream_usage": _flag(),
    "stream_usage_hosts": _names(),
    "tiktoken_download": _flag(),
    "network_timings": _choice(_NETWORK_TIMINGS),
    "network_sample_rate": _number(above=0, high=1, hint="0.01 = one call in 100"),
    "max_retries": _number(integer=True, low=0, optional=True),
    "retry_budget_ratio": _number(low=0),
    "retry_budget_reserve": _number(integer=True, low=0),
    "retry_quota_exhausted": _flag(),
    "backoff_base_s": _OPTIONAL_ABOVE_0,
    "backoff_max_s": _OPTIONAL_ABOVE_0,
    "deadlines": _choice(_DEADLINES),
    "connect_timeout_s": _OPTIONAL_ABOVE_0,
    "read_timeout_s": _OPTIONAL_ABOVE_0,
    "read_timeout_per_token_s": _number(low=0),
    "stream_first_byte_timeout_s": _OPTIONAL_ABOVE_0,
    "stream_idle_timeout_s": _OPTIONAL_ABOVE_0,
    "total_timeout_s": _OPTIONAL_ABOVE_0,
    "breaker": _flag(),
    "breaker_failures": _COUNT,
    "breaker_open_s": _ABOVE_0,
    "breaker_half_open_probes": _COUNT,
    "fallbacks": _fallbacks(),
    "tenant_requests_per_min": _OPTIONAL_COUNT,
    "tenant_tokens_per_min": _OPTIONAL_COUNT,
    "key_requests_per_min": _OPTIONAL_COUNT,
    "key_tokens_per_min": _OPTIONAL_COUNT,
    "rate_limit_wait_s": _number(low=0),
    "budget_usd_per_hour": _OPTIONAL_ABOVE_0,
    "budget_usd_per_day": _OPTIONAL_ABOVE_0,
    "budget_tokens_per_hour": _OPTIONAL_COUNT,
    "budget_tokens_per_day": _OPTIONAL_COUNT,
    "budget_action": _choice(_BUDGET_ACTIONS),
    "concurrency": _flag(),
    "concurrency_limit": _COUNT,
    "redis_url": _redis_url(),
    "replicas": _COUNT,
    "cache_ttl_s": _ABOVE_0,
    "cache_max_entries": _COUNT,
    "cache_routes": _names(),
    "sample_rate": _number(above=0, high=1, hint="0.01 = one call in 100"),
    "sample_errors": _flag(),
    "sample_slow_for_s": _number(low=0),
    "alerts": _flag(),
    "alert_sinks": _sinks(_ALERT_SINK_NAMES, "alert"),
    "alert_webhook_url": _webhook_url(),
    "alert_webhook_format": _choice(_WEBHOOK_FORMATS),
    "alert_p95_latency_s": _THRESHOLD,
    "alert_rate_5xx": _THRESHOLD,
    "alert_rate_429": _THRESHOLD,
    "alert_latency_jump_s": _THRESHOLD,
    "alert_slo": _THRESHOLD,
    "alert_token_burn": _THRESHOLD,
    "alert_expected_tokens_per_hour": _number(integer=True, off=True),
    "alert_hourly_budget_usd": _THRESHOLD,
    "alert_tenant_hourly_budget_usd": _THRESHOLD,
    "alert_tenant_anomaly_factor": _THRESHOLD,
    "alert_baseline_days": _number(integer=True),
    "alert_slow_call_s": _THRESHOLD,
    "alert_max_output_tokens": _number(integer=True, off=True),
    "alert_page_factor": _number(),
    "alert_min_calls": _number(integer=True),
    "alert_min_coverage": _number(above=0, high=1),
    "alert_rules": _rules(),
}

_STRICT_ENV = "LLMPULSE_STRICT_ENV"
# LLMPULSE_* variables read outside Settings (scripts, the demo, tests): known,
# so that strict mode leaves them alone. Add yours here and to the docs.
_READ_ELSEWHERE: frozenset[str] = frozenset()


def known_variables() -> frozenset[str]:
    """Every ``LLMPULSE_*`` variable llmpulse reads."""
    settable = (name for name, spec in _PARSERS.items() if spec.parse is not None)
    return frozenset(map(_var, settable)) | {_STRICT_ENV} | _READ_ELSEWHERE


def _check_names(env: Mapping[str, str]) -> None:
    """Refuse (or, with LLMPULSE_STRICT_ENV=0, warn about) ``LLMPULSE_*`` names that are no setting."""
    known = known_variables()
    unknown = sorted(name for name in env if name.startswith("LLMPULSE_") and name not in known)
    strict = _flag().read("strict_env", env.get(_STRICT_ENV, "1").strip())
    if not unknown:
        return
    # The names only: a value may be a secret (a misspelt webhook URL).
    problems = [_with_guess(name, sorted(known)) for name in unknown]
    message = (
        f"unknown llmpulse variable(s): {', '.join(problems)}; see docs/configuration.md for the variables"
    )
    if strict:
        raise ConfigError(f"{message}. Set {_STRICT_ENV}=0 to only warn about unknown LLMPULSE_* names")
    _log.warning("%s (ignored: %s=0)", message, _STRICT_ENV)


def _with_guess(name: str, known: list[str]) -> str:
    """``name (did you mean CLOSEST?)``, or just ``name`` when nothing known is close."""
    # Compared without the shared prefix, which would make every LLMPULSE_ name look close.
    stem = name.removeprefix("LLMPULSE_")
    close = difflib.get_close_matches(stem, [k.removeprefix("LLMPULSE_") for k in known], n=1)
    return f"{name} (did you mean {name[: len(name) - len(stem)]}{close[0]}?)" if close else name


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
