"""Pure pieces: path → operation, value extraction, the SDK retry rule, redaction."""

from __future__ import annotations

import email.utils
import itertools
import json
import time

import pytest

from llmpulse._redact import redact
from llmpulse._sampling import Sampler
from llmpulse.policies import parse_retry_after
from llmpulse.providers import OpenAIProvider, operation_from_path
from llmpulse.providers._base import json_malformed, json_value_after


@pytest.mark.parametrize(
    ("path", "operation", "deployment"),
    [
        ("/v1/chat/completions", "chat", None),
        ("/v1/responses", "responses", None),
        ("/v1/embeddings", "embeddings", None),
        ("/v1/completions", "text_completion", None),
        ("/v1/messages", "messages", None),
        ("/v1/messages/count_tokens", "count_tokens", None),
        ("/v1/messages/batches/msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d", "batches", None),
        ("/v1/batches/batch_abc123", "batches", None),
        ("/openai/deployments/prod-gpt4o/chat/completions", "chat", "prod-gpt4o"),
        ("/v1/files/file-abc123/content", "/files/{id}/content", None),
        ("/v1/models", "/models", None),
    ],
)
def test_operation_from_path(path: str, operation: str, deployment: str | None) -> None:
    """Known endpoints get short names; other paths keep their shape with ids replaced."""
    assert operation_from_path(path) == (operation, deployment)


def test_json_value_after_reads_only_the_value() -> None:
    """The value after a key is decoded; keys inside strings never match."""
    body = b'{"content":"say \\"usage\\": 1","usage":{"prompt_tokens":3},"model":"m"}'
    assert json_value_after(body, b"usage") == {"prompt_tokens": 3}
    assert json_value_after(body, b"model", last=False) == "m"
    assert json_value_after(body, b"missing") is None
    assert json_value_after(b'{"usage":{broken', b"usage") is None


def test_retry_after_http_date() -> None:
    """An HTTP-date Retry-After is turned into seconds from now."""
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    delay = parse_retry_after({"retry-after": when})
    assert delay is not None
    assert 28 < delay <= 30
    assert parse_retry_after({"retry-after": "soon"}) is None


@pytest.mark.parametrize(
    "secret",
    [
        "Incorrect API key provided: sk-proj-abcdef1234567890",
        "Authorization: Bearer sk-ant-api03-abcdefghijkl",
        "https://x.openai.azure.com/openai?api-version=1&api-key=abcdef123456",
        "https://user:hunter22@proxy.internal:8080/",
        '{"x-api-key": "abcdefgh12345678"}',
    ],
)
def test_redact_masks_secrets(secret: str) -> None:
    """Keys, bearer tokens, key query parameters and URL passwords are masked."""
    out = redact(secret)
    assert "REDACTED" in out
    for fragment in ("abcdef1234567890", "abcdefghijkl", "abcdef123456", "hunter22", "abcdefgh12345678"):
        assert fragment not in out


@pytest.mark.parametrize("rate", [1.0, 0.5, 0.1, 0.01, 0.003])
def test_sampler_picks_the_first_call_then_a_steady_fraction(rate: float) -> None:
    """The sampler picks call 0, then exactly one in every 1/rate, with no drift over many calls."""
    sampler = Sampler(rate)
    picks = [sampler.pick() for _ in range(10_000)]
    assert picks[0]
    assert sum(picks) == round(10_000 * rate)
    if rate >= 0.01:
        gaps = {b - a for a, b in itertools.pairwise(i for i, p in enumerate(picks) if p)}
        assert gaps == {round(1 / rate)}


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5])
def test_sampler_rejects_a_rate_outside_0_1(rate: float) -> None:
    """A rate outside (0, 1] is a mistake, named in the error."""
    with pytest.raises(ValueError, match="sample rate must be in"):
        Sampler(rate)


@pytest.mark.parametrize(
    ("request_body", "expected_options"),
    [
        (
            {"model": "m", "messages": [{"role": "user", "content": "héllo"}], "stream": True},
            {"include_usage": True},
        ),
        ({"model": "m", "stream": True, "stream_options": None}, {"include_usage": True}),
        ({"model": "m", "stream": True, "stream_options": {"x": 1}}, {"x": 1, "include_usage": True}),
    ],
)
def test_stream_usage_is_requested_without_changing_anything_else(
    request_body: dict[str, object], expected_options: dict[str, object]
) -> None:
    """The rewritten chat stream body asks for usage and keeps every other field as it was."""
    body = json.dumps(request_body, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    info = OpenAIProvider("openai").describe("POST", "/v1/chat/completions", body, inject_usage=True)
    assert info.new_body is not None
    assert info.strip_usage_chunk
    assert json.loads(info.new_body) == {**request_body, "stream_options": expected_options}


def test_a_body_orjson_rejects_is_still_read() -> None:
    """json.dumps can write lone surrogates as escapes; orjson refuses them, the stdlib does not."""
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\ud800"}]}).encode()
    info = OpenAIProvider("openai").describe("POST", "/v1/chat/completions", body, inject_usage=True)
    assert info.model == "gpt-4o-mini"


@pytest.mark.parametrize(
    ("body", "malformed"),
    [
        (b'{"id": "x", "usage": {"prompt_tokens": 1}}', False),
        (b"[1, 2]", False),
        (b'{"id": "x", "usage": {"prompt_to', True),
        (b"<html>502 Bad Gateway</html>", True),
        (b"", True),
        (b'{"data": "' + b"x" * 2_000_000 + b'"}', False),  # beyond 1 MiB: judged by its ends
        (b'{"data": "' + b"x" * 2_000_000, True),
    ],
)
def test_json_malformed(body: bytes, malformed: bool) -> None:
    """A body that should be JSON is checked in full up to 1 MiB, by its first and last bytes beyond."""
    assert json_malformed(body) is malformed
