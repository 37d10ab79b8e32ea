"""What the fake provider's wire looks like: routes, headers, bodies and SSE events of both APIs.

Shapes follow the SDKs' own models closely enough for strict response
validation: a wire-format mistake here fails the suite instead of hiding.
Replies and usage are a pure function of the request body and the plan's
numbers (ids and timestamps aside), so tests can assert exact token counts.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import re
import secrets
import struct
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._fake_replies import Reply, ToolCall

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "Generation",
    "Route",
    "anthropic_error",
    "error_body",
    "event_stream_frame",
    "json_body",
    "openai_error",
    "prompt_tokens",
    "response_headers",
    "rfc3339",
    "route",
    "sse",
    "stream_events",
]

DEFAULT_OUTPUT_TOKENS = 20
"""Words in a reply when neither the request nor the plan caps it."""

_LOREM = (
    "the on-call engineer reads the dashboard and sees latency rising across every region while the "
    "provider status page stays green so the team checks retries tokens and cost per tenant before "
    "deciding to shed background traffic and keep interactive requests fast"
)
_WORDS = tuple(_LOREM.split())

# A huge reply is streamed in pieces this big: one event per word would mean
# hundreds of thousands of events for a few hundred kB.
_HUGE_PIECE = 1000
# Structured output is streamed (and counted) in pieces of about one token.
_JSON_PIECE = 4


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event; ``data`` is JSON-encoded unless it is bytes."""
    payload = data if isinstance(data, bytes) else _dumps(data)
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + b"\n\n"


# -- routing -------------------------------------------------------------------

_ROUTES = {
    ("POST", "/v1/chat/completions"): "chat",
    ("POST", "/v1/responses"): "responses",
    ("POST", "/v1/embeddings"): "embeddings",
    ("POST", "/v1/completions"): "completions",
    ("GET", "/v1/models"): "models",
    ("POST", "/v1/batches"): "batch_create",
    ("POST", "/v1/messages"): "messages",
    ("POST", "/v1/messages/count_tokens"): "count_tokens",
    ("POST", "/v1/messages/batches"): "message_batch_create",
}
_ITEM_ROUTES = (("/v1/messages/batches/", "message_batch"), ("/v1/batches/", "batch"))
_AZURE_PREFIX = "/openai/deployments/"
# Bedrock InvokeModel: the model and whether to stream are in the path, not the body.
_BEDROCK_INVOKE = re.compile(r"^/model/([^/]+)/(invoke|invoke-with-response-stream)$")
# Vertex AI: .../publishers/anthropic/models/{model}:rawPredict (count-tokens:rawPredict counts).
_VERTEX_PREDICT = re.compile(
    r"^/v1/projects/[^/]+/locations/[^/]+/publishers/anthropic/models/([^/:]+):(rawPredict|streamRawPredict)$"
)
# Gateways in front of the first-party API: Claude on Google Cloud's workspace path,
# Foundry's and Bedrock Mantle's /anthropic, Bedrock Mantle's (and Azure v1's) /openai.
_GATEWAY_PREFIX = re.compile(
    r"^(?:/v1/projects/[^/]+/locations/[^/]+/workspaces/[^/]+/invoke|/anthropic|/openai)(?=/v1/)"
)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes.

    Attributes:
        endpoint: Endpoint name (``"chat"``, ``"messages"``, …), or ``"not_found"``.
        anthropic: Whether to answer in Anthropic's format (headers, errors).
        model: The model to report instead of the requested one (an Azure deployment).
        item_id: The id in ``GET …/batches/{id}``.
        stream: Whether to stream, when the path says (Bedrock); None: the body's ``stream``.
        platform: ``"bedrock"`` or ``"vertex"`` for their paths (their headers and
            errors; Bedrock streams AWS event-stream frames), else None.
    """

    endpoint: str
    anthropic: bool
    model: str | None = None
    item_id: str | None = None
    stream: bool | None = None
    platform: str | None = None


def route(method: str, path: str, headers: Mapping[str, str]) -> Route:
    """Map a request line (and, for shared paths, its headers) to an endpoint."""
    model = None
    if (bedrock := _BEDROCK_INVOKE.match(path)) is not None and method == "POST":
        streamed = bedrock.group(2) == "invoke-with-response-stream"
        return Route("messages", True, urllib.parse.unquote(bedrock.group(1)), None, streamed, "bedrock")
    if (vertex := _VERTEX_PREDICT.match(path)) is not None and method == "POST":
        if vertex.group(1) == "count-tokens":
            return Route("count_tokens", True, None, None, None, "vertex")
        return Route("messages", True, urllib.parse.unquote(vertex.group(1)), None, None, "vertex")
    path = _GATEWAY_PREFIX.sub("", path, count=1)
    if path.startswith(_AZURE_PREFIX):
        # /openai/deployments/{deployment}/chat/completions: the deployment stands for the model.
        model, _, rest = path.removeprefix(_AZURE_PREFIX).partition("/")
        path = "/v1/" + rest
    # /v1/models exists in both APIs; only Anthropic's SDK sends anthropic-version.
    anthropic = path.startswith("/v1/messages") or "anthropic-version" in headers
    endpoint = _ROUTES.get((method, path))
    if endpoint is not None:
        return Route(endpoint, anthropic, model)
    if method == "GET":
        for prefix, name in _ITEM_ROUTES:
            item_id = path.removeprefix(prefix)
            if item_id != path and item_id and "/" not in item_id:
                return Route(name, anthropic, model, item_id)
    return Route("not_found", anthropic)


# -- prompt and structured output ---------------------------------------------


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(_text_of(v) for v in value)
    if isinstance(value, dict):
        return " ".join(_text_of(v) for k, v in value.items() if k in ("content", "text", "input", "system"))
    return ""


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """A deterministic prompt size: chars / 4 over the request's text, at least 1."""
    keys = ("messages", "input", "prompt", "system", "instructions")
    text = " ".join(t for k in keys if (t := _text_of(body.get(k))))
    return max(1, len(text) // 4)


def _dig(body: Mapping[str, Any], *keys: str) -> Any:
    value: Any = body
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _json_schema_of(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a structured-output request asks for, in each API's spelling."""
    for fmt, schema in (
        (_dig(body, "response_format"), _dig(body, "response_format", "json_schema", "schema")),  # chat
        (_dig(body, "text", "format"), _dig(body, "text", "format", "schema")),  # responses
        (_dig(body, "output_config", "format"), _dig(body, "output_config", "format", "schema")),  # messages
    ):
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            return schema if isinstance(schema, dict) else {}
    return None


_STRING_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "email": "on-call@example.com",
    "uri": "https://example.com/",
}
_MAX_DEPTH = 8


def sample_for_schema(
    schema: Mapping[str, Any], root: Mapping[str, Any] | None = None, depth: int = 0
) -> Any:
    """A value that validates against a JSON schema (the subset pydantic emits)."""
    root = schema if root is None else root
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return sample_for_schema(target, root, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            # Deep in a recursive model, take the null branch to end the recursion.
            nulls = [o for o in options if o.get("type") == "null"]
            choice = nulls[0] if nulls and depth >= _MAX_DEPTH else options[0]
            return sample_for_schema(choice, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        return {name: sample_for_schema(sub, root, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        if depth >= _MAX_DEPTH:
            return []
        return [sample_for_schema(schema.get("items") or {}, root, depth + 1)]
    if kind == "string":
        return _STRING_FORMATS.get(str(schema.get("format")), "fake")
    return {"integer": 1, "number": 1.5, "boolean": True, "null": None}.get(str(kind), "fake")


def _chunks(text: str, size: int) -> tuple[str, ...]:
    return tuple(text[i : i + size] for i in range(0, len(text), size)) or ("",)


# -- the generated reply -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Generation:
    """What the fake "generates" for one request: the streamed pieces, token counts and stop reason.

    Attributes:
        model: Model to report.
        pieces: The reply as streamed, one piece per content event.
        visible_tokens: Output tokens of the reply text (one per word).
        input_tokens: All input tokens, cache reads and writes included (OpenAI's ``prompt_tokens``).
        capped: Whether the request's max-tokens limit cut the reply.
        cached: Input tokens read from the cache.
        cache_write: Input tokens written to the cache.
        cache_write_1h: Of those, the ones written for an hour (Anthropic).
        reasoning: Reasoning tokens, counted in the output on top of the visible ones.
        uid: Random suffix shared by every id of this reply.
        tool_calls: The tool calls of a scripted `Reply` (their argument pieces count as visible
            tokens).
    """

    model: str
    pieces: tuple[str, ...]
    visible_tokens: int
    input_tokens: int
    capped: bool = False
    cached: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0
    uid: str = ""
    tool_calls: tuple[ToolCall, ...] = ()

    @classmethod
    def for_request(
        cls,
        body: Mapping[str, Any],
        *,
        model: str | None = None,
        output_tokens: int | None = None,
        cached: int = 0,
        cache_write: int = 0,
        cache_write_1h: int = 0,
        reasoning: int = 0,
        huge_bytes: int = 0,
        reply: Reply | None = None,
    ) -> Generation:
        """Build the reply to a request body.

        Args:
            body: The request's JSON body.
            model: Model to report instead of ``body["model"]``.
            output_tokens: Words to generate (default `DEFAULT_OUTPUT_TOKENS`), capped by the request.
            cached: Cache-read input tokens to report.
            cache_write: Cache-write input tokens to report.
            cache_write_1h: Of those, the ones written for an hour.
            reasoning: Reasoning tokens to report.
            huge_bytes: If set, the reply text is exactly this many bytes long.
            reply: A scripted reply to send instead of a generated one (``huge_bytes`` aside).

        Returns:
            The generation.
        """
        cap = next(
            (
                v
                for k in ("max_completion_tokens", "max_tokens", "max_output_tokens")
                if isinstance(v := body.get(k), int) and v > 0
            ),
            None,
        )
        wanted = DEFAULT_OUTPUT_TOKENS if output_tokens is None else max(0, output_tokens)
        n_words = wanted if cap is None else min(wanted, cap)
        capped = cap is not None and cap < wanted
        schema = _json_schema_of(body)
        tool_calls: tuple[ToolCall, ...] = ()
        if reply is not None and huge_bytes <= 0:
            pieces, tool_calls, capped = reply.text_pieces(), reply.tool_calls, False
            visible = len(pieces) + sum(len(call.argument_pieces()) for call in tool_calls)
        elif huge_bytes > 0:
            text = (_LOREM + " ") * (huge_bytes // len(_LOREM) + 1)
            pieces = _chunks(text[:huge_bytes], _HUGE_PIECE)
            visible, capped = len(pieces), False
        elif schema is not None or _dig(body, "response_format", "type") == "json_object":
            # A cut-off JSON answer fails the SDK's parse helpers; keep it whole.
            value = sample_for_schema(schema) if schema is not None else {"answer": " ".join(_WORDS[:3])}
            pieces = _chunks(json.dumps(value), _JSON_PIECE)
            visible, capped = len(pieces), False
        else:
            words = [_WORDS[i % len(_WORDS)] for i in range(n_words)]
            pieces = tuple(w if i == 0 else " " + w for i, w in enumerate(words))
            visible = len(pieces)
        return cls(
            model=model or str(body.get("model") or "unknown-model"),
            pieces=pieces,
            visible_tokens=visible,
            input_tokens=prompt_tokens(body) + cached + cache_write,
            capped=capped,
            cached=cached,
            cache_write=cache_write,
            cache_write_1h=min(cache_write_1h, cache_write),
            reasoning=reasoning,
            uid=secrets.token_hex(12),
            tool_calls=tool_calls,
        )

    @property
    def text(self) -> str:
        """The whole reply."""
        return "".join(self.pieces)

    @property
    def output_tokens(self) -> int:
        """Visible plus reasoning tokens."""
        return self.visible_tokens + self.reasoning

    @property
    def finish_reason(self) -> str:
        """OpenAI's finish reason."""
        if self.tool_calls:
            return "tool_calls"
        return "length" if self.capped else "stop"

    @property
    def stop_reason(self) -> str:
        """Anthropic's stop reason."""
        if self.tool_calls:
            return "tool_use"
        return "max_tokens" if self.capped else "end_turn"

    # -- OpenAI ----------------------------------------------------------------

    def openai_usage(self) -> dict[str, Any]:
        """Chat/completions usage block (prompt_tokens includes the cached ones)."""
        prompt_details: dict[str, int] = {"cached_tokens": self.cached, "audio_tokens": 0}
        if self.cache_write:
            prompt_details["cache_write_tokens"] = self.cache_write
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "prompt_tokens_details": prompt_details,
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def chat_completion(self) -> dict[str, Any]:
        """A ``chat.completion`` object."""
        message: dict[str, Any] = {
            "role": "assistant",
            # A message that only calls tools has no content, as the hosted API sends it.
            "content": self.text if self.text or not self.tool_calls else None,
            "refusal": None,
            "annotations": [],
        }
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.call_id(i, "call_"),
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json},
                }
                for i, call in enumerate(self.tool_calls)
            ]
        return {
            "id": f"chatcmpl-{self.uid}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": self.finish_reason, "logprobs": None}
            ],
            "usage": self.openai_usage(),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def chat_chunks(self, include_usage: bool) -> Iterator[bytes]:
        """SSE chunks of a streamed chat completion, ``[DONE]`` included."""
        base: dict[str, Any] = {
            "id": f"chatcmpl-{self.uid}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        extra = {"usage": None} if include_usage else {}

        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return sse({**base, "choices": [choice], **extra})

        yield chunk({"role": "assistant", "content": "", "refusal": None}, None)
        for piece in self.pieces:
            yield chunk({"content": piece}, None)
        for i, call in enumerate(self.tool_calls):
            start = {"name": call.name, "arguments": ""}
            head = {"index": i, "id": call.call_id(i, "call_"), "type": "function", "function": start}
            yield chunk({"tool_calls": [head]}, None)
            for piece in call.argument_pieces():
                yield chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}, None)
        yield chunk({}, self.finish_reason)
        if include_usage:
            yield sse({**base, "choices": [], "usage": self.openai_usage()})
        yield b"data: [DONE]\n\n"

    def completion(self) -> dict[str, Any]:
        """A legacy ``text_completion`` object."""
        return {
            "id": f"cmpl-{self.uid}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {"index": 0, "text": self.text, "finish_reason": self.finish_reason, "logprobs": None}
            ],
            "usage": self.openai_usage(),
        }

    def completion_chunks(self, include_usage: bool) -> Iterator[bytes]:
        """SSE chunks of a streamed legacy completion, ``[DONE]`` included."""
        base = {"id": f"cmpl-{self.uid}", "object": "text_completion", "created": int(time.time())}
        base["model"] = self.model
        extra = {"usage": None} if include_usage else {}
        for piece in self.pieces:
            choice = {"index": 0, "text": piece, "finish_reason": None, "logprobs": None}
            yield sse({**base, "choices": [choice], **extra})
        last = {"index": 0, "text": "", "finish_reason": self.finish_reason, "logprobs": None}
        yield sse({**base, "choices": [last], **extra})
        if include_usage:
            yield sse({**base, "choices": [], "usage": self.openai_usage()})
        yield b"data: [DONE]\n\n"

    def _message_item(self, status: str) -> dict[str, Any]:
        content = [{"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}]
        return {
            "type": "message",
            "id": f"msg_{self.uid}",
            "status": status,
            "role": "assistant",
            "content": content if status == "completed" else [],
        }

    @property
    def _has_message(self) -> bool:
        # A scripted reply that only calls tools has no message item (nor text block).
        return bool(self.text) or not self.tool_calls

    def _function_call_item(self, index: int, status: str) -> dict[str, Any]:
        call = self.tool_calls[index]
        return {
            "type": "function_call",
            "id": f"fc_{self.uid}{index}",
            "call_id": call.call_id(index, "call_"),
            "name": call.name,
            "arguments": call.arguments_json if status == "completed" else "",
            "status": status,
        }

    def _response_output(self) -> list[dict[str, Any]]:
        message = [self._message_item("completed")] if self._has_message else []
        return message + [self._function_call_item(i, "completed") for i in range(len(self.tool_calls))]

    def response(self, body: Mapping[str, Any], *, done: bool = True) -> dict[str, Any]:
        """A Responses API ``response`` object: complete, or as first announced when streaming."""
        usage = None
        if done:
            usage = {
                "input_tokens": self.input_tokens,
                "input_tokens_details": {
                    "cached_tokens": self.cached,
                    "cache_write_tokens": self.cache_write,
                },
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": self.reasoning},
                "total_tokens": self.input_tokens + self.output_tokens,
            }
        return {
            "id": f"resp_{self.uid}",
            "object": "response",
            "created_at": float(int(time.time())),
            "model": self.model,
            "status": "completed" if done else "in_progress",
            "output": self._response_output() if done else [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "metadata": {},
            "temperature": 1.0,
            "top_p": 1.0,
            "usage": usage,
        }

    def response_events(self, body: Mapping[str, Any]) -> Iterator[bytes]:
        """SSE events of a streamed Responses API call, with sequence numbers."""
        seq = iter(range(1 << 30))
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        ids = {"item_id": f"msg_{self.uid}", "output_index": 0, "content_index": 0}

        def event(kind: str, **fields: Any) -> bytes:
            return sse({"type": kind, "sequence_number": next(seq), **fields}, event=kind)

        yield event("response.created", response=self.response(body, done=False))
        yield event("response.in_progress", response=self.response(body, done=False))
        if self._has_message:
            yield event("response.output_item.added", output_index=0, item=self._message_item("in_progress"))
            yield event("response.content_part.added", part=part, **ids)
            for piece in self.pieces:
                yield event("response.output_text.delta", delta=piece, logprobs=[], **ids)
            yield event("response.output_text.done", text=self.text, logprobs=[], **ids)
            yield event("response.content_part.done", part={**part, "text": self.text}, **ids)
            yield event("response.output_item.done", output_index=0, item=self._message_item("completed"))
        for i, call in enumerate(self.tool_calls):
            where = {"output_index": i + self._has_message, "item_id": f"fc_{self.uid}{i}"}
            added = self._function_call_item(i, "in_progress")
            yield event("response.output_item.added", output_index=where["output_index"], item=added)
            for piece in call.argument_pieces():
                yield event("response.function_call_arguments.delta", delta=piece, **where)
            done = {"arguments": call.arguments_json, "name": call.name}
            yield event("response.function_call_arguments.done", **done, **where)
            item = self._function_call_item(i, "completed")
            yield event("response.output_item.done", output_index=where["output_index"], item=item)
        yield event("response.completed", response=self.response(body))

    # -- Anthropic -------------------------------------------------------------

    def anthropic_usage(self, *, output: int | None = None) -> dict[str, Any]:
        """Messages usage block: ``input_tokens`` is the uncached part."""
        usage: dict[str, Any] = {
            "input_tokens": self.input_tokens - self.cached - self.cache_write,
            "output_tokens": self.output_tokens if output is None else output,
            "cache_creation_input_tokens": self.cache_write,
            "cache_read_input_tokens": self.cached,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_write - self.cache_write_1h,
                "ephemeral_1h_input_tokens": self.cache_write_1h,
            },
            "service_tier": "standard",
        }
        if self.reasoning and output is None:
            usage["output_tokens_details"] = {"thinking_tokens": self.reasoning}
        return usage

    def message(self) -> dict[str, Any]:
        """An Anthropic ``message``."""
        return {
            "id": f"msg_{self.uid}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self._content_blocks(),
            "stop_reason": self.stop_reason,
            "stop_sequence": None,
            "usage": self.anthropic_usage(),
        }

    def _tool_use_block(self, index: int, *, streamed: bool = False) -> dict[str, Any]:
        call = self.tool_calls[index]
        # A stream announces the block with empty input and sends the JSON in input_json_delta events.
        arguments = {} if streamed else dict(call.arguments)
        return {
            "type": "tool_use",
            "id": call.call_id(index, "toolu_"),
            "name": call.name,
            "input": arguments,
        }

    def _content_blocks(self) -> list[dict[str, Any]]:
        text = [{"type": "text", "text": self.text, "citations": None}] if self._has_message else []
        return text + [self._tool_use_block(i) for i in range(len(self.tool_calls))]

    def message_events(self) -> Iterator[bytes]:
        """SSE events of a streamed message, each with its ``event:`` line."""
        start = {
            **self.message(),
            "content": [],
            "stop_reason": None,
            "usage": self.anthropic_usage(output=1),
        }
        yield sse({"type": "message_start", "message": start}, event="message_start")
        blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        if self._has_message:
            text = [{"type": "text_delta", "text": piece} for piece in self.pieces]
            blocks.append(({"type": "text", "text": "", "citations": None}, text))
        for i, call in enumerate(self.tool_calls):
            json_deltas = [{"type": "input_json_delta", "partial_json": p} for p in call.argument_pieces()]
            blocks.append((self._tool_use_block(i, streamed=True), json_deltas))
        for index, (block, deltas) in enumerate(blocks):
            start_block = {"type": "content_block_start", "index": index, "content_block": block}
            yield sse(start_block, event="content_block_start")
            if index == 0:
                yield sse({"type": "ping"}, event="ping")
            for delta in deltas:
                yield sse(
                    {"type": "content_block_delta", "index": index, "delta": delta},
                    event="content_block_delta",
                )
            yield sse({"type": "content_block_stop", "index": index}, event="content_block_stop")
        usage: dict[str, Any] = {"output_tokens": self.output_tokens}
        if self.reasoning:
            usage["output_tokens_details"] = {"thinking_tokens": self.reasoning}
        end = {"stop_reason": self.stop_reason, "stop_sequence": None}
        yield sse({"type": "message_delta", "delta": end, "usage": usage}, event="message_delta")
        yield sse({"type": "message_stop"}, event="message_stop")


# -- endpoints without a generated reply ---------------------------------------


def _embeddings(body: Mapping[str, Any]) -> dict[str, Any]:
    """An embeddings list.

    Always floats: the SDK asks for base64 by default and decodes it only
    after validation, which under strict validation rejects the string; it
    passes float lists through unchanged.
    """
    inputs = body.get("input")
    items = inputs if isinstance(inputs, list) else [inputs]
    dims = body.get("dimensions")
    dims = dims if isinstance(dims, int) and 0 < dims <= 4096 else 8
    data = []
    for i, item in enumerate(items):
        digest = hashlib.sha256(json.dumps(item).encode()).digest()
        vector = [round(digest[j % len(digest)] / 127.5 - 1.0, 4) for j in range(dims)]
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = prompt_tokens({"input": items})
    return {
        "object": "list",
        "data": data,
        "model": str(body.get("model")),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _openai_batch(batch_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": body.get("endpoint", "/v1/chat/completions"),
        "input_file_id": body.get("input_file_id", "file-fake"),
        "completion_window": body.get("completion_window", "24h"),
        "status": "validating",
        "created_at": int(time.time()),
        "metadata": body.get("metadata"),
    }


def rfc3339(at: float) -> str:
    """A Unix time as Anthropic's RFC 3339 timestamps (UTC, whole seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _anthropic_batch(batch_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    requests = body.get("requests")
    now = time.time()
    return {
        "id": batch_id,
        "type": "message_batch",
        "processing_status": "in_progress",
        "request_counts": {
            "processing": len(requests) if isinstance(requests, list) else 1,
            "succeeded": 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        },
        "created_at": rfc3339(now),
        "expires_at": rfc3339(now + 86400),
        "ended_at": None,
        "cancel_initiated_at": None,
        "results_url": None,
        "archived_at": None,
    }


def _models(anthropic: bool) -> dict[str, Any]:
    if anthropic:
        claudes = ("claude-opus-4-6", "claude-sonnet-4-6", "claude-haiku-4-5")
        data = [
            {
                "id": n,
                "type": "model",
                "display_name": n,
                "created_at": "2025-10-01T00:00:00Z",
                "lifecycle": "active",
            }
            for n in claudes
        ]
        return {"data": data, "has_more": False, "first_id": claudes[0], "last_id": claudes[-1]}
    names = ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small")
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": 1700000000, "owned_by": "system"} for n in names],
    }


def json_body(where: Route, body: Mapping[str, Any], gen: Generation) -> Any:
    """The JSON reply of an endpoint (``where.endpoint`` must not be ``"not_found"``)."""
    match where.endpoint:
        case "chat":
            return gen.chat_completion()
        case "responses":
            return gen.response(body)
        case "completions":
            return gen.completion()
        case "messages":
            return gen.message()
        case "embeddings":
            return _embeddings(body)
        case "models":
            return _models(where.anthropic)
        case "count_tokens":
            return {"input_tokens": prompt_tokens(body)}
        case "batch_create":
            return _openai_batch(f"batch_{gen.uid}", body)
        case "batch":
            return _openai_batch(where.item_id or "", {})
        case "message_batch_create":
            return _anthropic_batch(f"msgbatch_{gen.uid}", body)
        case "message_batch":
            return _anthropic_batch(where.item_id or "", {})
    raise ValueError(f"no JSON reply for {where.endpoint!r}")


def stream_events(where: Route, body: Mapping[str, Any], gen: Generation) -> Iterator[bytes] | None:
    """The SSE events of a streaming endpoint, or None if it does not stream."""
    include_usage = _dig(body, "stream_options", "include_usage") is True
    match where.endpoint:
        case "chat":
            return gen.chat_chunks(include_usage)
        case "completions":
            return gen.completion_chunks(include_usage)
        case "responses":
            return gen.response_events(body)
        case "messages":
            return gen.message_events()
    return None


# -- errors --------------------------------------------------------------------

_OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error"}
_OPENAI_TYPES |= {404: "invalid_request_error", 409: "invalid_request_error", 422: "invalid_request_error"}
_OPENAI_MESSAGES = {
    400: "Invalid request.",
    401: "Incorrect API key provided.",
    404: "The model or endpoint does not exist.",
    429: "Rate limit reached for requests.",
    503: "The engine is currently overloaded, please try again later.",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ANTHROPIC_MESSAGES = {
    429: "Number of requests has exceeded your rate limit.",
    500: "Internal server error",
    529: "Overloaded",
}


def error_body(
    where: Route, status: int, message: str | None, code: str | None, headers: Mapping[str, str]
) -> dict[str, Any]:
    """The error body in the format of the provider ``where`` belongs to."""
    if where.platform == "bedrock":  # AWS's JSON error shape; the type is in x-amzn-errortype
        return {"message": message or _ANTHROPIC_MESSAGES.get(status) or f"Error {status}"}
    if where.anthropic:
        return anthropic_error(status, message, code, headers.get("request-id", ""))
    return openai_error(status, message, code)


def openai_error(status: int, message: str | None, code: str | None) -> dict[str, Any]:
    """OpenAI's error body.

    A 429 is ``rate_limit_exceeded`` unless ``code`` says otherwise (e.g.
    ``insufficient_quota``, whose type is its code as well).
    """
    if status == 429:
        code = code or "rate_limit_exceeded"
        kind = "insufficient_quota" if code == "insufficient_quota" else "requests"
    else:
        kind = _OPENAI_TYPES.get(status, "server_error")
    text = message or _OPENAI_MESSAGES.get(status) or "The server had an error while processing your request."
    return {"error": {"message": text, "type": kind, "param": None, "code": code}}


def anthropic_error(status: int, message: str | None, code: str | None, request_id: str) -> dict[str, Any]:
    """Anthropic's error body; ``code``, if given, is the error type."""
    kind = code or _ANTHROPIC_TYPES.get(status, "api_error")
    text = message or _ANTHROPIC_MESSAGES.get(status) or f"Error {status}"
    return {"type": "error", "error": {"type": kind, "message": text}, "request_id": request_id}


# -- Bedrock's AWS event stream ---------------------------------------------------

_BEDROCK_ERRORS = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    503: "ServiceUnavailableException",
}


def bedrock_error_type(status: int) -> str:
    """Bedrock's ``x-amzn-errortype`` for an HTTP status."""
    return _BEDROCK_ERRORS.get(status, "InternalServerException")


def event_stream_frame(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude, string headers, payload, CRCs."""
    head = b"".join(
        struct.pack(">B", len(name.encode()))
        + name.encode()
        + struct.pack(">BH", 7, len(value.encode()))
        + value.encode()
        for name, value in headers.items()
    )
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack(">II", total, len(head))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + head + payload
    return message + struct.pack(">I", zlib.crc32(message))


def bedrock_chunks(events: Iterator[bytes], input_tokens: int, output_tokens: int) -> Iterator[bytes]:
    """Re-frame Anthropic SSE events as Bedrock's ``chunk`` messages (base64 JSON inside JSON).

    Bedrock adds its own invocation metrics to ``message_stop``, and pads each
    payload with a ``p`` field of varying length, as the service does.
    """
    for event in events:
        data = next((line[6:] for line in event.split(b"\n") if line.startswith(b"data: ")), None)
        if data is None:
            continue
        obj = json.loads(data)
        if obj.get("type") == "ping":
            continue  # Bedrock sends none
        if obj.get("type") == "message_stop":
            obj["amazon-bedrock-invocationMetrics"] = {
                "inputTokenCount": input_tokens,
                "outputTokenCount": output_tokens,
                "invocationLatency": 1,
                "firstByteLatency": 1,
            }
        raw = base64.b64encode(_dumps(obj)).decode()
        payload = _dumps({"bytes": raw, "p": "abcdefghijklmnopqrstuvwxyz"[: 1 + len(raw) % 26]})
        yield event_stream_frame(
            {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}, payload
        )


# -- headers -------------------------------------------------------------------

_REQUESTS_LIMIT = 10_000
_TOKENS_LIMIT = 2_000_000


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``120ms``, ``2s``, ``1m30s``."""
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def response_headers(
    where: Route,
    content_type: str,
    *,
    requests_used: int,
    tokens_used: int,
    token_limit: int | None,
    processing_ms: int,
) -> dict[str, str]:
    """Each provider's usual response headers, rate limits included.

    Args:
        where: The route (selects the provider).
        content_type: The Content-Type.
        requests_used: Requests in the last minute.
        tokens_used: Tokens admitted in the last minute.
        token_limit: Tokens per minute (default 2,000,000).
        processing_ms: Time spent on the request so far.

    Returns:
        The headers, names lower-cased.
    """
    token_limit = token_limit or _TOKENS_LIMIT
    # The limits refill like a token bucket: linearly over a minute.
    requests_reset = 60 * min(requests_used, _REQUESTS_LIMIT) / _REQUESTS_LIMIT
    tokens_reset = 60 * min(tokens_used, token_limit) / token_limit
    requests_left = str(max(0, _REQUESTS_LIMIT - requests_used))
    tokens_left = str(max(0, token_limit - tokens_used))
    headers = {"content-type": content_type, "date": email.utils.formatdate(usegmt=True)}
    request_id = f"req_{secrets.token_hex(12)}"
    if where.platform == "bedrock":
        # Bedrock reports no quota headers; the stream's framing is announced separately.
        extra = {
            "x-amzn-requestid": str(uuid.uuid4()),
            "x-amzn-bedrock-invocation-latency": str(processing_ms),
        }
        if content_type == "application/vnd.amazon.eventstream":
            extra["x-amzn-bedrock-content-type"] = "application/json"
        return headers | extra
    if where.platform == "vertex":
        return headers  # Google's front end sends neither request ids nor quota headers
    if where.anthropic:
        now = time.time()
        return headers | {
            "request-id": request_id,
            "anthropic-organization-id": "00000000-0000-4000-8000-00000000fa4e",
            "anthropic-ratelimit-requests-limit": str(_REQUESTS_LIMIT),
            "anthropic-ratelimit-requests-remaining": requests_left,
            "anthropic-ratelimit-requests-reset": rfc3339(now + requests_reset),
            "anthropic-ratelimit-tokens-limit": str(token_limit),
            "anthropic-ratelimit-tokens-remaining": tokens_left,
            "anthropic-ratelimit-tokens-reset": rfc3339(now + tokens_reset),
        }
    return headers | {
        "x-request-id": request_id,
        "openai-organization": "user-fake",
        "openai-processing-ms": str(processing_ms),
        "openai-version": "2020-10-01",
        "x-ratelimit-limit-requests": str(_REQUESTS_LIMIT),
        "x-ratelimit-remaining-requests": requests_left,
        "x-ratelimit-reset-requests": _duration(requests_reset),
        "x-ratelimit-limit-tokens": str(token_limit),
        "x-ratelimit-remaining-tokens": tokens_left,
        "x-ratelimit-reset-tokens": _duration(tokens_reset),
    }
