"""What was said: prompt and completion text, captured only when the user opts in.

Off by default (``LLMPULSE_CAPTURE_CONTENT``, or OpenTelemetry's
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``), and never for a
call made inside ``llmpulse.context(private=True)``. Captured text goes into
the event's ``input_content`` and ``output_content``, cut at
`MAX_CONTENT_CHARS` so one huge prompt cannot blow up a log pipeline.
"""

from __future__ import annotations

from typing import Final

import orjson

from .providers._base import loads

__all__ = ["MAX_CONTENT_CHARS", "input_content", "output_content", "truncate"]

MAX_CONTENT_CHARS: Final = 32_768
"""Longest captured text per field; longer text is cut and says how much was left out."""

# The request fields that carry what the model is told, in every wire format
# llmpulse knows: chat and Anthropic "messages" (+ "system"), Responses
# "instructions" + "input", legacy completions "prompt", embeddings "input".
_INPUT_KEYS = ("system", "instructions", "messages", "input", "prompt")


def input_content(body: bytes | None) -> str | None:
    """Return the prompt fields of a JSON request body as compact JSON text, or None."""
    if not body or body[:1] != b"{":
        return None
    try:
        data = loads(body)
    except ValueError:
        return None
    picked = {key: data[key] for key in _INPUT_KEYS if key in data}
    if not picked:
        return None
    return truncate(orjson.dumps(picked, option=orjson.OPT_NON_STR_KEYS).decode())


def output_content(text: str, *, partial: bool) -> str | None:
    """Return the generated ``text`` as captured (None when there was none)."""
    if not text:
        return None
    if partial:
        text += " …[middle of the stream not retained]"
    return truncate(text)


def truncate(text: str) -> str:
    """Cut ``text`` at `MAX_CONTENT_CHARS`, saying how many characters were left out."""
    if len(text) <= MAX_CONTENT_CHARS:
        return text
    return f"{text[:MAX_CONTENT_CHARS]}…[truncated {len(text) - MAX_CONTENT_CHARS} chars]"
