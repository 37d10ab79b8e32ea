"""Scenario 5: the cost arithmetic, through llmpulse's cost pipeline with a price override.

Reported: 100M tokens a month at $0.02 per 1k tokens is $2,000; trimmed to
23M tokens it is $460.

What is real: a price override in the documented format
(``llmpulse.configure(prices=...)``, USD per million tokens: $0.02 per 1k =
$20 per Mtok, for input and output alike) for a model genai-prices does not
know (so without the override its cost would be None), and real ``openai``
SDK calls through `llmpulse.wrap` to the fake provider, which reports the
usage: the fake cannot be told a token count directly, but its plan sets the
cache-read input tokens (``cached_input_tokens``, billed at the input price
when the override gives no cache price) and the reasoning tokens
(``reasoning_tokens``, billed at the output price) it adds to each answer's
usage, 3:1 here. The cost is read back three ways: the sum of the
`CallEvent` s' ``cost_usd``, the ``llmpulse_cost_usd_total`` Prometheus
counter, and `llmpulse.stats`.

What is simulated: the month. It is 1,000 calls of 100,000 tokens (23,000
trimmed), sent in a few seconds. One probe call first measures the prompt's
own size (the fake counts characters / 4) so that each call is exactly its
share of the month.
"""

from __future__ import annotations

import math
import time

from _common import MESSAGES, Row, parse_args, quiet_llmpulse, report, wrapped

import llmpulse
from llmpulse.testing import CapturingSink, FakeProvider, FaultPlan

MODEL = "example-llm"
USD_PER_1K = 0.02
PRICES = {"*": {MODEL: {"input_mtok": USD_PER_1K * 1000, "output_mtok": USD_PER_1K * 1000}}}


def month(
    fake: FakeProvider, calls: int, tokens_per_call: int, prompt: int
) -> tuple[int, float, float, float]:
    """Send the month's calls; returns (tokens, USD from events, from Prometheus, from stats)."""
    output = tokens_per_call // 4
    fake.plan = FaultPlan(
        output_tokens=1, cached_input_tokens=tokens_per_call - output - prompt, reasoning_tokens=output - 1
    )
    sink = CapturingSink()
    client, registry = wrapped(fake, [sink])
    before = llmpulse.stats().total.cost_usd
    for _ in range(calls):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)
    tokens = sum((e.input_tokens or 0) + (e.output_tokens or 0) for e in sink.calls)
    events = math.fsum(e.cost_usd or 0.0 for e in sink.calls)
    prometheus = sum(
        s.value for m in registry.collect() for s in m.samples if s.name == "llmpulse_cost_usd_total"
    )
    return tokens, events, prometheus, llmpulse.stats().total.cost_usd - before


def main() -> int:
    """Run the scenario, print its table; 1 if a criterion fails."""
    args = parse_args(__doc__ or "")
    quiet_llmpulse(prices=PRICES)
    calls = 100 if args.quick else 1_000
    started = time.monotonic()
    with FakeProvider(FaultPlan(output_tokens=1), max_recorded=1000) as fake:
        probe = CapturingSink()
        client, _ = wrapped(fake, [probe])
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)
        prompt = probe.calls[0].input_tokens or 0
        full = month(fake, calls, 100_000_000 // calls, prompt)
        trimmed = month(fake, calls, 23_000_000 // calls, prompt)
    rows = []
    for label, (tokens, events, prometheus, stats), field_tokens, field_usd in (
        ("month", full, 100_000_000, 2000.0),
        ("trimmed month", trimmed, 23_000_000, 460.0),
    ):
        rows += [
            Row(f"{label}: tokens (from the fake's usage)", f"{field_tokens:,}", f"{tokens:,}"),
            Row(
                f"{label}: USD, sum of events' cost_usd",
                f"${field_usd:,.0f}",
                f"${events:,.2f}",
                abs(events - field_usd) < 0.005,
                "equal to the cent",
            ),
            Row(
                f"{label}: USD, llmpulse_cost_usd_total",
                f"${field_usd:,.0f}",
                f"${prometheus:,.2f}",
                abs(prometheus - field_usd) < 0.005,
                "equal to the cent",
            ),
            Row(f"{label}: USD, llmpulse.stats() (5 min)", f"${field_usd:,.0f}", f"${stats:,.2f}"),
        ]
    saved = full[1] - trimmed[1]
    rows.append(Row("saved by trimming", "$1,540", f"${saved:,.2f}"))
    notes = [
        f"price override: {PRICES} (= $0.02 per 1k)",
        f"{calls:,} calls a month; the probe call (prompt = {prompt} tokens) is not counted",
        f"wall time {time.monotonic() - started:.0f} s",
    ]
    return report("Scenario 5: 100M tokens at $0.02/1k = $2,000; trimmed to 23M = $460", rows, notes)


if __name__ == "__main__":
    raise SystemExit(main())
