"""The opt-in response cache: the same request, asked again, answered without a call.

Caching static completions (a fixed prompt, a classification of a fixed
text) saves real money; caching anything derived from private, per-session
context is a data leak. So nothing is cached unless the caller says the
call is cacheable (``llmpulse.context(cache=True)``), never inside
``context(private=True)``, never a stream, never an error.

The key is the request as the provider would read it: provider, host, path
and the JSON body with its keys sorted (so ``{"a":1,"b":2}`` and
``{"b":2,"a":1}`` are one entry), hashed with BLAKE2b. The API key takes part
too (its fingerprint), so two tenants' keys never share answers. Entries live
for ``ttl_s`` in a bounded LRU in memory.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import orjson

__all__ = ["BlobStore", "CacheEntry", "RemoteCache", "ResponseCache", "cache_key"]


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A stored answer.

    Attributes:
        status: Its HTTP status (2xx).
        headers: Its headers, as (name, value) pairs.
        body: Its JSON body.
        cost_usd: What the call that fetched it cost (what a hit saves).
        stored_at: Clock time it was stored.

    """

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    cost_usd: float | None
    stored_at: float


def cache_key(provider: str, host: str, api_key_id: str, path: str, body: bytes) -> str | None:
    """The key of a request, or None when its body is not a JSON object (then it is not cached)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("stream") is True:
        return None
    canonical = orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    digest = hashlib.blake2b(canonical, digest_size=20)
    digest.update(f"\0{provider}\0{host}\0{api_key_id}\0{path}".encode())
    return digest.hexdigest()


class ResponseCache:
    """A bounded, thread-safe LRU of answers with a time to live.

    Args:
        ttl_s: How long an answer stays valid.
        max_entries: Answers kept at most (the least recently used go first).
        max_entry_bytes: Larger answers are not stored.
        clock: Monotonic seconds (tests inject a fake one).

    Raises:
        ValueError: A limit is not positive.

    """

    def __init__(
        self,
        *,
        ttl_s: float = 3600.0,
        max_entries: int = 1000,
        max_entry_bytes: int = 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not ttl_s > 0 or max_entries < 1 or max_entry_bytes < 1:
            raise ValueError("ResponseCache needs ttl_s > 0, max_entries >= 1 and max_entry_bytes >= 1")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_entry_bytes = max_entry_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self.hits = self.misses = self.stores = 0

    def get(self, key: str) -> CacheEntry | None:
        """The live answer stored under ``key``, if any."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and now - entry.stored_at < self.ttl_s:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry
            if entry is not None:
                del self._entries[key]  # expired
            self.misses += 1
            return None

    def put(
        self, key: str, status: int, headers: tuple[tuple[str, str], ...], body: bytes, cost_usd: float | None
    ) -> bool:
        """Store an answer; False when it is too large to keep."""
        if len(body) > self.max_entry_bytes:
            return False
        entry = CacheEntry(status, headers, body, cost_usd, self._clock())
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            self.stores += 1
        return True

    async def aget(self, key: str) -> CacheEntry | None:
        """`get` for async callers (memory: no I/O)."""
        return self.get(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class BlobStore(Protocol):
    """Bytes with a time to live, shared between replicas (``llmpulse.state.RedisStore``)."""

    def get_blob(self, key: str) -> bytes | None:
        """The bytes under ``key``, or None."""

    async def aget_blob(self, key: str) -> bytes | None:
        """`get_blob` for async callers."""

    def set_blob(self, key: str, value: bytes, *, ttl_s: float) -> None:
        """Store ``value`` for ``ttl_s`` seconds."""


class RemoteCache:
    """The response cache on a shared store, so every replica answers from it.

    Entries expire in the store itself; a store that cannot be reached
    makes every lookup a miss (the call goes out), never an error.

    Args:
        store: Where the answers live.
        ttl_s: How long an answer stays valid.
        max_entry_bytes: Larger answers are not stored.

    """

    def __init__(
        self, store: BlobStore, *, ttl_s: float = 3600.0, max_entry_bytes: int = 1024 * 1024
    ) -> None:
        self._store = store
        self.ttl_s = ttl_s
        self.max_entry_bytes = max_entry_bytes

    def get(self, key: str) -> CacheEntry | None:
        """The answer stored under ``key``, if any."""
        return _decode(self._store.get_blob("cache:" + key))

    async def aget(self, key: str) -> CacheEntry | None:
        """`get` for async callers."""
        return _decode(await self._store.aget_blob("cache:" + key))

    def put(
        self, key: str, status: int, headers: tuple[tuple[str, str], ...], body: bytes, cost_usd: float | None
    ) -> bool:
        """Store an answer; False when it is too large to keep."""
        if len(body) > self.max_entry_bytes:
            return False
        record = {
            "s": status,
            "h": headers,
            "b": base64.b64encode(body).decode(),
            "c": cost_usd,
            "t": time.time(),
        }
        self._store.set_blob("cache:" + key, orjson.dumps(record), ttl_s=self.ttl_s)
        return True


def _decode(raw: bytes | None) -> CacheEntry | None:
    if raw is None:
        return None
    try:
        record = orjson.loads(raw)
        headers = tuple((str(k), str(v)) for k, v in record["h"])
        return CacheEntry(int(record["s"]), headers, base64.b64decode(record["b"]), record["c"], record["t"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None  # an entry written by another version: a miss
