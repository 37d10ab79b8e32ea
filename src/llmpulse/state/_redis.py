"""The state store every replica shares: one Redis, one Lua script per decision, failing open.

Why Redis and Lua. Per-tenant quotas are global in reality (the provider
counts every replica's calls against one key), so N replicas each limiting
locally admit N times the quota. Each decision here is one ``EVALSHA`` round
trip (100-200 us on loopback) that reads, decides and writes atomically; a
``GET`` + ``SET`` pair would race between replicas. The script is sent by
its SHA1 and re-sent whole only when the server answers ``NOSCRIPT`` (after
a restart or a ``SCRIPT FLUSH``).

Why server time. The scripts read the clock with ``redis.call('TIME')``, so
every replica decides on one clock: replica clocks that disagree by a few
milliseconds would otherwise shift a shared theoretical arrival time back
and forth. Redis >= 5 replicates a script's effects, not the script, so
reading the time before writing is allowed; ``SET ... PXAT`` needs
Redis >= 6.2.

Why fail open at limit / replicas. A rate limiter exists to protect a
quota, not to be a second thing that can take the service down, so when
Redis is unreachable, too slow (``timeout_s``, 50 ms by default) or answers
with an error, decisions are made by a local `MemoryStore` at each limit's
rate and burst divided by ``replicas``: N replicas deciding independently
then admit about the global limit together, as Envoy pairs its global rate
limit service (fail-open by default) with a per-proxy local limit. The
local counters of ``add`` are multiplied by ``replicas`` for the same
reason: each replica sees about 1/N of the traffic. The price is honesty
about precision: the split assumes an even load, and counts kept in Redis
before the outage are not carried over (the local state starts empty), and
neither are local ones back into Redis after it.

Every fallback decision calls ``on_fallback(reason)`` (for a metric); one
warning is logged on the "llmpulse" logger when Redis stops answering and
one info line when it answers again. While it is down, one caller at most
tries it again every ``retry_after_s`` seconds and the others decide
locally without waiting, so a dead server costs nothing per call. The URL
may carry a password: it is never logged nor shown in ``repr``; only
``host:port`` is.

Blocking is bounded: the async methods wrap the whole call in
``asyncio.timeout(timeout_s)``; the sync ones bound each socket operation
(connect, each read) by ``timeout_s``, so a call that must first open a
connection may take a few times that, once. redis-py's own retries are
turned off (it would retry 10 times by default).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import SplitResult, urlsplit

from ._base import GCRA_SLACK, GCRA_SLACK_S, GcraResult, check_gcra_args, check_window
from ._memory import MemoryStore

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["RedisStore"]

_log = logging.getLogger("llmpulse")
_T = TypeVar("_T")


class _Script:
    """A Lua script and its SHA1, computed here so no SCRIPT LOAD round trip is needed."""

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


# A line-by-line copy of llmpulse.state._base.gcra_step: the state is the string
# "stamp backlog" (TAT = stamp + backlog) and expires once the backlog drained.
_GCRA = _Script("""\
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local cost = tonumber(ARGV[3])
local interval = 1 / rate
local tau = tonumber(ARGV[2]) * interval
local limit = tau * (1 + tonumber(ARGV[4])) + tonumber(ARGV[5])
local stamp, backlog = 0, 0
local v = redis.call('GET', KEYS[1])
if v then
  local s, b = string.match(v, '^(%S+) (%S+)$')
  stamp, backlog = tonumber(s), tonumber(b)
end
local left = math.max(backlog - math.max(now - stamp, 0), 0)
local new = left + cost * interval
if cost < 0 then
  new = math.max(new, 0)
elseif new > limit then
  local retry = new - tau
  if cost * interval > limit then retry = -1 end
  return {0, string.format('%.17g', retry), string.format('%.17g', math.max(tau - left, 0) * rate)}
end
if new > 0 then
  redis.call('SET', KEYS[1], string.format('%.17g %.17g', now, new), 'PX', math.ceil(new * 1000) + 1)
else
  redis.call('DEL', KEYS[1])
end
return {1, '0', string.format('%.17g', math.max(tau - new, 0) * rate)}
""")

# The counter of the current fixed window, as "index total", expiring at the window's end.
_ADD = _Script("""\
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[2])
local index = math.floor(now / window)
local total = tonumber(ARGV[1])
local v = redis.call('GET', KEYS[1])
if v then
  local i, n = string.match(v, '^(%S+) (%S+)$')
  if tonumber(i) == index then total = total + tonumber(n) end
end
redis.call('SET', KEYS[1], string.format('%.17g %.17g', index, total), 'PXAT',
  string.format('%.17g', math.ceil((index + 1) * window * 1000)))
return string.format('%.17g', total)
""")

# The max of the stored and the new "until", expiring when it passes (server time).
_SET_UNTIL = _Script("""\
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local new = tonumber(ARGV[1])
local old = tonumber(redis.call('GET', KEYS[1]) or '0')
if new > now and new > old then
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', string.format('%.17g', math.ceil(new * 1000)))
end
return 1
""")

# Add to the fields of a hash, then keep it ttl ms after this write.
_ADD_FIELDS = _Script("""\
for i = 2, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
""")
_GET_FIELDS = _Script("""\
return redis.call('HGETALL', KEYS[1])
""")
_GCRA_NS = "gcra:"
_WINDOW_NS = "window:"
_UNTIL_NS = "until:"
_BLOB_NS = "blob:"
_FIELDS_NS = "fields:"
_SET_BLOB = _Script("""\
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
""")
_SCHEMES = ("redis", "rediss", "unix")


class RedisStore:
    """A `StateStore` shared by every replica that uses the same Redis; fails open to local limits.

    Clients are created on first use: one `redis.Redis` (thread-safe, pooled)
    for the sync methods and one `redis.asyncio.Redis` per event loop for the
    async ones (redis-py's asyncio connections belong to one loop). Needs the
    ``redis`` extra (``pip install 'llmpulse[redis]'``) and Redis >= 6.2.

    Args:
        url: ``redis://[[user]:[password]@]host[:port][/db]``, ``rediss://...``
            or ``unix://...``. Never logged or shown: it may hold a password.
        prefix: Prepended to every key, then ``gcra:``, ``window:`` or ``until:``.
        replicas: How many replicas share the limits; while Redis is
            unreachable each decides at every limit / ``replicas``.
        timeout_s: The longest a decision waits for Redis before deciding locally.
        retry_after_s: While Redis is unreachable, how often one caller tries it again.
        on_fallback: Called with the reason ("unreachable", "timeout" or
            "error") for every decision made locally. Exceptions from it are
            logged and swallowed.

    Raises:
        ImportError: The ``redis`` package is not installed.
        ValueError: The URL's scheme is not one of the three, or a number is out of range.

    """

    __slots__ = (
        "__weakref__",  # llmpulse.throttle() publishes to the stores in use, without keeping them alive
        "_aclients",
        "_callback_errors",
        "_client",
        "_down",
        "_errors",
        "_local",
        "_lock",
        "_no_script",
        "_on_fallback",
        "_prefix",
        "_reason",
        "_replicas",
        "_retry_after_s",
        "_retry_at",
        "_timeout_errors",
        "_timeout_s",
        "_unreachable_errors",
        "_url",
        "_where",
        "fallbacks",
    )

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "llmpulse:",
        replicas: int = 1,
        timeout_s: float = 0.05,
        retry_after_s: float = 5.0,
        on_fallback: Callable[[str], None] | None = None,
    ) -> None:
        try:
            import redis.exceptions  # noqa: PLC0415 - optional dependency
        except ImportError as exc:  # pragma: no cover - the dev extra installs it
            raise ImportError("RedisStore needs the redis package: pip install 'llmpulse[redis]'") from exc
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            # The message must not echo the URL: it may hold a password.
            raise ValueError("RedisStore url must start with redis://, rediss:// or unix://")
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas!r}")
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ValueError(f"timeout_s must be positive and finite, got {timeout_s!r}")
        if not (retry_after_s >= 0 and math.isfinite(retry_after_s)):
            raise ValueError(f"retry_after_s must be >= 0 and finite, got {retry_after_s!r}")
        self._url = url
        self._where = _where(parts)
        self._prefix = prefix
        self._replicas = replicas
        self._timeout_s = timeout_s
        self._retry_after_s = retry_after_s
        self._on_fallback = on_fallback
        self._no_script = redis.exceptions.NoScriptError
        # Checked in this order: the builtin TimeoutError is an OSError too.
        self._timeout_errors = (redis.exceptions.TimeoutError, TimeoutError)
        self._unreachable_errors = (redis.exceptions.ConnectionError, OSError)
        self._errors = (redis.exceptions.RedisError, OSError)
        self._local = MemoryStore()
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
            weakref.WeakKeyDictionary()
        )
        self._down = False
        self._reason = ""
        self._retry_at = 0.0
        self._callback_errors = 0
        self.fallbacks = 0  # decisions made locally, for telemetry

    def __repr__(self) -> str:
        state = "down" if self._down else "up"
        return f"RedisStore({self._where!r}, prefix={self._prefix!r}, replicas={self._replicas}, {state})"

    @property
    def degraded(self) -> bool:
        """True while Redis is considered unreachable and decisions are made locally."""
        return self._down

    # The StateStore methods: each builds its arguments, then one sync or async shell runs it.

    def gcra(self, key: str, *, rate_per_s: float, burst: float, cost: float = 1.0) -> GcraResult:
        """Admit ``cost`` against the shared limit ``key`` if it fits (see `StateStore.gcra`)."""
        check_gcra_args(rate_per_s, burst, cost)
        args = (repr(rate_per_s), repr(burst), repr(cost), repr(GCRA_SLACK), repr(GCRA_SLACK_S))
        raw = self._run(_GCRA, _GCRA_NS + key, args, lambda: self._local_gcra(key, rate_per_s, burst, cost))
        return raw if isinstance(raw, GcraResult) else _gcra_result(raw)

    async def agcra(self, key: str, *, rate_per_s: float, burst: float, cost: float = 1.0) -> GcraResult:
        """`gcra` for asyncio code."""
        check_gcra_args(rate_per_s, burst, cost)
        args = (repr(rate_per_s), repr(burst), repr(cost), repr(GCRA_SLACK), repr(GCRA_SLACK_S))
        raw = await self._arun(
            _GCRA, _GCRA_NS + key, args, lambda: self._local_gcra(key, rate_per_s, burst, cost)
        )
        return raw if isinstance(raw, GcraResult) else _gcra_result(raw)

    def add(self, key: str, amount: float, *, window_s: float) -> float:
        """Add to the shared counter of the current fixed window; return its total (see `StateStore.add`)."""
        check_window(amount, window_s)
        raw = self._run(
            _ADD,
            _WINDOW_NS + key,
            (repr(amount), repr(window_s)),
            lambda: self._local_add(key, amount, window_s),
        )
        return raw if isinstance(raw, float) else float(raw)

    async def aadd(self, key: str, amount: float, *, window_s: float) -> float:
        """`add` for asyncio code."""
        check_window(amount, window_s)
        raw = await self._arun(
            _ADD,
            _WINDOW_NS + key,
            (repr(amount), repr(window_s)),
            lambda: self._local_add(key, amount, window_s),
        )
        return raw if isinstance(raw, float) else float(raw)

    def get_until(self, key: str) -> float:
        """The shared "paused until" epoch seconds under ``key``, or 0.0 (see `StateStore.get_until`).

        Also consults the local store, so a pause recorded while Redis was
        unreachable still holds once it is back.
        """
        raw = self._run(None, _UNTIL_NS + key, (), lambda: None)
        return max(_until(raw), self._local.get_until(key))

    async def aget_until(self, key: str) -> float:
        """`get_until` for asyncio code."""
        raw = await self._arun(None, _UNTIL_NS + key, (), lambda: None)
        return max(_until(raw), self._local.get_until(key))

    def get_blob(self, key: str) -> bytes | None:
        """The bytes stored under ``key`` (see `set_blob`), or None; None too while Redis is down."""
        raw = self._run(None, _BLOB_NS + key, (), lambda: None)
        return bytes(raw) if isinstance(raw, bytes | bytearray) else None

    async def aget_blob(self, key: str) -> bytes | None:
        """`get_blob` for asyncio code."""
        raw = await self._arun(None, _BLOB_NS + key, (), lambda: None)
        return bytes(raw) if isinstance(raw, bytes | bytearray) else None

    def set_blob(self, key: str, value: bytes, *, ttl_s: float) -> None:
        """Store ``value`` under ``key`` for ``ttl_s`` seconds (lost, not queued, while Redis is down)."""
        ttl_ms = str(max(1, int(ttl_s * 1000)))
        self._run(_SET_BLOB, _BLOB_NS + key, (value, ttl_ms), lambda: None)

    def add_fields(self, key: str, amounts: Mapping[str, float], *, ttl_s: float) -> None:
        """Add to the fields of the shared record ``key`` (kept in this process while Redis is down)."""
        args: list[str] = [str(max(1, int(ttl_s * 1000)))]
        for name, amount in amounts.items():
            args += (name, repr(float(amount)))
        fallback = functools.partial(self._local.add_fields, key, amounts, ttl_s=ttl_s)
        self._run(_ADD_FIELDS, _FIELDS_NS + key, tuple(args), fallback)

    def get_fields(self, key: str) -> dict[str, float]:
        """The fields of the shared record ``key`` (this process's part only while Redis is down)."""
        raw = self._run(_GET_FIELDS, _FIELDS_NS + key, (), lambda: self._local.get_fields(key))
        if isinstance(raw, dict):
            return raw
        pairs = iter(raw or ())
        return {_text(name): float(value) for name, value in zip(pairs, pairs, strict=False)}

    def set_until(self, key: str, until: float) -> None:
        """Keep the later of the shared and the new "until" (see `StateStore.set_until`)."""
        self._run(_SET_UNTIL, _UNTIL_NS + key, (repr(until),), lambda: self._local.set_until(key, until))

    async def aset_until(self, key: str, until: float) -> None:
        """`set_until` for asyncio code."""
        await self._arun(
            _SET_UNTIL, _UNTIL_NS + key, (repr(until),), lambda: self._local.set_until(key, until)
        )

    def close(self) -> None:
        """Close the sync client's connections (a later call opens new ones)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the connections of the running event loop's async client."""
        with self._lock:
            client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    # The two shells: the only code that does I/O. They differ only by `await`.

    def _run(
        self, script: _Script | None, key: str, args: tuple[str | bytes, ...], local: Callable[[], _T]
    ) -> Any:
        """Run ``script`` (None: GET) on ``key``; on failure, or while Redis is down, return ``local()``."""
        if self._down and not self._claim_retry():
            return self._fall_back(local, self._reason)
        try:
            client = self._client
            if client is None:
                client = self._sync_client()
            name = self._prefix + key
            if script is None:
                raw = client.get(name)
            else:
                try:
                    raw = client.evalsha(script.sha, 1, name, *args)
                except self._no_script:
                    raw = client.eval(script.text, 1, name, *args)
        except self._errors as exc:
            return self._fall_back(local, self._failed(exc))
        if self._down:
            self._recovered()
        return raw

    async def _arun(
        self, script: _Script | None, key: str, args: tuple[str, ...], local: Callable[[], _T]
    ) -> Any:
        """`_run` for asyncio code; the whole call is bounded by ``timeout_s``."""
        if self._down and not self._claim_retry():
            return self._fall_back(local, self._reason)
        try:
            client = self._async_client()
            name = self._prefix + key
            async with asyncio.timeout(self._timeout_s):
                if script is None:
                    raw = await client.get(name)
                else:
                    try:
                        raw = await client.evalsha(script.sha, 1, name, *args)
                    except self._no_script:
                        raw = await client.eval(script.text, 1, name, *args)
        except self._errors as exc:
            return self._fall_back(local, self._failed(exc))
        if self._down:
            self._recovered()
        return raw

    def _sync_client(self) -> redis.Redis:
        import redis  # noqa: PLC0415 - optional dependency
        from redis.backoff import NoBackoff  # noqa: PLC0415
        from redis.retry import Retry  # noqa: PLC0415

        with self._lock:
            if self._client is None:
                self._client = redis.Redis.from_url(
                    self._url,
                    socket_timeout=self._timeout_s,
                    socket_connect_timeout=self._timeout_s,
                    retry=Retry(NoBackoff(), 0),
                )
            return self._client

    def _async_client(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is not None:
            return client
        import redis.asyncio  # noqa: PLC0415 - optional dependency
        from redis.asyncio.retry import Retry  # noqa: PLC0415
        from redis.backoff import NoBackoff  # noqa: PLC0415

        with self._lock:
            client = self._aclients.get(loop)
            if client is None:
                client = redis.asyncio.Redis.from_url(
                    self._url,
                    socket_timeout=self._timeout_s,
                    socket_connect_timeout=self._timeout_s,
                    retry=Retry(NoBackoff(), 0),
                )
                self._aclients[loop] = client
            return client

    # Fallback bookkeeping: one lock, held for a few assignments, never while waiting on Redis.

    def _local_gcra(self, key: str, rate_per_s: float, burst: float, cost: float) -> GcraResult:
        n = self._replicas
        return self._local.gcra(key, rate_per_s=rate_per_s / n, burst=burst / n, cost=cost)

    def _local_add(self, key: str, amount: float, window_s: float) -> float:
        return self._local.add(key, amount, window_s=window_s) * self._replicas

    def _claim_retry(self) -> bool:
        """While down: True for the one caller that may try Redis now; the others decide locally."""
        with self._lock:
            if not self._down:
                return True
            now = time.monotonic()
            if now < self._retry_at:
                return False
            self._retry_at = now + self._retry_after_s
            return True

    def _failed(self, exc: BaseException) -> str:
        """Mark Redis down (warning once per outage); return the reason for `on_fallback`."""
        if isinstance(exc, self._timeout_errors):
            reason = "timeout"
        elif isinstance(exc, self._unreachable_errors):
            reason = "unreachable"
        else:
            reason = "error"
        with self._lock:
            first = not self._down
            self._down = True
            self._reason = reason
            self._retry_at = time.monotonic() + self._retry_after_s
        if first:
            # The exception's type only: redis-py's messages name host and port at most,
            # but nothing here should risk a URL.
            _log.warning(
                "llmpulse state store: Redis at %s failed (%s: %s); deciding quotas locally at 1/%d of "
                "each limit, trying Redis again every %g s",
                self._where,
                reason,
                type(exc).__name__,
                self._replicas,
                self._retry_after_s,
            )
        return reason

    def _recovered(self) -> None:
        with self._lock:
            was_down, self._down = self._down, False
        if was_down:
            _log.info("llmpulse state store: Redis at %s answers again; quotas are shared again", self._where)

    def _fall_back(self, local: Callable[[], _T], reason: str) -> _T:
        result = local()
        with self._lock:
            self.fallbacks += 1
        callback = self._on_fallback
        if callback is not None:
            try:
                callback(reason)
            except Exception:  # noqa: BLE001 - telemetry must never break a call
                with self._lock:
                    self._callback_errors += 1
                    errors = self._callback_errors
                if errors <= 3 or errors % 1000 == 0:
                    _log.warning("llmpulse state store on_fallback(%r) raised", reason, exc_info=True)
        return result


def url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, in words that never repeat it (None: nothing).

    Stricter than `RedisStore`, which leaves the port and database to redis-py
    at first use: settings check them when configured, not at the first call.
    """
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        return "it must start with redis://, rediss:// or unix://"
    if parts.scheme == "unix":
        return None if parts.path else "a unix:// URL needs the socket's path"
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        return "its port is not a number from 0 to 65535"
    db = parts.path.strip("/")
    if db and not db.isdigit():
        return "its path must be a database number (redis://host:6379/0)"
    return None


def _where(parts: SplitResult) -> str:
    """``host:port`` of the URL for logs and repr; never the user name or password."""
    if parts.scheme == "unix":
        return "unix socket"
    host = parts.hostname or "localhost"
    try:
        port = parts.port or 6379
    except ValueError:  # not a number: redis-py will refuse it (its message has no password)
        return host
    return f"{host}:{port}"


def _gcra_result(raw: Any) -> GcraResult:
    allowed, retry, remaining = raw
    retry_s = float(retry)
    return GcraResult(bool(allowed), math.inf if retry_s < 0 else retry_s, float(remaining))


def _until(raw: Any) -> float:
    return 0.0 if raw is None else float(raw)


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes | bytearray) else str(raw)
