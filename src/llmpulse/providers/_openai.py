"""The OpenAI wire format (also Azure OpenAI and OpenAI-compatible servers)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..events import RateLimitInfo
from ._base import (
    RequestInfo,
    ResponseInfo,
    StreamFormat,
    as_int,
    header_int,
    iter_sse_data,
    json_value_after,
    loads,
    operation_from_path,
)

__all__ = ["OpenAIProvider", "UsageChunkFilter"]

_SMALL_BODY = 16 * 1024

# openai._client.OpenAI._make_status_error, as a table.
_ERRORS = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    409: "ConflictError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
}
_CHAT_STREAM = StreamFormat(
    content_markers=(b'"content":"', b'"arguments":"', b'"refusal":"', b'"text":"'),
    terminal_markers=(b"data: [DONE]",),
    error_marker=b'"error":{',
)
_RESPONSES_STREAM = StreamFormat(
    content_markers=(b"response.output_text.delta", b"response.function_call_arguments.delta"),
    terminal_markers=(b"response.completed", b"response.incomplete", b"response.failed"),
    error_marker=b"event: error",
)


class UsageChunkFilter:
    """Removes the usage-only event from a chat stream whose caller did not ask for it.

    llmpulse adds ``stream_options.include_usage`` to learn the usage; the
    extra event (``"choices":[]``) is hidden so the caller's stream is
    byte for byte what they asked for. Output is cut on event boundaries, so
    an event split across reads is never passed on half.
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """Return what of ``chunk`` (and of earlier held-back bytes) can go on now."""
        pending = self._pending
        if not pending and chunk.endswith(b"\n\n"):
            # The common case, and the one that must be cheap (it runs per
            # read): nothing held back, the read ends on an event boundary.
            if _USAGE_ONLY not in chunk:
                return chunk
            data = chunk
        else:
            data = pending + chunk if pending else chunk
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self._pending = data
            return b""
        complete, self._pending = data[: cut + 2], data[cut + 2 :]
        if _USAGE_ONLY not in complete:
            return complete
        events = complete.split(b"\n\n")[:-1]
        return b"".join(e + b"\n\n" for e in events if _USAGE_ONLY not in e)

    def drain(self) -> bytes:
        """Return the bytes still held back when the stream ends."""
        pending, self._pending = self._pending, b""
        return pending


_USAGE_ONLY = b'"choices":[]'


def _with_stream_usage(body: bytes, data: dict[str, Any]) -> bytes:
    # Usually the key is absent: append it to the object as bytes instead of
    # re-encoding the whole prompt (~100 µs for 50 kB with the stdlib).
    end = body.rstrip()
    if "stream_options" not in data and data and end.endswith(b"}"):
        return end[:-1] + b',"stream_options":{"include_usage":true}}'
    options = data.get("stream_options")
    data["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


class OpenAIProvider:
    """Adapter for the OpenAI REST API; ``name`` is "openai" or "azure"."""

    request_id_header = "x-request-id"

    def __init__(self, name: str = "openai") -> None:
        self.name = name

    def describe(self, method: str, path: str, body: bytes | None, *, inject_usage: bool) -> RequestInfo:
        """Read operation, model, stream flag and token cap; inject stream usage if asked."""
        operation, deployment = operation_from_path(path)
        info = RequestInfo(operation=operation, model=deployment)
        if not body or body[:1] != b"{":
            return info
        try:
            data = loads(body)
        except ValueError:
            return info
        model = data.get("model")
        if deployment is None and isinstance(model, str):
            info.model = model
        info.streamed = data.get("stream") is True
        info.max_tokens = as_int(
            data.get("max_completion_tokens") or data.get("max_tokens") or data.get("max_output_tokens")
        )
        if info.streamed and operation in ("chat", "text_completion") and inject_usage:
            options = data.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage")):
                info.new_body = _with_stream_usage(body, data)
                info.strip_usage_chunk = True
        return info

    def parse_body(self, info: RequestInfo, body: bytes) -> ResponseInfo:
        """Read usage, response model and finish reason from a JSON body."""
        if len(body) <= _SMALL_BODY:
            # One C-speed parse beats three targeted scans on typical bodies.
            try:
                data = loads(body)
            except ValueError:
                return ResponseInfo(malformed=True)
            if isinstance(data, dict):
                out = self._from_object(info, data)
                out.malformed = False
                return out
        out = ResponseInfo(response_model=_str(json_value_after(body[:2048], b"model", last=False)))
        _read_usage(out, json_value_after(body, b"usage"))
        if info.operation == "responses":
            out.finish_reason = _str(json_value_after(body, b"status", last=False))
        else:
            out.finish_reason = _str(json_value_after(body, b"finish_reason"))
        return out

    def _from_object(self, info: RequestInfo, data: dict[str, Any]) -> ResponseInfo:
        out = ResponseInfo(response_model=_str(data.get("model")))
        _read_usage(out, data.get("usage"))
        if info.operation == "responses":
            out.finish_reason = _str(data.get("status"))
        else:
            choices = data.get("choices")
            if isinstance(choices, list) and choices and isinstance(choices[0], dict):
                out.finish_reason = _str(choices[0].get("finish_reason"))
        return out

    def parse_error(self, status: int, body: bytes) -> ResponseInfo:
        """Name the exception the SDK raises and read the provider's message."""
        error_type = _ERRORS.get(status) or ("InternalServerError" if status >= 500 else "APIStatusError")
        message = None
        try:
            error = loads(body).get("error")
        except (ValueError, AttributeError):
            error = None
        if isinstance(error, dict):
            message = _str(error.get("message"))
            code = _str(error.get("code"))
            if code and message:
                message = f"{code}: {message}"
        return ResponseInfo(error_type=error_type, error_message=message)

    def stream_format(self, info: RequestInfo) -> StreamFormat:
        """Chat and legacy completions share one format; Responses has its own."""
        return _RESPONSES_STREAM if info.operation == "responses" else _CHAT_STREAM

    def parse_stream(self, info: RequestInfo, data: bytes) -> ResponseInfo:
        """Read usage and metadata from the end of a finished stream."""
        if info.operation == "responses":
            return self._parse_responses_stream(data)
        out = ResponseInfo(response_model=_str(json_value_after(data[:4096], b"model", last=False)))
        _read_usage(out, json_value_after(data, b"usage"))
        out.finish_reason = _str(json_value_after(data, b"finish_reason"))
        if out.finish_reason is None:
            # The last chunk may carry "finish_reason":null after the real one.
            for _, payload in reversed(iter_sse_data(data[-8192:])):
                reason = _str(json_value_after(payload, b"finish_reason"))
                if reason:
                    out.finish_reason = reason
                    break
        return out

    def _parse_responses_stream(self, data: bytes) -> ResponseInfo:
        out = ResponseInfo()
        for marker in _RESPONSES_STREAM.terminal_markers:
            pos = data.rfind(b"event: " + marker)
            if pos >= 0:
                for _, payload in iter_sse_data(data[pos:]):
                    try:
                        response = loads(payload).get("response") or {}
                    except ValueError:
                        continue
                    out.response_model = _str(response.get("model"))
                    out.finish_reason = _str(response.get("status"))
                    _read_usage(out, response.get("usage"))
                    break
                break
        return out

    def stream_text(self, data: bytes) -> str:
        """Concatenate content deltas (chat, completions and Responses)."""
        parts: list[str] = []
        for event, payload in iter_sse_data(data):
            if payload == b"[DONE]":
                continue
            try:
                obj = loads(payload)
            except ValueError:
                continue
            if event == b"response.output_text.delta" or obj.get("type") == "response.output_text.delta":
                parts.append(str(obj.get("delta") or ""))
                continue
            for choice in obj.get("choices") or ():
                delta = choice.get("delta") or {}
                parts.append(str(delta.get("content") or choice.get("text") or ""))
                for call in delta.get("tool_calls") or ():
                    parts.append(str((call.get("function") or {}).get("arguments") or ""))
        return "".join(parts)

    def quota_exhausted(self, status: int, body: bytes) -> bool:
        """A 429 with code ``insufficient_quota``: billing, not rate."""
        return status == 429 and json_value_after(body, b"code", last=False) == "insufficient_quota"

    def output_text(self, info: RequestInfo, body: bytes) -> str:
        """Text, refusals and tool-call arguments of chat, completions and Responses bodies."""
        try:
            data = loads(body)
        except ValueError:
            return ""
        if not isinstance(data, dict):
            return ""
        parts: list[str] = []
        for choice in data.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            message = choice.get("message")
            if isinstance(message, dict):
                parts.extend(str(message[key]) for key in ("content", "refusal") if message.get(key))
                for call in message.get("tool_calls") or ():
                    parts.append(str((call.get("function") or {}).get("arguments") or ""))
            elif choice.get("text"):
                parts.append(str(choice["text"]))  # legacy completions
        for item in data.get("output") or ():  # Responses
            if not isinstance(item, dict):
                continue
            if item.get("type") == "function_call":
                parts.append(str(item.get("arguments") or ""))
            for content in item.get("content") or ():
                if isinstance(content, dict) and content.get("text"):
                    parts.append(str(content["text"]))
        return "".join(parts)

    def ratelimit(self, headers: Mapping[str, str]) -> RateLimitInfo | None:
        """Read ``x-ratelimit-*`` headers."""
        remaining_requests = header_int(headers, "x-ratelimit-remaining-requests")
        remaining_tokens = header_int(headers, "x-ratelimit-remaining-tokens")
        if remaining_requests is None and remaining_tokens is None:
            return None
        return RateLimitInfo(
            remaining_requests=remaining_requests,
            remaining_tokens=remaining_tokens,
            limit_requests=header_int(headers, "x-ratelimit-limit-requests"),
            limit_tokens=header_int(headers, "x-ratelimit-limit-tokens"),
        )

    def provider_latency(self, headers: Mapping[str, str]) -> float | None:
        """``openai-processing-ms`` in seconds."""
        raw = headers.get("openai-processing-ms")
        if raw is None:
            return None
        try:
            return float(raw) / 1000.0
        except ValueError:
            return None


def _read_usage(out: ResponseInfo, usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    # Chat/completions/embeddings say prompt/completion; Responses says input/output.
    out.input_tokens = as_int(usage.get("prompt_tokens", usage.get("input_tokens")))
    out.output_tokens = as_int(usage.get("completion_tokens", usage.get("output_tokens")))
    if out.output_tokens is None and out.input_tokens is not None and "total_tokens" in usage:
        out.output_tokens = 0  # embeddings: no output
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    out.cached_input_tokens = as_int(details.get("cached_tokens"))
    out.cache_write_tokens = as_int(details.get("cache_write_tokens"))
    out_details = usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
    out.reasoning_tokens = as_int(out_details.get("reasoning_tokens"))


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
