"""Secrets and personal data never reach an output; the caller's exception is the SDK's, unchanged.

One run drives successes, 401s echoing each key shape (whole and masked), 400s quoting the
prompt, captured content and alerts through every output llmpulse has: structlog lines, the
JSONL file, Prometheus text, OpenTelemetry spans, webhook and log alerts, llmpulse's own log,
and the report (text, JSON, HTML) built from the JSONL. Every output is then searched for
every secret. As a control, each output still holds the non-secret parts of the same
messages, and the same run with the scrubbing step switched off leaks every key shape.
"""

from __future__ import annotations

import io
import logging
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest

import llmpulse
from llmpulse import _redact
from llmpulse._cli import main
from llmpulse._redact import Scrubber, pii, secrets_of
from llmpulse.alerts import LogAlertSink
from llmpulse.sinks import JsonlSink, StructlogSink
from llmpulse.sinks._otel import OtelSink
from llmpulse.testing import FakeProvider, Fault
from local_server import WebhookReceiver

_rng = random.Random(20261201)  # fixed keys: a needle that matches by chance would match every run


def _chars(alphabet: str, n: int) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


_ALNUM = string.ascii_letters + string.digits
_URLSAFE = _ALNUM + "-_"

# The client's own key, one per shape a provider or gateway hands out.
CLIENT_KEYS = {
    "openai": "sk-proj-" + _chars(_URLSAFE, 48),
    "hex32": _chars("0123456789abcdef", 32),  # OpenAI-compatible gateways
    "azure": _chars(_ALNUM, 84),
    "jwt": "eyJhbGciOiJSUzI1NiJ9." + _chars(_URLSAFE, 40) + "." + _chars(_URLSAFE, 43),
    "anthropic": "sk-ant-api03-" + _chars(_URLSAFE, 93) + "AA",
}
# Keys of other services that an error text may quote.
OTHER_KEYS = {
    "aws": "AKIA" + _chars(string.ascii_uppercase + string.digits, 16),
    "google": "AIza" + _chars(_URLSAFE, 35),
}
PERSONAL = {"email": "ada.lovelace@example.org", "card": "4111 1111 1111 1111", "phone": "+44 20 7946 0958"}
_REST_OF_401 = "You can find your API key at the dashboard"
_QUOTE_MARK = "Invalid 'messages[0].content'"


def _needles(key: str) -> list[str]:
    # The key, and what its masked echoes keep of it: the first 8 and, beside a mask, the last 4.
    return [key, key[:8], "*" + key[-4:], "." + key[-4:]]


@dataclass
class Outputs:
    """Everything llmpulse wrote, by output."""

    texts: dict[str, str] = field(default_factory=dict)
    caller_errors: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)

    def hits(self, needle: str) -> list[str]:
        return [name for name, text in self.texts.items() if needle in text]


@pytest.fixture(name="webhook")
def _webhook() -> Iterator[tuple[str, list[bytes]]]:
    with WebhookReceiver("/hooks/T0/B0/webhook-s3cr3t") as server:
        yield server.url, server.bodies


def _quoting_rule(event: Any) -> str | None:
    # A user's alert rule that quotes what the provider said, and a key of its own (say, from
    # its config): alert texts are outputs too, scrubbed on their own.
    if event.http_status in (400, 401):
        return f"{event.error_type} on {event.model}: {event.error_message} (via {OTHER_KEYS['google']})"
    return None


def _drive(fake: FakeProvider, tmp: Path, webhook: tuple[str, list[bytes]]) -> Outputs:
    """One run through every output; return what each output holds."""
    url, bodies = webhook
    out = Outputs()
    log_stream, alert_stream = io.StringIO(), io.StringIO()
    jsonl = tmp / "events.jsonl"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sinks = [
        StructlogSink(log_stream, attempts=True),
        JsonlSink(str(jsonl)),
        OtelSink(tracer_provider=provider, capture_content=True),
    ]
    llmpulse.configure(
        sinks=sinks,
        capture_content=True,
        redact="pii",
        sample_rate=1.0,
        alert_sinks=(LogAlertSink(alert_stream), "webhook"),
        alert_webhook_url=url,
        alert_rules=(_quoting_rule,),
        alert_slow_call_s=None,
    )
    registry = CollectorRegistry()
    handler = logging.StreamHandler(own_log := io.StringIO())
    logging.getLogger("llmpulse").addHandler(handler)
    try:
        for shape, key in CLIENT_KEYS.items():
            client: Any
            if shape == "anthropic":
                client = anthropic.Anthropic(api_key=key, base_url=fake.anthropic_base_url, max_retries=0)
                call = _anthropic_call
            elif shape == "azure":
                client = openai.AzureOpenAI(
                    api_key=key, api_version="2024-10-21", azure_endpoint=fake.base_url, max_retries=0
                )
                call = _openai_call
            else:
                client = openai.OpenAI(api_key=key, base_url=fake.openai_base_url, max_retries=0)
                call = _openai_call
            wrapped = llmpulse.wrap(client, registry=registry)
            masked = f"{key[:8]}{'*' * 24}{key[-4:]}"
            other = " ".join(OTHER_KEYS.values())
            prompt = f"My card is {PERSONAL['card']}, mail {PERSONAL['email']}, phone {PERSONAL['phone']}"
            fake.enqueue(
                Fault.status(401, message=f"Incorrect API key provided: {key}. {_REST_OF_401}."),
                Fault.status(401, message=f"Incorrect API key provided: {masked}. {_REST_OF_401}."),
                Fault.status(400, message=f"{_QUOTE_MARK}: '{prompt}' was refused; also saw {other}"),
            )
            for _ in range(3):
                with pytest.raises((openai.APIStatusError, anthropic.APIStatusError)) as info:
                    call(wrapped, prompt)
                out.caller_errors.append(str(info.value))
                out.request_ids.append(info.value.request_id or "")
            call(wrapped, f"{prompt}; my key is {key} and {other}")  # a healthy call, content captured
            client.close()
        assert llmpulse.flush(10.0)
    finally:
        logging.getLogger("llmpulse").removeHandler(handler)
    sinks[1].close()  # the JSONL file

    out.texts["structlog"] = log_stream.getvalue()
    out.texts["jsonl"] = jsonl.read_text()
    out.texts["prometheus"] = generate_latest(registry).decode()
    out.texts["otel"] = "\n".join(span.to_json() for span in exporter.get_finished_spans())
    out.texts["alert log"] = alert_stream.getvalue()
    out.texts["webhook"] = "\n".join(body.decode() for body in bodies)
    out.texts["llmpulse log"] = own_log.getvalue()
    html = tmp / "report.html"
    report = io.StringIO()
    for argv in ([str(jsonl)], [str(jsonl), "--json"], [str(jsonl), "--html", str(html)]):
        _report(report, argv)
    out.texts["report"] = report.getvalue() + html.read_text()
    return out


def _report(into: io.StringIO, argv: list[str]) -> None:
    import contextlib  # noqa: PLC0415

    with contextlib.redirect_stdout(into):
        assert main(["report", *argv]) == 0


def _openai_call(client: Any, prompt: str) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}])


def _anthropic_call(client: Any, prompt: str) -> None:
    client.messages.create(
        model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": prompt}]
    )


def test_no_output_holds_a_secret_and_each_keeps_the_rest(
    fake: FakeProvider, tmp_path: Path, webhook: tuple[str, list[bytes]]
) -> None:
    """Zero hits for every key shape and personal datum; the error type, request id and the rest remain."""
    out = _drive(fake, tmp_path, webhook)
    leaks = {
        needle: out.hits(needle)
        for key in (*CLIENT_KEYS.values(), *OTHER_KEYS.values())
        for needle in _needles(key)
    }
    leaks |= {value: out.hits(value) for value in PERSONAL.values()}
    leaks["webhook-s3cr3t"] = out.hits("webhook-s3cr3t")
    assert {needle: where for needle, where in leaks.items() if where} == {}

    # The caller's exception is the SDK's own, secrets and all: scrubbing is for outputs only.
    for key in CLIENT_KEYS.values():
        assert any(key in text for text in out.caller_errors)
    # What is not secret is still there, in each output that carries error text.
    for name in ("structlog", "jsonl", "otel", "alert log", "webhook"):
        text = out.texts[name]
        for part in ("AuthenticationError", _REST_OF_401, "[REDACTED]"):
            assert part in text, (name, part)
    for name in ("structlog", "jsonl", "otel"):
        text = out.texts[name]
        for part in (_QUOTE_MARK, "[EMAIL]", "[CARD]", "[PHONE]"):
            assert part in text, (name, part)
    for name in ("structlog", "jsonl", "otel"):
        assert all(rid in out.texts[name] for rid in out.request_ids if rid), name
    assert 'error_type="AuthenticationError"' in out.texts["prometheus"]
    assert "gpt-4o-mini" in out.texts["report"]
    assert "claude-haiku-4-5" in out.texts["report"]


def test_the_same_run_unscrubbed_leaks_every_key_shape(
    fake: FakeProvider, tmp_path: Path, webhook: tuple[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control: with the scrubbing step off, each key shape shows up in some output."""
    monkeypatch.setattr(_redact, "_ENABLED", False)
    out = _drive(fake, tmp_path, webhook)
    for shape, key in (*CLIENT_KEYS.items(), *OTHER_KEYS.items()):
        assert out.hits(key), shape
    assert "webhook" in out.hits(OTHER_KEYS["google"])
    assert out.hits(PERSONAL["email"])


class TestScrubber:
    """The scrubbing step on its own."""

    @pytest.mark.parametrize("shape", list(CLIENT_KEYS))
    def test_the_clients_key_of_any_shape_and_its_masked_echoes(self, shape: str) -> None:
        """The exact key goes, and so do its first-8 and last-4 echoes; the words around stay."""
        key = CLIENT_KEYS[shape]
        secrets = secrets_of([key])
        for echo in (key, f"{key[:8]}****{key[-4:]}", f"****{key[-4:]}", f"{key[:8]}...", f"...{key[-4:]}"):
            text = Scrubber().error(f"Incorrect API key provided: {echo}. req_abc123", secrets)
            assert text == "Incorrect API key provided: [REDACTED]. req_abc123", echo

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("Authorization: Bearer abc.def.ghi-123", "Authorization: Bearer [REDACTED]"),
            ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [REDACTED]"),
            ("bearer abcdefghijkl", "bearer [REDACTED]"),
            ("api-key: 0123456789abcdef", "api-key: [REDACTED]"),
            ("x-api-key=0123456789abcdef", "x-api-key=[REDACTED]"),
            ("https://user:pw@example.com/v1", "https://[REDACTED]@example.com/v1"),
            ("/v1?api-version=1&api-key=abc&sig=s1", "/v1?api-version=1&api-key=[REDACTED]&sig=[REDACTED]"),
            (
                "?X-Amz-Signature=abc&X-Amz-Credential=d",
                "?X-Amz-Signature=[REDACTED]&X-Amz-Credential=[REDACTED]",
            ),
            ("key sk-ant-api03-abcdefgh", "key sk-[REDACTED]"),
            ("masked sk-abc1****wxyz here", "masked sk-[REDACTED] here"),
            ("token abcd************wxyz here", "token [REDACTED] here"),
            ("AKIAIOSFODNN7EXAMPLE", "[REDACTED]"),
            ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "[REDACTED]"),
            ("max_tokens is 4096 but 8192 were asked; req_0123456789abcdef", None),
            ("Rate limit reached for gpt-4o in organization org-abc123 on tokens per min", None),
        ],
    )
    def test_known_shapes(self, text: str, expected: str | None) -> None:
        """Known key shapes and key positions are masked; ordinary provider text is left alone."""
        assert Scrubber().scrub(text) == (text if expected is None else expected)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("write to ada@example.org now", "write to [EMAIL] now"),
            ("card 4111-1111-1111-1111 ok", "card [CARD] ok"),
            ("card 4111 1111 1111 1112 fails Luhn", "card 4111 1111 1111 1112 fails Luhn"),
            ("call +1 (415) 555-0100", "call [PHONE]"),
            ("call 020 7946 0958", "call [PHONE]"),
            ("context length is 128000 tokens, you asked 130532", None),
            ("at 2026-12-01 19:49:01 UTC", None),
        ],
    )
    def test_pii_rules(self, text: str, expected: str | None) -> None:
        """Emails, Luhn-valid card numbers and phone numbers go; counts and dates stay."""
        assert pii(text) == (text if expected is None else expected)

    def test_error_text_modes(self) -> None:
        """none drops the text; scrubbed applies the rules and cuts at 500; full keeps up to 8 KiB unruled."""
        message = "quote: ada@example.org sk-proj-abcdefghijkl " + "x" * 9000
        assert Scrubber((pii,), error_text="none").error(message) is None
        scrubbed = Scrubber((pii,)).error(message)
        assert scrubbed is not None
        assert len(scrubbed) == _redact.MAX_ERROR_CHARS
        assert scrubbed.startswith("quote: [EMAIL] sk-[REDACTED] x")
        full = Scrubber((pii,), error_text="full").error(message)
        assert full is not None
        assert len(full) == _redact.MAX_FULL_ERROR_CHARS
        assert full.startswith("quote: ada@example.org sk-[REDACTED] x")

    def test_a_failing_rule_keeps_nothing_and_warns_once(self, caplog: pytest.LogCaptureFixture) -> None:
        """A user rule that raises gives a placeholder, never the unscrubbed text, and one warning."""

        def broken(text: str) -> str:
            raise RuntimeError("bug")

        scrubber = Scrubber((broken,))
        with caplog.at_level(logging.WARNING, logger="llmpulse"):
            assert scrubber.scrub("ada@example.org") == "[REDACTION FAILED]"
            assert scrubber.scrub("again") == "[REDACTION FAILED]"
        assert caplog.text.count("redact rule 'broken'") == 1

    def test_settings(self) -> None:
        """LLMPULSE_REDACT names built-in sets; code takes callables; bad values are named."""
        env = {"LLMPULSE_REDACT": "pii", "LLMPULSE_CAPTURE_ERROR_TEXT": "none"}
        settings = llmpulse.Settings.from_env(env)
        assert (settings.redact, settings.capture_error_text) == (("pii",), "none")
        assert llmpulse.Settings().replace(redact=str.upper).redact == (str.upper,)
        with pytest.raises(llmpulse.ConfigError, match="LLMPULSE_REDACT=emails is not valid"):
            llmpulse.Settings.from_env({"LLMPULSE_REDACT": "emails"})
        with pytest.raises(llmpulse.ConfigError, match="LLMPULSE_CAPTURE_ERROR_TEXT=some is not valid"):
            llmpulse.Settings.from_env({"LLMPULSE_CAPTURE_ERROR_TEXT": "some"})
