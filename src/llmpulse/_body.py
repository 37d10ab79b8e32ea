"""③ One response body on its way to the SDK: what it weighs, and what it says.

A `BodyWatcher` sees every read of the body the caller gets. It hands the
SDK the bytes it expects (the wire bytes: the SDK's HTTP stack decodes
them as always) and keeps a decoded copy for the call's event: usage,
errors, finish reasons and captured content are read from what the
provider said, compressed or not. Only a bounded part is kept (the head
and a tail: usage sits at the end of every format), and decoding costs at
most a bounded multiple of the wire size (see `llmpulse._decode`).

For a stream, a stream watch looks at the decoded bytes as they pass:
when output first reaches the caller (time to first token), and, when
llmpulse asked for usage the caller did not, which event to hold back.
Holding an event back means changing the bytes the SDK gets, so a
compressed stream whose usage event must be hidden is handed over decoded
(the caller's HTTP stack is told so: its ``Content-Encoding`` is removed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, MutableMapping
from typing import Protocol

from ._decode import BodyDecoder, decoder_for

__all__ = ["BodyWatcher", "StreamWatch"]

# The decoded head kept whole for parsing at the end ...
_HEAD_LIMIT = 1024 * 1024
# ... and the tail kept beyond it (usage lives at the end of every format).
_TAIL_LIMIT = 256 * 1024


class StreamWatch(Protocol):
    """What a `BodyWatcher` asks of a stream's format, read by read (`llmpulse.providers._sse`)."""

    content_seen: bool
    """Whether output has reached the caller (set by the `feed` that passed it)."""

    strips: bool
    """Whether it holds events back (the usage-only chunk llmpulse asked for)."""

    def feed(self, chunk: bytes) -> bytes:
        """Look at decoded stream bytes; return those to pass on now."""

    def drain(self) -> bytes:
        """Return the bytes held back when the stream ends."""


class BodyWatcher:
    """Watches one response body read by read; see the module docstring.

    Attributes:
        wire_bytes: Bytes received over the network.
        content_at: ``time.perf_counter()`` when a stream's first output passed, else None.
        content_encoding: The body's ``Content-Encoding`` (None: not encoded).
        max_gap_s: With a ``clock``: the longest wait between two reads, from the watch's start.

    """

    __slots__ = (
        "_clock",
        "_decoder",
        "_head",
        "_head_size",
        "_last_read",
        "_pass_decoded",
        "_stream",
        "_tail",
        "_tail_size",
        "content_at",
        "content_encoding",
        "max_gap_s",
        "wire_bytes",
    )

    def __init__(
        self,
        headers: MutableMapping[str, str] | None,
        *,
        stream: StreamWatch | None = None,
        rewrites: bool = False,
        decoded: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """Start watching a body.

        Args:
            headers: The response headers the SDK will read (None: the body
                comes without any, e.g. from the cache).
            stream: The stream watch of an SSE body.
            rewrites: The stream watch may hold bytes back (the usage event
                llmpulse asked for): a compressed stream is then handed over decoded.
            decoded: The bytes fed are already decoded (a body the HTTP stack read in full).
            clock: Times the gaps between reads (a stream's learned deadline; see `llmpulse._deadlines`).

        """
        encoding = None if decoded or headers is None else headers.get("content-encoding")
        self._decoder: BodyDecoder | None = decoder_for(encoding)
        self.content_encoding = None if self._decoder is None else self._decoder.encoding
        self._stream = stream
        # A stream whose bytes we may change cannot stay encoded on its way to the SDK.
        self._pass_decoded = (
            rewrites and stream is not None and self._decoder is not None and self._decoder.stopped is None
        )
        if self._pass_decoded and headers is not None:
            del headers["content-encoding"]
            headers.pop("content-length", None)
        self._head: list[bytes] = []
        self._head_size = 0
        self._tail: list[bytes] = []
        self._tail_size = 0
        self.wire_bytes = 0
        self.content_at: float | None = None
        self._clock = clock
        self._last_read = 0.0 if clock is None else clock()
        self.max_gap_s = 0.0

    def feed(self, wire: bytes) -> bytes:
        """Watch one read on its way to the SDK; return what to pass on.

        This runs for every network read of every response, so the common
        case (an uncompressed body) does the least it can: count, keep a
        reference, pass the same object on.
        """
        self.wire_bytes += len(wire)
        clock = self._clock
        if clock is not None:
            now = clock()
            self.max_gap_s = max(self.max_gap_s, now - self._last_read)
            self._last_read = now
        decoder = self._decoder
        data = wire if decoder is None else decoder.feed(wire, capped=not self._pass_decoded)
        if data:
            self._keep(data)
        stream = self._stream
        if stream is None:
            return wire
        out = stream.feed(data)
        if self.content_at is None and stream.content_seen:
            self.content_at = time.perf_counter()
            if not stream.strips:
                self._stream = None  # nothing left to look for: later reads cost nothing
        return out if self._pass_decoded or decoder is None else wire

    def drain(self) -> bytes:
        """Return bytes held back by the stream watch when the body ends."""
        if self._stream is None:
            return b""
        rest = self._stream.drain()
        return rest if self._pass_decoded or self._decoder is None else b""

    def _keep(self, data: bytes) -> None:
        if self._head_size < _HEAD_LIMIT:
            self._head.append(data)
            self._head_size += len(data)
            return
        self._tail.append(data)
        self._tail_size += len(data)
        while self._tail_size > _TAIL_LIMIT and len(self._tail) > 1:
            self._tail_size -= len(self._tail.pop(0))

    @property
    def data(self) -> bytes:
        """The decoded bytes kept: the whole body, or its head and a tail (see `partial`)."""
        return b"".join(self._head + self._tail) if self._tail else b"".join(self._head)

    @property
    def partial(self) -> bool:
        """Whether the middle of the body was not kept."""
        return bool(self._tail)

    @property
    def unread_reason(self) -> str | None:
        """Why (part of) the body could not be decoded: ``no_decoder:<coding>``, ``corrupt``, ``ratio``."""
        return None if self._decoder is None else self._decoder.stopped
