"""Rolling statistics: counters, percentiles within 1 %, windows, cardinality cap, threads and memory."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from llmpulse._bins import BUCKETS, MAX_VALUE, MIN_VALUE, RELATIVE_ACCURACY, Sketch
from llmpulse._stats import GroupStats, RollingStats, StatsSnapshot
from llmpulse._units import fmt_seconds
from llmpulse.events import CallEvent
from llmpulse.testing import FakeClock, FakeProvider, make_call_event


def event(**changes: Any) -> CallEvent:
    return make_call_event(**changes)


@pytest.fixture(name="clock")
def _clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="stats")
def _stats(clock: FakeClock) -> RollingStats:
    return RollingStats(clock=clock)


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


def lognormal(rng: random.Random, n: int) -> list[float]:
    return [rng.lognormvariate(-0.5, 1.2) for _ in range(n)]


def bimodal(rng: random.Random, n: int) -> list[float]:
    # Cache-like answers at ~40 ms and model calls at ~4 s: p50 and p95 sit in different modes.
    return [rng.gauss(0.04, 0.005) if rng.random() < 0.7 else rng.gauss(4.0, 0.8) for _ in range(n)]


def constant(rng: random.Random, n: int) -> list[float]:
    return [0.7731] * n


def wide(rng: random.Random, n: int) -> list[float]:
    # Log-uniform over 0.2 ms .. 20 min: every bucket between is in use.
    return [math.exp(rng.uniform(math.log(2e-4), math.log(1200))) for _ in range(n)]


DISTRIBUTIONS = {"lognormal": lognormal, "bimodal": bimodal, "constant": constant, "wide": wide}


def lower_rank(values: list[float], q: float) -> float:
    """The exact order statistic the sketch answers for: rank floor(q * (n - 1)), from 0."""
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_percentiles_are_within_1_percent_of_exact(clock: FakeClock, name: str, seed: int):
    """p50/p95/p99 and TTFT p50/p95 are within 1 % of the exact order statistics, whatever the shape."""
    stats = RollingStats(clock=clock)
    rng = random.Random(seed)
    latencies = DISTRIBUTIONS[name](rng, 3000)
    ttfts = [lat * rng.uniform(0.05, 1) for lat in latencies[:900]]
    for i, lat in enumerate(latencies):
        ttft = ttfts[i] if i < len(ttfts) else None
        stats.record(event(latency_s=lat, ttft_s=ttft, streamed=ttft is not None))
    total = stats.snapshot().total
    for q, got in ((0.5, total.p50_s), (0.95, total.p95_s), (0.99, total.p99_s)):
        assert got == pytest.approx(lower_rank(latencies, q), rel=RELATIVE_ACCURACY), q
    for q, got in ((0.5, total.ttft_p50_s), (0.95, total.ttft_p95_s)):
        assert got == pytest.approx(lower_rank(ttfts, q), rel=RELATIVE_ACCURACY), q


def test_the_old_25_percent_bins_would_fail_the_1_percent_bound():
    """The bound is tight enough to matter: values 2 % apart get different percentiles."""
    clock = FakeClock()
    a, b = RollingStats(clock=clock), RollingStats(clock=clock)
    for _ in range(100):
        a.record(event(latency_s=0.773))
        b.record(event(latency_s=0.801))
    assert a.snapshot().total.p95_s == pytest.approx(0.773, rel=RELATIVE_ACCURACY)
    assert b.snapshot().total.p95_s == pytest.approx(0.801, rel=RELATIVE_ACCURACY)


def test_constant_latencies_are_reported_exactly(stats: RollingStats):
    """Identical latencies give exactly that latency: percentiles are clamped to the min and max seen."""
    for _ in range(100):
        stats.record(event(latency_s=1.2345))
    total = stats.snapshot().total
    assert (total.p50_s, total.p95_s, total.p99_s) == (1.2345,) * 3


@pytest.mark.parametrize("seed", [4, 5])
def test_windows_merge_slots_without_losing_accuracy(clock: FakeClock, seed: int):
    """Percentiles over 10 s and 5 min slots are one sketch of the window's calls, within 1 % of exact."""
    stats = RollingStats(clock=clock)
    rng = random.Random(seed)
    clock.now = 30_000.0  # on a 5-minute boundary: windows hold exactly the calls below
    recorded: list[tuple[float, float]] = []
    for _ in range(3600):  # an hour, one call a second, drifting slower
        latency = rng.lognormvariate(-1 + len(recorded) / 3600, 0.8)
        stats.record(event(latency_s=latency))
        recorded.append((clock.now, latency))
        clock.advance(1.0)
    for window in (60, 300, 600, 1800, 3600):
        inside = [lat for t, lat in recorded if t >= clock.now - window]
        one = Sketch()
        for lat in inside:
            one.add(lat)
        total = stats.snapshot(window).total
        assert total.calls == len(inside)
        got = [total.p50_s, total.p95_s, total.p99_s]
        assert got == one.quantiles((0.5, 0.95, 0.99)), window  # merging is exact
        for q, value in zip((0.5, 0.95, 0.99), got, strict=True):
            assert value == pytest.approx(lower_rank(inside, q), rel=RELATIVE_ACCURACY), (window, q)


def test_groups_merged_into_the_total_match_one_sketch(stats: RollingStats):
    """The total's percentiles, summed from the groups, are those of one sketch of all calls."""
    rng = random.Random(9)
    one = Sketch()
    for i in range(2000):
        latency = rng.lognormvariate(0, 1)
        stats.record(event(latency_s=latency, model=f"m{i % 3}", tenant=f"t{i % 40}"))
        one.add(latency)
    total = stats.snapshot().total
    assert [total.p50_s, total.p95_s, total.p99_s] == one.quantiles((0.5, 0.95, 0.99))


@pytest.mark.parametrize("seed", range(5))
def test_merged_sketches_equal_one_sketch_of_all_values(seed: int):
    """Sketches over disjoint, overlapping, nested and empty ranges merge into one sketch of all values."""
    rng = random.Random(seed)
    parts: list[list[float]] = [[] for _ in range(8)]
    for i in range(4000):
        part = rng.randrange(len(parts) - 1)  # the last part stays empty
        centre = math.exp(part - 3)  # 50 ms .. 55 s, ranges overlapping or not
        parts[part].append(centre * rng.lognormvariate(0, 0.5 + (i % 3)))
    one, merged = Sketch(), Sketch()
    sketches = []
    for values in parts:
        sketch = Sketch()
        for value in values:
            sketch.add(value)
            one.add(value)
        sketches.append(sketch)
    rng.shuffle(sketches)
    for sketch in sketches:
        merged.merge(sketch)
    qs = (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)
    assert merged.quantiles(qs) == one.quantiles(qs)
    assert list(merged.buckets()) == list(one.buckets())
    assert (merged.count, merged.min, merged.max) == (4000, one.min, one.max)
    everything = [v for values in parts for v in values]
    for q, got in zip(qs, merged.quantiles(qs), strict=True):
        assert got == pytest.approx(lower_rank(everything, q), rel=RELATIVE_ACCURACY), q


@pytest.mark.parametrize(
    ("latency", "reported"),
    [(0.0, 0.0), (0.00004, 0.00004), (-1.0, 0.0), (float("nan"), 0.0), (5000.0, 5000.0)],
)
def test_odd_latencies_never_raise_and_stay_in_range(stats: RollingStats, latency: float, reported: float):
    """Zero, sub-0.1 ms, negative, NaN and very long latencies are counted, and reported as seen (NaN: 0)."""
    stats.record(event(latency_s=latency))
    assert stats.snapshot().total.p50_s == reported


def test_values_beyond_the_range_share_the_edge_buckets():
    """Below 0.1 ms and above ~28 h values share an edge bucket, so a sketch never outgrows BUCKETS."""
    sketch = Sketch()
    for value in (0.0, 1e-9, 5e-5, 1e5, 1e9, float("inf")):
        sketch.add(value)
    assert len(sketch.counts) == BUCKETS
    assert sketch.count == 6
    assert sketch.quantile(0.0) == 0.0  # the exact min
    assert sketch.quantile(0.4) == pytest.approx(MIN_VALUE)  # the low edge bucket
    assert sketch.quantile(0.6) == pytest.approx(MAX_VALUE, rel=RELATIVE_ACCURACY)  # the high one
    assert sketch.quantile(1.0) == float("inf")


def test_sketch_memory_is_bounded_by_calls_and_buckets(clock: FakeClock):
    """Each stored sketch holds a count per bucket it saw: at most its calls, never more than BUCKETS."""
    stats = RollingStats(clock=clock, bucket_s=10, horizon_s=3600, coarse_bucket_s=1800)
    rng = random.Random(3)
    for _ in range(40_000):
        stats.record(event(latency_s=math.exp(rng.uniform(math.log(1e-6), math.log(1e7))), ttft_s=0.5))
        clock.advance(0.1)
    accs = [
        acc
        for ring in stats._rings
        for bucket in ring.buckets
        if bucket is not None
        for groups in bucket.groups
        for acc in groups.values()
    ]
    for acc in accs:
        assert acc.ttft is not None
        assert len(acc.ttft) == 1  # always 0.5 s: one bucket
        assert len(acc.latency) <= min(acc.calls, BUCKETS)
        assert all(0 <= index < BUCKETS for index in acc.latency)
    # 18,000 calls in a 30-minute bucket, spread over more than the range: every bucket in use.
    assert max(len(acc.latency) for acc in accs) == BUCKETS


def test_stats_and_report_give_the_same_percentiles(clock: FakeClock):
    """The report and stats() share one sketch: same calls, same numbers, same printed strings."""
    from llmpulse._report._command import aggregate  # noqa: PLC0415
    from llmpulse.sinks import JsonlSink  # noqa: PLC0415

    rng = random.Random(11)
    stats = RollingStats(clock=clock)
    sink = JsonlSink(os.devnull)
    lines = []
    for i in range(3000):
        streamed = i % 3 == 0
        call = event(
            call_id=f"c{i}",
            model=("gpt-4o-mini", "claude-haiku-4-5")[i % 2],
            latency_s=rng.lognormvariate(0, 1.1),
            streamed=streamed,
            ttft_s=rng.lognormvariate(-2, 0.5) if streamed else None,
        )
        stats.record(call)
        lines.append(sink.render_line(call).encode())
        clock.advance(0.05)
    sink.close()
    report = aggregate(lines)
    snapshot = stats.snapshot(3600)
    pairs = [(snapshot.total, report.total)]
    pairs += [(group, report.groups["model"].get(model)) for model, group in snapshot.by_model.items()]
    assert len(pairs) == 3
    for ours, theirs in pairs:
        assert theirs.latency is not None
        assert theirs.ttft is not None
        assert [ours.p50_s, ours.p95_s, ours.p99_s] == theirs.latency.quantiles((0.5, 0.95, 0.99))
        assert [ours.ttft_p50_s, ours.ttft_p95_s] == theirs.ttft.quantiles((0.5, 0.95))
        assert fmt_seconds(ours.p95_s) == fmt_seconds(theirs.latency.quantile(0.95))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (float("nan"), "-"),
        (0.0, "0 ms"),
        (0.000123456, "0.123 ms"),
        (0.0123456, "12.3 ms"),
        (0.7731, "773 ms"),
        (0.9996, "1.00 s"),
        (1.0, "1.00 s"),
        (9.304, "9.30 s"),
        (10.111, "10.1 s"),
        (123.456, "123 s"),
        (1234.5, "1,230 s"),
        (float("inf"), "inf s"),
        (-0.5, "-500 ms"),
    ],
)
def test_durations_print_to_three_significant_figures(seconds: float | None, text: str):
    """Durations print with the digits a 1 % sketch supports, in ms below 1 s and in s above."""
    assert fmt_seconds(seconds) == text


def test_snapshot_prints_with_the_sketch_precision(stats: RollingStats):
    """str() of a snapshot shows every group on one line, durations to 3 significant figures."""
    for tenant, latency in (("acme", 0.7731234), ("globex", 10.111111)):
        for _ in range(5):
            stats.record(event(latency_s=latency, tenant=tenant, streamed=True, ttft_s=0.0421))
    lines = str(stats.snapshot()).splitlines()
    assert lines[0].startswith("last 300 s: 10 calls (")
    assert lines[-2].startswith("  tenant acme: 5 calls (")
    assert "; latency p50 773 ms, p95 773 ms, p99 773 ms; TTFT p50 42.1 ms, p95 42.1 ms;" in lines[-2]
    assert lines[-1].startswith("  tenant globex: 5 calls (")
    assert "; latency p50 10.1 s, p95 10.1 s, p99 10.1 s;" in lines[-1]
    assert len(lines) == 1 + 1 + 1 + 2  # total, one model, one route, two tenants


def test_ttft_is_none_without_streams(stats: RollingStats):
    """TTFT percentiles are None for groups without a first token, set for those with one."""
    stats.record(event(model="batch", ttft_s=None))
    stats.record(event(model="chat", streamed=True, ttft_s=0.2))
    snap = stats.snapshot()
    assert snap.by_model["batch"].ttft_p50_s is None
    assert snap.by_model["chat"].ttft_p50_s == 0.2
    assert snap.total.ttft_p95_s == 0.2


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
    """Past max_keys distinct values per dimension, further values share "__other__"; totals stay exact."""
    stats = RollingStats(clock=clock, max_keys=2)
    for tenant in ["a", "b", "c", "d", "a", "d"]:
        stats.record(event(tenant=tenant, model=f"m-{tenant}"))
    snap = stats.snapshot()
    assert {k: g.calls for k, g in snap.by_tenant.items()} == {"a": 2, "b": 1, "__other__": 3}
    assert {k: g.calls for k, g in snap.by_model.items()} == {"m-a": 2, "m-b": 1, "__other__": 3}
    assert snap.total.calls == 6


def test_admitted_keys_are_never_evicted(clock: FakeClock):
    """Admitted values keep their own group in later buckets, and late values stay in "__other__"."""
    stats = RollingStats(clock=clock, max_keys=1)
    stats.record(event(tenant="first"))
    clock.advance(3000)  # "first" has long left every window
    stats.record(event(tenant="late"))
    stats.record(event(tenant="first"))
    snap = stats.snapshot(60)
    assert {k: g.calls for k, g in snap.by_tenant.items()} == {"first": 1, "__other__": 1}


def test_max_keys_zero_puts_everything_in_other(clock: FakeClock):
    """With max_keys=0 every value is counted under "__other__"."""
    stats = RollingStats(clock=clock, max_keys=0)
    stats.record(event())
    snap = stats.snapshot()
    assert (list(snap.by_model), list(snap.by_route), list(snap.by_tenant)) == (["__other__"],) * 3


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


def test_rolling_stats_example_runs(fake: FakeProvider):
    """examples/rolling_stats.py prints a snapshot with per-tenant lines and the JSON of the total."""
    examples = Path(__file__).parent.parent / "examples"
    env = {
        **os.environ,
        "OPENAI_BASE_URL": fake.openai_base_url,
        "OPENAI_API_KEY": "sk-example",
        "LLMPULSE_SINKS": "none",
    }
    result = subprocess.run(
        [sys.executable, str(examples / "rolling_stats.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert lines[0].startswith("last 300 s: 24 calls (")
    assert sum(line.startswith("  tenant ") for line in lines) == 3
    assert "  route /stream: 12 calls" in result.stdout
    assert lines[-2].startswith("acme: 8 calls, p95 ")
    assert lines[-1].startswith('{"abandoned": 0, "calls": 24, ')
