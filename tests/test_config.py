"""Settings from LLMPULSE_* variables: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

import re

import openai
import pytest

import llmpulse
from llmpulse import ConfigError, Settings


def test_defaults() -> None:
    """With no variables set, logs and metrics are on and content capture is off."""
    settings = Settings.from_env({})
    assert settings.sinks == ("log",)
    assert settings.metrics is True
    assert settings.capture_content is False
    assert settings.max_tenants == 100


def test_values_are_parsed() -> None:
    """Booleans, integers and lists are parsed from their text forms."""
    settings = Settings.from_env(
        {
            "LLMPULSE_SINKS": "log, jsonl",
            "LLMPULSE_METRICS": "off",
            "LLMPULSE_MAX_TENANTS": "7",
            "LLMPULSE_TENANT_ALLOWLIST": "acme,globex",
            "LLMPULSE_METRICS_PORT": "9464",
        }
    )
    assert settings.sinks == ("log", "jsonl")
    assert settings.metrics is False
    assert settings.max_tenants == 7
    assert settings.tenant_allowlist == ("acme", "globex")
    assert settings.metrics_port == 9464


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LLMPULSE_METRICS": "maybe"}, r"LLMPULSE_METRICS='maybe' is not a boolean"),
        ({"LLMPULSE_MAX_TENANTS": "lots"}, r"LLMPULSE_MAX_TENANTS='lots' is not an integer"),
        ({"LLMPULSE_MAX_TENANTS": "0"}, r"LLMPULSE_MAX_TENANTS=0 is not valid: use an integer >= 1"),
        (
            {"LLMPULSE_SINKS": "log,kafka"},
            r"LLMPULSE_SINKS=log,kafka is not valid: accepted values are log, jsonl, none",
        ),
        ({"LLMPULSE_LOG_FORMAT": "xml"}, r"accepted values are json, console"),
        (
            {"LLMPULSE_METRICS_PORT": "70000"},
            r"LLMPULSE_METRICS_PORT=70000 is not valid: use an integer >= 0 and <= 65535",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    """A bad value raises ConfigError naming the variable and what is accepted."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_otel_content_capture_variable_is_honoured() -> None:
    """OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT turns capture on unless ours says otherwise."""
    assert Settings.from_env({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}).capture_content
    assert not Settings.from_env(
        {
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
            "LLMPULSE_CAPTURE_CONTENT": "0",
        }
    ).capture_content


def test_unknown_override_is_refused() -> None:
    """configure() with a misspelt setting raises."""
    with pytest.raises(ConfigError, match="unknown setting"):
        llmpulse.configure(metrix=False)


def test_first_wrap_reports_a_bad_environment(
    monkeypatch: pytest.MonkeyPatch, raw_openai: openai.OpenAI
) -> None:
    """With nothing configured, wrap() reads the environment and raises ConfigError on a bad value."""
    monkeypatch.setenv("LLMPULSE_BUFFER_SIZE", "-3")
    llmpulse._config.reset_for_tests()
    try:
        with pytest.raises(ConfigError, match="LLMPULSE_BUFFER_SIZE"):
            llmpulse.wrap(raw_openai)
    finally:
        monkeypatch.delenv("LLMPULSE_BUFFER_SIZE")
        llmpulse.configure(sinks=("none",))


def test_sink_objects_can_be_configured_in_code() -> None:
    """configure(sinks=[obj]) accepts sink objects and refuses objects without emit()."""
    with pytest.raises(ConfigError, match="neither a sink name"):
        llmpulse.configure(sinks=[object()])
    llmpulse.configure(sinks=("none",))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"LLMPULSE_NETWORK_TIMINGS": "yes"},
            "LLMPULSE_NETWORK_TIMINGS=yes is not valid: accepted values are sampled, all, off",
        ),
        ({"LLMPULSE_NETWORK_SAMPLE_RATE": "often"}, "LLMPULSE_NETWORK_SAMPLE_RATE='often' is not a number"),
        ({"LLMPULSE_NETWORK_SAMPLE_RATE": "0"}, "LLMPULSE_NETWORK_SAMPLE_RATE=0.0 is not valid"),
    ],
)
def test_bad_network_timing_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    """Network timing settings fail at start with the variable and what is accepted."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("value", "captured"),
    [
        ("NO_CONTENT", False),
        ("SPAN_ONLY", True),
        ("event_only", True),
        ("SPAN_AND_EVENT", True),
        ("false", False),
    ],
)
def test_otel_capture_variable_accepts_its_enum_values(value: str, captured: bool) -> None:
    """The OTel variable's newer enum values work too: anything but NO_CONTENT captures."""
    env = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": value}
    assert Settings.from_env(env).capture_content is captured


def test_otel_capture_variable_rejects_other_values() -> None:
    """A value that is neither boolean nor one of the enum names is named in the error."""
    env = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "sometimes"}
    with pytest.raises(ConfigError, match="OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT='sometimes'"):
        Settings.from_env(env)


def test_fallback_chains_from_the_environment() -> None:
    """LLMPULSE_FALLBACKS: model=fallback|fallback, comma-separated; a bad entry names the format."""
    env = {"LLMPULSE_FALLBACKS": "gpt-4o=gpt-4o-mini|gpt-4.1-mini, claude-sonnet-4-6=claude-haiku-4-5"}
    assert Settings.from_env(env).fallbacks == {
        "gpt-4o": ("gpt-4o-mini", "gpt-4.1-mini"),
        "claude-sonnet-4-6": ("claude-haiku-4-5",),
    }
    with pytest.raises(ConfigError, match=r"LLMPULSE_FALLBACKS='gpt-4o' is not valid: use model=fallback"):
        Settings.from_env({"LLMPULSE_FALLBACKS": "gpt-4o"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LLMPULSE_BREAKER_FAILURES": "0"}, "LLMPULSE_BREAKER_FAILURES=0 is not valid"),
        ({"LLMPULSE_READ_TIMEOUT_S": "-1"}, "LLMPULSE_READ_TIMEOUT_S=-1.0 is not valid"),
        ({"LLMPULSE_MAX_RETRIES": "-1"}, "LLMPULSE_MAX_RETRIES=-1 is not valid"),
        ({"LLMPULSE_RETRY_BUDGET_RATIO": "-0.5"}, "LLMPULSE_RETRY_BUDGET_RATIO=-0.5 is not valid"),
        (
            {"LLMPULSE_BACKOFF_BASE_S": "10"},
            "LLMPULSE_BACKOFF_BASE_S=10.0 is larger than LLMPULSE_BACKOFF_MAX_S=8.0",
        ),
        ({"LLMPULSE_BREAKER": "maybe"}, "LLMPULSE_BREAKER='maybe' is not a boolean"),
    ],
)
def test_bad_resilience_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    """Every resilience variable is checked at start, with the variable and what is accepted."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env(env)


def test_resilience_settings_become_the_default_policies() -> None:
    """LLMPULSE_* resilience variables build the process's Policies."""
    env = {
        "LLMPULSE_MAX_RETRIES": "1",
        "LLMPULSE_BREAKER_FAILURES": "5",
        "LLMPULSE_READ_TIMEOUT_S": "4",
        "LLMPULSE_FALLBACKS": "gpt-4o=gpt-4o-mini",
        "LLMPULSE_BREAKER": "1",
    }
    policies = llmpulse._wrap.default_policies(Settings.from_env(env))
    assert policies.max_retries == 1
    assert policies.breaker is not None
    assert policies.breaker.failure_threshold == 5
    assert policies.timeouts.read_s == 4.0
    assert dict(policies.fallbacks) == {"gpt-4o": ("gpt-4o-mini",)}
    off = llmpulse._wrap.default_policies(Settings.from_env({"LLMPULSE_BREAKER": "0"}))
    assert off.breaker is None
