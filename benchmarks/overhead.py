"""What llmpulse costs per call: raw SDK vs wrapped, interleaved in one run.

The fake provider runs in a separate process, so this process's CPU time is
the client's alone (the SDK, llmpulse and its sink thread). Default sinks
are on: structlog JSON (to /dev/null) and Prometheus.

    .venv/bin/python benchmarks/overhead.py            # calls, streams, import time
    .venv/bin/python benchmarks/overhead.py --memory   # + 1M synthetic events through the sinks
    .venv/bin/python benchmarks/overhead.py --real-calls 50000   # + RSS over 50k real HTTP calls
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

MESSAGES = [{"role": "user", "content": "Write one sentence about observability for on-call engineers."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_fake(port: int, *options: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmpulse", "fake-provider", "--port", str(port), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1).read()
        except OSError:
            time.sleep(0.05)
        else:
            return proc
    proc.kill()
    raise RuntimeError("fake provider did not start")


def interleaved(raw: Callable[[], Any], wrapped: Callable[[], Any], rounds: int, n: int) -> dict[str, float]:
    """Alternate raw and wrapped calls one by one; robust medians of per-call CPU.

    The caller's own CPU is read per call with ``thread_time`` (medians shrug
    off the noise of a 2-core machine); what llmpulse's delivery thread
    spends is the process CPU outside the calling thread, spread over the
    wrapped calls.
    """
    import llmpulse

    for _ in range(20):  # warm connections, caches, price lookups
        raw()
        wrapped()
    llmpulse.flush(30)
    raw_cpu, wrapped_cpu, raw_wall, wrapped_wall = [], [], [], []
    gc.collect()
    p0, t0 = time.process_time(), time.thread_time()
    for _ in range(rounds * n):
        for fn, cpu, wall in ((raw, raw_cpu, raw_wall), (wrapped, wrapped_cpu, wrapped_wall)):
            c, w = time.thread_time(), time.perf_counter()
            fn()
            cpu.append(time.thread_time() - c)
            wall.append(time.perf_counter() - w)
    llmpulse.flush(30)
    other_threads = ((time.process_time() - p0) - (time.thread_time() - t0)) / (rounds * n)
    base_cpu = statistics.median(raw_cpu)
    overhead = statistics.median(wrapped_cpu) - base_cpu + other_threads
    return {
        "raw_cpu_us": base_cpu * 1e6,
        "cpu_overhead_us": overhead * 1e6,
        "cpu_ratio": (base_cpu + overhead) / base_cpu,
        "raw_wall_us": statistics.median(raw_wall) * 1e6,
        "wall_overhead_us": (statistics.median(wrapped_wall) - statistics.median(raw_wall)) * 1e6,
        "sink_thread_us": other_threads * 1e6,
    }


def run_calls(port: int, rounds: int, n: int) -> list[tuple[str, dict[str, float], int]]:
    import anthropic
    import openai

    import llmpulse

    devnull = open(os.devnull, "w")  # noqa: SIM115
    llmpulse.configure(sinks=[llmpulse.StructlogSink(devnull)], alert_sinks=[llmpulse.LogAlertSink(devnull)])
    base = f"http://127.0.0.1:{port}"
    oai_raw = openai.OpenAI(api_key="sk-bench", base_url=base + "/v1", max_retries=0)
    ant_raw = anthropic.Anthropic(api_key="sk-ant-bench", base_url=base, max_retries=0)
    oai, ant = llmpulse.wrap(oai_raw), llmpulse.wrap(ant_raw)
    from llmpulse._runtime import price_table

    price_table().warm_up()  # wrap() starts this in a thread; do not measure it
    chunks = 64

    def oai_call(c: Any) -> Callable[[], Any]:
        return lambda: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=16)

    def oai_stream(c: Any) -> Callable[[], Any]:
        def f() -> None:
            for _ in c.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=chunks, stream=True
            ):
                pass

        return f

    def ant_call(c: Any) -> Callable[[], Any]:
        return lambda: c.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=MESSAGES)

    def ant_stream(c: Any) -> Callable[[], Any]:
        def f() -> None:
            for _ in c.messages.create(
                model="claude-haiku-4-5", max_tokens=chunks, messages=MESSAGES, stream=True
            ):
                pass

        return f

    results = []
    for name, make, per_call_chunks in (
        ("openai sync", oai_call, 0),
        ("openai sync stream", oai_stream, chunks),
        ("anthropic sync", ant_call, 0),
        ("anthropic sync stream", ant_stream, chunks),
    ):
        raw_fn = make(oai_raw if name.startswith("openai") else ant_raw)
        wrapped_fn = make(oai if name.startswith("openai") else ant)
        results.append((name, interleaved(raw_fn, wrapped_fn, rounds, n), per_call_chunks))
    results.extend(run_async(base, rounds, n))
    llmpulse.flush(30)
    return results


def run_async(base: str, rounds: int, n: int) -> list[tuple[str, dict[str, float], int]]:
    import anthropic
    import openai

    import llmpulse

    loop = asyncio.new_event_loop()
    oai_raw = openai.AsyncOpenAI(api_key="sk-bench", base_url=base + "/v1", max_retries=0)
    ant_raw = anthropic.AsyncAnthropic(api_key="sk-ant-bench", base_url=base, max_retries=0)
    oai, ant = llmpulse.wrap(oai_raw), llmpulse.wrap(ant_raw)

    def oai_call(c: Any) -> Callable[[], Any]:
        return lambda: loop.run_until_complete(
            c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=16)
        )

    def ant_call(c: Any) -> Callable[[], Any]:
        return lambda: loop.run_until_complete(
            c.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=MESSAGES)
        )

    out = [
        ("openai async", interleaved(oai_call(oai_raw), oai_call(oai), rounds, n), 0),
        ("anthropic async", interleaved(ant_call(ant_raw), ant_call(ant), rounds, n), 0),
    ]
    loop.close()
    return out


def import_time() -> float:
    """Median wall time of `import llmpulse` in a fresh interpreter, minus interpreter start."""

    # As in production: bytecode cached (some sandboxes set PYTHONDONTWRITEBYTECODE,
    # which would time the compilation of every module instead).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def run(code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        return time.perf_counter() - t0

    run("import llmpulse")  # writes the bytecode caches
    base = statistics.median(run("pass") for _ in range(5))
    return statistics.median(run("import llmpulse") for _ in range(5)) - base


def memory(events: int, tenants: int) -> tuple[float, float, float]:
    """RSS (MiB) after 10 %, and after all, synthetic events through metrics, stats and the log sink."""
    import contextvars
    import dataclasses
    from datetime import UTC, datetime

    import llmpulse
    from llmpulse._pipeline import get_pipeline

    devnull = open(os.devnull, "w")  # noqa: SIM115
    llmpulse.configure(sinks=[llmpulse.StructlogSink(devnull)], alert_sinks=[llmpulse.LogAlertSink(devnull)])
    pipeline = get_pipeline()
    base = llmpulse.CallEvent(
        call_id="c", correlation_id="x" * 16, interaction_id=None, provider="openai", operation="chat",
        model="gpt-4o-mini", response_model="gpt-4o-mini", tenant="t", route="/chat", feature=None, tags={},
        priority="interactive", streamed=False, outcome="ok", stream_interrupted=False, http_status=200,
        error_type=None, attempts=1, retries=0, backoff_s=(), request_id="req", latency_s=0.3,
        provider_latency_s=0.2, ttft_s=None, input_tokens=100, output_tokens=20, cached_input_tokens=0,
        cache_write_tokens=0, reasoning_tokens=0, tokens_estimated=False, cost_usd=0.0001,
        finish_reason="stop",
        max_tokens=None, prompt_tokens_estimate=90, response_bytes=800, api_key_id=None, network=None,
        ratelimit=None, started_at=datetime.now(UTC),
    )  # fmt: skip
    ctx = contextvars.copy_context()
    rss_at_10 = 0.0
    t0 = time.perf_counter()
    for i in range(events):
        event = dataclasses.replace(
            base, call_id=str(i), tenant=f"tenant-{i % tenants}", latency_s=0.1 + (i % 97) / 100
        )
        pipeline.emit_call(event, None, None, ctx)
        if i % 1000 == 0:
            llmpulse.flush(30)  # a real app's calls are far apart: keep the queue from filling
        if i == events // 10:
            rss_at_10 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    llmpulse.flush(60)
    elapsed = time.perf_counter() - t0
    return rss_at_10, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, elapsed / events * 1e6


def real_calls(port: int, calls: int, tenants: int = 1_000) -> list[tuple[int, float]]:
    """RSS (MiB) along ``calls`` real HTTP calls through wrapped clients: streams and not, many tenants."""
    import anthropic
    import openai

    import llmpulse

    devnull = open(os.devnull, "w")  # noqa: SIM115
    llmpulse.configure(sinks=[llmpulse.StructlogSink(devnull)], alert_sinks=[llmpulse.LogAlertSink(devnull)])
    base = f"http://127.0.0.1:{port}"
    oai = llmpulse.wrap(openai.OpenAI(api_key="sk-bench", base_url=base + "/v1", max_retries=0))
    ant = llmpulse.wrap(anthropic.Anthropic(api_key="sk-ant-bench", base_url=base, max_retries=0))
    marks = []
    for i in range(calls):
        with llmpulse.context(tenant=f"tenant-{i % tenants}", route=f"/route/{i % 7}"):
            kind = i % 4
            if kind == 0:
                oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=16)
            elif kind == 1:
                for _ in oai.chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, max_tokens=16, stream=True
                ):
                    pass
            elif kind == 2:
                ant.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=MESSAGES)
            else:
                with ant.messages.stream(
                    model="claude-haiku-4-5", max_tokens=16, messages=MESSAGES
                ) as stream:
                    for _ in stream.text_stream:
                        pass
        if (i + 1) % (calls // 10) == 0:
            llmpulse.flush(30)
            marks.append((i + 1, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    return marks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--memory", action="store_true")
    parser.add_argument(
        "--no-compress",
        action="store_true",
        help="the fake answers uncompressed (default: gzip, as hosted APIs)",
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--real-calls", type=int, default=0, help="also measure RSS over this many HTTP calls"
    )
    args = parser.parse_args()
    port = free_port()
    proc = start_fake(port, *(["--no-compress"] if args.no_compress else []))
    try:
        results = run_calls(port, args.rounds, args.n)
        marks = real_calls(port, args.real_calls) if args.real_calls else []
    finally:
        proc.terminate()
        proc.wait()
    header = (
        "scenario",
        "raw CPU µs",
        "+CPU µs",
        "CPU ratio",
        "raw wall µs",
        "+wall µs",
        "µs/chunk",
        "sinks µs",
    )
    print(f"{header[0]:<24}" + "".join(f"{h:>12}" for h in header[1:]))
    by_name = {name: r for name, r, _ in results}
    for name, r, chunks in results:
        per_chunk = "-"
        if chunks:
            # Per chunk: what a stream costs beyond a non-streamed call of the same SDK.
            base = by_name[name.removesuffix(" stream")]["cpu_overhead_us"]
            per_chunk = f"{(r['cpu_overhead_us'] - base) / chunks:.2f}"
        print(
            f"{name:<24}{r['raw_cpu_us']:>12.0f}{r['cpu_overhead_us']:>12.1f}{r['cpu_ratio']:>12.3f}"
            f"{r['raw_wall_us']:>12.0f}{r['wall_overhead_us']:>12.1f}{per_chunk:>12}{r['sink_thread_us']:>12.1f}"
        )
    print(f"import llmpulse: {import_time() * 1000:.0f} ms")
    if marks:
        print("max RSS over real calls: " + ", ".join(f"{n:,}: {rss:.0f} MiB" for n, rss in marks))
    if args.memory:
        at10, end, per_event = memory(args.events, 10_000)
        print(
            f"memory: {args.events:,} events / 10k tenants: max RSS {at10:.0f} MiB at 10 %,"
            f" {end:.0f} MiB at the end; {per_event:.1f} µs per event through metrics+stats+log"
        )


if __name__ == "__main__":
    main()
