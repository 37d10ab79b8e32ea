"""`llmpulse demo`: a multi-tenant workload through wrapped clients, with a live table.

Runs offline on embedded defaults: the built-in fake provider with a
realistic fault plan, in-memory state, JSON logs to a fresh file per run,
/metrics on localhost. With ``--real`` it targets the real providers whose
API keys are in the environment (tokens cost money: the workload is kept
tiny).

Ctrl-C stops the traffic: no new calls start, the async calls in flight are
cancelled (each records one "cancelled" event), the sync ones finish (a
thread blocked in a socket read cannot be interrupted from outside it), and
the summary prints; the exit code is 130. The fake provider and the
clients stay up until every call has ended, so no call fails against a
closed server: closing them under running calls is what filled the log
with connection errors (10 to 15 per Ctrl-C in 0.1.0), and 10 such
failures in a row open a breaker, after which calls fail with
``CircuitOpenError``. A second Ctrl-C quits at once, without the summary.

/metrics is served while the traffic runs and stops with it, so ``make demo``
ends on its own (and a pipe or CI job never hangs); ``--keep-serving`` keeps
it up after the summary until Ctrl-C, and the printed ``curl`` line says
which of the two applies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import os
import random
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import llmpulse

from ._demo_text import RunLog, alert_lines, new_run_log, plain_table
from ._pipeline import get_pipeline
from ._stats import GroupStats, StatsSnapshot
from ._units import fmt_cost, fmt_count, fmt_seconds

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "REAL_MAX_DURATION_S",
    "DemoUsageError",
    "plan_duration",
    "real_providers",
    "run_demo",
]

TENANTS = (("acme", 5), ("globex", 3), ("initech", 2), ("umbrella", 1), ("hooli", 1))
ROUTES = ("/chat", "/summarize", "/search")
OPENAI_MODELS = ("gpt-4o-mini", "gpt-4o")
ANTHROPIC_MODELS = ("claude-haiku-4-5", "claude-sonnet-4-6")
PROMPTS = (
    "Summarise the incident report for the on-call channel.",
    "Draft a polite reply to a customer asking about their invoice.",
    "List three risks of deploying on a Friday afternoon.",
)
PROVIDERS = (("openai", "OpenAI", "OPENAI_API_KEY"), ("anthropic", "Anthropic", "ANTHROPIC_API_KEY"))
"""Provider id, its name for people, and the environment variable holding its key."""

REAL_MAX_DURATION_S = 10.0
"""``--real`` runs at most this long: real tokens cost money."""
EXIT_USAGE = 2
"""Bad options or environment (argparse's code for usage errors too)."""
EXIT_INTERRUPTED = 130
"""Stopped by Ctrl-C (128 + SIGINT, what shells report)."""
PROGRESS_EVERY_S = 10.0
"""How often a run without the live table prints a progress line."""
ALERT_LINES = 20
"""At most this many lines of alerts: a screenful with the summary above it."""


class DemoUsageError(Exception):
    """An option or the environment does not allow the demo to run; the message says which."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the demo's command-line options."""
    parser.add_argument(
        "--duration",
        type=float,
        default=30.0,
        help=f"seconds of traffic (default 30; at most {REAL_MAX_DURATION_S:g} with --real)",
    )
    parser.add_argument("--workers", type=int, default=6, help="concurrent sync workers (default 6)")
    parser.add_argument(
        "--out", default="demo-out", help="directory for the JSON log files (default demo-out)"
    )
    parser.add_argument("--metrics-port", type=int, default=0, help="/metrics port (default: a free one)")
    parser.add_argument(
        "--keep-serving",
        action="store_true",
        help="keep serving /metrics after the summary, until Ctrl-C",
    )
    parser.add_argument(
        "--real",
        action="store_true",
        help="call the real providers whose key is set (OPENAI_API_KEY, ANTHROPIC_API_KEY)",
    )
    parser.add_argument("--no-live", action="store_true", help="print progress lines, not the live table")


def real_providers(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The providers ``--real`` calls: those whose API key is set (and not empty) in ``environ``.

    Raises:
        DemoUsageError: Neither key is set.

    """
    found = tuple(provider for provider, _, key in PROVIDERS if environ.get(key, "").strip())
    if not found:
        msg = (
            "--real needs OPENAI_API_KEY or ANTHROPIC_API_KEY (either is enough);"
            " without --real the demo runs offline"
        )
        raise DemoUsageError(msg)
    return found


def plan_duration(requested: float, *, real: bool) -> tuple[float, str]:
    """The seconds of traffic the demo runs, and a note when that is not what was asked.

    Raises:
        DemoUsageError: ``requested`` is not a positive number of seconds.

    """
    if not requested > 0 or requested == float("inf"):  # NaN fails the first test
        msg = f"--duration must be a positive number of seconds, got {requested:g}"
        raise DemoUsageError(msg)
    if real and requested > REAL_MAX_DURATION_S:
        return (
            REAL_MAX_DURATION_S,
            f" (--real runs at most {REAL_MAX_DURATION_S:g} s: real tokens cost money)",
        )
    return requested, ""


def _check(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[float, str, tuple[str, ...]]:
    """The run's duration, its note, and the providers it calls; `DemoUsageError` for bad input."""
    duration, note = plan_duration(args.duration, real=args.real)
    providers = real_providers(environ) if args.real else tuple(p for p, _, _ in PROVIDERS)
    if args.workers < 1:
        msg = f"--workers must be at least 1, got {args.workers}"
        raise DemoUsageError(msg)
    return duration, note, providers


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo workload; returns a process exit code (0, 2 for bad input, 130 after Ctrl-C)."""
    try:
        duration, note, providers = _check(args, os.environ)
    except DemoUsageError as exc:
        print(f"llmpulse demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    holder: list[_Traffic] = []

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        # Only a flag: a handler runs between any two bytecodes of the main thread, maybe inside
        # a lock it holds, so taking a lock here (Event.set included) could deadlock.
        if not holder or holder[0].interrupt_requested:
            raise KeyboardInterrupt  # nothing to stop gracefully yet, or a second Ctrl-C
        holder[0].interrupt_requested = True

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main_thread else None
    try:
        return _run(args, duration, note, providers, holder)
    except KeyboardInterrupt:
        if holder and holder[0].alive():
            # A second Ctrl-C: the user will not wait for the calls in flight. Unwinding would close
            # the fake provider under them (failed calls in the log); daemon threads still in the SDK
            # can also crash interpreter shutdown. So leave at once.
            print(
                "\nllmpulse demo: interrupted again: quitting without the summary"
                " (the calls still in flight are not in the log)",
                file=sys.stderr,
            )
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        print("\nllmpulse demo: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _run(
    args: argparse.Namespace, duration: float, note: str, providers: tuple[str, ...], holder: list[_Traffic]
) -> int:
    from ._metrics_server import start_metrics_server  # noqa: PLC0415
    from .testing import FakeProvider, FaultPlan  # noqa: PLC0415

    try:
        makers = _sdk_classes(providers)
    except DemoUsageError as exc:
        print(f"llmpulse demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        log = new_run_log(args.out, datetime.now(UTC))
    except OSError as exc:
        print(f"llmpulse demo: cannot write the JSON log in --out {args.out!r}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    alerts = _Alerts()  # shown after the run: JSON lines would break the live table
    llmpulse.configure(sinks=("jsonl",), jsonl_path=str(log.path), alert_sinks=(alerts,))
    live = not args.no_live and sys.stdout.isatty() and _have_rich()
    with ExitStack() as stack:
        kwargs: dict[str, dict[str, Any]] = {"openai": {}, "anthropic": {}}
        if not args.real:
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
            kwargs["openai"] = {"api_key": "sk-demo-not-a-real-key", "base_url": fake.openai_base_url}
            kwargs["anthropic"] = {
                "api_key": "sk-ant-demo-not-a-real-key",
                "base_url": fake.anthropic_base_url,
            }
        try:
            server = start_metrics_server(args.metrics_port)
        except OSError as exc:
            print(
                f"llmpulse demo: cannot serve /metrics on --metrics-port {args.metrics_port}: {exc}",
                file=sys.stderr,
            )
            return EXIT_USAGE
        stack.callback(server.stop)
        clients: dict[str, Any] = {p: llmpulse.wrap(makers[p][0](**kwargs[p])) for p in providers}
        for client in clients.values():
            stack.callback(client.close)
        where = None if args.real else fake.base_url
        _print_banner(duration, note, clients, where, server.url, log)
        print("  Ctrl-C stops the traffic and prints the summary", flush=True)
        traffic = _Traffic(
            duration,
            clients,
            {p: (makers[p][1], kwargs[p]) for p in providers},
            sync_workers=1 if args.real else args.workers,
            async_workers=1 if args.real else 8,
        )
        holder.append(traffic)
        traffic.start()
        _watch(traffic, live=live)
        traffic.join()
        llmpulse.flush(10)
        engine = get_pipeline().alerts
        if engine is not None:
            engine.evaluate()  # the last word on the run, not the last 10-second tick's
        snapshot = llmpulse.stats(window_s=traffic.elapsed() + 60)
        _print_summary(snapshot, traffic, live=live)
        _print_alerts(alerts.got, traffic.elapsed())
        _print_next_steps(log, server.url, keep_serving=args.keep_serving)
        if args.keep_serving and not traffic.interrupted:
            print(f"Serving {server.url} until Ctrl-C", flush=True)
            traffic.wait_for_interrupt()
            return 0  # the documented way to end --keep-serving, not an interruption of the run
    return EXIT_INTERRUPTED if traffic.interrupted else 0


SDKS = {
    "openai": ("openai", "OpenAI", "AsyncOpenAI"),
    "anthropic": ("anthropic", "Anthropic", "AsyncAnthropic"),
}
"""Provider id -> the SDK's module and its sync and async client classes."""


def _sdk_classes(providers: tuple[str, ...]) -> dict[str, tuple[Callable[..., Any], Callable[..., Any]]]:
    """The sync and async client classes of each provider's SDK; `DemoUsageError` when one is missing.

    The library needs neither SDK; the demo needs the one of each provider it calls.
    """
    classes: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {}
    for provider in providers:
        module_name, sync_name, async_name = SDKS[provider]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            msg = (
                f"the {module_name} SDK is not installed and the demo calls {provider} through it:"
                f" pip install {module_name}"
            )
            raise DemoUsageError(msg) from exc
        classes[provider] = (getattr(module, sync_name), getattr(module, async_name))
    return classes


def _have_rich() -> bool:
    """Whether rich (the ``cli`` extra) is there for the live table; without it the output is plain."""
    return importlib.util.find_spec("rich") is not None


def _print_banner(
    duration: float, note: str, clients: dict[str, Any], fake_url: str | None, metrics_url: str, log: RunLog
) -> None:
    """What runs, against what, and where to look meanwhile (``fake_url`` None: the real providers)."""
    mode = "" if fake_url else " --real"
    print(f"llmpulse {llmpulse.__version__} demo{mode}: {duration:g} s of traffic{note}")
    if fake_url:
        print(f"  against the built-in fake provider at {fake_url} (no network, no keys)")
    else:
        for provider, name, key in PROVIDERS:
            if provider in clients:
                print(f"  calling {name} at {clients[provider].base_url} (key from {key})")
            else:
                print(f"  not calling {name}: {key} is not set")
    print(f"  /metrics: {metrics_url}   JSON log: {log.path}")


class _Alerts:
    """The demo's alert sink: keeps them for the summary."""

    def __init__(self) -> None:
        self.got: list[llmpulse.Alert] = []

    def emit(self, alert: llmpulse.Alert) -> None:
        self.got.append(alert)


class _Traffic:
    """The demo's workers, and how they stop: at the deadline, or at the first Ctrl-C."""

    def __init__(
        self,
        duration: float,
        clients: dict[str, Any],
        async_clients: dict[str, tuple[Callable[..., Any], dict[str, Any]]],
        *,
        sync_workers: int,
        async_workers: int,
    ) -> None:
        self.duration = duration
        self.interrupt_requested = False  # set by the SIGINT handler; acted on by wait()
        self.interrupted = False
        self._clients = clients
        self._async_clients = async_clients
        self._stop = threading.Event()
        self._lock = threading.Lock()  # orders interrupt() against the async side registering its tasks
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sync_in_flight = 0
        # Our own count of running workers, not Thread.is_alive(): on Python 3.11 a KeyboardInterrupt
        # raised while joining a thread marks it stopped although it still runs (bpo-45274's fix).
        self._running = sync_workers + 1
        self._done = threading.Event()
        self._started = self._deadline = self._ended = self._interrupted_at = 0.0
        self._threads = [
            threading.Thread(target=self._worker, args=(self._sync_worker, random.Random(i)), daemon=True)
            for i in range(sync_workers)
        ]
        self._threads.append(
            threading.Thread(target=self._worker, args=(self._async_thread, async_workers), daemon=True)
        )

    def start(self) -> None:
        self._started = time.monotonic()
        self._deadline = self._started + self.duration
        for thread in self._threads:
            thread.start()

    def stopping(self) -> bool:
        """Whether workers must not start another call."""
        return self._stop.is_set() or time.monotonic() >= self._deadline

    def alive(self) -> bool:
        return not self._done.is_set()

    def interrupt(self) -> None:
        """Ctrl-C: no new calls, cancel the async ones in flight."""
        self._interrupted_at = time.monotonic()
        with self._lock:
            self.interrupted = True
            self._stop.set()
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._cancel_tasks)

    def sync_in_flight(self) -> int:
        with self._lock:
            return self._sync_in_flight

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the workers, then act on a Ctrl-C that came meanwhile."""
        self._done.wait(timeout)  # the signal handler runs during it
        if self.interrupt_requested and not self.interrupted:
            self.interrupt()

    def wait_for_interrupt(self) -> None:
        """Return after the next Ctrl-C (for --keep-serving, once the traffic is over)."""
        while not self.interrupt_requested:
            time.sleep(0.25)  # a signal handler runs between two sleeps

    def join(self) -> None:
        self._done.wait()
        self._ended = time.monotonic()
        for thread in self._threads:
            thread.join()  # each has only its return left

    def started_for(self) -> float:
        """Seconds during which workers started new calls: the duration, or until Ctrl-C."""
        end = self._deadline if not self._interrupted_at else min(self._interrupted_at, self._deadline)
        return end - self._started

    def elapsed(self) -> float:
        """Seconds from the first call to the last one's end (so far, while running)."""
        return (self._ended or time.monotonic()) - self._started

    @contextlib.contextmanager
    def _counted(self) -> Iterator[None]:
        with self._lock:
            self._sync_in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._sync_in_flight -= 1

    def _worker(self, work: Callable[[Any], None], arg: Any) -> None:
        try:
            work(arg)
        finally:
            with self._lock:
                self._running -= 1
                if not self._running:
                    self._done.set()

    def _async_thread(self, n: int) -> None:
        asyncio.run(self._async_main(n))

    def _sync_worker(self, rng: random.Random) -> None:
        while not self.stopping():
            # Failures are the point of the demo; llmpulse records them.
            with (
                llmpulse.context(tenant=_pick_tenant(rng), route=rng.choice(ROUTES)),
                contextlib.suppress(Exception),
                self._counted(),
            ):
                _one_call(self._clients, rng)

    def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _async_main(self, n: int) -> None:
        # Async clients belong to the loop they are used on: make and close them here.
        aclients: dict[str, Any] = {
            p: llmpulse.wrap(make(**kw)) for p, (make, kw) in self._async_clients.items()
        }
        try:
            with self._lock:
                if self._stop.is_set():
                    return
                self._loop = asyncio.get_running_loop()
                self._tasks = [
                    asyncio.create_task(self._async_worker(aclients, random.Random(100 + i)))
                    for i in range(n)
                ]
            # Cancelled workers end with CancelledError: that is how Ctrl-C stops them, not a failure.
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            for aclient in aclients.values():
                await aclient.close()

    async def _async_worker(self, aclients: dict[str, Any], rng: random.Random) -> None:
        providers = sorted(aclients)
        while not self.stopping():
            with llmpulse.context(tenant=_pick_tenant(rng), route="/agent", priority="background"):
                messages = [{"role": "user", "content": rng.choice(PROMPTS)}]
                # Failures are the point of the demo; llmpulse records them.
                with contextlib.suppress(Exception):
                    if rng.choice(providers) == "openai":
                        stream = await aclients["openai"].chat.completions.create(
                            model="gpt-4o-mini", messages=messages, max_tokens=40, stream=True
                        )
                        async for _ in stream:
                            pass
                    else:
                        await aclients["anthropic"].messages.create(
                            model="claude-haiku-4-5", max_tokens=40, messages=messages
                        )


def _pick_tenant(rng: random.Random) -> str:
    names = [t for t, _ in TENANTS]
    return rng.choices(names, weights=[w for _, w in TENANTS])[0]


def _one_call(clients: dict[str, Any], rng: random.Random) -> None:
    weights = {"openai": 2, "anthropic": 1}
    names = sorted(clients)
    provider = rng.choices(names, weights=[weights[p] for p in names])[0]
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


def _watch(traffic: _Traffic, *, live: bool) -> None:
    """Show the traffic until every worker is done: a live table, or progress lines."""
    announced = False

    def announce(say: Callable[[str], object]) -> None:
        nonlocal announced
        if traffic.interrupted and not announced:
            announced = True
            n = traffic.sync_in_flight()
            say(
                "Interrupted: no new calls; async calls in flight cancelled, waiting for"
                f" {fmt_count(n, 'sync call')} in flight to finish (Ctrl-C again to quit now)"
            )

    if not live:
        flowing = False
        next_progress = PROGRESS_EVERY_S
        while traffic.alive():
            traffic.wait(0.25)
            announce(lambda text: print(text, flush=True))
            total = llmpulse.stats(60).total
            elapsed = traffic.elapsed()
            if not flowing and total.calls:
                flowing = True
                print(f"  traffic flowing: first call ended {elapsed:.1f} s in", flush=True)
            if elapsed >= next_progress and not traffic.stopping():
                next_progress += PROGRESS_EVERY_S
                print(
                    f"  {elapsed:.0f} s: {fmt_count(total.calls, 'call')}"
                    f" {'so far' if elapsed <= 60 else 'in the last 60 s'},"  # the window of stats(60)
                    f" errors {total.error_rate:.1%}, 429s {total.rate_429:.1%},"
                    f" p95 {fmt_seconds(total.p95_s)}",
                    flush=True,
                )
        return
    from rich.live import Live  # noqa: PLC0415

    # Transient: the summary table replaces the live one instead of printing under it.
    with Live(_live_table(llmpulse.stats(60), traffic), refresh_per_second=4, transient=True) as view:
        while traffic.alive():
            traffic.wait(0.25)
            announce(view.console.print)
            view.update(_live_table(llmpulse.stats(60), traffic))


HEADERS = ("tenant", "calls", "errors", "429s", "p50", "p95", "p99", "TTFT p50", "tokens", "cost")


def _row(name: str, g: GroupStats) -> list[str]:
    return [
        name,
        f"{g.calls:,}",
        f"{g.error_rate:.1%}",
        f"{g.rate_429:.1%}",
        fmt_seconds(g.p50_s),
        fmt_seconds(g.p95_s),
        fmt_seconds(g.p99_s),
        fmt_seconds(g.ttft_p50_s),
        f"{g.input_tokens + g.output_tokens:,}",
        fmt_cost(g.cost_usd),
    ]


def _rows(groups: Mapping[str, GroupStats], total: GroupStats) -> list[list[str]]:
    ordered = sorted(groups.items(), key=lambda kv: (-kv[1].calls, kv[0]))
    return [*(_row(name, g) for name, g in ordered), _row("TOTAL", total)]


def _rich_table(title: str, first: str, rows: list[list[str]]) -> Any:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=title)
    for i, header in enumerate((first, *HEADERS[1:])):
        table.add_column(header, justify="left" if i == 0 else "right")
    for i, row in enumerate(rows):
        table.add_row(*row, style="bold" if i == len(rows) - 1 else None)
    return table


def _live_table(snapshot: StatsSnapshot, traffic: _Traffic) -> Any:
    left = max(0.0, traffic.duration - traffic.elapsed())
    state = "stopping" if traffic.stopping() else f"{left:.0f} s left"
    return _rich_table(
        f"llmpulse demo: last 60 s ({state})", "tenant", _rows(snapshot.by_tenant, snapshot.total)
    )


def _print_summary(snapshot: StatsSnapshot, traffic: _Traffic, *, live: bool) -> None:
    t = snapshot.total
    how = "stopped by Ctrl-C at" if traffic.interrupted else "new calls for"
    started_for = traffic.started_for()
    cancelled = f", {fmt_count(t.cancelled, 'call')} cancelled" if t.cancelled else ""
    print(
        f"\nSummary: {how} {started_for:.1f} s; the last call ended at {traffic.elapsed():.1f} s\n"
        f"  {fmt_count(t.calls, 'call')}, errors {t.error_rate:.1%}, 429s {t.rate_429:.1%},"
        f" {fmt_count(t.retries, 'retry', 'retries')}{cancelled}\n"
        f"  latency p50 {fmt_seconds(t.p50_s)}, p95 {fmt_seconds(t.p95_s)}, p99 {fmt_seconds(t.p99_s)};"
        f" TTFT p50 {fmt_seconds(t.ttft_p50_s)} (within 1 %)\n"
        f"  tokens {t.input_tokens:,} in / {t.output_tokens:,} out; cost {fmt_cost(t.cost_usd)}"
        f" ({fmt_count(t.unpriced_calls, 'call')} unpriced)"
    )
    tables = (("tenant", snapshot.by_tenant), ("model", snapshot.by_model))
    if live:
        from rich.console import Console  # noqa: PLC0415

        console = Console()
        for first, groups in tables:
            console.print(_rich_table(f"By {first}", first, _rows(groups, t)))
        return
    for first, groups in tables:
        print()
        print("\n".join(plain_table((first, *HEADERS[1:]), _rows(groups, t))))


def _print_alerts(alerts: list[llmpulse.Alert], elapsed: float) -> None:
    print("\nAlerts (in-process rules; see docs/in-process-alerts.md)")
    if not alerts:
        print("  none fired")
    if elapsed < 240:  # younger than every window: say so rather than look healthy
        print("  (a rule over a window waits until 80 % of it is watched: 2 min 24 s for the 429 rules,")
        print("   4 min for p95 and 5xx; run with --duration 300 to see them)")
    if alerts:
        print("\n".join(alert_lines(alerts, limit=ALERT_LINES)))


def _command() -> str:
    """How this process was started, so the printed ``report`` command works when pasted."""
    if os.path.basename(sys.argv[0]) == "llmpulse":
        return shlex.quote(sys.argv[0])  # e.g. .venv/bin/llmpulse from make demo
    return f"{shlex.quote(sys.executable)} -m llmpulse"


def _print_next_steps(log: RunLog, metrics_url: str, *, keep_serving: bool) -> None:
    with log.path.open("rb") as f:
        lines = sum(1 for _ in f)
    path = shlex.quote(str(log.path))
    if keep_serving:
        curl = f"  # the Prometheus metrics, served until you press Ctrl-C:\n  curl -s {metrics_url}"
    else:
        # The port is gone once the demo exits; a command that fails silently would mislead.
        curl = (
            "  # the Prometheus metrics: served only while the traffic ran, so this now fails;"
            " run with --keep-serving to scrape them after the summary:\n"
            f"  curl -s {metrics_url}"
        )
    latest = f"; {shlex.quote(str(log.latest))} names the newest run" if log.latest else ""
    print(
        "\nLook further\n"
        "  # latency, errors, retries and cost by model, tenant and route:\n"
        f"  {_command()} report {path}\n"
        f"{curl}\n"
        f"  # the JSON log, one line per call ({fmt_count(lines, 'line')}{latest}):\n"
        f"  {path}"
    )
