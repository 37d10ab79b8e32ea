"""Run the openai and anthropic SDKs' own offline test suites bare and with every client wrapped by llmpulse.

    python3 tools/sdk_suites/run.py                         # `make sdk-suites`: both suites, all three modes
    python3 tools/sdk_suites/run.py --contract --modes baseline wrapped-neutral   # `make sdk-contract`
    python3 tools/sdk_suites/run.py --suites openai --tests tests/test_streaming.py -- -x   # pytest's -x
    python3 tools/sdk_suites/run.py --report-only           # redo the report from the last results

Sets up (once; a stamp makes later runs reuse it) the virtualenv ``.venv-sdk-suites`` from
``requirements/sdk-suites.txt`` with the project installed ``-e``, and the SDKs' sdists (which
ship ``tests/``) unpacked under ``.sdk-suites/``. Writes ``.sdk-suites/results[-contract]/``:
per run ``<suite>-<mode>.{json,log,meta.json}``, and ``report.json`` and ``report.md``.

Exit status: 0, or 1 when a wrapped mode fails a test that passes bare and is not in
``exceptions.txt``, or 2 when a run left no results (it crashed or timed out).
Only the standard library: it runs before the virtualenv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
REQUIREMENTS = ROOT / "requirements" / "sdk-suites.txt"
VENV = ROOT / ".venv-sdk-suites"
WORK = ROOT / ".sdk-suites"
SUITES = ("openai", "anthropic")
MODES = ("baseline", "wrapped", "wrapped-neutral")

# What llmpulse sees in every mode: no sinks but the plugin's own, no alerts, no metrics port.
_QUIET = {"LLMPULSE_SINKS": "none", "LLMPULSE_ALERT_SINKS": "none"}
# wrapped-neutral: llmpulse's process-wide state off, so a test's result does not depend on
# what the tests before it did to the breaker, the retry budget or the concurrency limit.
_NEUTRAL = {
    "LLMPULSE_BREAKER": "off",
    "LLMPULSE_RETRY_BUDGET_RESERVE": "1000000",
    "LLMPULSE_CONCURRENCY": "off",
}
MODE_ENV = {
    "baseline": {"SDKH_MODE": "baseline"},
    "wrapped": {"SDKH_MODE": "wrapped"},
    "wrapped-neutral": {"SDKH_MODE": "wrapped", **_NEUTRAL},
}

# `make sdk-contract`: the files about the client itself, retries, streaming, uploads and auth.
CONTRACT = {
    "openai": (
        "tests/test_client.py",
        "tests/test_streaming.py",
        "tests/test_files.py",
        "tests/lib/test_uploads.py",
        "tests/test_auth.py",
        # Not tests/test_retry_after_overflow.py: wrapped it takes 3+ minutes (llmpulse honours the
        # overflowing hints up to its cap: group E) and fails anyway; the full suites run it.
        "tests/lib/test_request_credentials.py",
        "tests/lib/test_azure_auth.py",
    ),
    "anthropic": (
        "tests/test_client.py",
        "tests/test_streaming.py",
        "tests/test_files.py",
        "tests/test_middleware.py",
        "tests/lib/test_client_copy.py",
        "tests/lib/test_aws_auth.py",
    ),
}

RUN_TIMEOUT_S = 3600  # one suite in one mode; ~10-20 min on a shared 2-core machine
TEST_TIMEOUT_S = 120


def _say(message: str) -> None:
    print(f"sdk-suites: {message}", flush=True)


def _pins() -> dict[str, str]:
    """The SDK versions pinned in the requirements file: ``{"openai": "3.57.0", ...}``."""
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        match = re.match(r"^(openai|anthropic)(\[[^\]]*\])?==(\S+)", line.strip())
        if match:
            pins[match.group(1)] = match.group(3)
    missing = set(SUITES) - set(pins)
    if missing:
        raise SystemExit(f"{REQUIREMENTS}: no ==pin for {', '.join(sorted(missing))}")
    return pins


def _python() -> Path:
    return VENV / "bin" / "python"


def _setup_venv() -> None:
    stamp = VENV / ".sdk-suites-stamp"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == digest and _python().exists():
        return
    _say(f"setting up {VENV.name} (a few minutes, once)")
    if not _python().exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(_python()), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
    subprocess.run([*pip, "-e", str(ROOT)], check=True)
    stamp.write_text(digest + "\n")


def _setup_sdist(name: str, version: str) -> Path:
    tree = WORK / f"{name}-{version}"
    stamp = tree / ".sdk-suites-unpacked"
    if stamp.exists():
        return tree
    _say(f"fetching the {name} {version} sdist")
    downloads = WORK / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            *(str(_python()), "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps"),
            *("--no-binary", ":all:", f"{name}=={version}", "-d", str(downloads)),
        ],
        check=True,
    )
    archive = downloads / f"{name}-{version}.tar.gz"
    with tarfile.open(archive) as tar:
        tar.extractall(WORK, filter="data")
    if not (tree / "tests").is_dir():
        raise SystemExit(f"{archive} has no {tree.name}/tests/")
    stamp.write_text(f"{archive.name}\n")
    return tree


def _addopts(tree: Path) -> list[str]:
    """The suite's own pytest addopts without its worker count and durations (this runner sets -n)."""
    config = tomllib.loads((tree / "pyproject.toml").read_text())
    raw = config.get("tool", {}).get("pytest", {}).get("ini_options", {}).get("addopts", "")
    args = shlex.split(raw) if isinstance(raw, str) else list(raw)
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-n", "--numprocesses", "--durations", "--dist"):
            skip = True
        elif not arg.startswith(("-n", "--numprocesses=", "--durations=", "--dist=")):
            kept.append(arg)
    return kept


def _environment(mode: str, stem: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMPULSE_", "SDKH_"))}
    env.update(_QUIET)
    env.update(MODE_ENV[mode])
    env["SDKH_RESULTS"] = f"{stem}.json"
    env["SDKH_CLIENTS"] = f"{stem}.clients.json"
    env["SDKH_WHY"] = f"{stem}.why.json"
    env["PYTHONPATH"] = str(HERE)
    return env


def _run(
    suite: str, mode: str, tree: Path, out: Path, targets: list[str], jobs: int, extra: list[str]
) -> None:
    stem = out / f"{suite}-{mode}"
    results, log = Path(f"{stem}.json"), Path(f"{stem}.log")
    for old in [results, *out.glob(f"{stem.name}.clients.json.*"), *out.glob(f"{stem.name}.why.json.*")]:
        old.unlink(missing_ok=True)
    command = [str(_python()), "-m", "pytest", "-o", "addopts=", *_addopts(tree), "-p", "sdkh_plugin"]
    command += ["-p", "no:cacheprovider", "-q", f"--timeout={TEST_TIMEOUT_S}"]
    if jobs > 0:
        command += ["-n", str(jobs)]
    command += extra + targets
    _say(f"{suite} {mode}: running ({len(targets)} target{'s' if len(targets) != 1 else ''}, {jobs} workers)")
    start = time.monotonic()
    with log.open("w") as f:
        try:
            code = subprocess.run(
                command,
                cwd=tree,
                env=_environment(mode, stem),
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=RUN_TIMEOUT_S,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
    seconds = round(time.monotonic() - start, 1)
    lines = log.read_text(errors="replace").strip().splitlines()
    summary = lines[-1] if lines else ""
    meta = {"seconds": seconds, "returncode": code, "summary": summary, "command": command, "cwd": str(tree)}
    Path(f"{stem}.meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    _say(f"{suite} {mode}: {summary} [{seconds:.0f} s]")


def _known_classes() -> list[str]:
    done = subprocess.run(
        [str(_python()), str(HERE / "sdkh_plugin.py")], capture_output=True, text=True, check=False, cwd=ROOT
    )
    return json.loads(done.stdout) if done.returncode == 0 else []


def main(argv: list[str] | None = None) -> int:
    """Set up, run the requested suites and modes, write the report; the exit status gates CI."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suites", nargs="+", choices=SUITES, default=list(SUITES))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--contract", action="store_true", help="the contract files only")
    parser.add_argument("--tests", nargs="+", metavar="PATH", help="these test paths (in each suite) instead")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("JOBS", "2")), help="xdist workers")
    parser.add_argument("--setup-only", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="report on the results already there")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = parser.parse_args(argv)

    out = WORK / ("results-contract" if args.contract else "results")
    out.mkdir(parents=True, exist_ok=True)
    pins = _pins()
    if not args.report_only:
        _setup_venv()
        trees = {suite: _setup_sdist(suite, pins[suite]) for suite in args.suites}
        if args.setup_only:
            return 0
        for suite in args.suites:
            targets = args.tests or (list(CONTRACT[suite]) if args.contract else ["tests"])
            for mode in args.modes:
                _run(suite, mode, trees[suite], out, targets, args.jobs, args.pytest_args)
    return report.write(
        out,
        suites=args.suites,
        # A wrapped mode is compared with the baseline results there are, run now or before.
        modes=["baseline", *(m for m in args.modes if m != "baseline")],
        versions=pins,
        exceptions_path=HERE / "exceptions.txt",
        known_classes=_known_classes(),
        scope="contract subset" if args.contract else "full offline suites",
    )


if __name__ == "__main__":
    sys.exit(main())
