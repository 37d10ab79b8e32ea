"""The OpenAI wire format (also Azure OpenAI and OpenAI-compatible servers)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

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
from ._sse import StreamKind, StreamWatch, event_type, iter_events

__all__ = ["OpenAIProvider"]

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
# Events that end a Responses stream; each carries the final response object.
_RESPONSES_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


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
    """Adapter for the OpenAI REST API; ``name`` is its ``gen_ai.provider.name``.

    ``rewrites_body=False`` for clients that sign the body (Bedrock's SigV4):
    stream usage is then never injected, and a stream without usage is estimated.
    """

    sdk = "openai"
    request_id_header = "x-request-id"
    max_retry_after_s: float | None = 120.0  # openai._constants.MAX_RETRY_AFTER_DELAY

    def __init__(self, name: str = "openai", *, rewrites_body: bool = True) -> None:
        self.name = name
        self.rewrites_body = rewrites_body

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
        info.reasoning = _reasoning(data)
        if info.streamed and operation in ("chat", "text_completion") and inject_usage and self.rewrites_body:
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

    def stream_watch(self, info: RequestInfo) -> StreamWatch:
        """Chat and legacy completions share one dialect; Responses has its own."""
        kind: StreamKind = "responses" if info.operation == "responses" else "chat"
        return StreamWatch(kind, strip_usage_chunk=info.strip_usage_chunk)

    def parse_stream(self, info: RequestInfo, data: bytes) -> ResponseInfo:
        """Read usage and metadata from the last events of a finished stream."""
        if info.operation == "responses":
            return _parse_responses_stream(data)
        out = ResponseInfo(terminal=False)
        usage_seen = False
        # From the end: [DONE], usage (on the finish chunk or after it) and the
        # finish reason are in the last few events, so the walk stops at the
        # finish chunk and a long stream costs no more than a short one.
        for event in iter_events(data, reverse=True):
            if event.data.startswith(b"[DONE]"):  # the SDK's own test
                out.terminal = True
                continue
            obj = event.json()
            if obj is None:
                continue
            if out.response_model is None:
                out.response_model = _str(obj.get("model"))
            if not usage_seen:
                usage = _chunk_usage(obj)
                if usage is not None:
                    _read_usage(out, usage)
                    usage_seen = True
            if out.finish_reason is None:
                out.finish_reason = _finish_reason(obj)
            if out.error_type is None:
                _read_stream_error(out, obj)
            if out.finish_reason is not None and out.response_model is not None:
                break
        return out

    def stream_text(self, data: bytes) -> str:
        """Concatenate content deltas (chat, completions and Responses)."""
        parts: list[str] = []
        for event in iter_events(data):
            obj = event.json()
            if obj is None:
                continue
            if event_type(event, obj) == "response.output_text.delta":
                parts.append(str(obj.get("delta") or ""))
                continue
            choices = obj.get("choices")
            for choice in choices if isinstance(choices, list) else ():
                if not isinstance(choice, dict):
                    continue
                delta = choice.get("delta")
                delta = delta if isinstance(delta, dict) else {}
                parts.append(str(delta.get("content") or choice.get("text") or ""))
                calls = delta.get("tool_calls")
                for call in calls if isinstance(calls, list) else ():
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict):
                        parts.append(str(function.get("arguments") or ""))
        return "".join(parts)

    def retries_exception(self, exc: BaseException) -> bool:
        """What ``openai._httpx2.timeout_exceptions()`` and ``request_exceptions()`` name."""
        for cls in type(exc).__mro__:
            module = cls.__module__.split(".")[0]
            if module in ("httpx", "httpx2") and cls.__name__ == "RequestError":
                return True  # timeouts, connection and protocol errors of either stack
            if (module, cls.__name__) in (("ssl", "SSLError"), ("anyio", "EndOfStream")):
                return True
        return False

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


def _parse_responses_stream(data: bytes) -> ResponseInfo:
    out = ResponseInfo(terminal=False)
    for event in iter_events(data, reverse=True):
        obj = None if event.name else event.json()
        if event_type(event, obj) not in _RESPONSES_TERMINAL:
            continue
        obj = obj if obj is not None else event.json()
        response = obj.get("response") if obj is not None else None
        response = response if isinstance(response, dict) else {}
        out.terminal = True
        out.response_model = _str(response.get("model"))
        out.finish_reason = _str(response.get("status"))
        _read_usage(out, response.get("usage"))
        return out
    # No terminal event (abandoned or cut off): the model is in response.created.
    for event in iter_events(data):
        obj = event.json()
        response = obj.get("response") if obj is not None else None
        if isinstance(response, dict):
            out.response_model = _str(response.get("model"))
        break
    return out


def _chunk_usage(obj: dict[str, Any]) -> Any:
    # Top-level usage (OpenAI's usage-only chunk, or a server that puts it on
    # the last chunk with choices); Groq also reports it under x_groq.
    usage = obj.get("usage")
    if isinstance(usage, dict):
        return usage
    vendor = obj.get("x_groq")
    usage = vendor.get("usage") if isinstance(vendor, dict) else None
    return usage if isinstance(usage, dict) else None


def _finish_reason(obj: dict[str, Any]) -> str | None:
    choices = obj.get("choices")
    reason = None
    for choice in choices if isinstance(choices, list) else ():
        if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
            reason = choice["finish_reason"]
    return reason


def _read_stream_error(out: ResponseInfo, obj: dict[str, Any]) -> None:
    # The SDK raises APIError for an event whose data has a truthy "error".
    error = obj.get("error")
    if not error:
        return
    out.error_type = "APIError"
    message = error.get("message") if isinstance(error, dict) else None
    out.error_message = message if isinstance(message, str) else "An error occurred during streaming"


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _reasoning(data: dict[str, Any]) -> str:
    # Chat's reasoning_effort, or the Responses API's reasoning.effort; bounded: it names a key.
    effort = data.get("reasoning_effort")
    reasoning = data.get("reasoning")
    if effort is None and isinstance(reasoning, dict):
        effort = reasoning.get("effort")
    return effort[:32] if isinstance(effort, str) else ""
