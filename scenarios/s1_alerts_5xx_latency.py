"""Scenario 1: 200 req/s, then 5 % 5xx and a p95 of 1.2 s: which alerts fire, at which tier, after how long.

What is real: every call is a real ``openai`` SDK call through `llmpulse.wrap`
to the fake provider over HTTP; whether it fails (5xx) and how long it takes
are drawn by the fake's fault plan (``error_rate``, ``latency_s``), never
scripted per call. The alert engine is llmpulse's own, with its default
thresholds, fed every `CallEvent` the wrapped client emits.

What is simulated: time. 200 req/s for 10 minutes is 120,000 calls, more than
one Python process can send in 10 minutes of wall time on a small machine, so
the engine runs on a `FakeClock` that advances by 1/200 s per finished call
(the k-th call to finish ends at k/200 s), and it is evaluated every 10 s of
that simulated time, as its thread does. The fake's delays are 10 times shorter
than the simulated ones, and the engine counts each call at the provider's
own time for it (the fake's ``openai-processing-ms`` header, 1 ms resolution,
so 10 ms simulated) times 10. The client-side time is not used: 32 threads
queueing on one GIL add 10-40 ms of real time per call, 0.1-0.4 s once
multiplied, an artefact of the compression rather than of the service.

The service runs healthy for 5 minutes (p95 ~0.4 s, no errors), so the 5-minute
windows are full when the incident starts, then 5 minutes of the incident.
The fake's incident latency is uniform on (0.2 s, 1.2526 s) simulated, whose
p95 is the reported 1.2 s; 5 % of the answers are 500s. Those are the reported
inputs; the alert times are what the engine does with them.

Retries: the reported 5 % is what the service's callers saw. With llmpulse's
default 2 retries a 5 % provider error rate reaches callers as ~0.0125 %
(0.05^3), and the 5xx rule (which reads each call's final answer) would stay
quiet. So the main run uses ``max_retries=0``, and a second, shorter run
(one minute of the incident with llmpulse's defaults) shows what the retries
change. Its engine has been up, idle, for 5 minutes when the incident starts:
a younger one judges no 5-minute window (it waits for 80 % of it).
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
from _common import (
    MESSAGES,
    T0,
    AlertLog,
    EngineFeed,
    Row,
    parse_args,
    quantile,
    quiet_llmpulse,
    report,
    wrapped,
)

import llmpulse
from llmpulse.alerts import AlertConfig, AlertEngine
from llmpulse.state import MemoryStore
from llmpulse.testing import FakeClock, FakeProvider, FaultPlan

SCALE = 10.0  # simulated seconds per real second of the fake's delays
HEALTHY = FaultPlan(latency_s=(0.1 / SCALE, 0.4 / SCALE), seed=1)
INCIDENT = FaultPlan(latency_s=(0.2 / SCALE, 1.2526 / SCALE), error_rate={500: 0.05}, seed=2)
WORKERS = 32  # more threads only queue on the GIL and inflate the measured latencies


def run(
    fake: FakeProvider,
    rate: float,
    healthy_s: float,
    incident_s: float,
    policies: llmpulse.Policies,
    idle_s: float = 0.0,
) -> EngineFeed:
    """Send ``rate x (healthy_s + incident_s)`` calls, after ``idle_s`` without any; switch plans on time."""
    clock = FakeClock(T0 - idle_s)
    engine = AlertEngine(AlertConfig(), [AlertLog()], store=MemoryStore(clock), clock=clock, background=False)
    clock.advance(idle_s)
    onset = T0 + healthy_s
    fake.plan = HEALTHY if healthy_s > 0 else INCIDENT

    def switch(now: float) -> None:
        if now >= onset and fake.plan is HEALTHY:
            fake.plan = INCIDENT

    feed = EngineFeed(engine, clock, rate, latency_scale=SCALE, on_tick=switch)
    client, _ = wrapped(fake, [feed], policies)
    total = round(rate * (healthy_s + incident_s))
    counter = iter(range(total))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            with contextlib.suppress(openai.APIError):  # a 5xx: the event is what counts
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=8)

    with ThreadPoolExecutor(WORKERS) as pool:
        for _ in range(WORKERS):
            pool.submit(worker)
    return feed


def first(feed: EngineFeed, rule: str, severity: str, onset: float) -> float | None:
    """Simulated seconds from the onset to the first time ``rule`` fired at ``severity``."""
    for at, alert in feed.fired:
        if alert.rule == rule and alert.status == "firing" and alert.severity == severity:
            return at - onset
    return None


def fmt_fire(feed: EngineFeed, rule: str, onset: float) -> str:
    """When ``rule`` warned and paged, from the onset."""
    warn, page = first(feed, rule, "warning", onset), first(feed, rule, "page", onset)
    parts = []
    if warn is not None:
        parts.append(f"warning +{warn:.0f} s")
    if page is not None:
        parts.append(f"page +{page:.0f} s")
    return ", ".join(parts) or "did not fire"


def main() -> int:
    """Run the scenario, print its table; 1 if a criterion fails."""
    args = parse_args(__doc__ or "")
    quiet_llmpulse()
    rate = 4.0 if args.quick else 200.0
    window = 300.0
    started = time.monotonic()
    with FakeProvider(max_recorded=1000) as fake:
        feed = run(fake, rate, window, window, llmpulse.Policies(max_retries=0))
        retried = run(
            fake,
            rate,
            0.0,
            60.0,
            llmpulse.Policies(backoff_base_s=0.5 / SCALE, backoff_max_s=8 / SCALE),
            idle_s=window,
        )
    onset = T0 + window
    incident = [s for s in feed.seen if s[0] > onset]
    healthy = [s for s in feed.seen if s[0] <= onset]
    share_5xx = sum((s[2] or 0) >= 500 for s in incident) / len(incident)
    p95 = quantile([s[1] for s in incident], 0.95)
    p95_healthy = quantile([s[1] for s in healthy], 0.95)
    rules = sorted({a.rule for _, a in feed.fired})
    slo = [r for r in rules if r.startswith("slo_burn")]
    retried_5xx = sum((s[2] or 0) >= 500 for s in retried.seen) / len(retried.seen)
    retried_rules = sorted({f"{a.rule} ({a.severity})" for _, a in retried.fired if a.status == "firing"})
    rows = [
        Row(
            "calls (simulated rate x time)",
            "200 req/s",
            f"{len(feed.seen):,} at {rate:g}/s, 10 min",
        ),
        Row("5xx share of final answers (incident)", "5 %", f"{share_5xx:.2%}"),
        Row("p95 latency (incident; healthy before)", "1.2 s", f"{p95:.2f} s ({p95_healthy:.2f} s before)"),
        Row(
            "error_5xx_rate: tier, time from onset",
            "page (> 2.6 %)",
            fmt_fire(feed, "error_5xx_rate", onset),
            first(feed, "error_5xx_rate", "page", onset) is not None,
            "pages",
        ),
        Row(
            "latency_p95: tier, time from onset",
            "page (> 780 ms)",
            fmt_fire(feed, "latency_p95", onset),
            first(feed, "latency_p95", "page", onset) is not None,
            "pages",
        ),
        Row("latency_jump: tier, time from onset", "-", fmt_fire(feed, "latency_jump", onset)),
        Row(
            "SLO burn alerts (5 % errors = 5x burn of 99 %)",
            "none (5x < 6x)",
            ", ".join(slo) or "none fired",
        ),
        Row(
            "same incident, llmpulse default retries: 5xx seen",
            "-",
            f"{retried_5xx:.3%} ({round(retried_5xx * len(retried.seen))} of {len(retried.seen):,} calls)",
        ),
        Row("  ...alerts fired in 1 min", "-", ", ".join(retried_rules) or "none"),
        Row(
            "  ...provider_error_5xx_rate (every attempt): tier",
            "page (> 2.6 %)",
            fmt_fire(retried, "provider_error_5xx_rate", T0),
            first(retried, "provider_error_5xx_rate", "page", T0) is not None,
            "pages",
        ),
    ]
    notes = [
        f"every rule that fired in the main run: {', '.join(rules) or 'none'}",
        "alerts are evaluated every 10 s of simulated time: a time-to-fire is rounded up to that tick",
        f"wall time {time.monotonic() - started:.0f} s",
    ]
    return report("Scenario 1: 200 req/s with 5 % 5xx and p95 1.2 s -> alerts", rows, notes)


if __name__ == "__main__":
    raise SystemExit(main())
