"""Scenario 2: the retry storm. A provider slows down under 200 users: naive client vs llmpulse's defaults.

Reported: a 30 s client timeout and 5 retries, no breaker; when the provider
slowed down every user request became 6 attempts of 30 s, 1,200 outgoing
requests for 200 users. llmpulse must keep attempts <= 1.1 x requests + 10.

What is real: the same ``openai.OpenAI(timeout=30, max_retries=5)`` client
makes every call, once as it is (the naive service) and once wrapped by
`llmpulse.wrap` with the default policies (retries and timeouts from the
client, as llmpulse sets no deadline of its own by default; the 10 % + 10
retry budget; the breaker at 10 consecutive failures). 200 user threads
each make 3 requests (in sequence) to the fake provider over HTTP, which
answers every request after 100 s: later than
any attempt waits. Attempts are counted by the fake (requests it received).

What is simulated: time is divided by 100, for everything that waits: the
fake's 100 s is 1 s, the client's 30 s timeout 0.3 s, the SDK's own backoff
(0.5 s doubling to 8 s: its two module constants are divided by 100 for the
run; llmpulse's default retries wait that same backoff), and llmpulse's breaker
open time likewise. Only
wall time changes; no count depends on the scale, since every attempt times
out either way.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import openai
import openai._base_client as sdk_base
from _common import MESSAGES, Row, parse_args, quiet_llmpulse, raw_openai, report

import llmpulse
from llmpulse import BreakerConfig
from llmpulse.testing import CapturingSink, FakeProvider, FaultPlan

SCALE = 100.0
FIELD_TIMEOUT_S, FIELD_RETRIES = 30.0, 5


def scaled_defaults() -> llmpulse.Policies:
    """Llmpulse's default policies with every duration divided by SCALE (counts unchanged).

    The defaults set no timeout of llmpulse's: each attempt gets the client's (scaled) timeout.
    """
    b = BreakerConfig()
    return llmpulse.Policies(
        # No backoff of llmpulse's: by default a retry waits the SDK's own (scaled below).
        breaker=BreakerConfig(open_s=b.open_s / SCALE),
    )


def storm(fake: FakeProvider, client: openai.OpenAI, users: int, per_user: int) -> dict[str, int]:
    """Every user makes ``per_user`` requests in turn; returns how they ended."""

    def user(_: int) -> list[str]:
        ended = []
        for _ in range(per_user):
            try:
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=8)
                ended.append("ok")
            except llmpulse.CircuitOpenError:
                ended.append("failed fast (breaker open)")
            except llmpulse.PolicyError as exc:
                ended.append(type(exc).__name__)
            except openai.APITimeoutError:
                ended.append("timed out")
        return ended

    fake.clear()
    with ThreadPoolExecutor(max_workers=users) as pool:
        outcomes = [o for result in pool.map(user, range(users)) for o in result]
    fake.wait_idle(10)
    return {o: outcomes.count(o) for o in sorted(set(outcomes))}


def main() -> int:
    """Run the scenario, print its table; 1 if a criterion fails."""
    args = parse_args(__doc__ or "")
    quiet_llmpulse()
    users, per_user = (40, 2) if args.quick else (200, 3)
    requests = users * per_user
    started = time.monotonic()
    # The SDK's backoff constants, read by its retry loop at each retry.
    sdk_delays = {name: vars(sdk_base)[name] for name in ("INITIAL_RETRY_DELAY", "MAX_RETRY_DELAY")}
    vars(sdk_base).update({name: delay / SCALE for name, delay in sdk_delays.items()})
    try:
        with FakeProvider(FaultPlan(latency_s=100.0 / SCALE), max_recorded=1000) as fake:
            naive_client = raw_openai(fake, timeout=FIELD_TIMEOUT_S / SCALE, max_retries=FIELD_RETRIES)
            naive_end = storm(fake, naive_client, users, per_user)
            naive = fake.stats()
            sink = CapturingSink()
            wrapped_client = llmpulse.wrap(naive_client, sinks=[sink], policies=scaled_defaults())
            pulse_end = storm(fake, wrapped_client, users, per_user)
            pulse = fake.stats()
    finally:
        vars(sdk_base).update(sdk_delays)
    bound = 1.1 * requests + 10
    events_attempts = sum(e.attempts for e in sink.calls)
    rows = [
        Row("users x requests each", "200 users", f"{users} x {per_user} = {requests} requests"),
        Row(
            "naive: attempts per request",
            "6",
            f"{naive.requests / requests:.2f} ({naive.requests:,} attempts)",
            naive.requests == requests * (FIELD_RETRIES + 1),
            "1 + 5 retries, every one",
        ),
        Row(
            "naive: attempts for one round of 200 users",
            "1,200",
            f"{naive.requests / per_user * 200 / users:,.0f}",
        ),
        Row("naive: peak requests in flight at the provider", "1,200", f"{naive.peak_concurrency:,}"),
        Row("naive: how requests ended", "-", ", ".join(f"{n} {o}" for o, n in naive_end.items())),
        Row(
            "llmpulse: attempts per request",
            "<= 1.1x + 10",
            f"{pulse.requests / requests:.2f} ({pulse.requests:,} attempts)",
            pulse.requests <= bound,
            f"<= 1.1 x {requests} + 10 = {bound:,.0f}",
        ),
        Row("llmpulse: peak requests in flight at the provider", "-", f"{pulse.peak_concurrency:,}"),
        Row(
            "llmpulse: events (one per request)",
            "-",
            f"{len(sink.calls):,} events, {events_attempts:,} attempts",
            len(sink.calls) == requests and events_attempts == pulse.requests,
            "one per request; attempts match the fake's",
        ),
        Row("llmpulse: how requests ended", "-", ", ".join(f"{n} {o}" for o, n in pulse_end.items())),
    ]
    notes = [
        "the reported 1,200 is 200 requests x 6 attempts; the fake frees an attempt the client abandoned "
        "within 50 ms, so the attempts in flight at once stay far fewer: a real provider that keeps "
        "working on abandoned requests piles them up instead",
        f"wall time {time.monotonic() - started:.0f} s (time / {SCALE:g})",
    ]
    return report("Scenario 2: the retry storm, naive client vs llmpulse defaults", rows, notes)


if __name__ == "__main__":
    raise SystemExit(main())
