"""What the resilience policies cost: per-call decisions, and throughput under concurrency.

    .venv/bin/python benchmarks/policies.py            # decisions + 200 concurrent async callers

1. Decision overhead: everything the policies decide for one successful call
   (concurrency slot, breaker permit and release, retry budget deposit, the
   attempt's timeouts; no rate limits or budgets configured),
   timed in a loop; and for one failed attempt (the retry decision and the
   budget withdrawal). Target: <= 5 µs per call in memory.
2. Throughput: 200 concurrent async callers through a wrapped vs a raw
   AsyncOpenAI against the fake provider (in its own process), alternating
   runs. Target: wrapped >= 0.95 x raw.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from overhead import MESSAGES, free_port, start_fake

from llmpulse.policies import Policies, decide_retry


def decision_cost_us(n: int = 200_000) -> tuple[float, float]:
    """Median µs of the policy work of one successful call, and of one retried failure."""
    policies = Policies()
    endpoint = ("openai", "api.openai.com", "key-1")
    breaker = policies.circuit(endpoint, "gpt-4o-mini", lambda *args: None)
    assert breaker is not None
    budget = policies.retry_budget(endpoint)
    limiter = policies.limiter(endpoint, lambda old, new: None)
    assert limiter is not None
    timeouts = policies.timeouts
    sdk_timeout = {"connect": 5.0, "read": 600.0, "write": 600.0, "pool": 600.0}

    def success() -> None:
        slot = limiter.try_acquire("interactive")
        assert slot is not None
        permit = breaker.acquire()
        budget.on_request()
        timeouts.attempt_extension(sdk_timeout, streamed=False, max_tokens=256, remaining_s=30.0)
        assert permit is not None
        breaker.release(permit, "success", 0.5)
        limiter.release(slot, "success")

    def failure() -> None:
        decision = decide_retry(
            retries_taken=0,
            max_retries=2,
            status=503,
            headers={},
            failure=None,
            quota_exhausted=False,
            remaining_s=30.0,
            backoff_base_s=0.5,
            backoff_max_s=8.0,
            random=policies.random,
        )
        if decision.delay_s is not None:
            budget.on_request()
            budget.try_spend()

    runs = [timeit.timeit(success, number=n) / n * 1e6 for _ in range(5)]
    fails = [timeit.timeit(failure, number=n) / n * 1e6 for _ in range(5)]
    return statistics.median(runs), statistics.median(fails)


async def _burst(client: Any, callers: int, calls_each: int) -> float:
    async def caller() -> None:
        for _ in range(calls_each):
            await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=16)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return callers * calls_each / (time.perf_counter() - start)


def throughput(port: int, callers: int = 200, calls_each: int = 5, rounds: int = 5) -> tuple[float, float]:
    """Calls per second, raw and wrapped (medians of alternating rounds)."""
    import openai

    import llmpulse

    devnull = open("/dev/null", "w")  # noqa: SIM115 - kept open for the whole run
    llmpulse.configure(sinks=[llmpulse.StructlogSink(devnull)], alert_sinks=[llmpulse.LogAlertSink(devnull)])
    base = f"http://127.0.0.1:{port}/v1"

    async def run() -> tuple[float, float]:
        raw = openai.AsyncOpenAI(api_key="sk-bench", base_url=base, max_retries=0)
        wrapped = llmpulse.wrap(raw)
        await _burst(raw, callers, 1)  # open the connections
        await _burst(wrapped, callers, 1)
        raw_rates, wrapped_rates = [], []
        for _ in range(rounds):
            raw_rates.append(await _burst(raw, callers, calls_each))
            wrapped_rates.append(await _burst(wrapped, callers, calls_each))
        await raw.close()
        return statistics.median(raw_rates), statistics.median(wrapped_rates)

    return asyncio.run(run())


def main() -> None:
    ok_us, failed_us = decision_cost_us()
    print(f"policy decisions per successful call: {ok_us:.2f} µs (target <= 5)")
    print(f"retry decision + budget per failed attempt: {failed_us:.2f} µs")
    port = free_port()
    proc = start_fake(port)
    try:
        raw, wrapped = throughput(port)
    finally:
        proc.terminate()
        proc.wait()
    print(
        f"200 concurrent async callers: raw {raw:.0f} calls/s, wrapped {wrapped:.0f} calls/s,"
        f" ratio {wrapped / raw:.3f} (target >= 0.95)"
    )


if __name__ == "__main__":
    main()
