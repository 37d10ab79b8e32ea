"""Server-sent events as the WHATWG spec reads them, whatever the server's spelling.

OpenAI's own servers write compact JSON, one ``data: `` line per event and
LF LF after it; compatible servers may write ``"choices": []``, end lines
with CRLF or a lone CR, omit the space after the colon or spread one
event's JSON over several ``data:`` lines, and the network may cut an event
anywhere. The SDKs read all of these (their decoders follow the spec), so
llmpulse must too. The rules used here
(https://html.spec.whatwg.org/multipage/server-sent-events.html):

- a line ends with LF, CRLF or CR; an empty line ends an event;
- ``field:value``, one leading space of the value dropped; a line without a
  colon is a field with an empty value; ``:`` starts a comment;
- ``data`` lines are joined with LF; ``event`` names the event; an event
  without ``data`` is not dispatched.

Two readers share these rules. `iter_events` reads a finished stream (its
unterminated tail included: a server that ends without the last blank line
still told us something). `StreamWatch` sits on the per-read path: it finds
the first output (time to first token) and hides the usage-only chunk
llmpulse asked for, and must cost next to nothing, so it looks at raw bytes
with literal-prefixed regexes first and splits or parses JSON only to confirm.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, Literal, NamedTuple

from ._base import loads

__all__ = [
    "EventSplitter",
    "SseEvent",
    "StreamKind",
    "StreamWatch",
    "event_type",
    "iter_events",
    "parse_block",
]

StreamKind = Literal["chat", "responses", "anthropic"]
"""Which SSE dialect a stream speaks: chat and legacy completions share one."""

# Whether `bytes.endswith` sees a blank line at the very end: the last two
# line-ending bytes are LF LF, CR CR or LF CR, possibly followed by the LF of
# a CRLF. (CR LF alone is one line ending, not two.)
_ENDS_BLANK = (b"\n\n", b"\r\r", b"\n\r", b"\n\r\n", b"\r\r\n")
# The line endings that end an event: two or more in a row (extra blank
# lines belong to the event before them, however the reads are cut).
_BLANK = re.compile(rb"(?:\r\n|\r(?!\n)|\n){2,}")
_EOL = b"\r\n"
# A data line that follows a non-empty line of the same event: the event may
# spread its JSON over several lines, which the single-line hints can miss.
_CONTINUED = re.compile(rb"data:(?:(?<=[^\r\n][\r\n]data:)|(?<=[^\r\n]\r\ndata:))")
# Hints: necessary conditions, on the data of a single-line event (or on the
# joined data of any event), that an event is what we look for. Each starts
# with a literal so the regex engine skips to it at C speed.
_USAGE_HINT = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_CHAT_HINT = re.compile(rb'"(?:content|refusal|arguments|text)"\s*:\s*"(?!")')
_RESPONSES_HINT = re.compile(rb"response\.(?:output_text|function_call_arguments)\.delta")
_ANTHROPIC_HINT = re.compile(rb"content_block_delta")
_CR, _LF = 13, 10


class SseEvent(NamedTuple):
    """One dispatched event.

    Attributes:
        name: The value of its last ``event:`` line; empty when it had none.
        data: Its ``data:`` lines joined with LF.

    """

    name: bytes
    data: bytes

    def json(self) -> dict[str, Any] | None:
        """The data as a JSON object, or None when it is not one (``[DONE]``, a cut-off tail)."""
        try:
            value = loads(self.data)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


def event_type(event: SseEvent, obj: dict[str, Any] | None) -> str | None:
    """The event's kind: its ``event:`` name, else the ``"type"`` of its JSON ``obj``.

    OpenAI's Responses API and Anthropic send both; some compatible servers
    send only the JSON field.
    """
    if event.name:
        return event.name.decode("utf-8", "replace")
    kind = obj.get("type") if obj is not None else None
    return kind if isinstance(kind, str) else None


def parse_block(block: bytes) -> SseEvent | None:
    """Read the fields of one event's lines (blank lines around them allowed).

    Args:
        block: The bytes between two blank lines, in any line-ending style.

    Returns:
        The event, or None when it has no ``data`` line (comments, keep-alives).

    """
    if b"\r" in block:
        block = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    end = len(block)
    while end and block[end - 1] == _LF:
        end -= 1
    if block.startswith(b"data:") and block.find(b"\n", 5, end) < 0:
        # The common case, one data line: no splitting, one copy.
        return SseEvent(b"", block[6 if block[5:6] == b" " else 5 : end])
    name = b""
    lines: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[0] == 58:  # blank, or ":comment"
            continue
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            lines.append(value)
        elif field == b"event":
            name = value
    if not lines:
        return None
    return SseEvent(name, lines[0] if len(lines) == 1 else b"\n".join(lines))


def iter_events(data: bytes, *, reverse: bool = False) -> Iterator[SseEvent]:
    """Yield the events of a finished stream, lazily, first to last or last to first.

    Args:
        data: The stream's bytes. An unterminated last event is read too,
            and a cut-off one simply fails to parse as JSON later.
        reverse: Start from the end, where usage and the terminal event are,
            so a caller can stop after a few events of a long stream.

    Yields:
        Each event with data, in the order asked.

    """
    if b"\r" in data:
        # Exactly the spec's line endings, so any LF LF is a blank line.
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if reverse:
        end = len(data)
        while end > 0:
            cut = data.rfind(b"\n\n", 0, end)
            event = parse_block(data[cut + 2 if cut >= 0 else 0 : end])
            if event is not None:
                yield event
            end = cut
        return
    start, size = 0, len(data)
    while start < size:
        cut = data.find(b"\n\n", start)
        if cut < 0:
            cut = size
        event = parse_block(data[start:cut])
        if event is not None:
            yield event
        start = cut + 2


def _last_blank_end(data: bytes, start: int) -> int:
    """End of the last blank line in ``data`` that begins at or after ``start``; 0 if none.

    Every blank line contains LF LF, CR CR or LF CR (CR LF is a single line
    ending), so three C-speed searches find it.
    """
    pos = max(data.rfind(b"\n\n", start), data.rfind(b"\r\r", start), data.rfind(b"\n\r", start))
    if pos < 0:
        return 0
    end = pos + 2
    if data[end - 1] == _CR and data[end : end + 1] == b"\n":
        end += 1  # the CR is half of a CRLF
    return end


def _blocks(data: bytes, cut: int) -> list[bytes]:
    """Split ``data[:cut]`` (which ends with a blank line) into event blocks; they join back to it.

    Each block is an event's lines and the blank lines after it. Only the
    first may start with line endings: the rest of a run the previous read
    ended in.
    """
    blocks, start = [], 0
    for match in _BLANK.finditer(data, 0, cut):
        blocks.append(data[start : match.end()])
        start = match.end()
    return blocks


class EventSplitter:
    """Cuts a byte stream into whole events as its reads arrive.

    Bytes after the last blank line are held until a later read completes
    their event. A CRLF split across reads is fine: a CR ends the line at
    once, and the LF that may follow reads as an empty line, which
    dispatches nothing.
    """

    __slots__ = ("_rest",)

    def __init__(self) -> None:
        self._rest = b""

    def cut(self, chunk: bytes) -> tuple[bytes, int]:
        """Add one read; return ``(data, end)``: ``data[:end]`` is whole events, the rest is held.

        ``data`` is ``chunk`` itself when nothing was held, so the common
        read (one or more whole events) costs no copy.
        """
        rest = self._rest
        if not rest and chunk.endswith(_ENDS_BLANK):
            return chunk, len(chunk)
        data = rest + chunk if rest else chunk
        end = _last_blank_end(data, max(len(rest) - 1, 0))
        self._rest = data[end:] if end < len(data) else b""
        return data, end

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Add one read; return the events it completes."""
        data, end = self.cut(chunk)
        return _events(_blocks(data, end)) if end else []

    def close(self) -> list[SseEvent]:
        """End of stream: return the held event, if any (the stream ended without its blank line)."""
        return _events([self.take_rest()])

    def take_rest(self) -> bytes:
        """Return the held bytes and forget them."""
        rest, self._rest = self._rest, b""
        return rest


def _events(blocks: list[bytes]) -> list[SseEvent]:
    return [event for event in map(parse_block, blocks) if event is not None]


def _is_usage_only(block: bytes) -> bool:
    # Confirmed on the parsed JSON: Azure's first chunk also has "choices": []
    # (with prompt_filter_results) and must reach the caller.
    event = parse_block(block)
    if event is None or _USAGE_HINT.search(event.data) is None:
        return False
    obj = event.json()
    return obj is not None and obj.get("choices") == [] and isinstance(obj.get("usage"), dict)


def _nonempty(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _chat_output(event: SseEvent) -> bool:
    # The role-only first chunk has "content": "": not output.
    if _CHAT_HINT.search(event.data) is None:
        return False
    obj = event.json()
    choices = obj.get("choices") if obj is not None else None
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        if _nonempty(choice.get("text")):  # legacy completions
            return True
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            continue
        if _nonempty(delta.get("content")) or _nonempty(delta.get("refusal")):
            return True
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and _nonempty(function.get("arguments")):
                return True
    return False


def _typed(*names: str) -> Callable[[SseEvent], bool]:
    wanted = frozenset(names)

    def test(event: SseEvent) -> bool:
        return event_type(event, None if event.name else event.json()) in wanted

    return test


class _Dialect(NamedTuple):
    hint: re.Pattern[bytes]
    # Whether the hint spans JSON tokens, which several data lines may split.
    spans_tokens: bool
    is_output: Callable[[SseEvent], bool]


_DIALECTS: dict[str, _Dialect] = {
    "chat": _Dialect(_CHAT_HINT, True, _chat_output),
    "responses": _Dialect(
        _RESPONSES_HINT,
        False,
        _typed("response.output_text.delta", "response.function_call_arguments.delta"),
    ),
    "anthropic": _Dialect(_ANTHROPIC_HINT, False, _typed("content_block_delta")),
}


def _maybe_multiline(data: bytes, cut: int) -> bool:
    # Two data lines in one event need two "data:"; most reads have one.
    return data.count(b"data:", 0, cut) > 1 and _CONTINUED.search(data, 0, cut) is not None


class StreamWatch:
    """Watches one SSE response on its way to the SDK, one network read at a time.

    It reports when the first event carrying output is complete and, in
    strip mode, removes the usage-only chat chunk that llmpulse asked for
    (``stream_options.include_usage``) so the caller's stream is what they
    asked for. Bytes go on in whole events only, so a usage chunk cut across
    reads is never half passed; everything else goes on byte for byte.

    Attributes:
        content_seen: Becomes True in the `feed` call whose bytes complete
            the first event carrying output (a non-empty chat delta, a
            Responses text or arguments delta, an Anthropic
            ``content_block_delta``).
        strips: Whether the usage-only chunk is removed.

    """

    __slots__ = ("_dialect", "_drop_eols", "_split", "content_seen", "strips")

    def __init__(self, kind: StreamKind, *, strip_usage_chunk: bool) -> None:
        self._dialect = _DIALECTS[kind]
        self.strips = strip_usage_chunk
        self.content_seen = False
        # Bytes after the last complete event: held back in strip mode, kept
        # only for the output search otherwise.
        self._split = EventSplitter()
        # The last read ended with a removed event: line endings that start the
        # next read are its blank lines (or the LF of its CRLF) and go with it.
        self._drop_eols = False

    def feed(self, chunk: bytes) -> bytes:
        """Watch one read; return the bytes to hand on now.

        Args:
            chunk: The bytes just read from the network.

        Returns:
            ``chunk`` itself when nothing is held back or removed; else the
            complete events so far minus the usage-only one (maybe empty).

        """
        if self.content_seen and not self.strips:
            return chunk  # nothing left to do
        if self._drop_eols:
            rest = chunk.lstrip(_EOL)
            if not rest:
                return b""
            self._drop_eols = False
            chunk = rest
        data, cut = self._split.cut(chunk)
        if cut and not self.content_seen and self._output_in(data, cut):
            self.content_seen = True
            if not self.strips:
                self._split.take_rest()  # no longer needed
        if not self.strips:
            return chunk
        if not cut:
            return b""
        if _USAGE_HINT.search(data, 0, cut) is None and not _maybe_multiline(data, cut):
            return data if cut == len(data) else data[:cut]
        return self._without_usage(data, cut)

    def drain(self) -> bytes:
        """Return the bytes still held back when the stream ends (an unterminated last event)."""
        rest = self._split.take_rest()
        return rest if self.strips else b""

    def _output_in(self, data: bytes, cut: int) -> bool:
        dialect = self._dialect
        if dialect.hint.search(data, 0, cut) is None and not (
            dialect.spans_tokens and _maybe_multiline(data, cut)
        ):
            return False
        for block in _blocks(data, cut):
            event = parse_block(block)
            if event is not None and dialect.is_output(event):
                return True
        return False

    def _without_usage(self, data: bytes, cut: int) -> bytes:
        blocks = _blocks(data, cut)
        kept = []
        changed = removed = False  # removed ends up telling about the last block
        for block in blocks:
            removed = _is_usage_only(block)
            if not removed:
                kept.append(block)
                continue
            changed = True
            eols = len(block) - len(block.lstrip(_EOL))
            if eols:
                kept.append(block[:eols])  # blank lines (or an LF) ending the event before: theirs
        if not changed:
            return data if cut == len(data) else data[:cut]
        self._drop_eols = removed and cut == len(data)
        return b"".join(kept)
