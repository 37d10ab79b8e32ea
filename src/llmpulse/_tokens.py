"""Token estimates: a free pre-flight guess on every call, and offline-safe counting when usage is missing.

tiktoken downloads encodings on first use, with no timeout and under a
global lock (sdk-facts.md §13); in a sandbox without network that can hang
a call forever. So encodings are only ever loaded from what is already on
disk, failures are remembered, and without an encoding a script-aware
heuristic answers, labelled as such.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from typing import Any

__all__ = ["TokenCounter", "estimate_request_tokens", "heuristic_tokens"]

_log = logging.getLogger("llmpulse")

# Blob URLs tiktoken caches under sha1(url) (tiktoken_ext/openai_public.py).
_BLOBS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}


def estimate_request_tokens(body: bytes) -> int:
    """Guess a request's size in tokens from its JSON body: ``len / 4``, O(1).

    The SDKs send compact UTF-8 JSON, so the length is mostly prompt text.
    Against tiktoken's cl100k counts of the prompt text this is within
    about 10-25 % for English chat bodies of a few hundred bytes or more
    (JSON keys and roles add a few tokens' worth; tiny bodies overshoot),
    and low by about a quarter for CJK text (3 bytes per ~1 token). Good
    enough to show how big a prompt was when a call fails; never billed.
    """
    return max(1, (len(body) + 3) // 4)


def heuristic_tokens(text: str) -> int:
    """Estimate tokens without a tokenizer: ~4 chars per token, ~1 per CJK character."""
    if not text:
        return 0
    wide = sum(1 for ch in text if ord(ch) >= 0x2E80)
    return max(1, wide + (len(text) - wide + 3) // 4)


class TokenCounter:
    """Count tokens with tiktoken when an encoding is available offline, else the heuristic.

    Args:
        allow_download: Let tiktoken fetch a missing encoding, in a
            background thread with a deadline; the heuristic answers meanwhile.
        download_timeout_s: Give up waiting for a download after this long.
    """

    def __init__(self, *, allow_download: bool = False, download_timeout_s: float = 30.0) -> None:
        self._allow_download = allow_download
        self._download_timeout_s = download_timeout_s
        self._encodings: dict[str, Any] = {}
        self._failed: set[str] = set()
        self._downloading: set[str] = set()
        self._lock = threading.Lock()

    def count(self, text: str, model: str | None) -> tuple[int, str]:
        """Return (tokens, source), the source being e.g. ``"tiktoken:cl100k_base"`` or ``"heuristic"``."""
        encoding = self._encoding_for(model)
        if encoding is not None:
            try:
                return len(encoding.encode(text, disallowed_special=())), f"tiktoken:{encoding.name}"
            except Exception:  # noqa: BLE001 - fall back rather than fail
                pass
        return heuristic_tokens(text), "heuristic"

    def _encoding_for(self, model: str | None) -> Any:
        if not model:
            return None
        try:
            from tiktoken.model import encoding_name_for_model  # noqa: PLC0415 - lazy: tiktoken is heavy

            name = encoding_name_for_model(model)
        except Exception:  # noqa: BLE001 - unknown model (claude-*, fine-tunes): heuristic
            return None
        # o200k models are close enough to cl100k for an estimate when only that is on disk.
        for candidate in (name, "cl100k_base") if name != "cl100k_base" else (name,):
            encoding = self._load(candidate)
            if encoding is not None:
                return encoding
        return None

    def _load(self, name: str) -> Any:
        encoding = self._encodings.get(name)
        if encoding is not None or name in self._failed:
            return encoding
        import tiktoken.registry  # noqa: PLC0415

        if name in tiktoken.registry.ENCODINGS or _cached_on_disk(name):
            try:
                encoding = tiktoken.get_encoding(name)
            except Exception as exc:  # noqa: BLE001 - a corrupt cache must not break a call
                _log.info("llmpulse: tiktoken encoding %s unavailable (%s); using a heuristic", name, exc)
                with self._lock:
                    self._failed.add(name)
                return None
            self._encodings[name] = encoding
            return encoding
        if self._allow_download:
            self._download_in_background(name)
        else:
            with self._lock:
                self._failed.add(name)
        return None

    def _download_in_background(self, name: str) -> None:
        with self._lock:
            if name in self._downloading or name in self._failed:
                return
            self._downloading.add(name)
        result: dict[str, Any] = {}

        def fetch() -> None:
            try:
                import tiktoken  # noqa: PLC0415

                result["encoding"] = tiktoken.get_encoding(name)
            except Exception as exc:  # noqa: BLE001
                result["error"] = exc

        def supervise() -> None:
            # tiktoken's download has no timeout: watch it from outside.
            worker = threading.Thread(target=fetch, name=f"llmpulse-tiktoken-{name}", daemon=True)
            worker.start()
            worker.join(self._download_timeout_s)
            with self._lock:
                self._downloading.discard(name)
                if "encoding" in result:
                    self._encodings[name] = result["encoding"]
                else:
                    self._failed.add(name)

        threading.Thread(target=supervise, name="llmpulse-tiktoken", daemon=True).start()


def _cached_on_disk(name: str) -> bool:
    url = _BLOBS.get(name)
    if url is None:
        return False
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not cache_dir:
        return False
    return os.path.exists(os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest()))
