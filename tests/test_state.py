"""The shared state store: GCRA, window counters and pauses, in memory and in a real Redis.

MemoryStore runs on a fake clock, so its vectors are exact. RedisStore runs
against a real ``redis-server`` (tests/redis_server.py) on real time, so its
checks use rates where a few milliseconds do not matter.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis

from llmpulse.state import GcraResult, MemoryStore, RedisStore, StateStore
from llmpulse.state._base import gcra_step
from redis_server import RedisServer, free_port

PASSWORD = "s3cret-pw-never-logged"
T0 = 1_800_000_000.0  # epoch-sized, so float precision is tested where it matters


class FakeClock:
    """Epoch seconds that move only when told."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(name="clock")
def _clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="mem")
def _mem(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock)


# ---------------------------------------------------------------- MemoryStore, fake clock

# rate 2/s: emission interval T = 0.5 s; burst 3: tolerance tau = 1.5 s.
# (seconds after T0, cost, allowed, retry_after_s, remaining)
GCRA_VECTOR = [
    (0.0, 1, True, 0.0, 2.0),  # a quiet key admits the burst at once...
    (0.0, 1, True, 0.0, 1.0),
    (0.0, 1, True, 0.0, 0.0),
    (0.0, 1, False, 0.5, 0.0),  # ...then refuses, and says when: one interval
    (0.5, 1, True, 0.0, 0.0),  # one per emission interval
    (0.75, 1, False, 0.25, 0.5),  # half an interval later: half a unit refilled, not enough
    (1.0, 1, True, 0.0, 0.0),
    (1.0, 4, False, math.inf, 0.0),  # more than the burst never fits
    (1.0, -2, True, 0.0, 2.0),  # a refund moves TAT back by 2 intervals
    (1.0, 2, True, 0.0, 0.0),  # cost > 1 (tokens)
    (5.0, 3, True, 0.0, 0.0),  # idle again: a cost equal to the burst fits
    (5.0, 2, False, 1.0, 0.0),
    (5.0, -10, True, 0.0, 3.0),  # a refund never moves TAT before now
    (5.0, 3, True, 0.0, 0.0),  # so it banks nothing beyond the burst
    (5.0, 0, True, 0.0, 0.0),  # a zero cost peeks
]


def test_gcra_vector(mem: MemoryStore, clock: FakeClock) -> None:
    """Each step of the table gets exactly the documented decision."""
    for i, (t, cost, allowed, retry, remaining) in enumerate(GCRA_VECTOR):
        clock.now = T0 + t
        got = mem.gcra("k", rate_per_s=2, burst=3, cost=cost)
        assert got == GcraResult(allowed, retry, remaining), f"step {i}: {(t, cost)}"


def test_gcra_refusal_changes_nothing(mem: MemoryStore) -> None:
    """A refused request, too big or too early, leaves the state as it was."""
    mem.gcra("k", rate_per_s=1, burst=10, cost=7)
    before = mem.gcra("k", rate_per_s=1, burst=10, cost=0)
    assert not mem.gcra("k", rate_per_s=1, burst=10, cost=4).allowed
    assert not mem.gcra("k", rate_per_s=1, burst=10, cost=11).allowed
    assert mem.gcra("k", rate_per_s=1, burst=10, cost=0) == before == GcraResult(True, 0.0, 3.0)
    assert mem.gcra("k", rate_per_s=1, burst=10, cost=3).allowed


@pytest.mark.parametrize(("rate", "burst"), [(100 / 60, 1000), (1 / 3, 50), (90_000 / 60, 90_000), (7, 7)])
def test_gcra_whole_burst_at_epoch_time(mem: MemoryStore, clock: FakeClock, rate: float, burst: int) -> None:
    """Exactly ``burst`` unit requests fit at one instant, then one per interval: float error refuses none."""
    clock.now = T0 + 0.123456
    results = [mem.gcra("k", rate_per_s=rate, burst=burst) for _ in range(burst + 1)]
    assert [r.allowed for r in results].count(True) == burst
    assert not results[-1].allowed
    assert results[-1].retry_after_s == pytest.approx(1 / rate, rel=1e-6)
    clock.now += results[-1].retry_after_s
    assert mem.gcra("k", rate_per_s=rate, burst=burst).allowed
    assert not mem.gcra("k", rate_per_s=rate, burst=burst).allowed


def test_gcra_retry_after_is_exact(mem: MemoryStore, clock: FakeClock) -> None:
    """Waiting exactly ``retry_after_s`` admits the request; 10 us less does not."""
    mem.gcra("k", rate_per_s=4, burst=2, cost=2)
    refused = mem.gcra("k", rate_per_s=4, burst=2, cost=1.5)
    assert refused == GcraResult(False, 0.375, 0.0)
    clock.now += 0.375 - 1e-5
    assert not mem.gcra("k", rate_per_s=4, burst=2, cost=1.5).allowed
    clock.now += 1e-5
    assert mem.gcra("k", rate_per_s=4, burst=2, cost=1.5).allowed


def test_gcra_clock_going_back(mem: MemoryStore, clock: FakeClock) -> None:
    """A clock that steps back drains nothing and admits nothing extra."""
    mem.gcra("k", rate_per_s=1, burst=2, cost=2)
    clock.now -= 100
    assert mem.gcra("k", rate_per_s=1, burst=2) == GcraResult(False, 1.0, 0.0)


def test_gcra_step_is_the_documented_arithmetic() -> None:
    """The pure step returns the backlog to store, or None for a refusal."""
    assert gcra_step(0.0, 0.0, T0, rate_per_s=2, burst=3, cost=1) == (0.5, GcraResult(True, 0.0, 2.0))
    assert gcra_step(T0, 1.5, T0, rate_per_s=2, burst=3, cost=1) == (None, GcraResult(False, 0.5, 0.0))
    assert gcra_step(T0, 1.5, T0 + 1, rate_per_s=2, burst=3, cost=-9) == (0.0, GcraResult(True, 0.0, 3.0))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate_per_s": 0, "burst": 1},
        {"rate_per_s": -1, "burst": 1},
        {"rate_per_s": math.inf, "burst": 1},
        {"rate_per_s": 1, "burst": 0},
        {"rate_per_s": 1, "burst": math.nan},
        {"rate_per_s": 1, "burst": 1, "cost": math.nan},
    ],
)
def test_gcra_bad_arguments(mem: MemoryStore, kwargs: dict[str, float]) -> None:
    """Arguments that make the arithmetic meaningless raise ValueError."""
    with pytest.raises(ValueError, match="must be"):
        mem.gcra("k", **kwargs)


def test_add_windows_roll_over(mem: MemoryStore, clock: FakeClock) -> None:
    """Totals accumulate within floor(now / window_s) and restart in the next window."""
    clock.now = 1000.0
    assert mem.add("k", 2, window_s=10) == 2
    clock.now = 1009.999
    assert mem.add("k", 3.5, window_s=10) == 5.5
    assert mem.add("k", -1, window_s=10) == 4.5
    assert mem.add("other", 1, window_s=10) == 1
    clock.now = 1010.0
    assert mem.add("k", 1, window_s=10) == 1
    clock.now = 1035.0
    assert mem.add("k", 0, window_s=10) == 0
    with pytest.raises(ValueError, match="window_s"):
        mem.add("k", 1, window_s=0)
    with pytest.raises(ValueError, match="amount"):
        mem.add("k", math.inf, window_s=1)


def test_until_keeps_max_and_expires(mem: MemoryStore, clock: FakeClock) -> None:
    """set_until keeps the later value; get_until returns 0.0 once it passed."""
    assert mem.get_until("k") == 0.0
    mem.set_until("k", T0 + 100)
    mem.set_until("k", T0 + 50)
    assert mem.get_until("k") == T0 + 100
    mem.set_until("k", T0 + 150)
    assert mem.get_until("k") == T0 + 150
    mem.set_until("past", T0 - 1)
    assert mem.get_until("past") == 0.0
    clock.now = T0 + 150
    assert mem.get_until("k") == 0.0
    assert len(mem) == 0


def test_kinds_do_not_mix(mem: MemoryStore) -> None:
    """One key name used for a limit, a counter and a pause keeps three separate states."""
    mem.set_until("k", T0 + 5)
    assert mem.add("k", 1, window_s=60) == 1
    assert mem.gcra("k", rate_per_s=1, burst=1) == GcraResult(True, 0.0, 0.0)
    assert mem.get_until("k") == T0 + 5


def test_key_cap_evicts_least_recently_written(clock: FakeClock) -> None:
    """At most max_keys keys are kept; the least recently written goes first."""
    mem = MemoryStore(clock, max_keys=3)
    for key in ("a", "b", "c"):
        mem.add(key, 1, window_s=60)
    mem.add("a", 1, window_s=60)  # a is now the most recent
    mem.add("d", 1, window_s=60)
    mem.add("e", 1, window_s=60)
    assert len(mem) == 3
    assert mem.evicted == 2
    assert mem.add("a", 0, window_s=60) == 2  # kept
    assert mem.add("b", 0, window_s=60) == 0  # evicted: starts again
    assert "keys=3" in repr(mem)
    with pytest.raises(ValueError, match="max_keys"):
        MemoryStore(max_keys=0)


def test_memory_threads_admit_exactly_the_burst(mem: MemoryStore) -> None:
    """Eight threads racing on one key admit exactly the burst: one lock, no lost updates."""
    admitted = [0] * 8

    def worker(i: int) -> None:
        for _ in range(500):
            admitted[i] += mem.gcra("k", rate_per_s=1e-6, burst=1000).allowed

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 1000


async def test_memory_async_twins(mem: MemoryStore, clock: FakeClock) -> None:
    """The async methods give the same answers as the sync ones."""
    assert await mem.agcra("k", rate_per_s=2, burst=1) == GcraResult(True, 0.0, 0.0)
    assert await mem.agcra("k", rate_per_s=2, burst=1) == GcraResult(False, 0.5, 0.0)
    assert await mem.aadd("k", 2, window_s=5) == 2
    await mem.aset_until("k", T0 + 1)
    assert await mem.aget_until("k") == T0 + 1


def test_stores_satisfy_the_protocol(mem: MemoryStore) -> None:
    """Both stores are StateStores (mypy --strict checks the same assignment in user code)."""
    stores: list[StateStore] = [mem, RedisStore("redis://localhost")]
    for store in stores:
        for name in ("gcra", "agcra", "add", "aadd", "get_until", "aget_until", "set_until", "aset_until"):
            assert callable(getattr(store, name))


# ---------------------------------------------------------------- RedisStore, real server


@pytest.fixture(name="server", scope="module")
def _server() -> Iterator[RedisServer]:
    with RedisServer(password=PASSWORD) as server:
        yield server


@pytest.fixture(name="raw")
def _raw(server: RedisServer) -> Iterator[redis.Redis]:
    with server.client() as client:
        yield client


@pytest.fixture(name="make_store")
def _make_store() -> Iterator[Callable[..., RedisStore]]:
    """RedisStores with a fresh prefix each (so tests share no keys), closed after the test."""
    stores: list[RedisStore] = []

    def make(url: str, **kwargs: Any) -> RedisStore:
        kwargs.setdefault("prefix", f"t-{uuid.uuid4().hex[:8]}:")
        # Generous unless a test is about timeouts: a busy CI machine must not make a
        # behaviour test fall back.
        kwargs.setdefault("timeout_s", 2.0)
        store = RedisStore(url, **kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture(name="store")
def _store(make_store: Callable[..., RedisStore], server: RedisServer) -> RedisStore:
    return make_store(server.url)


@pytest.fixture(name="astore")
async def _astore(make_store: Callable[..., RedisStore], server: RedisServer) -> AsyncIterator[RedisStore]:
    store = make_store(server.url)
    yield store
    await store.aclose()


def test_redis_gcra_burst_refusal_and_refund(store: RedisStore, raw: redis.Redis) -> None:
    """Burst admitted at once, then refused with retry_after ~ one interval; refunds and big costs."""
    kw = {"rate_per_s": 0.001, "burst": 5.0}  # 1000 s per unit: real time refills nothing here
    results = [store.gcra("k", **kw) for _ in range(6)]
    assert [r.allowed for r in results] == [True] * 5 + [False]
    assert [round(r.remaining) for r in results[:5]] == [4, 3, 2, 1, 0]
    assert results[5].retry_after_s == pytest.approx(1000, abs=1)
    too_big = store.gcra("k", cost=6, **kw)
    assert not too_big.allowed
    assert too_big.retry_after_s == math.inf
    refund = store.gcra("k", cost=-2, **kw)
    assert refund.allowed
    assert refund.remaining == pytest.approx(2, abs=0.01)
    assert store.gcra("k", cost=2, **kw).allowed
    assert not store.gcra("k", **kw).allowed
    assert store.gcra("k", cost=-100, **kw).remaining == pytest.approx(5, abs=0.01)  # never before now
    assert raw.get(f"{store._prefix}gcra:k") is None  # idle again: the key is gone
    store.gcra("k", **kw)
    assert 0 < raw.pttl(f"{store._prefix}gcra:k") <= 1_000_001  # expires when the backlog drains


def test_redis_gcra_whole_burst(store: RedisStore) -> None:
    """A burst of 1000 single requests is admitted whole on server time, then refused."""
    results = [store.gcra("k", rate_per_s=1e-3, burst=1000) for _ in range(1001)]
    assert [r.allowed for r in results].count(True) == 1000
    assert not results[-1].allowed


def test_redis_gcra_refills_at_the_rate(store: RedisStore) -> None:
    """After the burst, a request is admitted again once retry_after_s has passed (server clock)."""
    assert store.gcra("k", rate_per_s=20, burst=1).allowed
    refused = store.gcra("k", rate_per_s=20, burst=1)
    assert not refused.allowed
    assert 0 < refused.retry_after_s <= 0.05
    deadline = time.monotonic() + 5
    while not store.gcra("k", rate_per_s=20, burst=1).allowed:
        assert time.monotonic() < deadline


def test_redis_add_and_window_roll_over(store: RedisStore, raw: redis.Redis) -> None:
    """Counter totals accumulate in a window, restart in the next, and the key expires."""
    assert store.add("big", 2, window_s=1e7) == 2
    assert store.add("big", 3.5, window_s=1e7) == 5.5
    assert store.add("big", -0.5, window_s=1e7) == 5.0
    assert 0 < raw.pttl(f"{store._prefix}window:big") <= 1e10
    total = store.add("small", 1, window_s=0.2)
    assert 0 < raw.pttl(f"{store._prefix}window:small") <= 201  # expiry rounded up to the next ms
    deadline = time.monotonic() + 5
    while True:  # keep adding until a new window starts again from 1
        assert time.monotonic() < deadline
        previous, total = total, store.add("small", 1, window_s=0.2)
        if total < previous:
            break
    assert total == 1


def test_redis_until_keeps_max_and_expires(store: RedisStore, raw: redis.Redis) -> None:
    """set_until keeps the later value, sets an expiry at it, and ignores passed values."""
    now = time.time()
    assert store.get_until("k") == 0.0
    store.set_until("k", now + 100)
    store.set_until("k", now + 50)
    assert store.get_until("k") == now + 100
    assert 99_000 < raw.pttl(f"{store._prefix}until:k") <= 100_001
    store.set_until("past", now - 1)
    assert raw.exists(f"{store._prefix}until:past") == 0
    store.set_until("short", time.time() + 0.1)
    assert store.get_until("short") > 0
    deadline = time.monotonic() + 5
    while store.get_until("short") != 0.0:
        assert time.monotonic() < deadline


async def test_redis_async_twins(astore: RedisStore) -> None:
    """The async methods share the state and the answers of the sync ones."""
    kw = {"rate_per_s": 0.001, "burst": 2.0}
    assert (await astore.agcra("k", **kw)).allowed
    assert astore.gcra("k", **kw).allowed
    refused = await astore.agcra("k", **kw)
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(1000, abs=1)
    assert (await astore.agcra("k", cost=-1, **kw)).allowed
    assert await astore.aadd("c", 2, window_s=1e7) == 2
    assert astore.add("c", 1, window_s=1e7) == 3
    until = time.time() + 60
    await astore.aset_until("u", until)
    assert await astore.aget_until("u") == until
    assert astore.get_until("u") == until


def test_redis_async_from_two_event_loops(store: RedisStore) -> None:
    """Each event loop gets its own async client (redis-py's are bound to one loop)."""

    async def once() -> bool:
        allowed = (await store.agcra("k", rate_per_s=0.001, burst=2)).allowed
        await store.aclose()
        return allowed

    assert asyncio.run(once())
    assert asyncio.run(once())
    assert not asyncio.run(once())


def _calls(raw: redis.Redis, command: str) -> int:
    return int(raw.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


@pytest.mark.parametrize(
    ("kind", "command"),
    [("gcra", "evalsha"), ("add", "evalsha"), ("set_until", "evalsha"), ("get_until", "get")],
)
def test_redis_one_round_trip_per_decision(
    store: RedisStore, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch, kind: str, command: str
) -> None:
    """Each call sends one command and the server runs it once: EVALSHA (never EVAL), or GET."""
    ops: dict[str, Callable[[], object]] = {
        "gcra": lambda: store.gcra("k", rate_per_s=1, burst=1000),
        "add": lambda: store.add("k", 1, window_s=60),
        "set_until": lambda: store.set_until("k", time.time() + 60),
        "get_until": lambda: store.get_until("k"),
    }
    op = ops[kind]
    op()  # warm up: connect and load the script
    before, evals_before = _calls(raw, command), _calls(raw, "eval")
    sent: list[object] = []
    send = redis.connection.AbstractConnection.send_packed_command

    def counting_send(
        self: redis.connection.AbstractConnection, command: object, check_health: bool = True
    ) -> None:
        sent.append(command)
        send(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting_send)
    for _ in range(20):
        op()
    monkeypatch.undo()
    assert len(sent) == 20  # one request written per call (a pipeline would be one too)
    # Server side: one top-level command per call (GETs inside scripts count under "get" too,
    # so the script kinds are checked on evalsha only). The INFO call counts under "info".
    assert _calls(raw, command) - before == 20
    assert _calls(raw, "eval") == evals_before


def test_redis_script_reloaded_after_flush(store: RedisStore, raw: redis.Redis) -> None:
    """After SCRIPT FLUSH (or a restart) NOSCRIPT is answered by sending the script once."""
    assert store.gcra("k", rate_per_s=0.001, burst=3).allowed
    raw.script_flush()
    assert store.gcra("k", rate_per_s=0.001, burst=3).allowed
    assert store.gcra("k", rate_per_s=0.001, burst=3).allowed
    assert not store.gcra("k", rate_per_s=0.001, burst=3).allowed
    assert not store.degraded


CHILD = textwrap.dedent(
    """
    import sys
    from llmpulse.state import RedisStore

    store = RedisStore(sys.argv[1], prefix=sys.argv[2], timeout_s=2.0)
    store.get_until("warm-up")  # connect before the start signal
    print("ready", flush=True)
    sys.stdin.readline()
    admitted = sum(store.gcra("shared", rate_per_s=0.01, burst=50).allowed for _ in range(100))
    print(admitted, "fallbacks", store.fallbacks, flush=True)
    store.close()
    """
)


def test_four_processes_share_one_limit(server: RedisServer) -> None:
    """4 processes x 100 attempts on one key with burst 50 admit 50 in total (+ what the rate refills)."""
    prefix = f"mp-{uuid.uuid4().hex[:8]}:"
    rate = 0.01
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, server.url, prefix],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        started = time.monotonic()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=30)[0].split() for p in procs]
        elapsed = time.monotonic() - started
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs)
    assert [out[2] for out in outputs] == ["0"] * 4  # every decision was Redis's
    admitted = [int(out[0]) for out in outputs]
    assert 50 <= sum(admitted) <= 50 + math.floor(rate * elapsed), admitted


# ---------------------------------------------------------------- failing open


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "llmpulse" and r.levelno == level]


def test_fail_open_and_recover(
    make_store: Callable[..., RedisStore], caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stops: local decisions at limit / replicas, one warning; it restarts: shared again, one info."""
    caplog.set_level(logging.INFO, logger="llmpulse")
    reasons: list[str] = []
    with RedisServer(password=PASSWORD) as server:
        store = make_store(server.url, replicas=4, retry_after_s=0.2, on_fallback=reasons.append)
        assert store.gcra("before", rate_per_s=0.001, burst=40).allowed
        server.stop()

        # Burst 40 over 4 replicas: this replica admits 10 on its own.
        admitted = sum(store.gcra("k", rate_per_s=0.001, burst=40).allowed for _ in range(20))
        assert admitted == 10
        assert store.degraded
        assert reasons == ["unreachable"] * 20
        assert store.fallbacks == 20
        assert store.add("n", 1, window_s=1e7) == 4  # the local count, scaled to all replicas
        pause = time.time() + 60
        store.set_until("p", pause)  # recorded locally
        assert len(_records(caplog, logging.WARNING)) == 1

        server.start()  # same port
        deadline = time.monotonic() + 10
        while store.degraded:
            assert time.monotonic() < deadline, "RedisStore did not go back to Redis"
            store.gcra("probe", rate_per_s=1, burst=1)
            time.sleep(0.01)
        fallbacks = store.fallbacks
        assert store.gcra("after", rate_per_s=0.001, burst=1).allowed
        assert not store.gcra("after", rate_per_s=0.001, burst=1).allowed  # Redis's limit, not 1/4 of it
        assert store.fallbacks == fallbacks
        with server.client() as raw:
            assert raw.exists(f"{store._prefix}gcra:after") == 1
        assert store.get_until("p") == pause  # the pause set during the outage still holds
        store.close()

    warnings = _records(caplog, logging.WARNING)
    infos = [r for r in _records(caplog, logging.INFO) if "answers again" in r.getMessage()]
    assert len(warnings) == 1
    assert len(infos) == 1
    assert f"127.0.0.1:{server.port}" in warnings[0].getMessage()
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(store)


def test_unresponsive_redis_is_bounded_and_not_hammered(
    make_store: Callable[..., RedisStore], caplog: pytest.LogCaptureFixture
) -> None:
    """A server that accepts but never answers costs one timeout, then decisions are local and instant."""
    caplog.set_level(logging.INFO, logger="llmpulse")
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)  # the kernel completes handshakes; nobody ever reads or answers
        url = f"redis://:{PASSWORD}@127.0.0.1:{hole.getsockname()[1]}/0"
        reasons: list[str] = []
        store = make_store(url, timeout_s=0.05, retry_after_s=60, on_fallback=reasons.append)
        started = time.monotonic()
        first = store.gcra("k", rate_per_s=1, burst=1)
        took = time.monotonic() - started
        assert first.allowed
        assert 0.04 < took < 5.0
        started = time.monotonic()
        for _ in range(200):
            store.gcra("k", rate_per_s=1, burst=1)
        assert time.monotonic() - started < 2.0  # no more waiting on Redis (200 x 50 ms would be 10 s)
        assert reasons == ["timeout"] * 201
        store.close()
    assert len(_records(caplog, logging.WARNING)) == 1
    assert PASSWORD not in caplog.text


async def test_async_fail_open(
    make_store: Callable[..., RedisStore], caplog: pytest.LogCaptureFixture
) -> None:
    """With nothing listening, the async methods decide locally too, and log one warning."""
    caplog.set_level(logging.INFO, logger="llmpulse")
    reasons: list[str] = []
    store = make_store(
        f"redis://user:{PASSWORD}@127.0.0.1:{free_port()}",
        replicas=2,
        retry_after_s=60,
        on_fallback=reasons.append,
    )
    admitted = [(await store.agcra("k", rate_per_s=0.001, burst=4)).allowed for _ in range(4)]
    assert admitted == [True, True, False, False]
    assert await store.aadd("n", 1, window_s=1e7) == 2
    await store.aset_until("p", time.time() + 60)
    assert await store.aget_until("p") > 0
    assert reasons == ["unreachable"] * 7
    assert len(_records(caplog, logging.WARNING)) == 1
    assert PASSWORD not in caplog.text
    await store.aclose()


async def test_async_unresponsive_redis_bounded(make_store: Callable[..., RedisStore]) -> None:
    """The async path bounds the whole call by timeout_s."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        store = make_store(f"redis://127.0.0.1:{hole.getsockname()[1]}", timeout_s=0.05, retry_after_s=60)
        started = time.monotonic()
        assert (await store.agcra("k", rate_per_s=1, burst=1)).allowed
        assert time.monotonic() - started < 0.5
        assert store.degraded
        await store.aclose()


def test_on_fallback_errors_are_swallowed(
    make_store: Callable[..., RedisStore], caplog: pytest.LogCaptureFixture
) -> None:
    """A raising on_fallback neither breaks the decision nor floods the log."""

    def boom(reason: str) -> None:
        raise RuntimeError(reason)

    store = make_store(f"redis://127.0.0.1:{free_port()}", retry_after_s=60, on_fallback=boom)
    with caplog.at_level(logging.WARNING, logger="llmpulse"):
        assert all(store.gcra("k", rate_per_s=1, burst=10).allowed for _ in range(10))
    raised = [r for r in caplog.records if "on_fallback" in r.getMessage()]
    assert len(raised) == 3


def test_server_errors_fall_back_with_reason_error(
    store: RedisStore, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """An error answer (here WRONGTYPE) is decided locally too, with reason "error"."""
    reasons: list[str] = []
    store._on_fallback = reasons.append
    raw.lpush(f"{store._prefix}gcra:k", "not a limit")
    with caplog.at_level(logging.WARNING, logger="llmpulse"):
        assert store.gcra("k", rate_per_s=1, burst=1).allowed
    assert reasons == ["error"]
    assert "ResponseError" in caplog.text


def test_bad_configuration_never_echoes_the_url() -> None:
    """Configuration errors name the problem, never the URL (it may hold a password)."""
    with pytest.raises(ValueError, match="redis://") as info:
        RedisStore(f"http://:{PASSWORD}@host")
    assert PASSWORD not in str(info.value)
    with pytest.raises(ValueError, match="replicas"):
        RedisStore("redis://localhost", replicas=0)
    with pytest.raises(ValueError, match="timeout_s"):
        RedisStore("redis://localhost", timeout_s=0)
    with pytest.raises(ValueError, match="retry_after_s"):
        RedisStore("redis://localhost", retry_after_s=-1)
    assert repr(RedisStore(f"redis://u:{PASSWORD}@db.internal:7000/2")) == (
        "RedisStore('db.internal:7000', prefix='llmpulse:', replicas=1, up)"
    )
    assert "unix socket" in repr(RedisStore("unix:///tmp/redis.sock"))
    assert "'localhost:6379'" in repr(RedisStore("redis://"))
    assert "'db:" not in repr(RedisStore(f"redis://:{PASSWORD}@db:port"))


def test_memory_fields_add_up_and_expire(mem: MemoryStore, clock: FakeClock) -> None:
    """add_fields sums per field; the record lives ttl_s after its last write."""
    mem.add_fields("agg:1", {"t:acme": 10, "T": 10}, ttl_s=60)
    mem.add_fields("agg:1", {"t:acme": 5, "t:globex": 1, "T": 6}, ttl_s=60)
    assert mem.get_fields("agg:1") == {"t:acme": 15, "t:globex": 1, "T": 16}
    assert mem.get_fields("agg:2") == {}
    clock.now += 59
    assert mem.get_fields("agg:1")["T"] == 16
    clock.now += 1
    assert mem.get_fields("agg:1") == {}


def test_redis_fields_add_up_and_expire(store: RedisStore, raw: redis.Redis) -> None:
    """The Redis record is a hash summed by HINCRBYFLOAT, with the ttl of the last write."""
    store.add_fields("agg:1", {"t:acme": 10.5, "T": 10.5}, ttl_s=60)
    store.add_fields("agg:1", {"t:acme": 5, "t:gl:obex": 1}, ttl_s=60)
    assert store.get_fields("agg:1") == {"t:acme": 15.5, "t:gl:obex": 1, "T": 10.5}
    assert store.get_fields("agg:2") == {}
    assert 0 < raw.pttl(f"{store._prefix}fields:agg:1") <= 60_000
