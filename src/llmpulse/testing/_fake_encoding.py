"""Content codings for the fake provider: ``Accept-Encoding`` negotiation and the compressors.

gzip and deflate need only the standard library. ``br`` needs ``brotli`` and ``zstd`` needs
``backports.zstd`` (the standard library's ``compression.zstd`` from Python 3.14): the packages
the SDKs' HTTP client (httpx2) decodes them with, and without which it does not offer them.
"""

from __future__ import annotations

import re
import sys
import zlib
from typing import Any, Literal, Protocol

__all__ = ["ENCODINGS", "ContentEncoding", "Encoder", "check_available", "compress", "encoder", "negotiate"]

ContentEncoding = Literal["gzip", "deflate", "br", "zstd"]
"""A content coding the fake can answer in."""

ENCODINGS: tuple[ContentEncoding, ...] = ("gzip", "deflate", "br", "zstd")

# Moderate levels, as CDNs and API gateways use: brotli's default (11) takes ~100x longer than
# gzip, which would make the fake the bottleneck of a benchmark.
_ZLIB_LEVEL = 6
_BROTLI_QUALITY = 5
_ZSTD_LEVEL = 3

# RFC 9110 §12.4.2: a weight is 0 to 1 with at most three decimals.
_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")


class Encoder(Protocol):
    """An incremental compressor for one body."""

    def chunk(self, data: bytes) -> bytes:
        """Compress ``data`` and flush: the client can decode everything sent so far."""
        ...

    def finish(self, data: bytes = b"") -> bytes:
        """Compress the last ``data`` and end the body (trailer and checksum)."""
        ...


def negotiate(accept_encoding: str | None, coding: ContentEncoding) -> bool:
    """Whether a client sending this ``Accept-Encoding`` should get ``coding``.

    The coding must have a weight above zero, by name (``x-gzip`` counts as ``gzip``) or through
    ``*``, and not below the weight of ``identity`` (named, or through ``*``), so
    ``gzip;q=0.5, identity`` stays uncompressed. No header, or an empty one, means no compression,
    as real servers do, although RFC 9110 would allow any coding without the header. Elements with a
    malformed weight are ignored.

    Args:
        accept_encoding: The request's header, or None when it had none.
        coding: The coding the server would use.

    Returns:
        True to compress with ``coding``.
    """
    if not accept_encoding:
        return False
    weights: dict[str, float] = {}
    for element in accept_encoding.split(","):
        name, *params = (part.strip() for part in element.split(";"))
        weight: float | None = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                value = value.strip()
                weight = float(value) if _QVALUE.fullmatch(value) else None
        name = name.lower()
        if name and weight is not None:
            weights.setdefault("gzip" if name == "x-gzip" else name, weight)
    anything = weights.get("*", 0.0)
    wanted = weights.get(coding, anything)
    return wanted > 0 and wanted >= weights.get("identity", anything)


def check_available(coding: ContentEncoding) -> None:
    """Fail early when ``coding`` needs a package that is not installed.

    Args:
        coding: The coding.

    Raises:
        ImportError: Its compression library is missing (``brotli`` for ``br``, ``backports-zstd``
            for ``zstd`` before Python 3.14).
    """
    encoder(coding)


def encoder(coding: ContentEncoding) -> Encoder:
    """A fresh compressor for one body.

    Args:
        coding: The coding.

    Returns:
        The encoder.

    Raises:
        ImportError: Its compression library is missing.
    """
    if coding == "br":
        return _Brotli()
    if coding == "zstd":
        return _Zstd()
    # RFC 9110's "deflate" is the zlib format (RFC 1950), not a raw deflate stream.
    return _Zlib(31 if coding == "gzip" else 15)


def compress(data: bytes, coding: ContentEncoding) -> bytes:
    """Compress a whole body.

    Args:
        data: The body.
        coding: The coding.

    Returns:
        The compressed body.
    """
    return encoder(coding).finish(data)


class _Zlib:
    def __init__(self, wbits: int) -> None:
        self._compressor = zlib.compressobj(_ZLIB_LEVEL, zlib.DEFLATED, wbits)

    def chunk(self, data: bytes) -> bytes:
        return self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    def finish(self, data: bytes = b"") -> bytes:
        return self._compressor.compress(data) + self._compressor.flush()


class _Brotli:
    def __init__(self) -> None:
        try:
            import brotli  # noqa: PLC0415 - optional: only compress="br" needs it
        except ImportError as exc:
            raise ImportError("compress='br' needs the brotli package (pip install brotli)") from exc
        self._compressor: Any = brotli.Compressor(quality=_BROTLI_QUALITY)

    def chunk(self, data: bytes) -> bytes:
        return bytes(self._compressor.process(data) + self._compressor.flush())

    def finish(self, data: bytes = b"") -> bytes:
        return bytes(self._compressor.process(data) + self._compressor.finish())


class _Zstd:
    def __init__(self) -> None:
        try:
            if sys.version_info >= (3, 14):
                from compression.zstd import ZstdCompressor  # noqa: PLC0415 - optional
            else:
                from backports.zstd import ZstdCompressor  # noqa: PLC0415 - optional
        except ImportError as exc:
            raise ImportError(
                "compress='zstd' needs the backports-zstd package before Python 3.14"
                " (pip install backports-zstd), as httpx2 does to decode it"
            ) from exc
        self._compressor = ZstdCompressor(level=_ZSTD_LEVEL)

    def chunk(self, data: bytes) -> bytes:
        return self._compressor.compress(data, self._compressor.FLUSH_BLOCK)

    def finish(self, data: bytes = b"") -> bytes:
        return self._compressor.compress(data, self._compressor.FLUSH_FRAME)
