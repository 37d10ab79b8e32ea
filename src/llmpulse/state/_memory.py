"""The state store of one process: quotas kept in a dict, exact and ~2 us per decision.

The default when there is one replica, the test double for `RedisStore`, and
`RedisStore`'s fallback while Redis is unreachable. It does no I/O, so the
async methods simply call the sync ones.

Memory is bounded: at most ``max_keys`` keys (100,000 by default, about
35 MB with 30-character key names: ~350 bytes a key) across the three kinds
of state, the least recently written evicted first. Evicting a key forgets
its state, which fails open (an evicted limit starts again from a full
burst), and only happens while more keys than that are in use. State that
ran out (a drained GCRA backlog, a past window, a passed "until") is kept
until it is next used or evicted in its turn; it decides as if absent.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from ._base import GcraResult, check_gcra_args, check_window, gcra_step

__all__ = ["MemoryStore"]

# Each kind of state is two floats under (kind, key):
_GCRA = "gcra"  # (stamp, backlog): TAT = stamp + backlog
_WINDOW = "window"  # (window index, total)
_UNTIL = "until"  # (until, 0.0)

_Key = tuple[str, str]
_IDLE = (0.0, 0.0)


class MemoryStore:
    """A `StateStore` for one process: thread-safe, never blocks, bounded.

    Every method takes one `threading.Lock` for about a microsecond, so one
    object serves any mix of threads and asyncio tasks.

    Args:
        clock: Epoch seconds (``until`` values are epoch seconds); inject a fake
            one in tests.
        max_keys: The most keys kept; the least recently written is evicted
            beyond it.

    Raises:
        ValueError: ``max_keys`` is less than 1.

    """

    __slots__ = ("_clock", "_data", "_fields", "_lock", "_max_keys", "evicted")

    def __init__(self, clock: Callable[[], float] = time.time, *, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        self._clock = clock
        self._max_keys = max_keys
        self._data: OrderedDict[_Key, tuple[float, float]] = OrderedDict()
        # Records of fields: key -> (expiry, fields).
        self._fields: OrderedDict[str, tuple[float, dict[str, float]]] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0  # keys evicted by the cap, for telemetry

    def __len__(self) -> int:
        """The number of keys held (of every kind, including ones that ran out but were not read since)."""
        return len(self._data)

    def __repr__(self) -> str:
        return f"MemoryStore(keys={len(self._data)}, max_keys={self._max_keys})"

    def gcra(self, key: str, *, rate_per_s: float, burst: float, cost: float = 1.0) -> GcraResult:
        """Admit ``cost`` against the limit ``key`` if it fits (see `StateStore.gcra`)."""
        check_gcra_args(rate_per_s, burst, cost)
        k = (_GCRA, key)
        with self._lock:
            now = self._clock()
            stamp, backlog = self._data.get(k, _IDLE)
            new, result = gcra_step(stamp, backlog, now, rate_per_s=rate_per_s, burst=burst, cost=cost)
            if new is not None:
                if new > 0.0:
                    self._put(k, (now, new))
                else:
                    self._data.pop(k, None)  # idle again: same as no state
        return result

    async def agcra(self, key: str, *, rate_per_s: float, burst: float, cost: float = 1.0) -> GcraResult:
        """`gcra` for asyncio code (no I/O: it does not yield)."""
        return self.gcra(key, rate_per_s=rate_per_s, burst=burst, cost=cost)

    def add(self, key: str, amount: float, *, window_s: float) -> float:
        """Add to the current fixed window's counter; return its total (see `StateStore.add`)."""
        check_window(amount, window_s)
        k = (_WINDOW, key)
        with self._lock:
            index = float(math.floor(self._clock() / window_s))
            old = self._data.get(k)
            total = amount + old[1] if old is not None and old[0] == index else amount
            self._put(k, (index, total))
        return total

    async def aadd(self, key: str, amount: float, *, window_s: float) -> float:
        """`add` for asyncio code (no I/O: it does not yield)."""
        return self.add(key, amount, window_s=window_s)

    def get_until(self, key: str) -> float:
        """The "paused until" epoch seconds under ``key``, or 0.0 (see `StateStore.get_until`)."""
        k = (_UNTIL, key)
        with self._lock:
            value = self._data.get(k)
            if value is None:
                return 0.0
            if value[0] <= self._clock():
                del self._data[k]
                return 0.0
            return value[0]

    async def aget_until(self, key: str) -> float:
        """`get_until` for asyncio code (no I/O: it does not yield)."""
        return self.get_until(key)

    def set_until(self, key: str, until: float) -> None:
        """Keep the later of the stored and the new "until" (see `StateStore.set_until`)."""
        k = (_UNTIL, key)
        with self._lock:
            if until <= self._clock():
                return  # already passed: nothing to remember
            old = self._data.get(k)
            if old is None or until > old[0]:
                self._put(k, (until, 0.0))

    async def aset_until(self, key: str, until: float) -> None:
        """`set_until` for asyncio code (no I/O: it does not yield)."""
        self.set_until(key, until)

    def add_fields(self, key: str, amounts: Mapping[str, float], *, ttl_s: float) -> None:
        """Add to the fields of the record ``key`` (see `StateStore.add_fields`)."""
        with self._lock:
            now = self._clock()
            found = self._fields.get(key)
            fields = found[1] if found is not None and found[0] > now else {}
            for name, amount in amounts.items():
                fields[name] = fields.get(name, 0.0) + amount
            self._fields[key] = (now + ttl_s, fields)
            self._fields.move_to_end(key)
            if len(self._fields) > self._max_keys:
                self._fields.popitem(last=False)
                self.evicted += 1

    def get_fields(self, key: str) -> dict[str, float]:
        """The fields of the record ``key`` (see `StateStore.get_fields`)."""
        with self._lock:
            found = self._fields.get(key)
            if found is None or found[0] <= self._clock():
                return {}
            return dict(found[1])

    def _put(self, k: _Key, value: tuple[float, float]) -> None:
        """Store and mark as most recent, evicting the least recent beyond the cap (lock held)."""
        data = self._data
        data[k] = value
        data.move_to_end(k)
        if len(data) > self._max_keys:
            data.popitem(last=False)
            self.evicted += 1
