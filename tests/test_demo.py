"""`llmpulse demo` and the CLI run end to end, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import llmpulse
from llmpulse._cli import main


@pytest.fixture(autouse=True)
def _restore_settings() -> None:
    yield
    llmpulse.configure(sinks=("none",))


def test_demo_runs_and_writes_json_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A short demo drives traffic through wrapped clients, shows a table and writes one log line per call."""
    assert main(["demo", "--duration", "2", "--workers", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"llmpulse {llmpulse.__version__} demo:")  # the banner names the release
    assert "Summary" in out
    assert "TOTAL" in out  # the live table
    assert "Alerts (in-process rules" in out  # what fired (if anything), after the run
    lines = [json.loads(x) for x in (tmp_path / "llmpulse-events.jsonl").read_text().splitlines()]
    calls = [x for x in lines if x["type"] == "llm.call"]
    assert calls
    assert {c["provider"] for c in calls} == {"openai", "anthropic"}
    assert {c["tenant"] for c in calls} <= {"acme", "globex", "initech", "umbrella", "hooli"}
    assert any(c["streamed"] for c in calls)
    assert all("sk-demo" not in json.dumps(c) for c in calls)
    # The fake's answers are valid JSON, gzipped as the hosted APIs send them: the wrapped clients
    # must read them as the bare SDK does, whatever faults the demo's plan scripts.
    assert [c for c in calls if c["error_type"] == "MalformedResponseError"] == []
    assert any(c["outcome"] == "ok" and not c["streamed"] for c in calls)


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
