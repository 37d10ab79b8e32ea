"""Asking an OpenAI chat stream for its usage, without sending what a server rejects.

A chat completion stream carries no usage unless the request asks for it
(``stream_options: {"include_usage": true}``), so llmpulse adds that field
and hides the extra chunk from the caller. Not every server accepts it:
Azure OpenAI before API version 2024-08-01-preview and strict self-hosted
or proxy servers answer ``400 Unrecognized request argument supplied:
stream_options``. So:

- **known to work** (``api.openai.com``; Azure API versions from
  2024-08-01-preview on, and its ``/openai/v1/`` API): ask;
- **known not to** (older Azure API versions): never ask; read what the
  server sends and estimate what it does not;
- **anywhere else**: ask, and if the server answers 400 or 422 naming
  ``stream_options``, send the caller's request once more exactly as they
  made it (not a retry: no backoff, not counted against ``max_retries`` or
  the retry budget) and remember that endpoint, so later calls to it are
  sent as the caller made them.

This module decides; the call path sends.
"""

from __future__ import annotations

import re
import threading

__all__ = ["StreamUsageMemory", "ask_for_stream_usage", "rejects_stream_options"]

# Azure OpenAI API versions are dates; stream_options is accepted from this one on
# (2024-08-01-preview, then 2024-09-01-preview, 2024-10-01-preview, GA 2024-10-21 and later).
_AZURE_FIRST_VERSION = "2024-08-01"
_API_VERSION = re.compile(rb"(?:^|&)api-version=(\d{4}-\d{2}-\d{2})")
_KNOWN_HOSTS = frozenset({"api.openai.com"})
# Endpoints remembered per process; past this many, newer rejections are not remembered
# (each such call then costs one resend, never a failure).
_MAX_REMEMBERED = 4096


def ask_for_stream_usage(provider: str, host: str, path: str, query: bytes) -> bool:
    """Whether to add ``stream_options.include_usage`` to a chat stream request at first.

    Args:
        provider: "openai" or "azure".
        host: The request's host.
        path: Its path.
        query: Its raw query string (Azure's ``api-version`` is there).

    """
    if provider != "azure" or host in _KNOWN_HOSTS:
        return True  # api.openai.com, or a server that will say if it minds
    if "/openai/v1/" in path:
        return True  # Azure's version-less v1 API follows OpenAI's
    match = _API_VERSION.search(query)
    if match is None:
        return True  # no version to judge by: negotiate
    return match.group(1).decode() >= _AZURE_FIRST_VERSION


def rejects_stream_options(status: int, body: bytes | None) -> bool:
    """Whether an error answer refuses the ``stream_options`` field llmpulse added."""
    return status in (400, 422) and body is not None and b"stream_options" in body


class StreamUsageMemory:
    """The endpoints that refused ``stream_options`` (thread-safe, bounded)."""

    __slots__ = ("_lock", "_refused")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refused: set[tuple[str, int | None, str]] = set()

    def refused(self, host: str, port: int | None, path: str) -> bool:
        """Whether this endpoint refused the field before."""
        return (host, port, path) in self._refused

    def remember(self, host: str, port: int | None, path: str) -> None:
        """Note that this endpoint refuses the field."""
        with self._lock:
            if len(self._refused) < _MAX_REMEMBERED:
                self._refused.add((host, port, path))
