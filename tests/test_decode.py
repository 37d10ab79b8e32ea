"""Decoding compressed bodies for inspection: every coding the HTTP stacks accept, at a bounded cost."""

from __future__ import annotations

import gzip
import json
import random
import zlib

import brotli
import pytest
from backports import zstd

from llmpulse._body import BodyWatcher
from llmpulse._decode import decoder_for
from llmpulse.providers._sse import StreamWatch

BODY = json.dumps(
    {"id": "chatcmpl-1", "choices": [{"message": {"content": "hi " * 2000}}], "usage": {"prompt_tokens": 3}}
).encode()


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


ENCODERS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "deflate-raw": _raw_deflate,
    "br": brotli.compress,
    "zstd": zstd.compress,
}


def _pieces(data: bytes, rng: random.Random) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rng.randint(1, 4096)
        out.append(data[i : i + n])
        i += n
    return out


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_each_coding_decodes_in_any_pieces(name: str) -> None:
    """Every coding decodes to the original body however the wire bytes are split."""
    wire = ENCODERS[name](BODY)
    for seed in range(5):
        decoder = decoder_for(name.removesuffix("-raw"))
        assert decoder is not None
        out = b"".join(decoder.feed(piece) for piece in _pieces(wire, random.Random(seed)))
        assert out == BODY
        assert decoder.stopped is None


def test_codings_applied_in_turn_are_undone_last_first() -> None:
    """``Content-Encoding: gzip, br`` means gzip first, then br: decoded br first."""
    decoder = decoder_for("gzip, br")
    assert decoder is not None
    assert decoder.encoding == "gzip, br"
    assert decoder.feed(brotli.compress(gzip.compress(BODY))) == BODY


def test_identity_and_no_header_need_no_decoder() -> None:
    """A body sent as is has nothing to decode."""
    assert decoder_for(None) is None
    assert decoder_for("") is None
    assert decoder_for("identity") is None


def test_a_coding_without_decoder_is_flagged_not_fatal() -> None:
    """An unknown coding leaves the body unread, with the reason, and decodes nothing."""
    decoder = decoder_for("compress")
    assert decoder is not None
    assert decoder.stopped == "no_decoder:compress"
    assert decoder.feed(b"anything") == b""


def test_corrupt_data_stops_decoding() -> None:
    """Garbage under a gzip header stops the copy; the SDK's own stack reports the error."""
    decoder = decoder_for("gzip")
    assert decoder is not None
    assert decoder.feed(b"not gzip at all") == b""
    assert decoder.stopped == "corrupt"


@pytest.mark.parametrize("name", ["gzip", "br", "zstd"])
def test_a_decompression_bomb_costs_a_bounded_multiple_of_the_wire(name: str) -> None:
    """100 MB of zeros in a few kB of wire: decoding stops near 1 MiB + 32x the wire bytes."""
    wire = ENCODERS[name](bytes(100_000_000))
    decoder = decoder_for(name)
    assert decoder is not None
    decoded = sum(len(decoder.feed(wire[i : i + 65536])) for i in range(0, len(wire), 65536))
    assert decoder.stopped == "ratio"
    # One more piece may be produced per call before the budget is checked again.
    assert decoded <= 1024 * 1024 + 32 * len(wire) + 2 * 1024 * 1024
    assert decoded < 5_000_000


def test_watcher_passes_the_same_bytes_on_and_keeps_a_decoded_copy() -> None:
    """A compressed JSON body goes to the SDK as wire bytes; the watcher keeps what they say."""
    wire = gzip.compress(BODY)
    headers = {"content-encoding": "gzip", "content-type": "application/json"}
    watcher = BodyWatcher(headers)
    pieces = _pieces(wire, random.Random(1))
    passed = [watcher.feed(piece) for piece in pieces]
    assert all(out is piece for out, piece in zip(passed, pieces, strict=True))
    assert watcher.data == BODY
    assert (watcher.wire_bytes, watcher.content_encoding, watcher.partial) == (len(wire), "gzip", False)
    assert headers["content-encoding"] == "gzip"


def test_watcher_keeps_the_head_and_a_tail_of_a_large_body() -> None:
    """Beyond 1 MiB only a tail is kept: usage at the end is still readable."""
    body = b'{"data": "' + b"x" * 3_000_000 + b'", "usage": {"prompt_tokens": 7}}'
    watcher = BodyWatcher(None)
    for i in range(0, len(body), 65536):
        watcher.feed(body[i : i + 65536])
    assert watcher.partial
    assert len(watcher.data) < 1024 * 1024 + 256 * 1024 + 65536
    assert watcher.data.endswith(b'"usage": {"prompt_tokens": 7}}')


def _chat_stream() -> bytes:
    events = [
        {"choices": [{"delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"delta": {"content": "Hello"}}]},
        {"choices": [{"delta": {}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}},
    ]
    body = b"".join(b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events)
    return body + b"data: [DONE]\n\n"


def _stream_watch(*, strip: bool) -> StreamWatch:
    return StreamWatch("chat", strip_usage_chunk=strip)


def test_a_compressed_stream_that_must_be_filtered_is_handed_over_decoded() -> None:
    """Hiding the usage event changes the bytes: the SDK gets them decoded, told so by its headers."""
    stream = _chat_stream()
    headers = {"content-encoding": "gzip", "content-length": "99", "content-type": "text/event-stream"}
    watcher = BodyWatcher(headers, stream=_stream_watch(strip=True), rewrites=True)
    assert "content-encoding" not in headers
    assert "content-length" not in headers
    wire = gzip.compress(stream)
    passed = b"".join(watcher.feed(piece) for piece in _pieces(wire, random.Random(2))) + watcher.drain()
    assert b'"choices":[]' not in passed
    assert passed == stream.replace(
        b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}\n\n', b""
    )
    assert watcher.content_at is not None
    assert watcher.data == stream


def test_a_compressed_stream_left_as_is_stays_compressed() -> None:
    """Without filtering, a compressed stream reaches the SDK as its wire bytes."""
    headers = {"content-encoding": "gzip", "content-type": "text/event-stream"}
    watcher = BodyWatcher(headers, stream=_stream_watch(strip=False))
    wire = gzip.compress(_chat_stream())
    assert watcher.feed(wire) is wire
    assert headers["content-encoding"] == "gzip"
    assert watcher.content_at is not None
