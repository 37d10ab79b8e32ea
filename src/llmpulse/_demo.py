"""`llmpulse demo`: a multi-tenant workload through wrapped clients, with a live table.

Runs offline on embedded defaults: the built-in fake provider with a
realistic fault plan, in-memory state, JSON logs to a file, /metrics on
localhost. With ``--real`` it targets the real providers using the API keys
in the environment (tokens cost money: the workload is kept tiny).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import threading
import time
from contextlib import ExitStack
from typing import Any

import llmpulse

from ._bins import fmt_seconds
from ._pipeline import get_pipeline
from ._stats import GroupStats, StatsSnapshot

__all__ = ["run_demo"]

TENANTS = (("acme", 5), ("globex", 3), ("initech", 2), ("umbrella", 1), ("hooli", 1))
ROUTES = ("/chat", "/summarize", "/search")
OPENAI_MODELS = ("gpt-4o-mini", "gpt-4o")
ANTHROPIC_MODELS = ("claude-haiku-4-5", "claude-sonnet-4-6")
PROMPTS = (
    "Summarise the incident report for the on-call channel.",
    "Draft a polite reply to a customer asking about their invoice.",
    "List three risks of deploying on a Friday afternoon.",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the demo's command-line options."""
    parser.add_argument("--duration", type=float, default=30.0, help="seconds to run (default 30)")
    parser.add_argument("--workers", type=int, default=6, help="concurrent sync workers (default 6)")
    parser.add_argument("--out", default="demo-out", help="directory for the JSON log file")
    parser.add_argument("--metrics-port", type=int, default=0, help="/metrics port (default: a free one)")
    parser.add_argument("--real", action="store_true", help="call the real providers (needs API keys)")
    parser.add_argument("--no-live", action="store_true", help="print a summary only, no live table")


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo workload; returns a process exit code."""
    import anthropic  # noqa: PLC0415
    import openai  # noqa: PLC0415 - the demo needs both SDKs; the library does not

    from ._metrics_server import start_metrics_server  # noqa: PLC0415
    from .testing import FakeProvider, FaultPlan  # noqa: PLC0415

    os.makedirs(args.out, exist_ok=True)
    log_path = os.path.join(args.out, "llmpulse-events.jsonl")
    alerts = _Alerts()  # shown after the run: JSON lines would break the live table
    llmpulse.configure(sinks=("jsonl",), jsonl_path=log_path, alert_sinks=(alerts,))
    with ExitStack() as stack:
        if args.real:
            oai_kwargs: dict[str, Any] = {}
            ant_kwargs: dict[str, Any] = {}
            where = "the real providers"
        else:
            fake = stack.enter_context(
                FakeProvider(
                    plan=FaultPlan(
                        latency_s=(0.05, 0.6),
                        chunk_delay_s=0.01,
                        error_rate={500: 0.03, 503: 0.02, 429: 0.02},
                        reset_rate=0.003,
                        max_concurrency=10,
                        retry_after_s=0.2,
                        cached_input_tokens=8,
                    )
                )
            )
            oai_kwargs = {"api_key": "sk-demo-not-a-real-key", "base_url": fake.openai_base_url}
            ant_kwargs = {
                "api_key": "sk-ant-demo-not-a-real-key",
                "base_url": fake.anthropic_base_url,
            }
            where = f"the built-in fake provider at {fake.base_url}"
        server = start_metrics_server(args.metrics_port)
        stack.callback(server.stop)
        clients: dict[str, Any] = {
            "openai": llmpulse.wrap(openai.OpenAI(**oai_kwargs)),
            "anthropic": llmpulse.wrap(anthropic.Anthropic(**ant_kwargs)),
        }
        for client in clients.values():
            stack.callback(client.close)
        print(f"llmpulse {llmpulse.__version__} demo: {args.duration:.0f}s of traffic against {where}")
        print(f"  metrics: {server.url}   JSON logs: {log_path}")
        duration = min(args.duration, 10.0) if args.real else args.duration
        stop_at = time.monotonic() + duration
        workers = 1 if args.real else args.workers
        threads = [
            threading.Thread(target=_sync_worker, args=(clients, stop_at, random.Random(i)), daemon=True)
            for i in range(workers)
        ]
        threads.append(
            threading.Thread(
                target=asyncio.run,
                args=(_async_workers(oai_kwargs, ant_kwargs, stop_at, 1 if args.real else 8),),
                daemon=True,
            )
        )
        for thread in threads:
            thread.start()
        _watch(threads, stop_at, live=not args.no_live)
        for thread in threads:
            thread.join()
        llmpulse.flush(10)
        engine = get_pipeline().alerts
        if engine is not None:
            engine.evaluate()  # the last word on the run, not the last 10-second tick's
        snapshot = llmpulse.stats(window_s=duration + 60)
        _print_summary(snapshot, log_path, server.url)
        _print_alerts(alerts.got, duration)
    return 0


class _Alerts:
    """The demo's alert sink: keeps them for the summary."""

    def __init__(self) -> None:
        self.got: list[llmpulse.Alert] = []

    def emit(self, alert: llmpulse.Alert) -> None:
        self.got.append(alert)


def _print_alerts(alerts: list[llmpulse.Alert], duration: float) -> None:
    print("\nAlerts (in-process rules; see docs/alerting.md)")
    if not alerts:
        print("  none fired")
    if duration < 240:  # younger than every window: say so rather than look healthy
        print("  (a rule over a window waits until 80 % of it is watched: 2 min 24 s for the 429 rules,")
        print("   4 min for p95 and 5xx; run with --duration 300 to see them)")
    for alert in alerts:
        mark = "resolved" if alert.status == "resolved" else alert.severity.upper()
        print(f"  {alert.at:%H:%M:%S} [{mark}] {alert.rule}: {alert.summary}")
        top = ", ".join(f"{t} {n:.0f}" for t, n in alert.evidence.top_tenants_by_requests[:3])
        if alert.status == "firing" and top:
            print(f"           top tenants by calls: {top}")


def _pick_tenant(rng: random.Random) -> str:
    names = [t for t, _ in TENANTS]
    return rng.choices(names, weights=[w for _, w in TENANTS])[0]


def _one_call(clients: dict[str, Any], rng: random.Random) -> None:
    provider = rng.choice(("openai", "openai", "anthropic"))
    stream = rng.random() < 0.4
    messages = [{"role": "user", "content": rng.choice(PROMPTS)}]
    client = clients[provider]
    if provider == "openai":
        model = rng.choice(OPENAI_MODELS)
        if stream:
            for _ in client.chat.completions.create(
                model=model, messages=messages, max_tokens=60, stream=True
            ):
                pass
        else:
            client.chat.completions.create(model=model, messages=messages, max_tokens=60)
    else:
        model = rng.choice(ANTHROPIC_MODELS)
        if stream:
            with client.messages.stream(model=model, max_tokens=60, messages=messages) as s:
                for _ in s.text_stream:
                    pass
        else:
            client.messages.create(model=model, max_tokens=60, messages=messages)


def _sync_worker(clients: dict[str, Any], stop_at: float, rng: random.Random) -> None:
    while time.monotonic() < stop_at:
        # Failures are the point of the demo; llmpulse records them.
        with (
            llmpulse.context(tenant=_pick_tenant(rng), route=rng.choice(ROUTES)),
            contextlib.suppress(Exception),
        ):
            _one_call(clients, rng)


async def _async_workers(
    oai_kwargs: dict[str, Any], ant_kwargs: dict[str, Any], stop_at: float, n: int
) -> None:
    import anthropic  # noqa: PLC0415
    import openai  # noqa: PLC0415

    # Async clients belong to the loop they are used on: make and close them here.
    aclients: dict[str, Any] = {
        "openai": llmpulse.wrap(openai.AsyncOpenAI(**oai_kwargs)),
        "anthropic": llmpulse.wrap(anthropic.AsyncAnthropic(**ant_kwargs)),
    }

    async def worker(rng: random.Random) -> None:
        while time.monotonic() < stop_at:
            with llmpulse.context(tenant=_pick_tenant(rng), route="/agent", priority="background"):
                messages = [{"role": "user", "content": rng.choice(PROMPTS)}]
                # Failures are the point of the demo; llmpulse records them.
                with contextlib.suppress(Exception):
                    if rng.random() < 0.5:
                        stream = await aclients["openai"].chat.completions.create(
                            model="gpt-4o-mini", messages=messages, max_tokens=40, stream=True
                        )
                        async for _ in stream:
                            pass
                    else:
                        await aclients["anthropic"].messages.create(
                            model="claude-haiku-4-5", max_tokens=40, messages=messages
                        )

    await asyncio.gather(*(worker(random.Random(100 + i)) for i in range(n)))
    for aclient in aclients.values():
        await aclient.close()


def _watch(threads: list[threading.Thread], stop_at: float, *, live: bool) -> None:
    def alive() -> bool:
        return any(t.is_alive() for t in threads)

    if not live:
        while alive():
            threads[0].join(0.5)
        return
    from rich.live import Live  # noqa: PLC0415

    with Live(_table(llmpulse.stats(60), stop_at), refresh_per_second=4) as view:
        while alive():
            threads[0].join(0.25)
            view.update(_table(llmpulse.stats(60), stop_at))


def _row(name: str, g: GroupStats) -> list[str]:
    return [
        name,
        str(g.calls),
        f"{g.error_rate:.1%}",
        f"{g.rate_429:.1%}",
        fmt_seconds(g.p50_s),
        fmt_seconds(g.p95_s),
        fmt_seconds(g.p99_s),
        fmt_seconds(g.ttft_p50_s),
        f"{g.input_tokens + g.output_tokens:,}",
        f"${g.cost_usd:.4f}",
    ]


def _table(snapshot: StatsSnapshot, stop_at: float) -> Any:
    from rich.table import Table  # noqa: PLC0415

    left = max(0.0, stop_at - time.monotonic())
    table = Table(title=f"llmpulse demo: last 60 s ({left:.0f} s left)")
    for header in (
        "tenant",
        "calls",
        "errors",
        "429s",
        "p50",
        "p95",
        "p99",
        "TTFT p50",
        "tokens",
        "cost",
    ):
        table.add_column(header, justify="left" if header == "tenant" else "right")
    for name, group in sorted(snapshot.by_tenant.items(), key=lambda kv: -kv[1].calls):
        table.add_row(*_row(name, group))
    table.add_row(*_row("TOTAL", snapshot.total), style="bold")
    return table


def _print_summary(snapshot: StatsSnapshot, log_path: str, metrics_url: str) -> None:
    t = snapshot.total
    lines = [
        "",
        "Summary",
        f"  calls {t.calls}, errors {t.error_rate:.1%}, 429s {t.rate_429:.1%}, retries {t.retries}",
        f"  latency p50 {fmt_seconds(t.p50_s)}, p95 {fmt_seconds(t.p95_s)}, p99 {fmt_seconds(t.p99_s)};"
        f" TTFT p50 {fmt_seconds(t.ttft_p50_s)} (within 1 %)",
        f"  tokens in {t.input_tokens:,} / out {t.output_tokens:,}; cost ${t.cost_usd:.4f}"
        f" ({t.unpriced_calls} calls unpriced)",
        "  by model:",
    ]
    for model, g in sorted(snapshot.by_model.items()):
        lines.append(f"    {model:<20} {g.calls:>5} calls  p95 {fmt_seconds(g.p95_s):>8}  ${g.cost_usd:.4f}")
    lines.append(f"  JSON logs: {log_path}  (metrics were served at {metrics_url})")
    print("\n".join(lines))
