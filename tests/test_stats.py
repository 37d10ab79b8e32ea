"""Rolling statistics: counters, percentiles, windows, cardinality cap, threads and memory."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import threading
from typing import Any

import pytest

from llmpulse._stats import GroupStats, RollingStats, StatsSnapshot
from llmpulse.events import CallEvent
from llmpulse.testing import FakeClock, make_call_event


def event(**changes: Any) -> CallEvent:
    return make_call_event(**changes)


@pytest.fixture(name="clock")
def _clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="stats")
def _stats(clock: FakeClock) -> RollingStats:
    return RollingStats(clock=clock)


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def test_empty_snapshot_has_zero_rates_and_no_percentiles(stats: RollingStats):
    """A snapshot without calls has zero counts and rates and None percentiles."""
    snap = stats.snapshot()
    total = snap.total
    assert (total.calls, total.error_rate, total.rate_429, total.calls_per_s) == (0, 0.0, 0.0, 0.0)
    assert (total.p50_s, total.p95_s, total.p99_s, total.ttft_p50_s, total.ttft_p95_s) == (None,) * 5
    assert (snap.by_model, snap.by_route, snap.by_tenant) == ({}, {}, {})


def test_outcomes_are_counted_separately(stats: RollingStats):
    """Only "error" counts as an error; cancelled, abandoned and rejected have their own counters."""
    for outcome, n in (("ok", 5), ("error", 2), ("cancelled", 1), ("abandoned", 1), ("rejected", 1)):
        for _ in range(n):
            stats.record(event(outcome=outcome))
    total = stats.snapshot().total
    assert (total.calls, total.errors, total.cancelled, total.abandoned, total.rejected) == (10, 2, 1, 1, 1)
    assert total.error_rate == pytest.approx(0.2)


def test_429_and_5xx_follow_the_final_status(stats: RollingStats):
    """429 and 5xx are counted by the call's final HTTP status, and rate_429 is a fraction of calls."""
    statuses = [200, 200, 200, 200, 429, 429, 500, 503, None, 400]
    for status in statuses:
        stats.record(event(http_status=status, outcome="ok" if status == 200 else "error"))
    total = stats.snapshot().total
    assert (total.status_429, total.status_5xx) == (2, 2)
    assert total.rate_429 == pytest.approx(0.2)
    assert total.error_rate == pytest.approx(0.6)


def test_tokens_cost_unpriced_and_retries_are_summed(stats: RollingStats):
    """Known tokens and costs are summed; unknown costs of sent calls count as unpriced."""
    stats.record(event(input_tokens=100, output_tokens=20, cost_usd=0.25, retries=2, attempts=3))
    stats.record(event(input_tokens=50, output_tokens=None, cost_usd=None))
    stats.record(event(input_tokens=None, output_tokens=None, cost_usd=0.125))
    # Rejected by a policy: never sent, so not "unpriced".
    stats.record(event(outcome="rejected", attempts=0, input_tokens=None, output_tokens=None, cost_usd=None))
    total = stats.snapshot().total
    assert (total.input_tokens, total.output_tokens) == (150, 20)
    assert total.cost_usd == pytest.approx(0.375)
    assert (total.unpriced_calls, total.retries) == (1, 2)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_are_within_one_bin_of_exact(clock: FakeClock, seed: int):
    """p50/p95/p99 and TTFT percentiles are within one bin (25 %) of the exact nearest-rank values."""
    stats = RollingStats(clock=clock)
    rng = random.Random(seed)
    latencies = [rng.lognormvariate(-0.5, 1.2) for _ in range(2000)]
    ttfts = [lat * rng.random() for lat in latencies[:700]]
    for i, lat in enumerate(latencies):
        ttft = ttfts[i] if i < len(ttfts) else None
        stats.record(event(latency_s=lat, ttft_s=ttft, streamed=ttft is not None))
    total = stats.snapshot().total
    for q, got in ((0.5, total.p50_s), (0.95, total.p95_s), (0.99, total.p99_s)):
        exact = nearest_rank(latencies, q)
        assert got == pytest.approx(exact, rel=0.25)
    for q, got in ((0.5, total.ttft_p50_s), (0.95, total.ttft_p95_s)):
        assert got == pytest.approx(nearest_rank(ttfts, q), rel=0.25)


def test_percentiles_of_identical_latencies_stay_in_their_bin(stats: RollingStats):
    """Identical latencies give percentiles inside the same 25 % bin."""
    for _ in range(100):
        stats.record(event(latency_s=1.0))
    total = stats.snapshot().total
    for got in (total.p50_s, total.p95_s, total.p99_s):
        assert got is not None
        assert 1.0 / 1.25 <= got <= 1.0 * 1.25


@pytest.mark.parametrize(
    ("latency", "low", "high"),
    [(0.0, 0.0, 0.001), (0.0004, 0.0, 0.001), (-1.0, 0.0, 0.001), (float("nan"), 0.0, 0.001)],
)
def test_sub_millisecond_and_odd_latencies_land_in_the_first_bin(
    stats: RollingStats, latency: float, low: float, high: float
):
    """Latencies under 1 ms (and negative or NaN ones) are reported between 0 and 1 ms."""
    stats.record(event(latency_s=latency))
    p50 = stats.snapshot().total.p50_s
    assert p50 is not None
    assert low <= p50 <= high


@pytest.mark.parametrize("latency", [5000.0, float("inf")])
def test_very_long_latencies_are_capped_at_the_top_bin(stats: RollingStats, latency: float):
    """Latencies beyond ~21 minutes are reported as the top bin edge."""
    stats.record(event(latency_s=latency))
    p99 = stats.snapshot().total.p99_s
    assert p99 == pytest.approx(0.001 * 1.25**63)
    assert 20 * 60 < p99 < 22 * 60


def test_ttft_is_none_without_streams(stats: RollingStats):
    """TTFT percentiles are None for groups without a first token, set for those with one."""
    stats.record(event(model="batch", ttft_s=None))
    stats.record(event(model="chat", streamed=True, ttft_s=0.2))
    snap = stats.snapshot()
    assert snap.by_model["batch"].ttft_p50_s is None
    assert snap.by_model["chat"].ttft_p50_s == pytest.approx(0.2, rel=0.25)
    assert snap.total.ttft_p95_s == pytest.approx(0.2, rel=0.25)


def test_groups_per_model_route_and_tenant(stats: RollingStats):
    """Calls are grouped per model, route and tenant, with missing values under "unknown"."""
    stats.record(event(model="a", route="/x", tenant="t1"))
    stats.record(event(model="a", route=None, tenant="t2"))
    stats.record(event(model=None, route="/x", tenant=None))
    snap = stats.snapshot()
    assert {k: g.calls for k, g in snap.by_model.items()} == {"a": 2, "unknown": 1}
    assert {k: g.calls for k, g in snap.by_route.items()} == {"/x": 2, "unknown": 1}
    assert {k: g.calls for k, g in snap.by_tenant.items()} == {"t1": 1, "t2": 1, "unknown": 1}
    assert list(snap.by_model) == ["a", "unknown"]  # most calls first
    assert snap.total.calls == 3


def test_total_equals_the_sum_of_any_dimension(stats: RollingStats):
    """The overall group adds up the per-tenant groups exactly, histograms included."""
    rng = random.Random(7)
    for _ in range(500):
        stats.record(
            event(
                tenant=rng.choice(["a", "b", "c", None]),
                latency_s=rng.uniform(0.01, 3),
                cost_usd=rng.choice([0.5, None]),
                outcome=rng.choice(["ok", "error"]),
            )
        )
    snap = stats.snapshot()
    for groups in (snap.by_tenant, snap.by_model, snap.by_route):
        assert sum(g.calls for g in groups.values()) == snap.total.calls == 500
        assert sum(g.errors for g in groups.values()) == snap.total.errors
        assert sum(g.cost_usd for g in groups.values()) == pytest.approx(snap.total.cost_usd)
    only = next(iter(snap.by_model.values()))
    assert (only.p50_s, only.p95_s, only.p99_s) == (snap.total.p50_s, snap.total.p95_s, snap.total.p99_s)


def test_events_older_than_the_window_are_excluded(clock: FakeClock, stats: RollingStats):
    """A call is counted while it is at most window_s old, and dropped once older."""
    clock.now = 1000.0  # a bucket boundary, so the window edge is exact
    stats.record(event(tenant="old"))
    clock.advance(200)
    stats.record(event(tenant="new"))
    clock.advance(100)  # "old" is exactly 300 s old
    assert stats.snapshot(300).total.calls == 2
    clock.advance(0.5)
    snap = stats.snapshot(300)
    assert list(snap.by_tenant) == ["new"]
    assert stats.snapshot(600).total.calls == 2
    assert stats.snapshot(60).total.calls == 0


def test_ring_slots_are_reused_after_the_horizon(clock: FakeClock):
    """A bucket slot is reused once the horizon has passed, and its old calls vanish."""
    stats = RollingStats(clock=clock, bucket_s=10, horizon_s=60)
    clock.now = 5.0
    for _ in range(3):
        stats.record(event(tenant="first"))
    clock.now = 65.0  # same slot as t=5, one horizon later
    stats.record(event(tenant="second"))
    snap = stats.snapshot(3600)
    assert snap.window_s == 60
    assert {k: g.calls for k, g in snap.by_tenant.items()} == {"second": 1}
    assert stats._stored_groups() == 3  # one bucket: one model, one route, one tenant


def test_window_is_clamped_to_bucket_and_horizon(clock: FakeClock):
    """Windows are clamped to [bucket_s, horizon_s]; a non-positive window is refused."""
    stats = RollingStats(clock=clock, bucket_s=10, horizon_s=95)
    assert stats.snapshot(1).window_s == 10
    assert stats.snapshot(10_000).window_s == 100  # horizon rounded up to whole buckets
    for bad in (0, -5, float("nan")):
        with pytest.raises(ValueError, match="window_s"):
            stats.snapshot(bad)


def test_calls_per_s_uses_the_time_the_window_covers(clock: FakeClock):
    """calls_per_s divides by the covered time, never counting time before the stats existed."""
    clock.now = 1000.0
    stats = RollingStats(clock=clock)
    for _ in range(10):
        stats.record(event())
    clock.advance(5)
    assert stats.snapshot(300).total.calls_per_s == pytest.approx(2.0)
    clock.now = 1005.5
    for _ in range(60):
        stats.record(event())
        clock.advance(1)
    clock.now = 1065.0
    # Calls at 1005.5 ... 1064.5; the 60 s window starts at bucket 1010: 55 s, 55 calls.
    snap = stats.snapshot(60)
    assert snap.total.calls == 55
    assert snap.total.calls_per_s == pytest.approx(1.0)
    assert snap.by_tenant["acme"].calls_per_s == pytest.approx(1.0)


def test_values_past_max_keys_go_to_other(clock: FakeClock):
    """Past max_keys distinct values per dimension, further values share "other"; totals stay exact."""
    stats = RollingStats(clock=clock, max_keys=2)
    for tenant in ["a", "b", "c", "d", "a", "d"]:
        stats.record(event(tenant=tenant, model=f"m-{tenant}"))
    snap = stats.snapshot()
    assert {k: g.calls for k, g in snap.by_tenant.items()} == {"a": 2, "b": 1, "other": 3}
    assert {k: g.calls for k, g in snap.by_model.items()} == {"m-a": 2, "m-b": 1, "other": 3}
    assert snap.total.calls == 6


def test_admitted_keys_are_never_evicted(clock: FakeClock):
    """Admitted values keep their own group in later buckets, and late values stay in "other"."""
    stats = RollingStats(clock=clock, max_keys=1)
    stats.record(event(tenant="first"))
    clock.advance(3000)  # "first" has long left every window
    stats.record(event(tenant="late"))
    stats.record(event(tenant="first"))
    snap = stats.snapshot(60)
    assert {k: g.calls for k, g in snap.by_tenant.items()} == {"first": 1, "other": 1}


def test_max_keys_zero_puts_everything_in_other(clock: FakeClock):
    """With max_keys=0 every value is counted under "other"."""
    stats = RollingStats(clock=clock, max_keys=0)
    stats.record(event())
    snap = stats.snapshot()
    assert (list(snap.by_model), list(snap.by_route), list(snap.by_tenant)) == (["other"],) * 3


def test_top_ranks_groups_by_requests_tokens_and_cost(stats: RollingStats):
    """top() ranks one dimension by requests, tokens or cost, largest first, ties by name."""
    for tenant, calls, tokens, cost in (("a", 3, 10, 0.5), ("b", 1, 500, 0.25), ("c", 3, 5, 2.0)):
        for _ in range(calls):
            stats.record(event(tenant=tenant, input_tokens=tokens, output_tokens=0, cost_usd=cost))
    assert stats.top() == [("a", 3.0), ("c", 3.0), ("b", 1.0)]
    assert stats.top(by="tokens", n=2) == [("b", 500.0), ("a", 30.0)]
    assert stats.top(by="cost", n=1) == [("c", 6.0)]
    assert stats.top("model") == [("gpt-4o-mini", 7.0)]
    assert stats.top(n=0) == []


@pytest.mark.parametrize(("dimension", "by"), [("feature", "requests"), ("tenant", "latency")])
def test_top_rejects_unknown_dimension_or_measure(stats: RollingStats, dimension: str, by: str):
    """top() refuses an unknown dimension or ranking measure."""
    with pytest.raises(ValueError, match="must be one of"):
        stats.top(dimension, by)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"bucket_s": 0}, {"bucket_s": -1}, {"horizon_s": 5}, {"max_keys": -1}])
def test_invalid_settings_are_refused(kwargs: dict[str, float]):
    """Non-positive buckets, a horizon shorter than a bucket and negative max_keys raise ValueError."""
    with pytest.raises(ValueError, match="must"):
        RollingStats(**kwargs)  # type: ignore[arg-type]


def test_to_dict_is_json_serialisable(stats: RollingStats):
    """to_dict() gives plain values that json.dumps accepts, with every GroupStats field."""
    stats.record(event(streamed=True, ttft_s=0.1))
    snap = stats.snapshot()
    assert isinstance(snap, StatsSnapshot)
    data = json.loads(json.dumps(snap.to_dict()))
    assert data["window_s"] == 300
    assert set(data["total"]) == {f.name for f in dataclasses.fields(GroupStats)}
    assert data["by_tenant"]["acme"]["calls"] == 1


def test_concurrent_records_give_exact_counts(stats: RollingStats):
    """Eight threads recording at once lose no call and no token."""
    per_thread = 5000
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        one = event(tenant=f"t{i}", input_tokens=3, output_tokens=1)
        barrier.wait()
        for _ in range(per_thread):
            stats.record(one)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = stats.snapshot()
    assert snap.total.calls == 8 * per_thread
    assert snap.total.input_tokens == 3 * 8 * per_thread
    assert {g.calls for g in snap.by_tenant.values()} == {per_thread}


def test_snapshots_while_recording_across_buckets_are_consistent(clock: FakeClock):
    """Snapshots taken while another thread records across bucket changes never fail or lose calls."""
    stats = RollingStats(clock=clock, bucket_s=1, horizon_s=3600)
    n = 5000  # 50 one-second buckets
    done = threading.Event()
    seen: list[int] = []

    def reader() -> None:
        # Bounded: a reader spinning flat out would starve the recorder of the GIL.
        while not done.is_set() and len(seen) < 300:
            seen.append(stats.snapshot(3600).total.calls)

    # A short switch interval interleaves the two threads finely, which is the point.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(n):
            stats.record(event(tenant=f"t{i % 50}"))
            clock.advance(0.01)
    finally:
        done.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert seen == sorted(seen)  # nothing leaves a window longer than the run
    assert stats.snapshot(3600).total.calls == n


def test_memory_stays_bounded_with_many_tenants(clock: FakeClock):
    """200k calls from 10k tenants with max_keys=100 keep at most 101 tenant groups per bucket."""
    stats = RollingStats(clock=clock, max_keys=100)
    events = [event(tenant=f"tenant-{i}") for i in range(10_000)]
    for i in range(200_000):
        stats.record(events[i % 10_000])
        clock.advance(0.05)  # 10,000 s: the 1 h ring wraps almost three times
    slots = 60 + 12  # 10 min of 10 s buckets, 1 h of 5 min buckets
    assert stats._stored_groups() <= slots * (1 + 1 + 101)
    assert all(len(admitted) == 100 for admitted in stats._admitted[2:])
    snap = stats.snapshot(3600)
    assert len(snap.by_tenant) == 101
    # Whole 5-minute buckets: up to one of them may have dropped out at the old end.
    assert (3600 - 300) / 0.05 <= snap.total.calls <= 3600 / 0.05
    assert abs(stats.snapshot(300).total.calls - 300 / 0.05) <= 1  # a float clock on a bucket edge


def test_long_windows_use_the_coarse_ring(clock: FakeClock):
    """Up to 10 minutes windows are exact to 10 s; beyond, to 5 minutes, from the coarse ring."""
    stats = RollingStats(clock=clock)
    for _ in range(60):  # one call a minute for an hour
        stats.record(event())
        clock.advance(60.0)
    assert stats.snapshot(600).total.calls == 10
    assert stats.snapshot(60).total.calls == 1
    assert 25 <= stats.snapshot(1800).total.calls <= 30  # whole 5-minute buckets
    assert 55 <= stats.snapshot(3600).total.calls <= 60
