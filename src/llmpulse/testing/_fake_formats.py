"""Response bodies of the fake provider, in the OpenAI and Anthropic wire formats.

Shapes follow the SDKs' own models closely enough for strict response
validation: a wire-format mistake here fails the suite instead of hiding.
"""

from __future__ import annotations

import base64
import json
import secrets
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Generation", "anthropic_error", "openai_error", "sse"]

_WORDS = [
    "the",
    "on-call",
    "engineer",
    "reads",
    "the",
    "dashboard",
    "and",
    "sees",
    "latency",
    "rising",
    "across",
    "every",
    "region",
    "while",
    "the",
    "provider",
    "status",
    "page",
    "stays",
    "green",
    "so",
    "the",
    "team",
    "checks",
    "retries",
    "tokens",
    "and",
    "cost",
    "per",
    "tenant",
    "before",
    "deciding",
    "to",
    "shed",
    "background",
    "traffic",
    "and",
    "keep",
    "interactive",
    "requests",
    "fast",
]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event; ``data`` is JSON-encoded unless it is bytes."""
    payload = data if isinstance(data, bytes) else _dumps(data)
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + b"\n\n"


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(_text_of(v) for v in value)
    if isinstance(value, dict):
        return " ".join(_text_of(v) for k, v in value.items() if k in ("content", "text", "input", "system"))
    return ""


def prompt_tokens(body: dict[str, Any]) -> int:
    """A deterministic prompt size: chars / 4 over the request's text, at least 1."""
    text = " ".join(_text_of(body.get(k)) for k in ("messages", "input", "prompt", "system"))
    return max(1, len(text) // 4)


@dataclass(frozen=True)
class Generation:
    """What the fake "generates" for one request: words, token counts, stop reason."""

    model: str
    words: tuple[str, ...]
    prompt_tokens: int
    capped: bool
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0

    @classmethod
    def for_request(
        cls,
        body: dict[str, Any],
        *,
        model: str | None = None,
        output_tokens: int | None = None,
        cached: int = 0,
        cache_write: int = 0,
        reasoning: int = 0,
        huge_bytes: int = 0,
    ) -> Generation:
        """Build the generation for a request body."""
        cap = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens")
        wanted = output_tokens if output_tokens is not None else 20
        n = min(wanted, cap) if isinstance(cap, int) and cap > 0 else wanted
        words = tuple(_WORDS[i % len(_WORDS)] for i in range(n))
        if huge_bytes:
            word = "x" * 1000
            words = tuple(word for _ in range(max(1, huge_bytes // 1000)))
        prompt = prompt_tokens(body)
        return cls(
            model=model or str(body.get("model") or "unknown-model"),
            words=words,
            prompt_tokens=prompt + cached + cache_write,
            capped=isinstance(cap, int) and cap < wanted,
            cached=cached,
            cache_write=cache_write,
            reasoning=min(reasoning, len(words)),
        )

    @property
    def text(self) -> str:
        """The whole reply."""
        return " ".join(self.words)

    def pieces(self) -> Iterator[str]:
        """The reply split as it is streamed: one word per event."""
        for i, word in enumerate(self.words):
            yield word if i == 0 else " " + word

    @property
    def output_tokens(self) -> int:
        """One token per word."""
        return len(self.words)

    # -- OpenAI --------------------------------------------------------------

    def openai_usage(self) -> dict[str, Any]:
        """Chat/completions usage block (prompt_tokens includes the cached ones)."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.prompt_tokens + self.output_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning, "audio_tokens": 0},
        }

    def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """A chat.completion object; JSON content when a json_schema response format is asked for."""
        content = self.text
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            content = json.dumps(_sample_for_schema((fmt.get("json_schema") or {}).get("schema") or {}))
        elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
            content = json.dumps({"answer": self.text})
        return {
            "id": f"chatcmpl-{secrets.token_hex(8)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "finish_reason": "length" if self.capped else "stop",
                    "logprobs": None,
                }
            ],
            "usage": self.openai_usage(),
            "system_fingerprint": "fp_fake",
        }

    def chat_chunks(self, include_usage: bool) -> Iterator[bytes]:
        """SSE chunks of a streamed chat completion, ``[DONE]`` included."""
        base: dict[str, Any] = {"id": f"chatcmpl-{secrets.token_hex(8)}", "object": "chat.completion.chunk"}
        base |= {"created": int(time.time()), "model": self.model, "system_fingerprint": "fp_fake"}
        extra = {"usage": None} if include_usage else {}

        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return sse({**base, "choices": [choice], **extra})

        yield chunk({"role": "assistant", "content": "", "refusal": None}, None)
        for piece in self.pieces():
            yield chunk({"content": piece}, None)
        yield chunk({}, "length" if self.capped else "stop")
        if include_usage:
            yield sse({**base, "choices": [], "usage": self.openai_usage()})
        yield b"data: [DONE]\n\n"

    def completion(self) -> dict[str, Any]:
        """A legacy text_completion object."""
        return {
            "id": f"cmpl-{secrets.token_hex(8)}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "text": self.text,
                    "finish_reason": "length" if self.capped else "stop",
                    "logprobs": None,
                }
            ],
            "usage": self.openai_usage(),
        }

    def completion_chunks(self, include_usage: bool) -> Iterator[bytes]:
        """SSE chunks of a streamed legacy completion."""
        base = {
            "id": f"cmpl-{secrets.token_hex(8)}",
            "object": "text_completion",
            "created": int(time.time()),
        }
        base["model"] = self.model
        for piece in self.pieces():
            yield sse(
                {**base, "choices": [{"index": 0, "text": piece, "finish_reason": None, "logprobs": None}]}
            )
        last = {
            "index": 0,
            "text": "",
            "finish_reason": "length" if self.capped else "stop",
            "logprobs": None,
        }
        yield sse({**base, "choices": [last]})
        if include_usage:
            yield sse({**base, "choices": [], "usage": self.openai_usage()})
        yield b"data: [DONE]\n\n"

    def _response_object(self, status: str, with_output: bool) -> dict[str, Any]:
        message = {
            "type": "message",
            "id": "msg_fake",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}],
        }
        obj: dict[str, Any] = {
            "id": "resp_fake",
            "object": "response",
            "created_at": float(int(time.time())),
            "model": self.model,
            "status": status,
            "output": [message] if with_output else [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "metadata": {},
            "temperature": 1.0,
            "top_p": 1.0,
            "usage": None,
        }
        if with_output:
            obj["usage"] = {
                "input_tokens": self.prompt_tokens,
                "input_tokens_details": {
                    "cached_tokens": self.cached,
                    "cache_write_tokens": self.cache_write,
                },
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": self.reasoning},
                "total_tokens": self.prompt_tokens + self.output_tokens,
            }
        return obj

    def response(self) -> dict[str, Any]:
        """A Responses API response object."""
        return self._response_object("completed", with_output=True)

    def response_events(self) -> Iterator[bytes]:
        """SSE events of a streamed Responses API call."""
        seq = iter(range(1_000_000))
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        ids = {"item_id": "msg_fake", "output_index": 0, "content_index": 0}

        def event(kind: str, **fields: Any) -> bytes:
            return sse({"type": kind, "sequence_number": next(seq), **fields}, event=kind)

        yield event("response.created", response=self._response_object("in_progress", with_output=False))
        yield event("response.in_progress", response=self._response_object("in_progress", with_output=False))
        item = {
            "type": "message",
            "id": "msg_fake",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        yield event("response.output_item.added", output_index=0, item=item)
        yield event("response.content_part.added", part=part, **ids)
        for piece in self.pieces():
            yield event("response.output_text.delta", delta=piece, logprobs=[], **ids)
        yield event("response.output_text.done", text=self.text, logprobs=[], **ids)
        yield event("response.content_part.done", part={**part, "text": self.text}, **ids)
        final = self.response()
        yield event("response.output_item.done", output_index=0, item=final["output"][0])
        yield event("response.completed", response=final)

    # -- Anthropic -------------------------------------------------------------

    def anthropic_usage(self, *, output: int | None = None) -> dict[str, Any]:
        """Messages usage block: input_tokens is the uncached part."""
        return {
            "input_tokens": self.prompt_tokens - self.cached - self.cache_write,
            "output_tokens": self.output_tokens if output is None else output,
            "cache_creation_input_tokens": self.cache_write,
            "cache_read_input_tokens": self.cached,
        }

    def _stop_reason(self) -> str:
        return "max_tokens" if self.capped else "end_turn"

    def message(self) -> dict[str, Any]:
        """An Anthropic Message."""
        return {
            "id": f"msg_{secrets.token_hex(8)}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [{"type": "text", "text": self.text}],
            "stop_reason": self._stop_reason(),
            "stop_sequence": None,
            "usage": self.anthropic_usage(),
        }

    def message_events(self) -> Iterator[bytes]:
        """SSE events of a streamed Message."""
        start = {
            **self.message(),
            "content": [],
            "stop_reason": None,
            "usage": self.anthropic_usage(output=1),
        }
        yield sse({"type": "message_start", "message": start}, event="message_start")
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        yield sse(block, event="content_block_start")
        yield sse({"type": "ping"}, event="ping")
        for piece in self.pieces():
            delta = {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            }
            yield sse(delta, event="content_block_delta")
        yield sse({"type": "content_block_stop", "index": 0}, event="content_block_stop")
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop_reason(), "stop_sequence": None},
            "usage": {"output_tokens": self.output_tokens},
        }
        yield sse(delta, event="message_delta")
        yield sse({"type": "message_stop"}, event="message_stop")


def embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """An embeddings list.

    The SDK asks for base64 by default, but under strict response
    validation it only accepts float lists (it decodes base64 after
    validating); it passes lists through, so lists it is.
    """
    inputs = body.get("input")
    items = inputs if isinstance(inputs, list) else [inputs]
    vector = [0.1, -0.2, 0.3, 0.05]
    encoded: Any = vector
    if body.get("encoding_format") == "base64" and body.get("model") == "fake-base64":
        encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    tokens = prompt_tokens({"input": items})
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encoded} for i in range(len(items))],
        "model": str(body.get("model")),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def openai_batch(batch_id: str, body: dict[str, Any] | None) -> dict[str, Any]:
    """A minimal Batch object."""
    body = body or {}
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": body.get("endpoint", "/v1/chat/completions"),
        "input_file_id": body.get("input_file_id", "file-fake"),
        "completion_window": body.get("completion_window", "24h"),
        "status": "validating",
        "created_at": int(time.time()),
    }


def anthropic_batch(batch_id: str) -> dict[str, Any]:
    """A minimal MessageBatch object."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "id": batch_id,
        "type": "message_batch",
        "processing_status": "in_progress",
        "request_counts": {"processing": 1, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
        "created_at": now,
        "expires_at": now,
        "ended_at": None,
        "cancel_initiated_at": None,
        "results_url": None,
        "archived_at": None,
    }


def models_list() -> dict[str, Any]:
    """GET /v1/models."""
    names = ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small")
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": 1700000000, "owned_by": "fake"} for n in names],
    }


def openai_error(status: int, message: str, code: str | None) -> dict[str, Any]:
    """OpenAI's error body."""
    kinds = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        429: "requests",
        404: "invalid_request_error",
    }
    return {
        "error": {"message": message, "type": kinds.get(status, "server_error"), "param": None, "code": code}
    }


def anthropic_error(status: int, message: str, code: str | None, request_id: str) -> dict[str, Any]:
    """Anthropic's error body."""
    kinds = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        529: "overloaded_error",
    }
    kind = code or kinds.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


def _sample_for_schema(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if "anyOf" in schema:
        return _sample_for_schema(schema["anyOf"][0])
    if kind == "object" or "properties" in schema:
        return {name: _sample_for_schema(sub) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [_sample_for_schema(schema.get("items") or {})]
    if "enum" in schema:
        return schema["enum"][0]
    return {"integer": 1, "number": 1.5, "boolean": True, "null": None}.get(str(kind), "fake")
