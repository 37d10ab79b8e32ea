"""SSE as any server writes it: the event splitter, the stream watcher, and real SDK streams end to end."""

from __future__ import annotations

import itertools
import json
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import openai
import pytest
from prometheus_client import CollectorRegistry

import llmpulse
from conftest import MESSAGES
from llmpulse.providers import AnthropicProvider, OpenAIProvider, RequestInfo
from llmpulse.providers._sse import EventSplitter, SseEvent, StreamKind, StreamWatch, iter_events
from llmpulse.testing import CapturingSink


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


def _split_events(pieces: list[bytes]) -> list[SseEvent]:
    splitter = EventSplitter()
    events = [event for piece in pieces for event in splitter.feed(piece)]
    return events + splitter.close()


# -- the splitter -----------------------------------------------------------------


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_every_line_ending_reads_alike(eol: str) -> None:
    """LF, CRLF and lone CR line endings give the same events, with names."""
    data = f"event: a{eol}data: 1{eol}{eol}data: 2{eol}{eol}".encode()
    assert _split_events([data]) == [SseEvent(b"a", b"1"), SseEvent(b"", b"2")]
    assert list(iter_events(data)) == [SseEvent(b"a", b"1"), SseEvent(b"", b"2")]


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_an_event_cut_at_any_byte_is_read_whole(eol: str) -> None:
    """However the reads cut the stream (a CRLF between its CR and LF too), the events are the same."""
    data = f"data: {{}}{eol}{eol}event: x{eol}data: a{eol}data: b{eol}{eol}data: [DONE]{eol}{eol}".encode()
    expected = [SseEvent(b"", b"{}"), SseEvent(b"x", b"a\nb"), SseEvent(b"", b"[DONE]")]
    for cut in range(1, len(data)):
        assert _split_events(_split(data, [cut])) == expected, cut
    assert _split_events(_split(data, list(range(len(data))))) == expected


def test_a_crlf_split_between_reads_dispatches_at_the_cr() -> None:
    """The read that brings the CR of the blank line completes the event; the LF that follows adds none."""
    splitter = EventSplitter()
    assert splitter.feed(b"data: a\r\n\r") == [SseEvent(b"", b"a")]
    assert splitter.feed(b"\n") == []
    assert splitter.feed(b"data: b\r\n\r\n") == [SseEvent(b"", b"b")]


def test_multi_line_data_is_joined_with_lf() -> None:
    """Several data lines make one event, joined by LF, with one leading space dropped from each."""
    data = b'data: {\ndata:   "a": 1\ndata:}\n\n'
    [event] = _split_events([data])
    assert event.data == b'{\n  "a": 1\n}'
    assert json.loads(event.data) == {"a": 1}


def test_comments_and_other_fields_are_ignored() -> None:
    """Comment lines, comment-only blocks and id/retry/unknown fields dispatch nothing of their own."""
    data = b": keep-alive\n\n:x\ndata: 1\nid: 7\nretry: 10\nfoo: bar\n: mid\ndata: 2\n\n"
    assert _split_events([data]) == [SseEvent(b"", b"1\n2")]


def test_the_space_after_the_colon_is_optional() -> None:
    """data:x and data: x are the same; only one space is dropped; a bare field name has an empty value."""
    data = b"data:x\n\ndata: x\n\ndata:  x\n\ndata\n\n"
    values = [e.data for e in _split_events([data])]
    assert values == [b"x", b"x", b" x", b""]


def test_an_event_without_its_blank_line_is_held_until_close() -> None:
    """The bytes after the last blank line are not an event until the stream ends."""
    splitter = EventSplitter()
    assert splitter.feed(b"data: a\n\ndata: b") == [SseEvent(b"", b"a")]
    assert splitter.feed(b"\n") == []
    assert splitter.close() == [SseEvent(b"", b"b")]
    assert splitter.close() == []


def test_a_finished_stream_is_read_both_ways() -> None:
    """iter_events yields the same events forwards and backwards, the unterminated tail included."""
    data = b"data: 1\r\n\r\n: c\r\n\r\nevent: e\r\ndata: 2\r\n\r\n\r\ndata: 3"
    forwards = list(iter_events(data))
    assert forwards == [SseEvent(b"", b"1"), SseEvent(b"e", b"2"), SseEvent(b"", b"3")]
    assert list(iter_events(data, reverse=True)) == forwards[::-1]


# -- the watcher ------------------------------------------------------------------

CHAT_STREAM = (
    b'data: {"choices":[{"delta":{"role":"assistant","content":""}}],"usage":null}\n\n'
    b'data: {"choices":[{"delta":{"content":"Hello"}}],"usage":null}\n\n'
    b'data: {"choices":[{"delta":{},"finish_reason":"stop"}],"usage":null}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}\n\n'
    b"data: [DONE]\n\n"
)
USAGE_EVENT = b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}\n\n'
WITHOUT_USAGE = CHAT_STREAM.replace(USAGE_EVENT, b"")


def _watch_reads(watch: StreamWatch, pieces: list[bytes]) -> tuple[list[bytes], int | None]:
    """Feed the pieces; return what went on after each (and the drain) and which piece set content_seen."""
    out, seen = [], None
    for i, piece in enumerate(pieces):
        out.append(watch.feed(piece))
        if watch.content_seen and seen is None:
            seen = i
    return [*out, watch.drain()], seen


def _watch(watch: StreamWatch, pieces: list[bytes]) -> tuple[bytes, int | None]:
    """Feed the pieces; return what went on and the index of the piece that made content_seen true."""
    out, seen = _watch_reads(watch, pieces)
    return b"".join(out), seen


def test_whole_reads_are_passed_as_the_same_object() -> None:
    """A read that ends on an event boundary and holds no usage event is returned as is."""
    watch = StreamWatch("chat", strip_usage_chunk=True)
    first = CHAT_STREAM[: CHAT_STREAM.index(b"data: {", 10)]
    assert watch.feed(first) is first
    assert not watch.content_seen  # the role-only chunk is not output
    second = CHAT_STREAM[len(first) : CHAT_STREAM.index(b"data: {", len(first) + 10)]
    assert watch.feed(second) is second
    assert watch.content_seen


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, 61, 100, 1000])
def test_the_usage_event_is_hidden_however_the_stream_is_cut(size: int) -> None:
    """Cut into reads of any size, the caller gets whole events, all but the usage-only one."""
    watch = StreamWatch("chat", strip_usage_chunk=True)
    out = []
    for i in range(0, len(CHAT_STREAM), size):
        passed = watch.feed(CHAT_STREAM[i : i + size])
        assert passed == b"" or passed.endswith(b"\n\n")
        out.append(passed)
    out.append(watch.drain())
    assert b"".join(out) == WITHOUT_USAGE


@pytest.mark.parametrize(
    "render",
    [
        lambda s: s.replace(b'":', b'": ').replace(b",", b", "),
        lambda s: s.replace(b"\n", b"\r\n"),
        lambda s: s.replace(b"\n", b"\r"),
        lambda s: s.replace(b"data: ", b"data:"),
        lambda s: s.replace(b'{"choices":[]', b'{\ndata: "choices" :\n: comment\ndata: [ ]'),
    ],
    ids=["spaced", "crlf", "cr", "no-space", "multi-line"],
)
def test_the_usage_event_is_hidden_whatever_the_spelling(render: Callable[[bytes], bytes]) -> None:
    """Spaced JSON, CRLF, CR, data: without a space, a usage event over several lines: removed exactly."""
    stream, usage = render(CHAT_STREAM), render(USAGE_EVENT)
    assert usage in stream
    for size in (1, 5, 64, len(stream)):
        watch = StreamWatch("chat", strip_usage_chunk=True)
        out, seen = _watch(watch, [stream[i : i + size] for i in range(0, len(stream), size)])
        assert out == stream.replace(usage, b"")
        assert seen is not None


def test_a_truncated_tail_is_handed_over_at_drain() -> None:
    """A stream cut mid-event still reaches the caller in full when the body ends."""
    watch = StreamWatch("chat", strip_usage_chunk=True)
    cut = CHAT_STREAM[:-5]
    assert watch.feed(cut) + watch.drain() == WITHOUT_USAGE[:-5]


def test_the_lf_of_a_removed_crlf_event_goes_with_it() -> None:
    """A usage event whose last CRLF is split across reads is removed with its LF, and only it."""
    stream = CHAT_STREAM.replace(b"\n", b"\r\n")
    usage_end = stream.index(b"data: [DONE]")
    out, _ = _watch(StreamWatch("chat", strip_usage_chunk=True), _split(stream, [usage_end - 1]))
    assert out == WITHOUT_USAGE.replace(b"\n", b"\r\n")
    before_usage = stream.index(b'data: {"choices":[]')
    out, _ = _watch(StreamWatch("chat", strip_usage_chunk=True), _split(stream, [before_usage - 1]))
    assert out == WITHOUT_USAGE.replace(b"\n", b"\r\n")


def test_only_a_chunk_with_usage_and_no_choices_is_removed() -> None:
    """Azure's first chunk (choices [] with prompt_filter_results) and usage on a chunk with choices stay."""
    stream = (
        b'data: {"choices": [], "prompt_filter_results": [{"prompt_index": 0}], "model": ""}\n\n'
        b'data: {"choices": [{"delta": {"content": "Hi"}}], "usage": {"prompt_tokens": 1}}\n\n'
        b'data: {"choices":[],"usage":null}\n\n'
        b"data: [DONE]\n\n"
    )
    assert _watch(StreamWatch("chat", strip_usage_chunk=True), [stream]) == (stream, 0)


def test_without_strip_mode_every_byte_goes_on() -> None:
    """When the caller asked for usage, every read goes on unchanged, as the same object."""
    watch = StreamWatch("chat", strip_usage_chunk=False)
    pieces = _split(CHAT_STREAM, [10, 100, 150, 200, 250])
    assert [watch.feed(p) for p in pieces] == pieces
    assert all(watch.feed(p) is p for p in pieces)
    assert watch.drain() == b""


@pytest.mark.parametrize(
    ("kind", "event"),
    [
        ("chat", b'data: {"choices": [{"delta": {"content": "x"}}]}\n\n'),
        ("chat", b'data: {"choices": [{"delta": {"refusal": "no"}}]}\n\n'),
        ("chat", b'data: {"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{"}}]}}]}\n\n'),
        ("chat", b'data: {"choices": [{"text": "x", "index": 0}]}\n\n'),
        ("chat", b'data: {"choices": [{"delta":\ndata: {"content":\ndata: "x"}}]}\n\n'),
        ("responses", b'event: response.output_text.delta\ndata: {"delta": "x"}\n\n'),
        ("responses", b'data: {"type": "response.function_call_arguments.delta", "delta": "{"}\n\n'),
        ("anthropic", b'event: content_block_delta\r\ndata: {"type": "content_block_delta"}\r\n\r\n'),
    ],
)
def test_output_events(kind: StreamKind, event: bytes) -> None:
    """Each kind of output event sets content_seen in the read that completes it, not before."""
    watch = StreamWatch(kind, strip_usage_chunk=False)
    done = len(event) - (2 if event.endswith(b"\r\n") else 1)  # the blank line's CR or LF
    watch.feed(event[:done])
    assert not watch.content_seen
    watch.feed(event[done:])
    assert watch.content_seen


@pytest.mark.parametrize(
    ("kind", "event"),
    [
        ("chat", b'data: {"choices": [{"delta": {"role": "assistant", "content": ""}}]}\n\n'),
        ("chat", b'data: {"choices": [{"delta": {"content": null, "reasoning_content": "hmm"}}]}\n\n'),
        (
            "chat",
            b'data: {"choices":[{"delta":{"tool_calls":[{"function":{"name":"f","arguments":""}}]}}]}\n\n',
        ),
        ("chat", b'data: {"choices": [{"delta": {"content_filter": "text"}}]}\n\n'),
        ("responses", b'event: response.output_text.done\ndata: {"text": "response.output_text.delta"}\n\n'),
        ("anthropic", b'event: content_block_start\ndata: {"type": "content_block_start"}\n\n'),
        ("anthropic", b'event: ping\ndata: {"type": "ping", "note": "content_block_delta"}\n\n'),
        ("anthropic", b'data: {"type": "content_block_delta", "index": 0}\n\n'),  # unnamed: the SDK skips it
    ],
)
def test_events_that_are_not_output(kind: StreamKind, event: bytes) -> None:
    """Role-only, reasoning, empty-argument and lookalike events leave content_seen false."""
    watch = StreamWatch(kind, strip_usage_chunk=False)
    watch.feed(event)
    assert not watch.content_seen


# -- finished streams -----------------------------------------------------------

CHAT_INFO = RequestInfo(operation="chat", streamed=True)


@pytest.mark.parametrize(
    "tail",
    [
        b'data: {"model": "m", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}\n\n',
        b'data: {"model": "m", "choices": [{"delta": {}, "finish_reason": "stop"}],'
        b' "usage": {"prompt_tokens": 7, "completion_tokens": 2}}\n\n',
        b'data: {"model": "m", "choices": [{"delta": {}, "finish_reason": "stop"}],'
        b' "x_groq": {"id": "req_1", "usage": {"prompt_tokens": 7, "completion_tokens": 2}}}\n\n',
    ],
    ids=["usage-only chunk", "usage on the last chunk", "groq"],
)
def test_chat_usage_is_read_wherever_the_server_puts_it(tail: bytes) -> None:
    """Usage comes from the last chunk that has it: a usage-only chunk, a chunk with choices, or x_groq."""
    stream = (
        b'data: {"model": "m", "choices": [{"delta": {"content": "Hi"}}], "usage": null}\n\n'
        b'data: {"model": "m", "choices": [{"delta": {}, "finish_reason": "stop"}], "usage": null}\n\n'
        + tail
        + b"data: [DONE]\n\n"
    )
    parsed = OpenAIProvider().parse_stream(CHAT_INFO, stream)
    assert (parsed.input_tokens, parsed.output_tokens, parsed.finish_reason) == (7, 2, "stop")
    assert parsed.terminal is True


def test_an_error_event_in_a_chat_stream_is_the_sdks_api_error() -> None:
    """A chunk with a top-level error (which the SDK raises as APIError) makes the stream an error."""
    stream = (
        b'data: {"choices": [{"delta": {"content": "Hi"}}]}\r\n\r\n'
        b'data: {"error": {"message": "The server had an error", "type": "server_error"}}\r\n\r\n'
    )
    parsed = OpenAIProvider().parse_stream(CHAT_INFO, stream)
    assert (parsed.error_type, parsed.error_message) == ("APIError", "The server had an error")
    assert parsed.terminal is False


def test_a_cut_off_responses_stream_still_names_its_model() -> None:
    """Without response.completed the stream is not terminal, and the model comes from response.created."""
    stream = (
        b'event:response.created\ndata:{"type":"response.created","response":{"model":"gpt-4.1"}}\n\n'
        b'event:response.output_text.delta\ndata:{"type":"response.output_text.delta","delta":"Hi"}\n\n'
        b"event:response.output_text.delta\ndata:{"
    )
    parsed = OpenAIProvider().parse_stream(RequestInfo(operation="responses", streamed=True), stream)
    assert (parsed.terminal, parsed.response_model, parsed.input_tokens) == (False, "gpt-4.1", None)


def test_anthropic_stream_error_event() -> None:
    """An Anthropic error event names the SDK's exception; unnamed, the SDK skips it, and so do we."""
    start = (
        b'event: message_start\r\ndata: {"type": "message_start", "message": {"model": "c",'
        b' "usage": {"input_tokens": 3, "output_tokens": 1}}}\r\n\r\n'
    )
    error = b'data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\r\n\r\n'
    info = RequestInfo(operation="messages", streamed=True)
    parsed = AnthropicProvider().parse_stream(info, start + b"event: error\r\n" + error)
    assert (parsed.error_type, parsed.error_message) == ("OverloadedError", "overloaded_error: Overloaded")
    assert (parsed.input_tokens, parsed.output_tokens, parsed.terminal) == (3, None, False)
    assert AnthropicProvider().parse_stream(info, start + error).error_type is None


# -- random streams, every spelling -------------------------------------------------

_TEXTS = [
    "Hello",
    " world",
    'say "hi"',
    "back\\slash",
    "line\nbreak\r\n\r\n",
    "data: [DONE]\n\n",
    '"choices": []',
    '{"choices":[],"usage":{}}',
    "event: content_block_delta",
    "response.output_text.delta",
    "ünïcødé ✓ 🚀",
    "\u2028",
]


@dataclass
class _Case:
    """One stream as objects, and what parse_stream must read from it."""

    kind: StreamKind
    events: list[tuple[str | None, Any]]  # (event name, JSON object or "[DONE]")
    output: list[bool]  # per event: carries output
    usage_only: list[bool]  # per event: the chunk strip mode removes
    expected: tuple[Any, ...]  # input, output tokens, finish reason, model, terminal
    text: str
    named: bool = True


def _text(rng: random.Random) -> str:
    return rng.choice(_TEXTS) + rng.choice(["", "x", " y"])


def _chat_case(rng: random.Random) -> _Case:
    model = rng.choice(["gpt-4o-mini", "llama-3.1-8b-instant"])
    legacy = rng.random() < 0.2
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model}
    usage = {"prompt_tokens": rng.randint(1, 99999), "completion_tokens": rng.randint(0, 9999)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    where = rng.choice(["chunk", "chunk", "last", "x_groq"])
    nulls = {"usage": None} if where == "chunk" and rng.random() < 0.5 else {}

    def chunk(choice: dict[str, Any]) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "finish_reason": None, **choice}], **nulls}

    events: list[Any] = []
    output: list[bool] = []
    text = []
    if rng.random() < 0.2:  # Azure's content-filter chunk
        events.append({**base, "model": "", "choices": [], "prompt_filter_results": []})
        output.append(False)
    if not legacy:
        events.append(chunk({"delta": {"role": "assistant", "content": ""}}))
        output.append(False)
        if rng.random() < 0.3:
            events.append(chunk({"delta": {"content": None, "reasoning_content": _text(rng)}}))
            output.append(False)
        if rng.random() < 0.3:
            call = {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "f", "arguments": ""},
            }
            events.append(chunk({"delta": {"tool_calls": [call]}}))
            output.append(False)
    for _ in range(rng.randint(1, 5)):
        piece = _text(rng)
        if legacy:
            events.append(chunk({"text": piece}))
        else:
            what = rng.choice(["content", "content", "refusal", "arguments"])
            if what == "arguments":
                delta: dict[str, Any] = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            else:
                delta = {what: piece}
            events.append(chunk({"delta": delta}))
            if what != "refusal":
                text.append(piece)
        if legacy:
            text.append(piece)
        output.append(True)
    finish = rng.choice(["stop", "length", "tool_calls"])
    last = chunk(
        {"delta": {}, "finish_reason": finish} if not legacy else {"text": "", "finish_reason": finish}
    )
    if where == "last":
        last["usage"] = usage
    elif where == "x_groq":
        last["x_groq"] = {"id": "req_1", "usage": {**usage, "queue_time": 0.01}}
    events.append(last)
    output.append(False)
    usage_only = [False] * len(events)
    if where == "chunk":
        events.append({**base, "choices": [], "usage": usage})
        output.append(False)
        usage_only.append(True)
    events.append("[DONE]")
    output.append(False)
    usage_only.append(False)
    expected = (usage["prompt_tokens"], usage["completion_tokens"], finish, model, True)
    return _Case("chat", [(None, e) for e in events], output, usage_only, expected, "".join(text))


def _responses_case(rng: random.Random) -> _Case:
    model = "gpt-4.1-mini"
    seq = iter(range(100))

    def event(kind: str, **fields: Any) -> tuple[str, Any]:
        return kind, {"type": kind, "sequence_number": next(seq), **fields}

    created = {"id": "resp_1", "model": model, "status": "in_progress", "usage": None}
    events = [event("response.created", response=created), event("response.in_progress", response=created)]
    output = [False, False]
    text = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["response.output_text.delta", "response.function_call_arguments.delta"])
        piece = _text(rng)
        events.append(event(kind, delta=piece))
        output.append(True)
        if kind == "response.output_text.delta":
            text.append(piece)
    events.append(event("response.output_text.done", text="response.output_text.delta"))
    usage = {"input_tokens": rng.randint(1, 9999), "output_tokens": rng.randint(1, 999)}
    done = {**created, "status": rng.choice(["completed", "incomplete"]), "usage": usage}
    events.append(
        event(f"response.{'completed' if done['status'] == 'completed' else 'incomplete'}", response=done)
    )
    output += [False, False]
    expected = (usage["input_tokens"], usage["output_tokens"], done["status"], model, True)
    named = rng.random() < 0.7  # the SDK reads the type from the data
    return _Case("responses", events, output, [False] * len(events), expected, "".join(text), named)


def _anthropic_case(rng: random.Random) -> _Case:
    model = "claude-haiku-4-5"
    uncached, cached = rng.randint(1, 9999), rng.randint(0, 99)
    start_usage = {"input_tokens": uncached, "output_tokens": 1, "cache_read_input_tokens": cached}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "usage": start_usage}
    events: list[tuple[str, Any]] = [
        ("message_start", {"type": "message_start", "message": message}),
        ("content_block_start", {"type": "content_block_start", "index": 0}),
        ("ping", {"type": "ping"}),
    ]
    pieces = [_text(rng) for _ in range(rng.randint(1, 4))]
    for piece in pieces:
        delta = {"type": "text_delta", "text": piece}
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}))
    out_tokens = rng.randint(1, 999)
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": out_tokens},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    output = [name == "content_block_delta" for name, _ in events]
    expected = (uncached + cached, out_tokens, "end_turn", model, True)
    return _Case("anthropic", events, output, [False] * len(events), expected, "".join(pieces))


def _encode(obj: Any, style: str, rng: random.Random) -> str:
    if obj == "[DONE]":
        return obj
    if style in ("compact", "cr"):
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=rng.random() < 0.5)
    if style == "token-lines" or (style == "mixed" and rng.random() < 0.15):
        return json.dumps(obj, separators=(",\n", ":\n"))  # a data line per JSON token
    if style == "multi-line" or (style == "mixed" and rng.random() < 0.3):
        return json.dumps(obj, indent=rng.choice([1, 2, "\t"]), ensure_ascii=False)
    return json.dumps(obj, ensure_ascii=rng.random() < 0.5)  # spaced: ", " and ": "


def _render(name: str | None, obj: Any, style: str, rng: random.Random) -> tuple[bytes, int]:
    """One event as bytes in a style; and how far before its end it is complete (its last line ending)."""
    eol = {"crlf": "\r\n", "cr": "\r"}.get(style, "\n")
    space = " "
    if style == "mixed":
        eol = rng.choice(["\n", "\r\n", "\r"])
        space = rng.choice(["", " "])
    elif style == "cr":
        space = ""
    lines = [f"event:{space}{name}"] if name is not None else []
    data_lines = _encode(obj, style, rng).split("\n")
    for i, line in enumerate(data_lines):
        if style in ("mixed", "token-lines") and i and rng.random() < 0.1:
            lines.append(": in the middle of an event")
        lines.append(f"data:{space}{line}")
    extra = eol * (rng.random() < 0.1) if style == "mixed" else ""
    return (eol.join(lines) + eol + eol + extra).encode(), len((eol + extra).encode())


_STYLES = ["compact", "spaced", "crlf", "cr", "multi-line", "token-lines", "mixed"]


def _check(case: _Case, style: str, rng: random.Random) -> None:
    rendered: list[tuple[bytes, int, int]] = []  # bytes, event index or -1, tail length
    for i, (name, obj) in enumerate(case.events):
        if style == "mixed" and rng.random() < 0.15:
            eol = rng.choice(["\n", "\r\n", "\r"])
            rendered.append((f": ping{eol}{eol}".encode(), -1, len(eol)))  # a keep-alive comment
        raw, tail = _render(name if case.named or case.kind == "anthropic" else None, obj, style, rng)
        rendered.append((raw, i, tail))
    stream = b"".join(r for r, _, _ in rendered)
    strip = case.kind == "chat" and rng.random() < 0.7
    expected_out = b"".join(r for r, i, _ in rendered if not (strip and i >= 0 and case.usage_only[i]))
    # The read that completes the first output event: the one with the first byte of its last line ending.
    offset, first_output_at = 0, None
    for raw, i, tail in rendered:
        if first_output_at is None and i >= 0 and case.output[i]:
            first_output_at = offset + len(raw) - tail
        offset += len(raw)
    size = rng.choice([1, 3, 40, 500]) if rng.random() < 0.03 else 0  # sometimes every byte a read
    cuts = (
        list(range(size, len(stream), size))
        if size
        else rng.sample(range(1, len(stream)), rng.randint(0, 30))
    )
    pieces = _split(stream, cuts)
    watch = StreamWatch(case.kind, strip_usage_chunk=strip)
    reads, seen = _watch_reads(watch, pieces)
    assert b"".join(reads) == expected_out
    if strip:  # never half an event: what goes on ends inside the line endings after an event
        ends, offset = {0}, 0
        for raw, i, tail in rendered:
            if not (i >= 0 and case.usage_only[i]):
                offset += len(raw)
                ends.update(range(offset - tail + 1, offset + 1))
        assert set(itertools.accumulate(map(len, reads))) <= ends
    assert first_output_at is not None
    expected_seen = next(
        j for j, end in enumerate(itertools.accumulate(map(len, pieces))) if end > first_output_at
    )
    assert seen == expected_seen
    # What the splitter reads back is the objects themselves, whatever the spelling.
    events = _split_events(pieces)
    assert [e.data if e.data == b"[DONE]" else json.loads(e.data) for e in events] == [
        obj.encode() if obj == "[DONE]" else obj for _, obj in case.events
    ]
    info = RequestInfo(operation="responses" if case.kind == "responses" else "chat", streamed=True)
    provider = AnthropicProvider() if case.kind == "anthropic" else OpenAIProvider()
    parsed = provider.parse_stream(info, stream)
    read = (
        parsed.input_tokens,
        parsed.output_tokens,
        parsed.finish_reason,
        parsed.response_model,
        parsed.terminal,
    )
    assert read == case.expected
    assert provider.stream_text(stream) == case.text


def test_random_streams_in_every_spelling() -> None:
    """1,000 random streams x 7 spellings, cut at random: bytes minus just the usage event, TTFT, usage."""
    rng = random.Random(20261104)
    makers = [_chat_case, _chat_case, _responses_case, _anthropic_case]
    for n in range(1000):
        case = rng.choice(makers)(rng)
        for style in _STYLES:
            try:
                _check(case, style, rng)
            except AssertionError as exc:
                raise AssertionError(f"case {n}, style {style}: {case}") from exc


# -- end to end through the SDKs, against a server that writes spaced JSON and CRLF -------


def _sse(obj: Any, name: str | None = None) -> list[bytes]:
    """One event in Python's default JSON spelling with CRLF, cut in two between its last CR and LF.

    Named (Anthropic) events also leave out the space after each colon.
    """
    head, space = (f"event:{name}\r\n", "") if name else ("", " ")
    data = obj if isinstance(obj, str) else json.dumps(obj)
    raw = f"{head}data:{space}{data}\r\n\r\n".encode()
    return [raw[:-1], raw[-1:]]


CHAT_USAGE = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}


def _chat_reply(body: dict[str, Any]) -> Iterator[bytes]:
    base = {
        "id": "chatcmpl-e2e",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini",
    }
    extra = {"usage": None} if (body.get("stream_options") or {}).get("include_usage") else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            **base,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **extra,
        }

    yield from _sse(chunk({"role": "assistant", "content": "", "refusal": None}))
    for piece in ("Hello", " on-call", " engineer"):
        yield from _sse(chunk({"content": piece}))
    yield from _sse(chunk({}, "stop"))
    if extra:
        yield from _sse({**base, "choices": [], "usage": CHAT_USAGE})
    yield from _sse("[DONE]")


def _anthropic_reply(body: dict[str, Any]) -> Iterator[bytes]:
    usage = {
        "input_tokens": 20,
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 5,
    }
    message = {
        "id": "msg_e2e",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    yield from _sse({"type": "message_start", "message": message}, "message_start")
    block = {"type": "text", "text": ""}
    yield from _sse(
        {"type": "content_block_start", "index": 0, "content_block": block}, "content_block_start"
    )
    yield from _sse({"type": "ping"}, "ping")
    for piece in ("Hello", " there"):
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        yield from _sse(delta, "content_block_delta")
    yield from _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    end = {"stop_reason": "end_turn", "stop_sequence": None}
    yield from _sse({"type": "message_delta", "delta": end, "usage": {"output_tokens": 2}}, "message_delta")
    yield from _sse({"type": "message_stop"}, "message_stop")


class _SpacedServer:
    """A local OpenAI/Anthropic-compatible server whose streams are spaced JSON with CRLF."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.bodies.append(body)
                reply = _anthropic_reply if self.path.endswith("/messages") else _chat_reply
                self.send_response(200)
                self.send_header("content-type", "text/event-stream; charset=utf-8")
                self.end_headers()
                for piece in reply(body):
                    self.wfile.write(piece)
                    self.wfile.flush()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll interval: shutdown() waits for one.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture(name="spaced", scope="module")
def _spaced() -> Iterator[_SpacedServer]:
    server = _SpacedServer()
    yield server
    server.close()


def _oai(spaced: _SpacedServer) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url=spaced.url + "/v1", _strict_response_validation=True)


def _chat_stream(client: openai.OpenAI) -> openai.Stream[openai.types.chat.ChatCompletionChunk]:
    return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)  # type: ignore[arg-type]


async def _achat_stream(
    client: openai.AsyncOpenAI,
) -> openai.AsyncStream[openai.types.chat.ChatCompletionChunk]:
    return await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)  # type: ignore[arg-type]


def _messages_stream(client: anthropic.Anthropic) -> anthropic.Stream[anthropic.types.RawMessageStreamEvent]:
    return client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=MESSAGES, stream=True)  # type: ignore[arg-type]


def _assert_chat_event(event: llmpulse.CallEvent) -> None:
    assert event.outcome == "ok"
    assert (event.input_tokens, event.output_tokens) == (11, 3)
    assert event.tokens_estimated is False
    assert event.finish_reason == "stop"
    assert event.response_model == "gpt-4o-mini"
    assert event.ttft_s is not None
    assert 0 < event.ttft_s <= event.latency_s


def test_spaced_crlf_chat_stream_is_unchanged_and_measured(
    spaced: _SpacedServer, sink: CapturingSink, registry: CollectorRegistry
) -> None:
    """Spaced JSON with CRLF: the wrapped sync client yields the bare chunks; usage and TTFT are read."""
    bare_client = _oai(spaced)
    wrapped_client = llmpulse.wrap(bare_client, sinks=[sink], registry=registry)
    bare = [c.model_dump() for c in _chat_stream(bare_client)]
    wrapped = [c.model_dump() for c in _chat_stream(wrapped_client)]
    assert wrapped == bare
    assert len(bare) == 5
    assert "stream_options" not in spaced.bodies[-2]
    assert spaced.bodies[-1]["stream_options"] == {"include_usage": True}  # the server sent the usage chunk
    [event] = sink.calls
    _assert_chat_event(event)
    bare_client.close()


async def test_spaced_crlf_chat_stream_async(
    spaced: _SpacedServer, sink: CapturingSink, registry: CollectorRegistry
) -> None:
    """The async client against the same server: the bare chunks, usage and TTFT."""
    bare_client = openai.AsyncOpenAI(
        api_key="sk-test", base_url=spaced.url + "/v1", _strict_response_validation=True
    )
    wrapped_client = llmpulse.wrap(bare_client, sinks=[sink], registry=registry)
    bare = [c.model_dump() async for c in await _achat_stream(bare_client)]
    wrapped = [c.model_dump() async for c in await _achat_stream(wrapped_client)]
    assert wrapped == bare
    assert len(bare) == 5
    [event] = sink.calls
    _assert_chat_event(event)
    await bare_client.close()


def test_spaced_crlf_anthropic_stream_has_usage(
    spaced: _SpacedServer, sink: CapturingSink, registry: CollectorRegistry
) -> None:
    """Anthropic events spaced, CRLF, no space after colons: the caller gets the bare events, usage read."""
    bare_client = anthropic.Anthropic(
        api_key="sk-ant-test", base_url=spaced.url, _strict_response_validation=True
    )
    wrapped_client = llmpulse.wrap(bare_client, sinks=[sink], registry=registry)
    bare = [e.model_dump() for e in _messages_stream(bare_client)]
    wrapped = [e.model_dump() for e in _messages_stream(wrapped_client)]
    assert wrapped == bare
    [event] = sink.calls
    assert event.outcome == "ok"
    assert (event.input_tokens, event.cached_input_tokens, event.output_tokens) == (25, 5, 2)
    assert event.finish_reason == "end_turn"
    assert event.ttft_s is not None
    bare_client.close()
