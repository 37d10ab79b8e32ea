"""`llmpulse report` throughput and memory over a large generated JSONL file.

Writes N call-event lines (real `JsonlSink` lines, 5 models, 50k tenants so
the 10k cap folds, 200 routes, a week of timestamps) to a temporary file,
then runs the report on it in a child process and prints lines/s and the
child's peak RSS.

    .venv/bin/python benchmarks/report.py             # 1M lines
    .venv/bin/python benchmarks/report.py --lines 200000 --html
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

from llmpulse.sinks import JsonlSink
from llmpulse.testing import make_call_event

MODELS = ("gpt-4o-mini", "gpt-4o", "claude-haiku-4-5", "claude-sonnet-4-6", "o3-mini")
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def generate(path: str, n: int) -> None:
    rng = random.Random(1)
    sink = JsonlSink(path)
    # A few hundred rendered templates, varied by string replacement: rendering
    # 1M events through the sink would dominate the run.
    stamp = T0.isoformat()
    templates = [
        sink.render_line(
            make_call_event(
                model=MODELS[i % len(MODELS)],
                tenant="TENANT",
                route="ROUTE",
                started_at=T0,
                latency_s=rng.lognormvariate(-0.5, 0.8),
                ttft_s=rng.lognormvariate(-2, 0.5) if i % 2 else None,
                streamed=bool(i % 2),
                outcome="error" if i % 13 == 0 else "ok",
                http_status=429 if i % 13 == 0 else 200,
                attempts=1 + (i % 7 == 0),
                cost_usd=rng.randint(1, 10_000) / 10**6,
            )
        )
        for i in range(500)
    ]
    week = 7 * 86400
    with open(path, "w", encoding="utf-8") as file:
        for i in range(n):
            moment = (T0 + timedelta(seconds=i * week // n)).isoformat()
            line = templates[i % len(templates)]
            file.write(
                line.replace("TENANT", f"tenant-{rng.randrange(50_000)}")
                .replace("ROUTE", f"/route/{rng.randrange(200)}")
                .replace(stamp, moment)
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--html", action="store_true", help="also render the HTML report")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "calls.jsonl")
        started = time.perf_counter()
        generate(path, args.lines)
        size_mb = os.path.getsize(path) / 2**20
        print(f"generated {args.lines:,} lines ({size_mb:,.0f} MB) in {time.perf_counter() - started:.1f} s")
        command = [sys.executable, "-m", "llmpulse", "report", path, "--since", "1d"]
        if args.html:
            command += ["--html", os.path.join(tmp, "report.html")]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"report: {elapsed:.1f} s, {args.lines / elapsed:,.0f} lines/s, peak RSS {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
