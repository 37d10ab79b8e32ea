"""Shared helpers of the incident scenarios: the report table, the quiet llmpulse set-up, simulated time.

Every scenario drives the real ``openai`` SDK through `llmpulse.wrap` against
`llmpulse.testing.FakeProvider` over HTTP on 127.0.0.1: what happens to a call
comes from the fake's fault plan and capacity model, never from a script.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import openai
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client import CollectorRegistry

import llmpulse
from llmpulse.alerts import Alert, AlertEngine
from llmpulse.events import AttemptEvent, CallEvent, Event
from llmpulse.testing import FakeClock, FakeProvider, FaultPlan

__all__ = [
    "T0",
    "AlertLog",
    "EngineFeed",
    "Row",
    "fake_elsewhere",
    "parse_args",
    "quantile",
    "quiet_llmpulse",
    "raw_openai",
    "report",
    "wrapped",
]

T0 = 1_800_000_000.0  # an epoch-like start on a whole hour (2027-01-15 08:00 UTC)
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Summarise the on-call handbook."}]


@dataclass(frozen=True, slots=True)
class Row:
    """One line of a scenario's result table.

    Attributes:
        what: What is measured.
        field: The reported figure, or "-".
        measured: What this run measured.
        ok: Whether the row's pass criterion holds (None: informational).
        criterion: The pass criterion, in words.
    """

    what: str
    field: str
    measured: str
    ok: bool | None = None
    criterion: str = ""


def parse_args(description: str) -> argparse.Namespace:
    """``--quick``: the same code path with smaller numbers (for the smoke test)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smaller numbers, same code path (seconds)")
    return parser.parse_args()


def quiet_llmpulse(**overrides: Any) -> None:
    """No log output, no process-wide alert engine (each scenario makes its own), every detail kept."""
    llmpulse.configure(sinks=("none",), alerts=False, sample_rate=1.0, **overrides)


def raw_openai(fake: FakeProvider | str, **options: Any) -> openai.OpenAI:
    """A plain SDK client pointed at the fake provider (or at this OpenAI base URL)."""
    base_url = fake if isinstance(fake, str) else fake.openai_base_url
    return openai.OpenAI(api_key="sk-scenario-not-a-real-key", base_url=base_url, **options)


def wrapped(
    fake: FakeProvider | str,
    sinks: Sequence[Any],
    policies: llmpulse.Policies | None = None,
    **options: Any,
) -> tuple[openai.OpenAI, CollectorRegistry]:
    """A wrapped SDK client with its own Prometheus registry."""
    registry = CollectorRegistry()
    client = llmpulse.wrap(raw_openai(fake, **options), sinks=sinks, registry=registry, policies=policies)
    return client, registry


def _serve_fake(plan: FaultPlan, conn: Any) -> None:
    with FakeProvider(plan, max_recorded=1000) as fake:
        conn.send(fake.openai_base_url)
        conn.recv()  # until the scenario is done with it


@contextlib.contextmanager
def fake_elsewhere(plan: FaultPlan) -> Iterator[str]:
    """A `FakeProvider` in a process of its own; yields its OpenAI base URL.

    Its work (thousands of stream events a second, each paced and written on its own)
    then takes no GIL time from the client's threads, as a real provider's takes none.
    """
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    process = ctx.Process(target=_serve_fake, args=(plan, theirs), daemon=True)
    process.start()
    theirs.close()  # so that a child which dies makes recv() fail rather than wait
    try:
        if not ours.poll(60):
            raise RuntimeError("the fake provider's process did not start within 60 s")
        yield ours.recv()
    finally:
        with contextlib.suppress(OSError):
            ours.send("stop")
        process.join(10)


def report(title: str, rows: Sequence[Row], notes: Sequence[str] = ()) -> int:
    """Print the table; return the exit status (1 when any criterion fails)."""
    widths = [
        max(len(h), *(len(getattr(r, f)) for r in rows))
        for h, f in (("measure", "what"), ("reported", "field"), ("measured", "measured"))
    ]
    print(f"\n== {title}")
    header = f"{'measure':<{widths[0]}}  {'reported':<{widths[1]}}  {'measured':<{widths[2]}}  result"
    print(header)
    print("-" * len(header))
    for r in rows:
        verdict = "" if r.ok is None else ("PASS" if r.ok else "FAIL")
        if r.criterion:
            verdict += f" ({r.criterion})" if verdict else f"({r.criterion})"
        print(f"{r.what:<{widths[0]}}  {r.field:<{widths[1]}}  {r.measured:<{widths[2]}}  {verdict}")
    for note in notes:
        print(f"  note: {note}")
    failed = [r.what for r in rows if r.ok is False]
    print("RESULT:", "FAIL: " + "; ".join(failed) if failed else "PASS")
    sys.stdout.flush()
    return 1 if failed else 0


class AlertLog:
    """An alert sink that keeps what it gets."""

    def __init__(self) -> None:
        self.got: list[Alert] = []

    def emit(self, alert: Alert) -> None:
        """Keep ``alert``."""
        self.got.append(alert)


class EngineFeed:
    """An inline sink that puts each finished call on a simulated timeline and feeds an `AlertEngine`.

    The k-th call to finish ends at ``clock.now`` after ``k / rate`` simulated
    seconds; its latency is the provider's time for it (``provider_latency_s``,
    from the fake's ``openai-processing-ms`` header: its own clock from request
    to response headers) times ``latency_scale``, since the fake's delays are
    that many times shorter than the simulated ones. The client-side overhead of
    compressing hundreds of calls a second into one Python process (threads
    queueing on the GIL) is left out: it is an artefact of the compression, not
    of the service, and times 10 it would be most of the "latency". The engine
    is evaluated every ``evaluate_every_s`` of simulated time, as its thread would.

    Args:
        engine: A ``background=False`` engine whose clock is ``clock``.
        clock: The simulated clock.
        rate: Simulated calls per second.
        latency_scale: Multiplies each call's measured latency.
        on_tick: Called (under the feed's lock) with the simulated time after each call.
    """

    name = "engine-feed"
    inline = True
    event_types = (CallEvent, AttemptEvent)  # attempts feed the provider-side rules (sample rate 1)

    def __init__(
        self,
        engine: AlertEngine,
        clock: FakeClock,
        rate: float,
        latency_scale: float = 1.0,
        on_tick: Callable[[float], None] | None = None,
    ) -> None:
        self.engine, self.clock, self.rate, self.scale = engine, clock, rate, latency_scale
        self.on_tick = on_tick
        self.every = engine.config.evaluate_every_s
        self.next_eval = clock.now + self.every
        self.fired: list[tuple[float, Alert]] = []  # (simulated time, alert)
        self.seen: list[tuple[float, float, int | None, int]] = []  # (time, latency, status, attempts)
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        """Count a finished call at its simulated time; evaluate when an evaluation is due."""
        if isinstance(event, AttemptEvent):  # sent just before their call's event
            with self._lock:
                self.engine.record_attempt(event.model, event.http_status)
            return
        if not isinstance(event, CallEvent):
            return
        with self._lock:
            self.clock.advance(1.0 / self.rate)
            measured = event.provider_latency_s if event.provider_latency_s is not None else event.latency_s
            scaled = dataclasses.replace(event, latency_s=measured * self.scale)
            self.seen.append((self.clock.now, scaled.latency_s, scaled.http_status, scaled.attempts))
            self.engine.record(scaled)
            while self.clock.now >= self.next_eval:
                self.fired.extend((self.clock.now, a) for a in self.engine.evaluate())
                self.next_eval += self.every
            if self.on_tick is not None:
                self.on_tick(self.clock.now)


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]
