"""Decoding a compressed response body for inspection, at a bounded cost.

The SDK's HTTP stack receives the wire bytes and decodes them as it always
does; llmpulse decodes a copy, piece by piece as the SDK reads, to find the
usage, the error and the content in what the provider actually said.
Hosted APIs compress JSON answers whenever the client accepts it (the SDKs
send ``Accept-Encoding: gzip, deflate``, plus ``br`` and ``zstd`` when their
packages are installed), so this runs on ordinary healthy traffic.

The copy never costs more than a bounded multiple of what came over the
wire: decoding stops for good once it would produce more than
``_FREE_BYTES + _MAX_RATIO x wire bytes`` (JSON compresses 5-15x; a
decompression bomb, thousands to one). A coding with no decoder installed,
a corrupt stream or a stop leaves the body uninspected, never the call
failed: `BodyDecoder.stopped` says why.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["BodyDecoder", "decoder_for"]

# Output allowed beyond the ratio: what a small body with one very repetitive stretch may need.
_FREE_BYTES = 1024 * 1024
# Decoded bytes per wire byte beyond which the rest of the body is not decoded.
_MAX_RATIO = 32


class _Coding(Protocol):
    """One content coding's incremental decoder with an output cap per call."""

    def decode(self, data: bytes, max_length: int) -> bytes:
        """Decode ``data`` (may be empty: continue with held input) into at most ``max_length`` bytes."""

    @property
    def pending(self) -> bool:
        """Whether input or output is held back (more output may follow without new input)."""


class _Zlib:
    """gzip and deflate (zlib-wrapped, or raw as some servers send it)."""

    __slots__ = ("_d", "_raw_fallback", "_started")

    def __init__(self, wbits: int, *, raw_fallback: bool = False) -> None:
        self._d: Any = zlib.decompressobj(wbits)
        self._raw_fallback = raw_fallback
        self._started = False

    def decode(self, data: bytes, max_length: int) -> bytes:
        tail = self._d.unconsumed_tail
        try:
            out: bytes = self._d.decompress(tail + data if tail else data, max_length)
        except zlib.error:
            if not (self._raw_fallback and not self._started):
                raise
            # "deflate" is zlib-wrapped by the RFC, raw in practice for some servers.
            self._raw_fallback = False
            self._d = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._d.decompress(data, max_length)
        self._started = True
        return out

    @property
    def pending(self) -> bool:
        return bool(self._d.unconsumed_tail)


class _Brotli:
    """br, with the ``brotli`` package's output limit (brotli >= 1.2)."""

    __slots__ = ("_d", "_held")

    def __init__(self, module: Any) -> None:
        self._d = module.Decompressor()
        self._held = b""

    def decode(self, data: bytes, max_length: int) -> bytes:
        if not self._d.can_accept_more_data():
            # Output is still pending: only empty input may be passed until it is drained.
            self._held += data
            return bytes(self._d.process(b"", output_buffer_limit=max_length))
        data, self._held = self._held + data, b""
        return bytes(self._d.process(data, output_buffer_limit=max_length))

    @property
    def pending(self) -> bool:
        return bool(self._held) or not self._d.can_accept_more_data()


class _Zstd:
    """zstd with ``compression.zstd`` / ``backports.zstd`` (what httpx2 uses): capped per call."""

    __slots__ = ("_d", "_factory")

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._d = factory()

    def decode(self, data: bytes, max_length: int) -> bytes:
        out = b""
        while len(out) < max_length:
            if self._d.eof:  # a body may hold several frames
                data, self._d = self._d.unused_data + data, self._factory()
                if not data:
                    return out
            piece: bytes = self._d.decompress(data, max_length - len(out))
            out += piece
            data = b""
            if not self._d.eof:
                return out
        return out

    @property
    def pending(self) -> bool:
        return not self._d.needs_input and not self._d.eof


def _brotli() -> _Coding | None:
    try:
        import brotli  # noqa: PLC0415 - optional, as for the HTTP stacks
    except ImportError:
        return None
    if not hasattr(brotli.Decompressor(), "can_accept_more_data"):
        return None  # brotli < 1.2 has no output limit: not worth the risk
    return _Brotli(brotli)


def _zstd() -> _Coding | None:
    try:
        from compression.zstd import ZstdDecompressor  # type: ignore[import-not-found]  # noqa: PLC0415
    except ImportError:
        try:
            from backports.zstd import ZstdDecompressor  # noqa: PLC0415
        except ImportError:
            # The ``zstandard`` package (legacy httpx's decoder) has no output cap per call:
            # a zstd bomb would cost llmpulse gigabytes before any budget check.
            return None
    return _Zstd(ZstdDecompressor)


_CODINGS: dict[str, Callable[[], _Coding | None]] = {
    "gzip": lambda: _Zlib(zlib.MAX_WBITS | 16),
    "x-gzip": lambda: _Zlib(zlib.MAX_WBITS | 16),
    "deflate": lambda: _Zlib(zlib.MAX_WBITS, raw_fallback=True),
    "br": _brotli,
    "zstd": _zstd,
}


class BodyDecoder:
    """Decodes one body's content codings for inspection, within a budget.

    Attributes:
        encoding: The ``Content-Encoding`` as sent, normalised ("gzip", "gzip, br").
        stopped: Why the body is not (or no longer) decoded: ``"no_decoder:<coding>"``,
            ``"corrupt"`` or ``"ratio"``; None while decoding goes on.

    """

    __slots__ = ("_chain", "_out", "_wire", "encoding", "stopped")

    def __init__(self, encoding: str, chain: list[_Coding], stopped: str | None = None) -> None:
        self.encoding = encoding
        self._chain = chain
        self._wire = 0
        self._out = 0
        self.stopped = stopped

    def feed(self, wire: bytes, *, capped: bool = True) -> bytes:
        """Decode the next wire bytes; b"" once stopped.

        Args:
            wire: The bytes as they came over the network.
            capped: Enforce the budget (off only when the decoded bytes replace
                the wire bytes on their way to the SDK, which would decode them all anyway).

        """
        if self.stopped is not None:
            return b""
        self._wire += len(wire)
        budget = (_FREE_BYTES + _MAX_RATIO * self._wire - self._out) if capped else 1 << 62
        if budget < 1:
            self._stop("ratio")  # (a max_length of 0 would mean "no limit" to zlib)
            return b""
        data = wire
        try:
            for coding in self._chain:
                data = coding.decode(data, budget)
            over = any(coding.pending for coding in self._chain)
        except Exception:  # noqa: BLE001 - zlib.error, brotli.error, ZstdError: the SDK's stack reports it
            self._stop("corrupt")
            return b""
        self._out += len(data)
        if over:
            self._stop("ratio")
        return data

    def _stop(self, reason: str) -> None:
        self.stopped = reason
        self._chain = []


def decoder_for(content_encoding: str | None) -> BodyDecoder | None:
    """A decoder for a response's ``Content-Encoding``; None when the body is not encoded."""
    if not content_encoding:
        return None
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return None
    encoding = ", ".join(codings)
    chain = []
    # Codings are listed in the order they were applied: undo them last first.
    for name in reversed(codings):
        make = _CODINGS.get(name)
        coding = make() if make is not None else None
        if coding is None:
            return BodyDecoder(encoding, [], stopped=f"no_decoder:{name}")
        chain.append(coding)
    return BodyDecoder(encoding, chain)
