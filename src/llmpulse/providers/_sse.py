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
from collections.abc import Callable, Iterable, Iterator
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

# Every blank line contains one of these (CR LF alone is one line ending).
_PAIRS = (b"\n\n", b"\r\r", b"\n\r")
_LF_PAIR = (b"\n\n",)  # enough where there is no CR
# Whether `bytes.endswith` sees a blank line at the very end: a pair,
# possibly followed by the LF of a CRLF.
_ENDS_BLANK = (*_PAIRS, b"\n\r\n", b"\r\r\n")
_EOL = b"\r\n"
_CR, _LF = 13, 10
# What may stand between two JSON tokens in raw SSE bytes: JSON whitespace,
# and, where an event spreads its JSON over several lines, each line's
# "data:" and whole lines of other fields or comments. Possessive, so it
# never backtracks: the longest gap is always the right one, as no JSON
# token starts a raw line.
_GAP = rb"\s*+(?:(?<=[\r\n])(?:data:|(?!data:)[^\r\n]++)\s*+)*+"
# Hints: necessary conditions, on raw bytes (not on joined data, where a
# token may start a line), that an event is what we look for. Each starts
# with a literal, so the regex engine skips to it at C speed; JSON confirms.
_USAGE_HINT = re.compile(rb'"choices"' + _GAP + rb":" + _GAP + rb"\[" + _GAP + rb"\]")
_CHAT_HINT = re.compile(rb'"(?:content|refusal|arguments|text)"' + _GAP + rb":" + _GAP + rb'"(?!")')
_RESPONSES_HINT = re.compile(rb"response\.(?:output_text|function_call_arguments)\.delta")
_ANTHROPIC_HINT = re.compile(rb"content_block_delta")


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

    OpenAI's Responses API sends both, and its SDK reads the JSON field;
    some compatible servers send only that. (The Anthropic SDK reads only
    named events.)
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
    blocks = _blocks_reversed(data) if reverse else _blocks(data, len(data), tail=True)
    for block in blocks:
        event = parse_block(block)
        if event is not None:
            yield event


def _last_blank_end(data: bytes, start: int) -> int:
    """End of the last blank line in ``data`` that begins at or after ``start``; 0 if none.

    Every blank line contains LF LF, CR CR or LF CR (CR LF is a single line
    ending), so C-speed searches find it.
    """
    pos = data.rfind(b"\n\n", start)
    if data.find(b"\r", pos if pos > start else start) >= 0:  # only a CR after it can end a later one
        pos = max(pos, data.rfind(b"\r\r", start), data.rfind(b"\n\r", start))
    if pos < 0:
        return 0
    end = pos + 2
    if data[end - 1] == _CR and data[end : end + 1] == b"\n":
        end += 1  # the CR is half of a CRLF
    return end


def _next_pair(data: bytes, pairs: tuple[bytes, ...], start: int, stop: int) -> int:
    """Position of the first of ``pairs`` in ``data[start:stop]``, or -1.

    Searched in growing windows, so finding the next event costs about its
    length, not the stream's, even for a pair that never occurs.
    """
    width = 1024
    while True:
        hi = min(stop, start + width)
        found = [q for q in (data.find(pair, start, hi) for pair in pairs) if q >= 0]
        if found:
            return min(found)
        if hi >= stop:
            return -1
        start, width = hi - 1, width * 4  # a pair may straddle the window's edge


def _prev_pair(data: bytes, pairs: tuple[bytes, ...], stop: int) -> int:
    """Position of the last of ``pairs`` that ends by ``stop``, or -1 (windows as in `_next_pair`)."""
    width, hi = 1024, stop
    while True:
        lo = max(0, hi - width)
        found = max(data.rfind(pair, lo, hi) for pair in pairs)
        if found >= 0:
            return found
        if lo == 0:
            return -1
        hi, width = lo + 1, width * 4


def _blocks(data: bytes, stop: int, *, tail: bool = False) -> Iterator[bytes]:
    """Split ``data[:stop]`` into event blocks, which join back to it.

    Each block is an event's lines and every line ending after them (a run
    of CR and LF bytes holds a blank line unless it is one CRLF). Only the
    first block may start with line endings: the rest of a run the previous
    read ended in. Bytes after the last blank line are a block only if
    ``tail`` is set.
    """
    pairs = _PAIRS if data.find(b"\r", 0, stop) >= 0 else _LF_PAIR
    start = 0
    while (pos := _next_pair(data, pairs, start, stop)) >= 0:
        end = pos + 2
        while end < stop and data[end] in _EOL:
            end += 1
        yield data[start:end]
        start = end
    if tail and start < stop:
        yield data[start:stop]


def _blocks_reversed(data: bytes) -> Iterator[bytes]:
    """The blocks of `_blocks` (tail included), last first."""
    pairs = _PAIRS if b"\r" in data else _LF_PAIR
    end = len(data)
    while end > 0:
        lines_end = end  # where this block's lines end, before its line endings
        while lines_end and data[lines_end - 1] in _EOL:
            lines_end -= 1
        pos = _prev_pair(data, pairs, lines_end)
        start = 0
        if pos >= 0:
            start = pos + 2
            while start < lines_end and data[start] in _EOL:
                start += 1
        yield data[start:end]
        end = start


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
        end = _last_blank_end(data, len(rest) - 1 if rest else 0)
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


def _events(blocks: Iterable[bytes]) -> list[SseEvent]:
    return [event for event in map(parse_block, blocks) if event is not None]


def _is_usage_only(block: bytes) -> bool:
    # Confirmed on the parsed JSON: Azure's first chunk also has "choices": []
    # (with prompt_filter_results) and must reach the caller.
    if _USAGE_HINT.search(block) is None:
        return False
    event = parse_block(block)
    obj = event.json() if event is not None else None
    return obj is not None and obj.get("choices") == [] and isinstance(obj.get("usage"), dict)


def _nonempty(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _chat_output(event: SseEvent) -> bool:
    # The role-only first chunk has "content": "": not output.
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


def _named(name: bytes) -> Callable[[SseEvent], bool]:
    # The Anthropic SDK skips events without an event: line, whatever their data says.
    def test(event: SseEvent) -> bool:
        return event.name == name

    return test


class _Dialect(NamedTuple):
    hint: re.Pattern[bytes]
    is_output: Callable[[SseEvent], bool]


_DIALECTS: dict[str, _Dialect] = {
    "chat": _Dialect(_CHAT_HINT, _chat_output),
    "responses": _Dialect(
        _RESPONSES_HINT, _typed("response.output_text.delta", "response.function_call_arguments.delta")
    ),
    "anthropic": _Dialect(_ANTHROPIC_HINT, _named(b"content_block_delta")),
}


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
        split = self._split
        if not split._rest and chunk.endswith(_ENDS_BLANK):
            data, cut = chunk, len(chunk)  # EventSplitter.cut's common case, without the call
        else:
            data, cut = split.cut(chunk)
        if cut and not self.content_seen and self._output_in(data, cut):
            self.content_seen = True
            if not self.strips:
                split.take_rest()  # no longer needed
        if not self.strips:
            return chunk
        if not cut:
            return b""
        if _USAGE_HINT.search(data, 0, cut) is None:
            return data if cut == len(data) else data[:cut]
        return self._without_usage(data, cut)

    def drain(self) -> bytes:
        """Return the bytes still held back when the stream ends (an unterminated last event)."""
        rest = self._split.take_rest()
        return rest if self.strips else b""

    def _output_in(self, data: bytes, cut: int) -> bool:
        dialect = self._dialect
        if dialect.hint.search(data, 0, cut) is None:
            return False
        for block in _blocks(data, cut):
            if dialect.hint.search(block) is None:
                continue
            event = parse_block(block)
            if event is not None and dialect.is_output(event):
                return True
        return False

    def _without_usage(self, data: bytes, cut: int) -> bytes:
        blocks = list(_blocks(data, cut))
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
