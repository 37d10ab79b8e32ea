"""What llmpulse needs to know about a provider's wire format, as one small Protocol.

Adapters see bytes and headers, never SDK objects: that is what keeps
every endpoint observed (an unknown one still gets an operation name) and
what lets one adapter serve both HTTP stacks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from ..events import RateLimitInfo

if TYPE_CHECKING:
    from ._sse import StreamWatch

__all__ = [
    "Provider",
    "RequestInfo",
    "ResponseInfo",
    "is_stream",
    "json_malformed",
    "json_value_after",
    "loads",
    "operation_from_path",
]


@dataclass(slots=True)
class RequestInfo:
    """What one request asks for, read from its method, path and JSON body."""

    operation: str
    path: str = ""
    model: str | None = None
    streamed: bool = False
    max_tokens: int | None = None
    # Reasoning effort or extended thinking asked for ("" for none): its deadlines are learned apart.
    reasoning: str = ""
    # The body to send instead of the caller's (OpenAI stream usage injection).
    new_body: bytes | None = None
    # Whether the usage-only chunk we asked for must be hidden from the caller.
    strip_usage_chunk: bool = False


@dataclass(slots=True)
class ResponseInfo:
    """Usage and metadata read from a response body or a finished stream.

    Token fields follow the OpenTelemetry rule (``input_tokens`` includes
    cached and cache-write tokens).
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    # Of the cache writes, those kept for an hour (Anthropic bills them higher).
    cache_write_1h_tokens: int | None = None
    reasoning_tokens: int | None = None
    response_model: str | None = None
    finish_reason: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    # Whether the JSON body failed to parse; None when the adapter did not parse it whole.
    malformed: bool | None = None
    # Whether a stream reached its terminal event ([DONE], message_stop,
    # response.completed...); None for a response that is not a stream.
    terminal: bool | None = None


class Provider(Protocol):
    """A provider adapter (one per SDK family, shared by every wrapped client)."""

    name: str
    """The ``gen_ai.provider.name`` of the calls ("openai", "anthropic", "aws.bedrock", ...)."""
    sdk: str
    """The SDK package whose clients use this adapter ("openai" or "anthropic"): its exceptions."""
    rewrites_body: bool
    """Whether llmpulse may change a request's body (stream usage, a fallback model): not where
    the SDK signs it (SigV4) or puts the model in the URL (Bedrock, Vertex AI)."""
    request_id_header: str
    max_retry_after_s: float | None
    """The longest ``Retry-After`` the SDK waits for before retrying; longer: it does not retry."""

    def retries_exception(self, exc: BaseException) -> bool:
        """Whether the SDK retries a send that failed with ``exc``."""

    def describe(self, method: str, path: str, body: bytes | None, *, inject_usage: bool) -> RequestInfo:
        """Read what a request asks for; ``body`` is the raw JSON, if any."""

    def parse_body(self, info: RequestInfo, body: bytes) -> ResponseInfo:
        """Read usage and metadata from a complete 2xx JSON body."""

    def parse_error(self, status: int, body: bytes) -> ResponseInfo:
        """Read the error class name and message the SDK will raise for this response."""

    def stream_watch(self, info: RequestInfo) -> StreamWatch:
        """Return a fresh watcher for this request's stream (first output, usage-chunk stripping)."""

    def parse_stream(self, info: RequestInfo, data: bytes) -> ResponseInfo:
        """Read usage, metadata and ``terminal`` from the retained bytes of a finished stream."""

    def stream_text(self, data: bytes) -> str:
        """Return the generated text in stream bytes (to estimate tokens when usage is missing)."""

    def output_text(self, info: RequestInfo, body: bytes) -> str:
        """Return the generated text of a JSON (non-streamed) response, for opt-in content capture."""

    def quota_exhausted(self, status: int, body: bytes) -> bool:
        """Whether an error body says the account's quota is spent (retrying cannot help)."""

    def ratelimit(self, headers: Mapping[str, str]) -> RateLimitInfo | None:
        """Read the remaining quota from response headers."""

    def provider_latency(self, headers: Mapping[str, str]) -> float | None:
        """Return the provider's own processing time, when it reports one."""


_OPERATIONS = {
    "chat/completions": "chat",
    "responses": "responses",
    "embeddings": "embeddings",
    "completions": "text_completion",
    "messages": "messages",
    "messages/count_tokens": "count_tokens",
    "batches": "batches",
    "messages/batches": "batches",
    "moderations": "moderations",
    "images/generations": "image_generation",
    "audio/transcriptions": "transcription",
    "audio/speech": "speech",
}
_AZURE_PREFIX = re.compile(r"^/?openai/deployments/([^/]+)/")
# What stands before the API's own path: Claude on Google Cloud's workspace
# gateway, Foundry's and Bedrock Mantle's /anthropic/, Azure's and Bedrock's
# /openai/, then the version.
_API_PREFIX = re.compile(
    r"^(?:v1/projects/[^/]+/locations/[^/]+/workspaces/[^/]+/invoke/)?(?:anthropic/|openai/)?(?:v1/)?"
)
_ID_SEGMENT = re.compile(r"^(?=.*\d)(?:[A-Za-z]+[-_].+|.{16,})$")


def operation_from_path(path: str) -> tuple[str, str | None]:
    """Return (operation, Azure deployment or None) for a request path.

    Known endpoints get a short name ("chat", "messages"); any other path is
    its own operation, with id-like segments replaced by ``{id}`` so the
    value stays a low-cardinality metric label.
    """
    known = _PATH_CACHE.get(path)
    if known is not None:
        return known
    result = _operation_from_path(path)
    if len(_PATH_CACHE) < 1024:  # paths with ids are unbounded: cache only so many
        _PATH_CACHE[path] = result
    return result


_PATH_CACHE: dict[str, tuple[str, str | None]] = {}


def _operation_from_path(path: str) -> tuple[str, str | None]:
    deployment = None
    match = _AZURE_PREFIX.match(path)
    if match:
        deployment = match.group(1)
        path = path[match.end() :]
    trimmed = _API_PREFIX.sub("", path.strip("/"), count=1)
    known = _OPERATIONS.get(trimmed)
    if known is not None:
        return known, deployment
    segments = ["{id}" if _ID_SEGMENT.match(s) else s for s in trimmed.split("/")]
    if len(segments) > 1 and "/".join(segments[:-1]) in _OPERATIONS:
        return _OPERATIONS["/".join(segments[:-1])], deployment
    if segments and segments[0] in ("batches", "messages") and "batches" in segments:
        return "batches", deployment
    return "/" + "/".join(segments), deployment


_STREAM_TYPES = ("text/event-stream", "application/vnd.amazon.eventstream")


def is_stream(content_type: str) -> bool:
    """Whether a response of this Content-Type is a stream of events (SSE, or Bedrock's AWS event stream)."""
    return content_type.startswith(_STREAM_TYPES)


def json_value_after(data: bytes, key: bytes, *, last: bool = True, window: int = 8192) -> Any:
    """Decode the JSON value that follows ``"key":`` in ``data``, or None.

    Only the value is decoded, never the whole document: responses can be
    megabytes (embeddings) while usage is a few hundred bytes at the end.
    Inside JSON strings quotes are escaped, so an unescaped ``"key":`` is
    always a real key.
    """
    needle = b'"' + key + b'":'
    pos = data.rfind(needle) if last else data.find(needle)
    if pos < 0:
        return None
    start = pos + len(needle)
    chunk = data[start : start + window].decode("utf-8", "replace").lstrip()
    try:
        value, _ = _DECODER.raw_decode(chunk)
    except ValueError:
        return None
    return value


_DECODER = json.JSONDecoder()


_FULL_CHECK = 1024 * 1024


def json_malformed(body: bytes) -> bool:
    """Whether a response body that should be JSON cannot be.

    Parsed in full up to 1 MiB (orjson: ~1 ms per MiB); beyond, judged by
    its first and last bytes, which is what a cut-off body gets wrong.
    """
    if len(body) <= _FULL_CHECK:
        try:
            loads(body)
        except ValueError:
            return True
        return False
    head, tail = body.lstrip()[:1], body.rstrip()[-1:]
    return not ((head == b"{" and tail == b"}") or (head == b"[" and tail == b"]"))


def loads(data: bytes) -> Any:
    """Parse a JSON document: orjson (2-3x faster on large prompts), else the stdlib.

    The stdlib accepts what orjson rejects (lone surrogate escapes, which
    json.dumps can produce): such a body is still read.

    Raises:
        ValueError: ``data`` is not JSON.

    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def as_int(value: Any) -> int | None:
    """Return ``value`` if it is an int (bools excluded), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def header_int(headers: Mapping[str, str], name: str) -> int | None:
    """Read an integer header; absent or malformed gives None."""
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None
