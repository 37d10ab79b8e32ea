"""How big /metrics gets: size, series and scrape time for a wide spread of calls.

Emits one call (and its HTTP attempt) for every combination of 100 tenants x
20 routes x 10 models x every outcome (ok, streamed ok, 5xx, 429, connection
error, timeout, cancelled, abandoned, rejected: 9 kinds, 180,000 calls) into
a `PrometheusSink` with its default settings and a fresh registry, then
scrapes it as Prometheus would (text format 0.0.4) and counts what it got.

    .venv/bin/python benchmarks/metrics.py
    .venv/bin/python benchmarks/metrics.py --tenants 30 --routes 30 --models 4
    .venv/bin/python benchmarks/metrics.py --histogram-labels tenant   # the opt-in's cost
    .venv/bin/python benchmarks/metrics.py --max-series 50000
    .venv/bin/python benchmarks/metrics.py --hot   # emit cost of known label combinations

A series is a sample line of the exposition (each histogram label set is
its ``le`` buckets, ``_sum``, ``_count`` and ``_created``; a counter's is
``_total`` and ``_created``), which is what Prometheus stores.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import resource
import statistics
import time
from collections import Counter
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from llmpulse.events import AttemptEvent
from llmpulse.sinks._prometheus import PrometheusSink
from llmpulse.testing import make_call_event

# (outcome, http status, error type, streamed, sent): one of each way a call ends.
OUTCOMES: tuple[tuple[str, int | None, str | None, bool, bool], ...] = (
    ("ok", 200, None, False, True),
    ("ok", 200, None, True, True),
    ("error", 500, "InternalServerError", False, True),
    ("error", 429, "RateLimitError", False, True),
    ("error", None, "APIConnectionError", False, True),
    ("error", None, "APITimeoutError", True, True),
    ("cancelled", None, None, True, True),
    ("abandoned", 200, None, True, True),
    ("rejected", None, "RateLimitedError", False, False),
)


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def build_sink(registry: CollectorRegistry, args: argparse.Namespace) -> PrometheusSink:
    """A sink with its defaults, plus whichever of the options this version of llmpulse knows."""
    known = inspect.signature(PrometheusSink).parameters
    options: dict[str, Any] = {}
    if args.histogram_labels:
        if "histogram_labels" not in known:
            raise SystemExit("this llmpulse has no histogram_labels option")
        options["histogram_labels"] = tuple(args.histogram_labels.split(","))
    if args.max_series is not None:
        if "max_series" not in known:
            raise SystemExit("this llmpulse has no max_series option")
        options["max_series"] = args.max_series
    return PrometheusSink(registry, **options)


def emit_all(sink: PrometheusSink, args: argparse.Namespace) -> int:
    n = 0
    for m in range(args.models):
        model = f"model-{m}"
        for t in range(args.tenants):
            tenant = f"tenant-{t:03d}"
            for r in range(args.routes):
                route = f"/route/{r}"
                for outcome, status, error_type, streamed, sent in OUTCOMES:
                    ok = outcome == "ok"
                    sink.emit(
                        make_call_event(
                            model=model,
                            tenant=tenant,
                            route=route,
                            outcome=outcome,
                            http_status=status,
                            error_type=error_type,
                            streamed=streamed,
                            attempts=1 if sent else 0,
                            ttft_s=0.2 if streamed and status == 200 else None,
                            input_tokens=1200 if sent else None,
                            output_tokens=300 if ok else None,
                            cached_input_tokens=400 if ok else None,
                            reasoning_tokens=50 if ok and streamed else None,
                            cost_usd=0.002 if ok else None,
                            server_address="api.openai.com",
                            server_port=443,
                        )
                    )
                    if sent:
                        sink.emit(
                            AttemptEvent(
                                call_id="c",
                                correlation_id="c",
                                attempt=1,
                                provider="openai",
                                operation="chat",
                                model=model,
                                http_status=status,
                                error_type=error_type,
                                request_id=None,
                                latency_s=0.4,
                                retry_after_s=None,
                                will_retry=False,
                                backoff_s=0.0,
                            )
                        )
                    n += 1
    return n


def hot(args: argparse.Namespace) -> None:
    """The cost of an emit whose label children are cached: 80 known combinations, in turn."""
    sink = build_sink(CollectorRegistry(), args)
    events = [
        make_call_event(tenant=f"t{i % 5}", route=f"/r{i % 4}", model=f"m{i % 4}", cached_input_tokens=10)
        for i in range(80)
    ]
    for event in events:
        sink.emit(event)
    n = 200_000
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for i in range(n):
            sink.emit(events[i % 80])
        best = min(best, time.perf_counter() - t)
    print(f"emit of a known combination  {best / n * 1e6:.2f} us (best of 5 x {n:,})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--routes", type=int, default=20)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--histogram-labels", default="", help="e.g. tenant or tenant,route")
    parser.add_argument("--max-series", type=int, default=None, help="the sink's series budget")
    parser.add_argument("--scrapes", type=int, default=5, help="scrapes timed (median reported)")
    parser.add_argument("--hot", action="store_true", help="time emits of known combinations only")
    args = parser.parse_args()
    if args.hot:
        hot(args)
        return

    registry = CollectorRegistry()
    sink = build_sink(registry, args)
    rss_before = _rss_mib()
    t0 = time.perf_counter()
    calls = emit_all(sink, args)
    emit_s = time.perf_counter() - t0

    times = []
    body = b""
    for _ in range(args.scrapes):
        gc.collect()
        t = time.perf_counter()
        body = generate_latest(registry)
        times.append(time.perf_counter() - t)
    lines = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
    by_family: Counter[str] = Counter()
    for line in lines:
        name = line.split("{", 1)[0].split(" ", 1)[0]
        for suffix in ("_bucket", "_count", "_sum", "_created", "_total"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        by_family[name] += 1
    other = sum('="__other__"' in line or '="other"' in line for line in lines)

    print(f"calls emitted          {calls:,} ({args.tenants} tenants x {args.routes} routes x "
          f"{args.models} models x {len(OUTCOMES)} outcomes)")  # fmt: skip
    print(f"emit                   {emit_s:.1f} s ({emit_s / calls * 1e6:.1f} us per call + attempt)")
    print(f"/metrics size          {len(body) / 1e6:.2f} MB")
    print(f"series (sample lines)  {len(lines):,}")
    print(f"series with a folded value {other:,}")
    print(f"scrape time            {statistics.median(times) * 1000:.0f} ms (median of {args.scrapes})")
    print(f"RSS                    {_rss_mib():.0f} MiB (before emitting {rss_before:.0f} MiB, "
          f"peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")  # fmt: skip
    print("series by family:")
    for name, count in by_family.most_common():
        print(f"  {count:>9,}  {name}")


if __name__ == "__main__":
    main()
