"""Signals every replica must see: emergency throttles and a provider's Retry-After pause.

With a shared store (Redis), `llmpulse.throttle()` and a 429's Retry-After
apply to every replica, not just the process that saw them. Reading them on
every call would add a round trip to every call, so each process keeps a
snapshot and refreshes it at most once a second, off the caller's thread
(the write-back worker): a replica picks up a new throttle or pause within
about a second. Writes are one round trip each, made off the caller's
thread too, except `throttle()`, which an operator calls and expects done.

A store is "shared" when it can hold blobs (`llmpulse.state.RedisStore`);
with the in-memory store these signals stay in the process, as before.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any, Protocol, TypeGuard

import orjson

from ..state import WRITE_BACK, StateStore
from ._cache import BlobStore

__all__ = ["SharedSignals", "elevated_until", "is_shared", "publish_elevation", "publish_throttle"]

# How stale a replica's view of the shared signals may get.
REFRESH_S = 1.0
_THROTTLES_KEY = "throttles"

Endpoint = tuple[str, str, str]


class SharedStore(StateStore, BlobStore, Protocol):
    """A store every replica sees: quotas, pauses and blobs (``llmpulse.state.RedisStore``)."""


# Every shared store some `Policies` uses: `throttle()` publishes to each.
_stores: weakref.WeakSet[Any] = weakref.WeakSet()


def is_shared(store: StateStore | None) -> TypeGuard[SharedStore]:
    """Whether ``store`` is seen by other replicas (it holds blobs: Redis)."""
    return store is not None and hasattr(store, "set_blob")


def register(store: SharedStore) -> None:
    """Make ``store`` receive the throttles `throttle()` applies from now on."""
    _stores.add(store)


def publish_throttle(tenant: str, requests_per_min: float, until: float) -> None:
    """Add a throttle to every shared store in use (read, merge, write: an operator's rare action)."""
    for store in list(_stores):
        now = time.time()
        table = {t: v for t, v in _decode(store.get_blob(_THROTTLES_KEY)).items() if v[1] > now}
        table[tenant] = (requests_per_min, until)
        ttl = max(v[1] for v in table.values()) - now
        store.set_blob(_THROTTLES_KEY, orjson.dumps(table), ttl_s=ttl)


def _decode(raw: bytes | None) -> dict[str, tuple[float, float]]:
    if not raw:
        return {}
    try:
        table = orjson.loads(raw)
        return {str(t): (float(v[0]), float(v[1])) for t, v in table.items()}
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError, IndexError, KeyError):
        return {}  # written by something else: no throttles rather than a crash in the call path


class SharedSignals:
    """One process's snapshot of the shared throttles and pauses of one store.

    Args:
        store: The shared store.
        monotonic: The policies' clock, to turn a shared pause into a local deadline.

    """

    def __init__(self, store: SharedStore, monotonic: Any) -> None:
        self._store = store
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._throttles: Mapping[str, tuple[float, float]] = {}
        self._pauses: dict[Endpoint, float] = {}  # epoch seconds
        self._due: dict[Any, float] = {}  # what -> when to refresh it next (monotonic)

    def throttles(self) -> Mapping[str, tuple[float, float]]:
        """Tenant -> (requests per minute, until epoch): the throttles every replica applies."""
        self._refresh_soon(_THROTTLES_KEY, self._read_throttles)
        return self._throttles

    def pause_until(self, endpoint: Endpoint) -> float | None:
        """The shared Retry-After pause of ``endpoint`` on the policies' clock, if one is on."""
        self._refresh_soon(endpoint, lambda: self._read_pause(endpoint))
        until = self._pauses.get(endpoint)
        if until is None:
            return None
        left = until - time.time()
        return self._monotonic() + left if left > 0 else None

    def publish_pause(self, endpoint: Endpoint, seconds: float) -> None:
        """Pause ``endpoint`` for every replica for ``seconds`` (written off the caller's thread)."""
        until = time.time() + seconds
        self._pauses[endpoint] = max(until, self._pauses.get(endpoint, 0.0))
        WRITE_BACK.submit(lambda: self._store.set_until(_pause_key(endpoint), until))

    def _refresh_soon(self, what: Any, read: Any) -> None:
        now = self._monotonic()
        if now < self._due.get(what, 0.0):
            return
        with self._lock:
            if now < self._due.get(what, 0.0):
                return
            self._due[what] = now + REFRESH_S  # one refresh in flight at a time
        WRITE_BACK.submit(read)

    def _read_throttles(self) -> None:
        self._throttles = _decode(self._store.get_blob(_THROTTLES_KEY))

    def _read_pause(self, endpoint: Endpoint) -> None:
        until = self._store.get_until(_pause_key(endpoint))
        if until > 0:
            self._pauses[endpoint] = until
        else:
            self._pauses.pop(endpoint, None)


def _pause_key(endpoint: Endpoint) -> str:
    return "pause:" + ":".join(endpoint)


# -- elevated sampling: llmpulse.elevate_sampling() in any replica ---------------------

_ELEVATED_KEY = "sampling:elevated"
_elevation = [0.0, -1.0]  # [until (epoch), next refresh (monotonic)]


def publish_elevation(until: float) -> None:
    """Elevate sampling in every replica until the epoch ``until`` (an operator's action: done at once)."""
    for store in list(_stores):
        store.set_until(_ELEVATED_KEY, until)
    _elevation[0] = max(_elevation[0], until)


def elevated_until() -> float:
    """Until when (epoch) some replica elevated sampling; refreshed at most once a second, off this thread."""
    now = time.monotonic()
    if now >= _elevation[1] and len(_stores):
        _elevation[1] = now + REFRESH_S
        WRITE_BACK.submit(_read_elevation)
    return _elevation[0]


def _read_elevation() -> None:
    _elevation[0] = max((store.get_until(_ELEVATED_KEY) for store in list(_stores)), default=0.0)
