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
- **anywhere else**: the first stream to an endpoint is sent as the caller
  made it. If it carries usage anyway (servers such as vLLM can be told to
  always send it), the endpoint is remembered as one that does and is never
  asked: asking would make llmpulse hide a chunk the caller gets bare. If
  it ends without usage, that call's usage is estimated and later streams to
  the endpoint ask. If one then answers 400 or 422 naming
  ``stream_options``, the caller's request is sent once more exactly as they
  made it (not a retry: no backoff, not counted against ``max_retries`` or
  the retry budget) and the endpoint is remembered, so later calls to it are
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


def ask_for_stream_usage(
    provider: str, host: str, path: str, query: bytes, known_hosts: frozenset[str] = frozenset()
) -> bool | None:
    """Whether to add ``stream_options.include_usage`` to a chat stream request; None: learn it per endpoint.

    Args:
        provider: "openai" or "azure".
        host: The request's host.
        path: Its path.
        query: Its raw query string (Azure's ``api-version`` is there).
        known_hosts: Further hosts that send usage only when asked and accept
            being asked (``LLMPULSE_STREAM_USAGE_HOSTS``).

    """
    if host in _KNOWN_HOSTS:
        return True  # sends usage only when asked, and accepts being asked
    if provider != "azure":
        # Another server: named by the user as one like api.openai.com, else learned from its first stream.
        return True if host in known_hosts else None
    if "/openai/v1/" in path:
        return True  # Azure's version-less v1 API follows OpenAI's
    match = _API_VERSION.search(query)
    if match is None:
        return None  # no version to judge by: learn
    return match.group(1).decode() >= _AZURE_FIRST_VERSION


def rejects_stream_options(status: int, body: bytes | None) -> bool:
    """Whether an error answer refuses the ``stream_options`` field llmpulse added."""
    return status in (400, 422) and body is not None and b"stream_options" in body


class StreamUsageMemory:
    """The endpoints that refused ``stream_options`` (thread-safe, bounded)."""

    __slots__ = ("_ask", "_lock", "_refused", "_sends")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refused: set[tuple[str, int | None, str]] = set()
        self._sends: set[tuple[str, int | None, str]] = set()  # usage without being asked
        self._ask: set[tuple[str, int | None, str]] = set()  # no usage unless asked

    def learned(self, host: str, port: int | None, path: str) -> bool | None:
        """For an endpoint not known by name: ask (True), do not (False), or not learned yet (None)."""
        key = (host, port, path)
        if key in self._refused or key in self._sends:
            return False
        return True if key in self._ask else None

    def saw_stream(self, host: str, port: int | None, path: str, *, had_usage: bool) -> None:
        """Note what a stream sent as the caller made it showed: usage without being asked, or none."""
        with self._lock:
            if len(self._sends) + len(self._ask) < _MAX_REMEMBERED:
                (self._sends if had_usage else self._ask).add((host, port, path))

    def refused(self, host: str, port: int | None, path: str) -> bool:
        """Whether this endpoint refused the field before."""
        return (host, port, path) in self._refused

    def remember(self, host: str, port: int | None, path: str) -> None:
        """Note that this endpoint refuses the field."""
        with self._lock:
            if len(self._refused) < _MAX_REMEMBERED:
                self._refused.add((host, port, path))
