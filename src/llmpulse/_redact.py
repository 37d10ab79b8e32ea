"""Scrubbing secrets out of anything that reaches a sink.

API keys travel in ``Authorization``, ``api-key`` (Azure) and ``x-api-key``
(Anthropic) headers and sometimes in URLs (``?api-key=``); provider error
messages may echo a (masked) key. Events never carry headers or raw URLs,
and free text such as error messages passes through `redact` first.
"""

from __future__ import annotations

import re

__all__ = ["SECRET_HEADERS", "redact"]

SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "proxy-authorization", "cookie"})

_PATTERNS = (
    # Provider keys: sk-..., sk-ant-..., sk-proj-... (also partly masked ones).
    (re.compile(r"\b(sk|rk|pk)-[A-Za-z0-9_\-\*\.]{6,}"), r"\1-[REDACTED]"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9_\-\.=:/+]{6,}"), r"\1 [REDACTED]"),
    (re.compile(r"(?i)([?&](?:api[-_]?key|key|token|sig|access_token)=)[^&\s#]+"), r"\1[REDACTED]"),
    (
        re.compile(r"(?i)(\b(?:api[-_]?key|x-api-key|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
        r"\1[REDACTED]",
    ),
    (re.compile(r"(https?://)[^/\s:@]+:[^/\s@]+@"), r"\1[REDACTED]@"),
)


def redact(text: str) -> str:
    """Return ``text`` with API keys, bearer tokens and URL credentials masked."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
