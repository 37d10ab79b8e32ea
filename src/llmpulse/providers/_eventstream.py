"""AWS event-stream framing (``application/vnd.amazon.eventstream``), as Bedrock streams Anthropic events.

Each message is a 12-byte prelude (total length, headers length, CRC32 of
those 8 bytes), typed headers, a payload and a CRC32 of the whole message.
Bedrock's ``invoke-with-response-stream`` sends ``:message-type: event``
messages whose JSON payload is ``{"bytes": "<base64 of one Anthropic
event>"}``, and ``:message-type: exception`` messages for errors
(https://docs.aws.amazon.com/transcribe/latest/dg/streaming-setting-up.html#streaming-event-stream).

The retained bytes of a long stream are its head and tail with the middle
cut out at a read boundary, so the reader re-synchronises on the next
prelude whose CRC checks out instead of trusting lengths across the cut.
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from collections.abc import Iterator
from typing import Any, NamedTuple

from ._base import loads
from ._sse import StreamWatch

__all__ = ["EventStreamWatch", "anthropic_events", "iter_messages"]

_PRELUDE = 12
_MIN_MESSAGE = 16  # prelude and message CRC
_MAX_MESSAGE = 16 * 1024 * 1024  # the format's own limit
_STRING = 7


class Message(NamedTuple):
    """One decoded event-stream message."""

    headers: dict[str, str]
    payload: bytes


def _valid_prelude(data: bytes, pos: int) -> int:
    # The message length at ``pos``, or 0 when no message starts there.
    if pos + _PRELUDE > len(data):
        return 0
    total, headers_len, crc = struct.unpack_from(">III", data, pos)
    if not _MIN_MESSAGE <= total <= _MAX_MESSAGE or headers_len > total - _MIN_MESSAGE:
        return 0
    if zlib.crc32(data[pos : pos + 8]) != crc:
        return 0
    return int(total)


def _headers(block: bytes) -> dict[str, str]:
    # Only string headers matter here (:message-type, :event-type, :exception-type).
    out: dict[str, str] = {}
    pos = 0
    try:
        while pos < len(block):
            name_len = block[pos]
            name = block[pos + 1 : pos + 1 + name_len].decode("utf-8", "replace")
            pos += 1 + name_len
            kind = block[pos]
            pos += 1
            if kind in (0, 1):  # bool true / false: no value bytes
                continue
            if kind == 2:
                pos += 1
            elif kind == 3:
                pos += 2
            elif kind == 4:
                pos += 4
            elif kind in (5, 8):
                pos += 8
            elif kind in (6, _STRING):
                (length,) = struct.unpack_from(">H", block, pos)
                value = block[pos + 2 : pos + 2 + length]
                pos += 2 + length
                if kind == _STRING:
                    out[name] = value.decode("utf-8", "replace")
            elif kind == 9:
                pos += 16
            else:
                break
    except (IndexError, struct.error):
        pass
    return out


def iter_messages(data: bytes) -> Iterator[Message]:
    """Yield the whole, CRC-checked messages in ``data``, skipping bytes that are not one."""
    pos = 0
    end = len(data)
    while pos + _MIN_MESSAGE <= end:
        total = _valid_prelude(data, pos)
        if not total or pos + total > end:
            if total and pos + total > end:
                return  # the last message is incomplete
            pos += 1
            continue
        message = data[pos : pos + total]
        if zlib.crc32(message[:-4]) != struct.unpack_from(">I", message, total - 4)[0]:
            pos += 1
            continue
        (headers_len,) = struct.unpack_from(">I", message, 4)
        headers = _headers(message[_PRELUDE : _PRELUDE + headers_len])
        yield Message(headers, message[_PRELUDE + headers_len : -4])
        pos += total


def complete_end(data: bytes) -> int:
    """The length of the whole messages at the start of ``data`` (from its first message on)."""
    pos = 0
    while True:
        total = _valid_prelude(data, pos)
        if not total or pos + total > len(data):
            return pos
        pos += total


def anthropic_events(data: bytes) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(type, event)`` for each Anthropic event, as the SDK's Bedrock decoder reads them.

    An exception message becomes an ``error`` event, as the SDK raises it.
    """
    for message in iter_messages(data):
        kind = message.headers.get(":message-type", "event")
        try:
            body = loads(message.payload) if message.payload else {}
        except ValueError:
            continue
        if not isinstance(body, dict):
            continue
        if kind != "event":
            error_type = message.headers.get(":exception-type") or message.headers.get(":error-code") or kind
            text = body.get("message") or body.get("Message") or message.headers.get(":error-message")
            yield "error", {"type": "error", "error": {"type": error_type, "message": text}}
            continue
        raw = body.get("bytes")
        if not isinstance(raw, str):
            continue
        try:
            event = loads(base64.b64decode(raw))
        except (ValueError, binascii.Error):
            continue
        if isinstance(event, dict) and isinstance(event.get("type"), str):
            yield event["type"], event


class EventStreamWatch(StreamWatch):
    """`StreamWatch` for an event-stream body: finds the first ``content_block_delta``.

    Nothing is injected into these requests, so nothing is stripped: every
    read is handed on unchanged, and only the bytes up to the first output
    are kept (to decode whole messages across reads).
    """

    __slots__ = ("_held",)

    def __init__(self) -> None:
        super().__init__("anthropic", strip_usage_chunk=False)
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        """Watch one read; return it unchanged."""
        if self.content_seen:
            return chunk
        data = self._held + chunk if self._held else chunk
        end = complete_end(data)
        if end and any(kind == "content_block_delta" for kind, _ in anthropic_events(data[:end])):
            self.content_seen = True
            self._held = b""
        else:
            held = data[end:] if end else data
            # Not event-stream framing after all: stop looking rather than hold it all.
            self._held = held if len(held) <= _MAX_MESSAGE else b""
        return chunk

    def drain(self) -> bytes:
        """Nothing is held back from the caller."""
        self._held = b""
        return b""
