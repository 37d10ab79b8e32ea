"""Settings from LLMPULSE_* variables: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import openai
import pytest

import llmpulse
from llmpulse import ConfigError, Settings, _config


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
            {"LLMPULSE_BACKOFF_BASE_S": "10", "LLMPULSE_BACKOFF_MAX_S": "8"},
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


# --- every variable, from the settings themselves ---------------------------------------

SPECS = _config._PARSERS
ENV_SPECS = {name: spec for name, spec in SPECS.items() if spec.parse is not None}
SECRET = "s3cr3t"
# Wrong text for a variable, by the kind of its setting (numbers get their bounds' edges too).
WRONG_TEXT: dict[str, tuple[str, ...]] = {
    "flag": ("maybe", "2", "-1"),
    "integer": ("x", "1.5", "nan", "1e3", "-1"),
    "number": ("x", "nan", "inf", "-inf", "-1"),
    "choice": ("bogus", "", "JSON "),
    "choices": ("bogus", "tenant,bogus", "Tenant"),
    "sinks": ("bogus", "log,bogus"),
    "names": (),  # any comma-separated text is a list of names
    "path": ("/nonexistent-dir/events.jsonl", "", "/"),
    "prices_file": ("/nonexistent-dir/prices.json", "/", "/dev/null"),
    "url": (
        f"not a url {SECRET}",
        f"ftp://hooks.example/{SECRET}",
        f"https://{SECRET}@",
        f"hooks.slack.com/services/T0/B0/{SECRET}",
    ),
    "redis_url": (
        f"not a url {SECRET}",
        f"http://:{SECRET}@host",
        f"redis://:{SECRET}@host:port",
        f"redis://:{SECRET}@host/db0",
        "unix://",
    ),
    "fallbacks": ("a=b=c", "gpt-4o", "=b", "a=b|", "a=b,a=c", "a=|b"),
    "redact": ("emails", "pii,bogus"),
}
# Wrong values given in code, by kind.
WRONG_CODE: dict[str, tuple[object, ...]] = {
    "flag": ("yes", 1, None),
    "integer": (1.5, True, "3", math.nan, -1),
    "number": ("0.5", True, math.nan, math.inf, -1),
    "choice": ("bogus", 1, None),
    "choices": ("bogus", ["tenant", "user"], [1], 3),
    "sinks": ("bogus", [object()], 3),
    "names": ("acme", [1], [""]),
    "path": ("", "/nonexistent-dir/events.jsonl", 3),
    "prices_file": ("/nonexistent-dir/prices.json", 3),
    "prices": ({"openai": {"m": {"input_mtok": 1}}}, ["openai"]),
    "url": (f"ftp://{SECRET}", 3),
    "redis_url": (f"http://:{SECRET}@host", 3),
    "fallbacks": ({"a": "b"}, {"a": []}, ["a"], {"": ["b"]}, {"a": [1]}),
    "rules": ([1], 3),
    "redact": ("emails", [1], 3),
}


def _wrong_text(spec: _config._Spec) -> list[str]:
    values = list(WRONG_TEXT[spec.kind])
    if spec.above is not None:
        values.append(f"{spec.above:g}")
    if spec.low is not None:
        values.append(f"{spec.low - 1:g}")
    if spec.high is not None:
        values.append(f"{spec.high + 1:g}")
    return list(dict.fromkeys(values))


def _documented_variables() -> list[str]:
    text = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    return re.findall(r"^\| `(LLMPULSE_[A-Z0-9_]+)` \|", text, flags=re.MULTILINE)


def test_the_docs_list_exactly_the_variables() -> None:
    """docs/configuration.md has one row per variable llmpulse reads, and names no other."""
    rows = _documented_variables()
    assert len(rows) == len(set(rows)), "a variable has two rows"
    assert set(rows) == _config.known_variables()
    text = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    mentioned = set(re.findall(r"LLMPULSE_[A-Z0-9_]*[A-Z0-9]", text))
    assert mentioned - {"LLMPULSE_METRICS_PORTT"} <= _config.known_variables()  # but the typo shown


def test_every_variable_is_a_field_with_a_docstring_line() -> None:
    """Each spec belongs to a Settings field, and each field is described in the docstring."""
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert set(_config._PARSERS) == fields
    thresholds = {f"alert_{name}" for name in _config._ALERT_FIELDS}  # described together
    for name in fields - thresholds:
        assert f"        {name}: " in (Settings.__doc__ or ""), name


@pytest.mark.parametrize(
    ("name", "raw"),
    [(name, raw) for name, spec in ENV_SPECS.items() for raw in _wrong_text(spec)],
)
def test_every_variable_refuses_wrong_values(name: str, raw: str) -> None:
    """A wrong value of any variable fails at configure time, naming the variable and the value."""
    variable = f"LLMPULSE_{name.upper()}"
    with pytest.raises(ConfigError) as info:
        Settings.from_env({variable: raw})
    message = str(info.value)
    assert message.startswith(variable), message
    if SPECS[name].secret:
        assert SECRET not in message
    else:
        assert raw.strip() in message, message


@pytest.mark.parametrize(
    ("name", "value"),
    [(name, value) for name, spec in SPECS.items() for value in WRONG_CODE[spec.kind]],
    ids=repr,
)
def test_every_setting_refuses_wrong_values_in_code(name: str, value: object) -> None:
    """A wrong value given in code fails the same way, naming the argument (not the variable)."""
    with pytest.raises(ConfigError) as info:
        Settings().replace(**{name: value})
    message = str(info.value)
    assert message.startswith(name), message
    assert "LLMPULSE_" not in message.split(" is ", maxsplit=1)[0], message
    if SPECS[name].secret:
        assert SECRET not in message
    else:
        assert repr(value) in message, message


def test_every_setting_has_a_good_default_and_accepts_its_own_value() -> None:
    """Defaults pass their own checks, so every wrong value above fails for being wrong."""
    defaults = Settings()
    assert defaults.replace(**{name: getattr(defaults, name) for name in SPECS}) == defaults


def test_integer_limits_refuse_fractions() -> None:
    """1.5 tokens per minute is refused at configure time, not every call later with "inf s"."""
    with pytest.raises(ConfigError, match=r"LLMPULSE_KEY_TOKENS_PER_MIN='1.5' is not an integer"):
        Settings.from_env({"LLMPULSE_KEY_TOKENS_PER_MIN": "1.5"})
    with pytest.raises(ConfigError, match=r"^key_tokens_per_min=1\.5 is not valid: use an integer >= 1"):
        llmpulse.configure(key_tokens_per_min=1.5)
    assert Settings.from_env({"LLMPULSE_KEY_TOKENS_PER_MIN": "600"}).key_tokens_per_min == 600


def test_code_values_are_normalised() -> None:
    """A single sink or rule becomes a tuple; lists become tuples; None unsets an optional number."""
    settings = Settings().replace(
        sinks="none", alert_rules=print, tenant_allowlist=["acme"], connect_timeout_s=None
    )
    assert settings.sinks == ("none",)
    assert settings.alert_rules == (print,)
    assert settings.tenant_allowlist == ("acme",)
    assert settings.connect_timeout_s is None


def test_a_cross_field_error_names_what_was_given_where() -> None:
    """backoff_base_s given in code above the environment's maximum names the argument and the variable."""
    settings = Settings.from_env({"LLMPULSE_BACKOFF_MAX_S": "1"})
    with pytest.raises(
        ConfigError, match=r"^backoff_base_s=2\.0 is larger than LLMPULSE_BACKOFF_MAX_S=1\.0$"
    ):
        settings.replace(backoff_base_s=2.0)


def test_alert_thresholds_in_code_name_the_argument() -> None:
    """An alert threshold's range is AlertConfig's; the error names the argument given."""
    with pytest.raises(
        ConfigError, match=r"^alert_slo must be a fraction in \(0, 1\), e\.g\. 0\.99, got 2\.0$"
    ):
        Settings().replace(alert_slo=2.0)
    with pytest.raises(ConfigError, match=r"^LLMPULSE_ALERT_MIN_CALLS must be an integer >= 1, got 0$"):
        Settings.from_env({"LLMPULSE_ALERT_MIN_CALLS": "0"})


def test_url_errors_never_show_the_url() -> None:
    """A bad webhook or Redis URL is named by its variable and its scheme, never its text."""
    url = f"ftp://hooks.example/services/{SECRET}"
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"LLMPULSE_ALERT_WEBHOOK_URL": url})
    assert str(info.value) == (
        "LLMPULSE_ALERT_WEBHOOK_URL is not valid: it is not an http(s) URL with a host "
        "(its scheme is 'ftp'; the URL is not shown)"
    )
    with pytest.raises(
        ConfigError, match=r"^LLMPULSE_REDIS_URL is not valid: its port is not a number"
    ) as info:
        Settings.from_env({"LLMPULSE_REDIS_URL": f"redis://:{SECRET}@db:6379x"})
    assert SECRET not in str(info.value)
    for good in ("redis://localhost:6379/0", f"rediss://u:{SECRET}@db.internal", "unix:///tmp/redis.sock"):
        assert Settings.from_env({"LLMPULSE_REDIS_URL": good}).redis_url == good
    assert SECRET not in repr(Settings.from_env({"LLMPULSE_REDIS_URL": f"redis://:{SECRET}@db"}))


def test_a_bad_redis_url_fails_configure_not_wrap(monkeypatch: pytest.MonkeyPatch) -> None:
    """LLMPULSE_REDIS_URL='not a url' is a ConfigError from configure(), before any client is wrapped."""
    monkeypatch.setenv("LLMPULSE_REDIS_URL", "not a url")
    try:
        with pytest.raises(
            ConfigError, match=r"^LLMPULSE_REDIS_URL is not valid: it must start with redis://"
        ):
            llmpulse.configure()
    finally:
        monkeypatch.delenv("LLMPULSE_REDIS_URL")
        llmpulse.configure(sinks=("none",))


def test_a_bad_price_file_names_the_variable(tmp_path: Path) -> None:
    """A price file that is missing or wrong is named with its variable (or its argument in code)."""
    path = tmp_path / "prices.json"
    path.write_text('{"openai": {"m": {"input_mtok": 1}}}')
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"LLMPULSE_PRICES_FILE": str(path)})
    assert str(info.value) == (
        f'LLMPULSE_PRICES_FILE={path} is not valid: entry ["openai"]["m"]: output_mtok is required'
    )
    with pytest.raises(
        ConfigError, match=r"^prices_file='/nonexistent-dir/p\.json' is not valid: cannot be read"
    ):
        Settings().replace(prices_file="/nonexistent-dir/p.json")
    path.write_text('{"openai": {"m": {"input_mtok": 1, "output_mtok": 2}}}')
    assert Settings.from_env({"LLMPULSE_PRICES_FILE": str(path)}).prices_file == str(path)


def test_fallback_syntax_is_checked() -> None:
    """A second '=' or an empty step is a typo, not a model name; a model may have one chain."""
    with pytest.raises(ConfigError, match=r"^LLMPULSE_FALLBACKS='a=b=c' is not valid: use model=fallback"):
        Settings.from_env({"LLMPULSE_FALLBACKS": "a=b=c"})
    with pytest.raises(ConfigError, match=r"^LLMPULSE_FALLBACKS='a=b,a=c' is not valid: a is given twice"):
        Settings.from_env({"LLMPULSE_FALLBACKS": "a=b,a=c"})


# --- unknown LLMPULSE_* names -----------------------------------------------------------


def test_a_misspelt_variable_is_an_error_naming_the_closest() -> None:
    """LLMPULSE_METRICS_PORTT is refused with the name it was probably meant to be, and the way out."""
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"LLMPULSE_METRICS_PORTT": "9999", "LLMPULSE_SINK": "jsonl"})
    message = str(info.value)
    assert "LLMPULSE_METRICS_PORTT (did you mean LLMPULSE_METRICS_PORT?)" in message
    assert "LLMPULSE_SINK (did you mean LLMPULSE_SINKS?)" in message
    assert "LLMPULSE_STRICT_ENV=0" in message
    assert "9999" not in message  # values may be secrets
    assert "jsonl" not in message
    with pytest.raises(ConfigError, match=r"LLMPULSE_NOTHING_LIKE_IT; see"):
        Settings.from_env({"LLMPULSE_NOTHING_LIKE_IT": "1"})


def test_strict_env_off_turns_the_error_into_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """With LLMPULSE_STRICT_ENV=0 an unknown name is logged and the known ones still apply."""
    env = {"LLMPULSE_STRICT_ENV": "0", "LLMPULSE_SINK": "jsonl", "LLMPULSE_MAX_TENANTS": "7"}
    with caplog.at_level("WARNING", logger="llmpulse"):
        settings = Settings.from_env(env)
    assert settings.max_tenants == 7
    assert "LLMPULSE_SINK (did you mean LLMPULSE_SINKS?)" in caplog.text
    with pytest.raises(ConfigError, match=r"^LLMPULSE_STRICT_ENV='sometimes' is not a boolean"):
        Settings.from_env({"LLMPULSE_STRICT_ENV": "sometimes"})


def test_alert_threshold_names_are_known_and_others_are_not() -> None:
    """Every LLMPULSE_ALERT_<NAME> of an AlertConfig threshold is a setting; a made-up one is not."""
    env = {f"LLMPULSE_ALERT_{name.upper()}": "off" for name in ("p95_latency_s", "rate_5xx", "slow_call_s")}
    assert Settings.from_env(env).alert_p95_latency_s is None
    with pytest.raises(ConfigError, match=r"LLMPULSE_ALERT_SLOO \(did you mean LLMPULSE_ALERT_SLO\?\)"):
        Settings.from_env({"LLMPULSE_ALERT_SLOO": "0.99"})


def test_first_wrap_reports_a_misspelt_variable(
    monkeypatch: pytest.MonkeyPatch, raw_openai: openai.OpenAI
) -> None:
    """With nothing configured, wrap() raises the same ConfigError for an unknown LLMPULSE_ name."""
    monkeypatch.setenv("LLMPULSE_METRICS_PORTT", "9999")
    llmpulse._config.reset_for_tests()
    try:
        with pytest.raises(ConfigError, match="did you mean LLMPULSE_METRICS_PORT"):
            llmpulse.wrap(raw_openai)
    finally:
        monkeypatch.delenv("LLMPULSE_METRICS_PORTT")
        llmpulse.configure(sinks=("none",))


def test_a_misspelt_argument_names_the_closest() -> None:
    """configure(metrcs=False) names the setting it was probably meant to be."""
    with pytest.raises(ConfigError, match=r"^unknown setting\(s\): metrcs \(did you mean metrics\?\)$"):
        llmpulse.configure(metrcs=False)


def test_alert_config_counts_are_integers() -> None:
    """AlertConfig, also used on its own, refuses 1.5 calls and True days, which pass its ranges."""
    with pytest.raises(ConfigError, match=r"^AlertConfig\.min_calls must be an integer, got 1\.5$"):
        llmpulse.AlertConfig(min_calls=1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^AlertConfig\.baseline_days must be an integer, got True$"):
        llmpulse.AlertConfig(baseline_days=True)
    assert llmpulse.AlertConfig(max_output_tokens=None).max_output_tokens is None
