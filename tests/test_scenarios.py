"""Smoke test of the incident scenarios: each passes in its --quick mode (same code, smaller numbers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


@pytest.mark.parametrize("script", sorted(p.name for p in SCENARIOS.glob("s[0-9]_*.py")))
def test_scenario_passes_in_quick_mode(script: str) -> None:
    """The scenario exits 0 and prints its result table."""
    done = subprocess.run(
        [sys.executable, script, "--quick"],
        cwd=SCENARIOS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RESULT: PASS" in done.stdout
