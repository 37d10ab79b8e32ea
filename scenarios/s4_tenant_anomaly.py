"""Scenario 4: one tenant's usage jumps 12x in an hour; the per-tenant anomaly alert names it, and no other.

What is real: every call is a real ``openai`` SDK call through `llmpulse.wrap`
to the fake provider over HTTP, and its tokens are the usage the fake reports
(one output token per word, as many as the request's ``max_tokens``). The
engine is llmpulse's `AlertEngine` with its default thresholds (warning at
10x a tenant's median hour, page at 13x; 24 hourly totals before a tenant is
judged), fed every `CallEvent`, writing its own hourly totals to a
`MemoryStore` at the end of each clock hour and reading its baselines back,
as it does in production. Nothing is written to the store by hand.

What is simulated: time. A week of hours (168; 50 tenants) is replayed on a
`FakeClock`: in each hour every tenant makes one call, at evenly spaced
times, of its usual size (a per-tenant size between 500 and 3,000 tokens,
times a random 0.7-1.3 per hour: seeded, so the run repeats). The engine is
evaluated every 10 minutes of the week (every 10 s in the last hour). In the
last hour one tenant makes 12 calls of its usual size, spread over the hour:
12x its usual hour; the others carry on as before.
"""

from __future__ import annotations

import random
import time

from _common import MESSAGES, T0, AlertLog, Row, parse_args, quiet_llmpulse, report, wrapped

import llmpulse
from llmpulse.alerts import Alert, AlertConfig, AlertEngine
from llmpulse.events import CallEvent, Event
from llmpulse.state import MemoryStore
from llmpulse.testing import FakeClock, FakeProvider, FaultPlan

HOUR = 3600.0
JUMP = 12


class Recorder:
    """Feeds each finished call to the engine at the simulated clock's time."""

    name = "engine"
    inline = True

    def __init__(self, engine: AlertEngine) -> None:
        self.engine = engine

    def emit(self, event: Event) -> None:
        """Count the call."""
        if isinstance(event, CallEvent):
            self.engine.record(event)


def main() -> int:
    """Run the scenario, print its table; 1 if a criterion fails."""
    args = parse_args(__doc__ or "")
    quiet_llmpulse()
    n_tenants, week_hours = (10, 25) if args.quick else (50, 168)
    rng = random.Random(4)
    usual = {f"tenant-{i:02d}": rng.randint(500, 3000) for i in range(n_tenants)}
    victim = f"tenant-{n_tenants // 3:02d}"
    clock = FakeClock(T0)
    log = AlertLog()
    engine = AlertEngine(AlertConfig(), [log], store=MemoryStore(clock), clock=clock, background=False)
    recorder = Recorder(engine)
    fired: list[tuple[float, Alert]] = []
    started = time.monotonic()
    with FakeProvider(FaultPlan(output_tokens=100_000), max_recorded=1000) as fake:
        client, _ = wrapped(fake, [recorder])

        def call(tenant: str, tokens: int) -> None:
            with llmpulse.context(tenant=tenant):
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=tokens)

        def hour(start: float, jumped: str | None, evaluate_every: float) -> None:
            plan = [(t, round(size * rng.uniform(0.7, 1.3))) for t, size in usual.items()]
            if jumped is not None:
                plan += [(jumped, round(usual[jumped] * rng.uniform(0.7, 1.3))) for _ in range(JUMP - 1)]
            rng.shuffle(plan)
            step = HOUR / len(plan)
            due = start + evaluate_every
            for k, (tenant, tokens) in enumerate(plan):
                clock.now = start + k * step
                while clock.now >= due:
                    fired.extend((clock.now, a) for a in engine.evaluate())
                    due += evaluate_every
                call(tenant, tokens)
            while due < start + HOUR:
                clock.now = due
                fired.extend((clock.now, a) for a in engine.evaluate())
                due += evaluate_every

        for h in range(week_hours):
            hour(T0 + h * HOUR, None, 600.0)
        week_alerts = len(fired)
        last = T0 + week_hours * HOUR
        hour(last, victim, 10.0)
    anomalies = [(at, a) for at, a in fired if a.rule == "tenant_token_anomaly" and a.status == "firing"]
    named = sorted({a.labels.get("tenant", "?") for _, a in anomalies})
    first = anomalies[0] if anomalies else None
    rows = [
        Row(
            "tenants x hours of history",
            "-",
            f"{n_tenants} x {week_hours} h",
        ),
        Row("alerts during the normal week", "-", str(week_alerts), week_alerts == 0, "none"),
        Row(
            "tenant_token_anomaly names",
            f"{victim} (12x)",
            ", ".join(named) or "nobody",
            named == [victim],
            "that tenant and no other",
        ),
        Row(
            "its tier and time into the hour",
            "warning (> 10x; page > 13x)",
            f"{first[1].severity} at +{(first[0] - last) / 60:.0f} min" if first else "-",
        ),
        Row("its reading", "12x", first[1].summary if first else "-"),
    ]
    notes = [
        "the rule reads the tokens of the clock hour so far, so it fires once the hour's calls pass 10x "
        "the median hour, not at the hour's end",
        f"wall time {time.monotonic() - started:.0f} s",
    ]
    return report("Scenario 4: a tenant's usage jumps 12x -> per-tenant anomaly alert", rows, notes)


if __name__ == "__main__":
    raise SystemExit(main())
