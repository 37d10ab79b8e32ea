"""`llmpulse demo` and the CLI run end to end, offline; the demo's formatting as plain functions."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import llmpulse
import llmpulse._demo
from llmpulse._cli import main
from llmpulse._demo import EXIT_INTERRUPTED, EXIT_USAGE, REAL_MAX_DURATION_S, DemoUsageError, plan_duration
from llmpulse._demo_text import LATEST_NAME, alert_lines, new_run_log, plain_table
from llmpulse._units import fmt_cost, fmt_count
from llmpulse.alerts import Alert, Evidence
from llmpulse.testing import FakeProvider, FaultPlan

KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL")
# Generous: a loaded 2-core machine; the test fails, rather than hangs, if a line never comes.
LINE_TIMEOUT_S = 60.0


@pytest.fixture(autouse=True)
def _restore_settings() -> Iterator[None]:
    yield
    llmpulse.configure(sinks=("none",))


@pytest.fixture(name="no_keys")
def _no_keys(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_demo_runs_and_writes_json_logs(tmp_path: Path) -> None:
    """A short demo drives traffic through wrapped clients, summarises it and writes one log line per call."""
    # A process of its own, as `make demo` runs it: llmpulse.stats() is process-wide, so in this
    # process the summary would also count the calls earlier tests made in the last minute.
    command = [sys.executable, "-m", "llmpulse", "demo", "--duration", "2", "--workers", "2"]
    command += ["--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    out = done.stdout
    assert out.startswith(f"llmpulse {llmpulse.__version__} demo: 2 s of traffic\n")  # names the release
    latest = tmp_path / LATEST_NAME
    run = latest.resolve()
    assert latest.is_symlink()
    assert run.name.startswith("llmpulse-events-")
    assert run.name != LATEST_NAME
    calls = [x for x in _events(run) if x["type"] == "llm.call"]
    assert calls
    assert {c["provider"] for c in calls} == {"openai", "anthropic"}
    assert {c["tenant"] for c in calls} <= {"acme", "globex", "initech", "umbrella", "hooli"}
    assert any(c["streamed"] for c in calls)
    assert all("sk-demo" not in json.dumps(c) for c in calls)
    # The fake's answers are valid JSON, gzipped as the hosted APIs send them: the wrapped clients
    # must read them as the bare SDK does, whatever faults the demo's plan scripts.
    assert [c for c in calls if c["error_type"] == "MalformedResponseError"] == []
    assert any(c["outcome"] == "ok" and not c["streamed"] for c in calls)
    # The end, in this order: the summary tables, the alerts, the commands to look further.
    summary, alerts, further = (out.index(s) for s in ("\nSummary: ", "\nAlerts (", "\nLook further\n"))
    assert summary < alerts < further
    assert out.index("\nTOTAL ") < alerts
    page = re.search(r"\nAlerts \(in-process rules; see (docs/[\w-]+\.md)\)\n", out)
    assert page is not None
    assert (Path(__file__).parent.parent / page[1]).exists()  # the page it points to is there
    assert f"{fmt_count(len(calls), 'call')}, errors" in out  # the log and the summary agree
    tail = out[further:].splitlines()[2:]
    printed = tmp_path / run.name
    assert tail[1] == f"  {sys.executable} -m llmpulse report {printed}"  # how this process was started
    assert "served only while the traffic ran, so this now fails" in tail[2]
    assert tail[3].startswith("  curl -s http://127.0.0.1:")
    assert tail[3].endswith("/metrics")
    assert tail[4].endswith(f"({fmt_count(len(calls), 'line')}; {latest} names the newest run):")
    assert tail[5:] == [f"  {printed}"]


def test_output_that_is_not_a_terminal_gets_plain_tables_not_cut_at_80_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Piped (here: captured) output has no live table and no box drawing, and keeps every column whole."""
    assert main(["demo", "--duration", "1", "--workers", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("tenant "))
    assert header.split() == [
        "tenant",
        "calls",
        "errors",
        "429s",
        "p50",
        "p95",
        "p99",
        "TTFT",
        "p50",
        "tokens",
        "cost",
    ]
    assert len(header) > 80  # rich would have squeezed it into 80 columns
    total = next(line for line in lines if line.startswith("TOTAL "))
    assert len(total) == len(header)  # the last column, right-aligned, ends every row at the same place
    assert total.split()[-1].startswith("$")
    assert "…" not in out
    assert "┃" not in out  # no rich box: a plain table
    assert "traffic flowing: first call ended" in out  # progress instead of a live table


def test_each_run_gets_a_fresh_log_and_the_latest_link_moves(tmp_path: Path) -> None:
    """Two runs never share a file, even within one second; the latest link names the newer run."""
    now = datetime(2026, 12, 2, 2, 15, 30, tzinfo=UTC)
    first = new_run_log(tmp_path / "out", now)
    second = new_run_log(tmp_path / "out", now)
    assert first.path.name == "llmpulse-events-20261202T021530Z.jsonl"
    assert second.path.name == "llmpulse-events-20261202T021530Z-2.jsonl"
    assert first.path.exists()
    assert second.path.read_text() == ""
    assert second.latest == tmp_path / "out" / LATEST_NAME
    assert os.readlink(second.latest) == second.path.name  # relative: the directory can move
    later = new_run_log(tmp_path / "out", now + timedelta(seconds=1))
    assert later.latest is not None
    assert later.latest.resolve() == later.path.resolve()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "llmpulse-events-20261202T021530Z-2.jsonl",
        "llmpulse-events-20261202T021530Z.jsonl",
        "llmpulse-events-20261202T021531Z.jsonl",
        LATEST_NAME,
    ]


def test_no_latest_link_where_symlinks_cannot_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without symlinks the run still gets its own file, and says there is no link rather than fail."""

    def refuse(self: Path, target: str) -> None:
        raise OSError("symbolic links are not supported")

    monkeypatch.setattr(Path, "symlink_to", refuse)
    log = new_run_log(tmp_path, datetime(2026, 12, 2, tzinfo=UTC))
    assert log.latest is None
    assert log.path.exists()
    assert [p.name for p in tmp_path.iterdir()] == [log.path.name]  # no temporary left behind


class _Demo:
    """``llmpulse demo`` in a child process, its stdout read line by line so a test can wait for one."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmpulse", "demo", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.seen: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")  # EOF

    def wait_for_line(self, start: str) -> str:
        """The next line starting with ``start`` (after indentation); fails if the output ends first."""
        while True:
            line = self._lines.get(timeout=LINE_TIMEOUT_S)
            self.seen.append(line)
            assert line, f"the demo ended before printing a line starting {start!r}: {''.join(self.seen)}"
            if line.lstrip().startswith(start):
                return line

    def finish(self) -> tuple[int, str, str]:
        """Exit code, all of stdout and all of stderr, once the demo has ended."""
        while line := self._lines.get(timeout=LINE_TIMEOUT_S):
            self.seen.append(line)
        assert self.proc.stderr is not None
        return self.proc.wait(LINE_TIMEOUT_S), "".join(self.seen), self.proc.stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:  # a failed test must not leave a demo running
            self.proc.kill()
        self.proc.wait(LINE_TIMEOUT_S)
        self._pump.join(LINE_TIMEOUT_S)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture(name="spawn")
def _spawn() -> Iterator[Any]:
    demos: list[_Demo] = []

    def spawn(args: list[str], env: dict[str, str] | None = None) -> _Demo:
        demos.append(_Demo(args, env))
        return demos[-1]

    yield spawn
    for demo in demos:
        demo.close()


def test_ctrl_c_stops_the_traffic_prints_the_summary_and_exits_130(tmp_path: Path, spawn: Any) -> None:
    """Ctrl-C mid-run: no call starts after it, async calls are cancelled, no breaker storm, summary, 130."""
    demo = spawn(["--duration", "60", "--workers", "2", "--out", str(tmp_path)])
    demo.wait_for_line("traffic flowing")  # calls have ended, more are in flight
    demo.proc.send_signal(signal.SIGINT)
    demo.wait_for_line("Interrupted: no new calls")
    stopped = datetime.now(UTC)  # the demo printed that line after telling its workers to stop
    code, out, err = demo.finish()
    assert code == EXIT_INTERRUPTED
    assert "Traceback" not in err
    assert err == ""
    assert "\nSummary: stopped by Ctrl-C at " in out
    assert "\nLook further\n" in out
    calls = [e for e in _events(tmp_path / LATEST_NAME) if e["type"] == "llm.call"]
    # A worker that had just passed its "stop?" check may still start that one call after the line:
    # at most one per worker (2 sync, 8 async), never a stream of new calls.
    late = [c for c in calls if datetime.fromisoformat(c["started_at"]) >= stopped]
    assert len(late) <= 2 + 8, late
    outcomes = Counter((c["outcome"], c["error_type"]) for c in calls)
    # The fake stayed up until the last call ended: nothing failed against a closed server, so no
    # breaker opened. The async calls in flight were cancelled, one event each.
    assert [c for c in calls if c["error_type"] == "CircuitOpenError"] == []
    assert outcomes[("cancelled", "CancelledError")] >= 1
    assert {c["outcome"] for c in calls} <= {"ok", "error", "cancelled"}
    assert f"{fmt_count(outcomes[('cancelled', 'CancelledError')], 'call')} cancelled" in out


def test_a_second_ctrl_c_quits_at_once(tmp_path: Path, spawn: Any, no_keys: Any) -> None:
    """While a sync call is still in flight, a second Ctrl-C exits 130 at once, in one line, no traceback."""
    plan = FaultPlan(latency_s=120.0)  # the calls stay in flight for the whole test
    with FakeProvider(plan) as fake:
        env = dict(os.environ, OPENAI_API_KEY="sk-test-not-real", OPENAI_BASE_URL=fake.openai_base_url)
        env["ANTHROPIC_BASE_URL"] = fake.anthropic_base_url  # never the real API, even by mistake
        demo = spawn(["--real", "--duration", "5", "--out", str(tmp_path)], env)
        assert fake.wait_for_requests(2, LINE_TIMEOUT_S)  # the sync and the async worker's calls
        demo.proc.send_signal(signal.SIGINT)
        line = demo.wait_for_line("Interrupted: no new calls")
        assert "waiting for 1 sync call in flight" in line
        demo.proc.send_signal(signal.SIGINT)
        code, out, err = demo.finish()
    assert code == EXIT_INTERRUPTED
    assert err.strip().splitlines() == [
        "llmpulse demo: interrupted again: quitting without the summary (the calls still in flight are not in"
        " the log)"
    ]
    assert "Summary" not in out


def test_keep_serving_serves_metrics_after_the_summary_until_ctrl_c(tmp_path: Path, spawn: Any) -> None:
    """--keep-serving: the printed curl command works after the summary; Ctrl-C then ends it, exit 0."""
    demo = spawn(["--duration", "1", "--workers", "1", "--keep-serving", "--out", str(tmp_path)])
    url = demo.wait_for_line("Serving ").split()[1]
    assert f"  curl -s {url}\n" in demo.seen  # the command printed is the one that works
    with urllib.request.urlopen(url, timeout=LINE_TIMEOUT_S) as answer:  # localhost: the demo's own server
        metrics = answer.read().decode()
    assert "llmpulse_requests_total{" in metrics
    demo.proc.send_signal(signal.SIGINT)
    code, out, err = demo.finish()
    assert out.index("\nLook further\n") < out.index("\nServing ")  # the summary came first
    assert code == 0  # the documented way to stop serving, not an interrupted run
    assert err == ""
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=LINE_TIMEOUT_S)  # stopped: the port is closed


@pytest.mark.parametrize(
    ("key", "called", "skipped"),
    [("OPENAI_API_KEY", "OpenAI", "Anthropic"), ("ANTHROPIC_API_KEY", "Anthropic", "OpenAI")],
)
def test_real_with_one_key_calls_that_provider_only(
    key: str, called: str, skipped: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_keys: Any
) -> None:
    """--real runs with either key alone, says which provider it calls and which not, and does so."""
    with FakeProvider(FaultPlan(latency_s=0.01)) as fake:
        # The SDKs' base-URL variables point both at the fake: no real provider is ever called.
        no_keys.setenv("OPENAI_BASE_URL", fake.openai_base_url)
        no_keys.setenv("ANTHROPIC_BASE_URL", fake.anthropic_base_url)
        no_keys.setenv(key, "sk-test-not-real")
        assert main(["demo", "--real", "--duration", "1", "--out", str(tmp_path)]) == 0
        paths = {r.path for r in fake.requests}
    out = capsys.readouterr().out.splitlines()
    skipped_key = next(k for k in KEYS[:2] if k != key)
    assert out[0] == f"llmpulse {llmpulse.__version__} demo --real: 1 s of traffic"
    base = fake.openai_base_url if called == "OpenAI" else fake.anthropic_base_url
    calling, not_calling = sorted(out[1:3])
    assert calling.startswith(f"  calling {called} at {base}")  # where it really goes, not "the real API"
    assert calling.endswith(f" (key from {key})")
    assert not_calling == f"  not calling {skipped}: {skipped_key} is not set"
    providers = {e["provider"] for e in _events(tmp_path / LATEST_NAME) if e["type"] == "llm.call"}
    assert providers == {called.lower()}
    assert paths == ({"/v1/chat/completions"} if called == "OpenAI" else {"/v1/messages"})


def test_real_without_keys_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_keys: Any
) -> None:
    """--real with neither key set: one line naming both variables, exit code 2, nothing written."""
    assert main(["demo", "--real", "--out", str(tmp_path / "out")]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "llmpulse demo: --real needs OPENAI_API_KEY or ANTHROPIC_API_KEY (either is enough);"
        " without --real the demo runs offline\n"
    )
    assert not (tmp_path / "out").exists()


def test_real_without_keys_from_the_shell(tmp_path: Path) -> None:
    """The installed command line (a new process) gives the same one line and code, no traceback."""
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    done = subprocess.run(
        [sys.executable, "-m", "llmpulse", "demo", "--real", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=LINE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == EXIT_USAGE
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("llmpulse demo: --real needs OPENAI_API_KEY or ANTHROPIC_API_KEY")


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--duration", "0"], "--duration must be a positive number of seconds, got 0"),
        (["--duration", "nan"], "--duration must be a positive number of seconds, got nan"),
        (["--workers", "0"], "--workers must be at least 1, got 0"),
    ],
)
def test_bad_options_are_named(argv: list[str], error: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad value gets one line naming the option and the value, and exit code 2."""
    assert main(["demo", *argv]) == EXIT_USAGE
    assert capsys.readouterr().err == f"llmpulse demo: {error}\n"


def test_an_out_that_cannot_be_written_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--out naming a file, not a directory: one line naming the option, exit code 2, no traceback."""
    (tmp_path / "a-file").write_text("")
    assert main(["demo", "--out", str(tmp_path / "a-file")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"llmpulse demo: cannot write the JSON log in --out {str(tmp_path / 'a-file')!r}: ")
    assert len(err.splitlines()) == 1


def test_a_metrics_port_in_use_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--metrics-port already taken: one line naming the option and port, exit code 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["demo", "--metrics-port", str(port), "--out", str(tmp_path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"llmpulse demo: cannot serve /metrics on --metrics-port {port}: ")
    assert len(err.splitlines()) == 1


def test_a_missing_sdk_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the anthropic SDK (the library does not need it) the demo says what to install."""
    monkeypatch.setitem(sys.modules, "anthropic", None)  # `import anthropic` raises ImportError
    assert main(["demo", "--out", str(tmp_path / "out")]) == EXIT_USAGE
    assert capsys.readouterr().err == (
        "llmpulse demo: the anthropic SDK is not installed and the demo calls anthropic through it:"
        " pip install anthropic\n"
    )
    assert not (tmp_path / "out").exists()


def test_without_rich_a_terminal_gets_the_plain_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """rich is the optional ``cli`` extra: on a terminal without it, the demo prints plain tables."""
    monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["demo", "--duration", "0.5", "--workers", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "\nTOTAL " in out
    assert "┃" not in out


def test_real_runs_at_most_its_cap_and_says_so() -> None:
    """--real caps the duration, and the note says it: the banner prints the duration that runs."""
    assert plan_duration(30, real=True) == (
        REAL_MAX_DURATION_S,
        f" (--real runs at most {REAL_MAX_DURATION_S:g} s: real tokens cost money)",
    )
    assert plan_duration(3, real=True) == (3, "")
    assert plan_duration(300, real=False) == (300, "")
    with pytest.raises(DemoUsageError, match="got -1"):
        plan_duration(-1, real=False)


@pytest.mark.parametrize(
    ("usd", "text"),
    [
        (0.0, "$0"),
        (None, "-"),
        (float("nan"), "-"),
        (0.0000412, "$0.0000412"),
        (0.000849, "$0.000849"),
        (0.0083, "$0.00830"),
        (0.038123, "$0.0381"),
        (0.5, "$0.500"),
        (0.9996, "$1.00"),  # rounds to a dollar: cents, not "$1.000"
        (1.0, "$1.00"),
        (12.345, "$12.35"),
        (1234.5, "$1,234.50"),
        (-0.0012, "-$0.00120"),
    ],
)
def test_fmt_cost(usd: float | None, text: str) -> None:
    """Costs print with 3 significant figures under a dollar and cents above it, never as $0.0000."""
    assert fmt_cost(usd) == text


def test_fmt_count() -> None:
    """One call, two calls, no calls; irregular plurals as given."""
    assert fmt_count(1, "call") == "1 call"
    assert fmt_count(0, "call") == "0 calls"
    assert fmt_count(1234, "call") == "1,234 calls"
    assert fmt_count(1, "retry", "retries") == "1 retry"
    assert fmt_count(2, "retry", "retries") == "2 retries"


def test_plain_table_keeps_wide_cells_whole() -> None:
    """A cell wider than a terminal is printed whole, columns aligned around it."""
    tenant = "a-tenant-name-far-wider-than-eighty-columns-" + "x" * 60
    lines = plain_table(("tenant", "calls", "cost"), [[tenant, "5", "$0.00120"], ["TOTAL", "12", "$0.0300"]])
    assert lines[0].split() == ["tenant", "calls", "cost"]
    assert lines[2] == f"{tenant}      5  $0.00120"
    assert lines[3] == f"{'TOTAL'.ljust(len(tenant))}     12   $0.0300"
    assert len({len(line) for line in lines}) == 1  # aligned: every line as wide
    with pytest.raises(ValueError, match="a row has 2 cells for 3 headers"):
        plain_table(("a", "b", "c"), [["1", "2"]])


def _alert(rule: str, status: str, severity: str, minute: int, **labels: str) -> Alert:
    at = datetime(2026, 12, 2, 3, minute, tzinfo=UTC)
    return Alert(
        rule=rule,
        status=status,  # type: ignore[arg-type]
        severity=severity,  # type: ignore[arg-type]
        summary=f"{rule} summary at {minute}",
        value=1.0,
        threshold=0.5,
        window_s=300.0,
        labels=labels,
        at=at,
        since=datetime(2026, 12, 2, 3, 0, tzinfo=UTC),
        evidence=Evidence(top_tenants_by_requests=(("acme", 40.0), ("globex", 12.0))),
    )


def test_alerts_are_grouped_by_rule_and_subject() -> None:
    """A line per rule and subject, with its count: firing pages, firing warnings, then resolved."""
    alerts = [
        _alert("error_429_rate", "firing", "warning", 1),
        _alert("latency_p95", "firing", "warning", 2, model="gpt-4o"),
        _alert("latency_p95", "firing", "page", 3, model="claude-haiku-4-5"),
        _alert("slow_call", "resolved", "page", 4),
        _alert("error_429_rate", "resolved", "warning", 5),
    ]
    assert alert_lines(alerts) == [
        "  03:03:00 [PAGE] latency_p95: latency_p95 summary at 3",
        "      top tenants by calls: acme 40, globex 12",
        "  03:02:00 [WARNING] latency_p95: latency_p95 summary at 2",
        "      top tenants by calls: acme 40, globex 12",
        "  03:05:00 [resolved] error_429_rate: error_429_rate summary at 5 (2 alerts since 03:00:00)",
        "  03:04:00 [resolved] slow_call: slow_call summary at 4",
    ]


def test_alerts_fit_in_a_screenful() -> None:
    """Many alerting subjects: the lines stop at the limit and the last one counts the rest."""
    alerts = [_alert("slow_call", "resolved", "warning", i, model=f"m{i}") for i in range(50)]
    lines = alert_lines(alerts, limit=10)
    assert len(lines) == 10
    assert lines[0].startswith("  03:49:00 [resolved] slow_call")  # the newest first
    assert lines[-1] == "  ... and 41 more not shown (one line per rule and subject)"
    with pytest.raises(ValueError, match="limit must be at least 2, got 1"):
        alert_lines(alerts, limit=1)


def test_ctrl_c_before_the_traffic_starts_exits_130_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the demo starts (the SDK imports take a second or two): 130, one line, no traceback."""

    def interrupted(providers: tuple[str, ...]) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(llmpulse._demo, "_sdk_classes", interrupted)
    assert main(["demo", "--out", str(tmp_path)]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "\nllmpulse demo: interrupted\n"


def test_the_cli_turns_ctrl_c_into_130_without_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in any command (here the report) ends it with 130 and one line, not a traceback."""
    import llmpulse._report  # noqa: PLC0415

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(llmpulse._report, "run_report", interrupted)
    assert main(["report", "some.jsonl"]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "\nllmpulse: interrupted\n"


def test_cli_rejects_unknown_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown demo options are refused with a usage message."""
    with pytest.raises(SystemExit):
        main(["demo", "--bogus"])
    assert "unrecognized arguments" in capsys.readouterr().err


def test_version_has_one_source(capsys: pytest.CaptureFixture[str]) -> None:
    """`llmpulse --version`, llmpulse.__version__ and the installed package's metadata agree."""
    from importlib.metadata import version  # noqa: PLC0415

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"llmpulse {llmpulse.__version__}"
    assert version("llmpulse") == llmpulse.__version__
