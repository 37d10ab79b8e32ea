"""The Anthropic wire format, and the Bedrock and Vertex AI variants of it.

Anthropic's own API, Foundry, Claude Platform on AWS and on Google Cloud,
and Bedrock's Mantle endpoint all take the first-party Messages request.
Bedrock's ``InvokeModel`` and Vertex AI's ``rawPredict`` put the model in
the URL path instead of the body; Bedrock also streams AWS event-stream
frames instead of SSE (see ``_eventstream``).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

from ..events import RateLimitInfo
from ._base import (
    RequestInfo,
    ResponseInfo,
    as_int,
    header_int,
    json_value_after,
    loads,
    operation_from_path,
)
from ._eventstream import EventStreamWatch, anthropic_events
from ._sse import StreamWatch, iter_events

__all__ = ["AnthropicProvider", "BedrockProvider", "VertexProvider"]

# The SDK's status table; error-code subclasses are looked up in the SDK itself.
_ERRORS = {
    400: "BadRequestError",
    401: "AuthenticationError",
    402: "PaymentRequiredError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    408: "RequestTimeoutError",
    409: "ConflictError",
    413: "RequestTooLargeError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
    529: "OverloadedError",
}


class AnthropicProvider:
    """Adapter for the Anthropic Messages API; ``name`` is its ``gen_ai.provider.name``.

    ``rewrites_body=False`` for clients that sign the body (SigV4: Bedrock Mantle, Claude
    on AWS): llmpulse then never switches such a call to a fallback model.
    """

    sdk = "anthropic"
    request_id_header = "request-id"
    max_retry_after_s: float | None = None  # the SDK waits as long as asked (up to 4,294,967 s)

    def __init__(self, name: str = "anthropic", *, rewrites_body: bool = True) -> None:
        self.name = name
        self.rewrites_body = rewrites_body

    def retries_exception(self, exc: BaseException) -> bool:
        """Any failed send: the SDK wraps it in its APIConnectionError and retries that."""
        return isinstance(exc, Exception)

    def describe(self, method: str, path: str, body: bytes | None, *, inject_usage: bool) -> RequestInfo:
        """Read operation, model, stream flag and ``max_tokens``."""
        operation, _ = operation_from_path(path)
        info = RequestInfo(operation=operation)
        if not body or body[:1] != b"{":
            return info
        try:
            data = loads(body)
        except ValueError:
            return info
        model = data.get("model")
        info.model = model if isinstance(model, str) else None
        info.streamed = data.get("stream") is True
        info.max_tokens = as_int(data.get("max_tokens"))
        thinking = data.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
            info.reasoning = "thinking"
        return info

    def parse_body(self, info: RequestInfo, body: bytes) -> ResponseInfo:
        """Read usage, model and stop reason from a Message (or a token count)."""
        out = ResponseInfo(response_model=_str(json_value_after(body[:2048], b"model", last=False)))
        if info.operation == "count_tokens":
            out.input_tokens = as_int(json_value_after(body, b"input_tokens"))
            out.output_tokens = 0
            return out
        _read_usage(out, json_value_after(body, b"usage"))
        out.finish_reason = _str(json_value_after(body, b"stop_reason"))
        return out

    def parse_error(self, status: int, body: bytes) -> ResponseInfo:
        """Name the exception the SDK raises (error-code subclasses included)."""
        try:
            data = loads(body)
        except ValueError:
            data = None
        error = data.get("error") if isinstance(data, dict) else None
        code = _str(error.get("type")) if isinstance(error, dict) else None
        message = _str(error.get("message")) if isinstance(error, dict) else None
        if error is None and isinstance(data, dict):  # Bedrock and Vertex: {"message": ...}
            message = _str(data.get("message"))
        return ResponseInfo(error_type=_sdk_error_name(status, data), error_message=_join(code, message))

    def stream_watch(self, info: RequestInfo) -> StreamWatch:
        """One dialect for every streamed Messages call; nothing is added, so nothing is stripped."""
        return StreamWatch("anthropic", strip_usage_chunk=False)

    def parse_stream(self, info: RequestInfo, data: bytes) -> ResponseInfo:
        """Input and cache usage from ``message_start``, output from the last ``message_delta``."""
        return _usage_of_events(
            _typed_events(data, _START, reverse=False),  # message_start comes first
            _typed_events(data, _END, reverse=True),  # the rest is at the end
        )

    def quota_exhausted(self, status: int, body: bytes) -> bool:
        """Anthropic reports billing problems as 400s, which are never retried anyway."""
        return False

    def output_text(self, info: RequestInfo, body: bytes) -> str:
        """Text blocks of a Message, and tool inputs as JSON."""
        try:
            data = loads(body)
        except ValueError:
            return ""
        parts: list[str] = []
        for block in (data.get("content") if isinstance(data, dict) else None) or ():
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                parts.append(str(block.get("text") or ""))
            elif block.get("type") == "tool_use":
                parts.append(orjson.dumps(block.get("input")).decode())
        return "".join(parts)

    def stream_text(self, data: bytes) -> str:
        """Concatenate ``text_delta`` / ``input_json_delta`` fragments."""
        return _text_of_events(_typed_events(data, _TEXT, reverse=False))

    def ratelimit(self, headers: Mapping[str, str]) -> RateLimitInfo | None:
        """Read ``anthropic-ratelimit-*`` headers."""
        remaining_requests = header_int(headers, "anthropic-ratelimit-requests-remaining")
        remaining_tokens = header_int(headers, "anthropic-ratelimit-tokens-remaining")
        if remaining_requests is None and remaining_tokens is None:
            return None
        return RateLimitInfo(
            remaining_requests=remaining_requests,
            remaining_tokens=remaining_tokens,
            limit_requests=header_int(headers, "anthropic-ratelimit-requests-limit"),
            limit_tokens=header_int(headers, "anthropic-ratelimit-tokens-limit"),
        )

    def provider_latency(self, headers: Mapping[str, str]) -> float | None:
        """Anthropic reports no processing time."""
        return None


# /model/{model}/invoke and /model/{model}/invoke-with-response-stream
_BEDROCK_PATH = re.compile(r"^/?model/([^/]+)/(invoke|invoke-with-response-stream)$")
# .../publishers/anthropic/models/{model}:rawPredict (or :streamRawPredict)
_VERTEX_PATH = re.compile(r"/publishers/anthropic/models/([^/:]+):(rawPredict|streamRawPredict)$")


class BedrockProvider(AnthropicProvider):
    """Anthropic on Amazon Bedrock's ``InvokeModel`` API (``anthropic.AnthropicBedrock``).

    The model is the path's, the stream flag is the path's too (the SDK
    drops both from the body), and streams are AWS event-stream frames.
    """

    request_id_header = "x-amzn-requestid"

    def __init__(self) -> None:
        super().__init__("aws.bedrock", rewrites_body=False)

    def describe(self, method: str, path: str, body: bytes | None, *, inject_usage: bool) -> RequestInfo:
        """Read model and stream flag from the path, ``max_tokens`` from the body."""
        info = super().describe(method, path, body, inject_usage=inject_usage)
        match = _BEDROCK_PATH.match(path)
        if match is not None:
            info.operation = "messages"
            info.model = urllib.parse.unquote(match.group(1))
            info.streamed = match.group(2) == "invoke-with-response-stream"
        return info

    def stream_watch(self, info: RequestInfo) -> StreamWatch:
        """Event-stream frames, not SSE."""
        return EventStreamWatch()

    def parse_stream(self, info: RequestInfo, data: bytes) -> ResponseInfo:
        """As `AnthropicProvider.parse_stream`, on the events inside the frames."""
        events = list(anthropic_events(data))
        return _usage_of_events(events, reversed(events))

    def stream_text(self, data: bytes) -> str:
        """The text deltas inside the frames."""
        return _text_of_events(anthropic_events(data))

    def ratelimit(self, headers: Mapping[str, str]) -> RateLimitInfo | None:
        """Bedrock sends no remaining-quota headers."""
        return None

    def provider_latency(self, headers: Mapping[str, str]) -> float | None:
        """``x-amzn-bedrock-invocation-latency`` (milliseconds), on non-streamed answers."""
        latency_ms = header_int(headers, "x-amzn-bedrock-invocation-latency")
        return None if latency_ms is None else latency_ms / 1000


class VertexProvider(AnthropicProvider):
    """Anthropic on Google Vertex AI (``anthropic.AnthropicVertex``): the model is in the path."""

    def __init__(self) -> None:
        super().__init__("gcp.vertex_ai", rewrites_body=False)

    def describe(self, method: str, path: str, body: bytes | None, *, inject_usage: bool) -> RequestInfo:
        """Read the model from the path, the rest as for Anthropic's API."""
        info = super().describe(method, path, body, inject_usage=inject_usage)
        match = _VERTEX_PATH.search(path)
        if match is not None:
            model = urllib.parse.unquote(match.group(1))
            if model == "count-tokens":  # the model is then in the body, as first-party
                info.operation = "count_tokens"
            else:
                info.operation, info.model = "messages", model
            info.streamed = info.streamed or match.group(2) == "streamRawPredict"
        return info


def _usage_of_events(
    first: Iterable[tuple[str, dict[str, Any]]], last: Iterable[tuple[str, dict[str, Any]]]
) -> ResponseInfo:
    # ``first``: message_start onwards; ``last``: the stream's events from its end.
    out = ResponseInfo(terminal=False)
    for kind, obj in first:
        if kind != "message_start":
            continue
        message = obj.get("message")
        if isinstance(message, dict):
            out.response_model = _str(message.get("model"))
            _read_usage(out, message.get("usage"))
            # message_start's output_tokens is a placeholder; the count
            # comes from message_delta, or is estimated if none arrived.
            out.output_tokens = None
        break
    for kind, obj in last:
        if kind == "message_stop":
            out.terminal = True
        elif kind == "error" and out.error_type is None:
            err = obj.get("error")
            if isinstance(err, dict):
                status = 529 if err.get("type") == "overloaded_error" else 500
                out.error_type = _sdk_error_name(status, None)
                out.error_message = _join(_str(err.get("type")), _str(err.get("message")))
        elif kind == "message_delta":
            usage = obj.get("usage")
            if isinstance(usage, dict):
                # message_delta's usage is cumulative; its input fields are usually null.
                output_tokens = as_int(usage.get("output_tokens"))
                if as_int(usage.get("input_tokens")) is not None:
                    _read_usage(out, {**usage})
                out.output_tokens = output_tokens
            delta = obj.get("delta")
            out.finish_reason = _str(delta.get("stop_reason")) if isinstance(delta, dict) else None
            break
    return out


def _text_of_events(events: Iterable[tuple[str, dict[str, Any]]]) -> str:
    parts: list[str] = []
    for kind, obj in events:
        delta = obj.get("delta") if kind == "content_block_delta" else None
        if isinstance(delta, dict):
            text = delta.get("text") or delta.get("partial_json") or delta.get("thinking")
            parts.append(str(text or ""))
    return "".join(parts)


_START = frozenset({"message_start"})
_END = frozenset({"message_delta", "message_stop", "error"})
_TEXT = frozenset({"content_block_delta"})


def _typed_events(
    data: bytes, wanted: frozenset[str], *, reverse: bool
) -> Iterator[tuple[str, dict[str, Any]]]:
    # (kind, JSON) of the wanted events, by their event: name as the SDK reads
    # them (it skips unnamed events); the JSON of the others is not parsed.
    for event in iter_events(data, reverse=reverse):
        kind = event.name.decode("utf-8", "replace")
        if kind in wanted:
            obj = event.json()
            yield kind, obj if obj is not None else {}


def _read_usage(out: ResponseInfo, usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    uncached = as_int(usage.get("input_tokens"))
    cache_read = as_int(usage.get("cache_read_input_tokens")) or 0
    cache_write = as_int(usage.get("cache_creation_input_tokens")) or 0
    if uncached is not None:
        # Anthropic's input_tokens excludes the cache; OpenTelemetry's includes it.
        out.input_tokens = uncached + cache_read + cache_write
        out.cached_input_tokens = cache_read
        out.cache_write_tokens = cache_write
        split = usage.get("cache_creation")
        if isinstance(split, dict):
            out.cache_write_1h_tokens = as_int(split.get("ephemeral_1h_input_tokens"))
    out.output_tokens = as_int(usage.get("output_tokens"))


def _sdk_error_name(status: int, body: object) -> str:
    try:
        from anthropic import _error_classes  # noqa: PLC0415 - private, may not exist

        table = _error_classes.ERROR_CLASSES
        code = _error_classes.extract_error_code(body)  # type: ignore[attr-defined]
        cls = table.get((status, code)) or table.get((status, None))
        if cls is not None:
            return str(cls.__name__)
    except Exception:  # noqa: BLE001 - older SDKs lack the table: use ours
        pass
    return _ERRORS.get(status) or ("InternalServerError" if status >= 500 else "APIStatusError")


def _join(code: str | None, message: str | None) -> str | None:
    if code and message:
        return f"{code}: {message}"
    return message or code


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
