"""Run every incident scenario in turn (``--quick``: the smoke-test sizes); exit 1 if any fails."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCENARIOS = sorted(p.name for p in HERE.glob("s[0-9]_*.py"))


def main(argv: list[str]) -> int:
    """Run each scenario as its own process (fresh llmpulse state), streaming its output."""
    failed = []
    started = time.monotonic()
    for name in SCENARIOS:
        began = time.monotonic()
        code = subprocess.call([sys.executable, str(HERE / name), *argv], cwd=HERE)
        print(f"[{name}: exit {code}, {time.monotonic() - began:.0f} s]", flush=True)
        if code:
            failed.append(name)
    passed, took = len(SCENARIOS) - len(failed), time.monotonic() - started
    print(f"\n{passed}/{len(SCENARIOS)} scenarios passed in {took:.0f} s")
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
