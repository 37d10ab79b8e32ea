"""Scenario 7: a daily batch of static completions, 70 % of it answered from llmpulse's response cache.

Reported: 500 batch prompts a day x 2,500 tokens = 1.25M tokens a day; with
70 % of the flows served from the response cache, 375k tokens a day (-70 %),
and the money saved reported per call (`CallEvent` ``cost_saved_usd``).
Private, per-session calls (``llmpulse.context(private=True)``) must never be
answered from the cache, even when they send the very request a batch flow
cached.

What is real: every call is a real ``openai`` SDK call through `llmpulse.wrap`
to the fake provider over HTTP; each prompt is 8,000 characters (the fake
counts 4 a token: 2,000 input tokens) and asks for 500 output tokens, which the
fake's usage reports: 2,500 tokens a call. Each day's batch is the same 350
static flows (the same request every day: a fixed prompt at temperature 0,
marked cacheable with ``llmpulse.context(cache=True)``, as docs/resilience.md
says a caller does) and 150 fresh ones (a new prompt each day, not marked),
in a shuffled order. 70 % is the share of static flows: the reported input;
which calls are answered from the cache is llmpulse's doing. The cache is
llmpulse's own in-memory one. Its TTL (``cache_ttl_s``) is set to a week since
the batch runs once a day (a second run with the default TTL, 1 h, shows what
happens without), and the run lasts 8 days, so the last batch finds the entries
it would use a week old. Every day 50 per-session calls run inside
``context(cache=True)`` and ``context(private=True)``, each sending exactly
the request of a static flow. The cost is the reported price of scenario 5
($0.02 per 1k tokens, a price override), read from the events' ``cost_usd``
and ``cost_saved_usd``; the tokens also from ``llmpulse_tokens_total``.

What is simulated: the days. The cache's clock (``Policies(clock=FakeClock())``)
moves 24 h between two days' batches, which run back to back. ``--quick``: 100
prompts a day (70 static), 10 private calls, 4 days with a TTL of 3.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

from _common import Row, parse_args, quiet_llmpulse, report, wrapped
from prometheus_client import CollectorRegistry

import llmpulse
from llmpulse.events import CallEvent
from llmpulse.testing import CapturingSink, FakeClock, FakeProvider, FaultPlan

MODEL = "example-llm"
USD_PER_1K = 0.02  # scenario 5's price
PRICES = {"*": {MODEL: {"input_mtok": USD_PER_1K * 1000, "output_mtok": USD_PER_1K * 1000}}}
PROMPT_CHARS, OUTPUT_TOKENS = 8_000, 500  # 2,000 + 500 = 2,500 tokens a call
STATIC_SHARE = 0.7  # the reported input: the share of a day's flows that are static
DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Day:
    """One day's batch and private calls, as their events tell.

    Attributes:
        batch: The batch's events.
        private: The private per-session calls' events.
        requests: Requests the fake got that day.
    """

    batch: list[CallEvent]
    private: list[CallEvent]
    requests: int

    @property
    def hits(self) -> int:
        """Batch calls answered from the cache."""
        return sum(e.cache_hit for e in self.batch)

    @property
    def provider_tokens(self) -> int:
        """Tokens of the batch calls that went to the provider."""
        return sum(tokens(e) for e in self.batch if not e.cache_hit)

    @property
    def cost(self) -> float:
        """USD the batch paid."""
        return math.fsum(e.cost_usd or 0.0 for e in self.batch)

    @property
    def saved(self) -> float:
        """USD the cache saved the batch (``cost_saved_usd``)."""
        return math.fsum(e.cost_saved_usd or 0.0 for e in self.batch)


def tokens(event: CallEvent) -> int:
    """Input plus output tokens of a call, from the fake's usage."""
    return (event.input_tokens or 0) + (event.output_tokens or 0)


def prompt(name: str) -> list[dict[str, str]]:
    """A user message of exactly PROMPT_CHARS characters (2,000 of the fake's tokens)."""
    head = f"{name}: classify the document below and summarise it for the catalogue. "
    filler = "The quick brown fox jumps over the lazy dog. " * (PROMPT_CHARS // 45 + 1)
    return [{"role": "user", "content": (head + filler)[:PROMPT_CHARS]}]


def run_days(
    fake: FakeProvider, days: int, per_day: int, private_per_day: int, ttl_s: float
) -> tuple[list[Day], CollectorRegistry]:
    """Run ``days`` daily batches on one wrapped client whose cache lives ``ttl_s``."""
    clock = FakeClock()
    sink = CapturingSink()
    policies = llmpulse.Policies(cache_ttl_s=ttl_s, clock=clock)
    client, registry = wrapped(fake, [sink], policies, max_retries=0)
    n_static = round(per_day * STATIC_SHARE)
    shuffle = random.Random(7)
    out = []
    for day in range(days):
        flows: list[tuple[str, int]] = [("static", i) for i in range(n_static)]
        flows += [("fresh", i) for i in range(per_day - n_static)]
        flows += [("private", i) for i in range(private_per_day)]
        shuffle.shuffle(flows)
        fake.clear()
        seen = len(sink.calls)
        for kind, i in flows:
            # A private call sends the very request of a static flow: the worst case for a leak.
            name = f"static flow {i}" if kind in ("static", "private") else f"day {day} fresh flow {i}"
            route = "/session" if kind == "private" else "/batch"
            with (
                llmpulse.context(route=route, cache=kind != "fresh"),
                llmpulse.context(private=kind == "private"),
            ):
                client.chat.completions.create(
                    model=MODEL, messages=prompt(name), max_tokens=OUTPUT_TOKENS, temperature=0
                )
        events = sink.calls[seen:]
        out.append(
            Day(
                batch=[e for e in events if e.route == "/batch"],
                private=[e for e in events if e.route == "/session"],
                requests=fake.stats().requests,
            )
        )
        clock.advance(DAY_S)
    return out, registry


def counter(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A counter's value summed over the series whose labels match ``labels``."""
    return sum(
        s.value
        for m in registry.collect()
        for s in m.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def main() -> int:
    """Run the scenario, print its table; 1 if a criterion fails."""
    args = parse_args(__doc__ or "")
    quiet_llmpulse(prices=PRICES)
    # The TTL outlives every batch but the last: that one finds its entries expired.
    days, per_day, private = (4, 100, 10) if args.quick else (8, 500, 50)
    ttl_days = days - 1
    started = time.monotonic()
    with FakeProvider(FaultPlan(output_tokens=OUTPUT_TOKENS), max_recorded=1000) as fake:
        week, registry = run_days(fake, days, per_day, private, ttl_days * DAY_S)
        default_ttl, _ = run_days(fake, 2, per_day, 0, llmpulse.Policies().cache_ttl_s)
    cold, warm, expired = week[0], week[1:-1], week[-1]
    n_static = round(per_day * STATIC_SHARE)
    day1 = warm[0]
    per_call = {tokens(e) for d in week for e in (*d.batch, *d.private)}
    private_events = [e for d in week for e in d.private]
    private_hits = sum(e.cache_hit for e in private_events)
    stores = counter(registry, "llmpulse_cache_total", result="store")
    hits_metric = counter(registry, "llmpulse_cache_total", result="hit")
    batch_tokens_metric = counter(registry, "llmpulse_tokens_total", route="/batch")
    warm_same = all(d.hits == n_static and d.provider_tokens == day1.provider_tokens for d in warm)
    static_misses = sum(n_static - d.hits for d in week)
    full_size = not args.quick  # the reported absolute numbers hold at the full size only
    rows = [
        Row(
            "batch: prompts a day x tokens each",
            "500 x 2,500",
            f"{per_day:,} x {', '.join(f'{t:,}' for t in sorted(per_call))}",
            per_call == {2_500},
            "2,500 by the fake's usage",
        ),
        Row(
            "day 0 (cache empty): tokens sent to the provider",
            "1,250,000",
            f"{cold.provider_tokens:,}",
            cold.provider_tokens == per_day * 2_500 and (not full_size or cold.provider_tokens == 1_250_000),
            "every flow sent",
        ),
        Row(
            "day 1: batch calls answered from the cache",
            "70 %",
            f"{day1.hits / per_day:.0%} ({day1.hits:,} of {per_day:,})",
            day1.hits == n_static,
            "every static flow, no other",
        ),
        Row(
            "day 1: tokens sent to the provider",
            "375,000 (-70 %)",
            f"{day1.provider_tokens:,} ({day1.provider_tokens / cold.provider_tokens - 1:+.0%})",
            day1.provider_tokens == round(cold.provider_tokens * (1 - STATIC_SHARE))
            and (not full_size or day1.provider_tokens == 375_000),
            "30 % of day 0's",
        ),
        Row(
            f"days 1-{days - 2}: the same every day",
            "-",
            f"{', '.join(f'{d.provider_tokens:,}' for d in warm)} tokens",
            warm_same,
            "hits and tokens as day 1",
        ),
        Row(
            f"  llmpulse_tokens_total (route /batch), {days} days",
            "-",
            f"{batch_tokens_metric:,.0f}",
            batch_tokens_metric == sum(d.provider_tokens for d in week),
            "= the events' (hits count none)",
        ),
        Row(
            f"day {days - 1}: entries {ttl_days} days old (cache_ttl_s {ttl_days} d): hits",
            "-",
            f"{expired.hits} of {per_day:,}",
            expired.hits == 0,
            "none: the TTL counts from the store",
        ),
        Row("day 0: USD the batch paid (cost_usd)", "-", f"${cold.cost:,.2f}"),
        Row("day 1: USD the batch paid (cost_usd)", "-", f"${day1.cost:,.2f}"),
        Row(
            "day 1: USD saved, sum of cost_saved_usd",
            "-",
            f"${day1.saved:,.2f}",
            abs(day1.saved - (cold.cost - day1.cost)) < 0.005,
            "= day 0's cost - day 1's, to the cent",
        ),
        Row(
            "private calls answered from the cache",
            "never",
            f"{private_hits} of {len(private_events):,} (each the request of a cached flow)",
            private_hits == 0 and all(e.attempts == 1 for e in private_events),
            "none: every one sent",
        ),
        Row(
            "requests the provider got, day 1",
            "-",
            f"{day1.requests:,} = {per_day - day1.hits:,} batch + {len(day1.private)} private",
            all(d.requests == per_day - d.hits + len(d.private) for d in week),
            "misses + private, every day",
        ),
        Row(
            "answers stored in the cache / hits (llmpulse_cache_total)",
            "-",
            f"{stores:,.0f} / {hits_metric:,.0f}",
            stores == static_misses and hits_metric == sum(d.hits for d in week),
            "each static miss stored; no private answer",
        ),
        Row(
            "same batch, default cache_ttl_s (1 h): day 1 hits",
            "-",
            f"{default_ttl[1].hits} of {per_day:,}",
        ),
    ]
    notes = [
        f"price override: {PRICES} (= $0.02 per 1k, scenario 5's)",
        f"cache_ttl_s {ttl_days} days: each cold day is followed by {ttl_days - 1} warm ones, a mean of "
        f"{(cold.provider_tokens + (ttl_days - 1) * day1.provider_tokens) / ttl_days:,.0f} tokens a day",
        "a hit does not renew an entry's TTL: it counts from when the answer was stored",
        f"wall time {time.monotonic() - started:.0f} s",
    ]
    return report("Scenario 7: 500 static prompts a day x 2,500 tokens, 70 % from the cache", rows, notes)


if __name__ == "__main__":
    raise SystemExit(main())
