"""Compare each wrapped mode's results with the baseline's and write ``report.json`` and ``report.md``.

A *wrapped-only failure* is a test that passes (or xfails) bare and does not wrapped: it fails,
errors, is skipped or did not run. Each is put in a group (``groups.py``) and counted against the
client classes the test constructed. The tests listed in ``exceptions.txt`` are subtracted; what
is left is *new* and makes `write` return 1.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from groups import GROUPS, UNCLASSIFIED, group_of, title_of

_OK = ("passed", "xfailed")
_OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
_STATUSES = ("wrapped", "fell_back", "unsupported", "raised", "sdk", "inner")
_BUILT_BY_TESTS = _STATUSES[:4]  # sdk: built by the SDK's own code; inner: by llmpulse


class Exceptions:
    """The accepted wrapped-only failures: ``<suite> <test id>  # <reason>`` a line (``*``: anything)."""

    def __init__(self, path: Path) -> None:
        self.entries: list[tuple[str, str, str, re.Pattern[str]]] = []
        if not path.exists():
            return
        for number, raw in enumerate(path.read_text().splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            entry, _, reason = line.partition(" # ")
            parts = entry.split(None, 1)
            if len(parts) != 2 or not reason.strip():
                raise SystemExit(f"{path}:{number}: expected '<suite> <test id>  # <reason>', got {raw!r}")
            suite, test = parts[0], parts[1].strip()
            pattern = re.compile(".*".join(re.escape(piece) for piece in test.split("*")) + r"\Z")
            self.entries.append((suite, test, reason.strip(), pattern))
        self.used: set[tuple[str, str]] = set()

    def covers(self, suite: str, nodeid: str) -> bool:
        """Whether an entry accepts this failure (and remember that the entry is still needed)."""
        for entry_suite, test, _reason, pattern in self.entries:
            if entry_suite == suite and pattern.match(nodeid):
                self.used.add((entry_suite, test))
                return True
        return False

    def stale(self, suites: list[str]) -> list[str]:
        """Entries of the suites that ran that no failure needed."""
        return [
            f"{suite} {test}"
            for suite, test, _reason, _pattern in self.entries
            if suite in suites and (suite, test) not in self.used
        ]


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data


def _classes(out: Path, stem: str) -> dict[str, Counter[str]]:
    merged: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for path in sorted(out.glob(f"{stem}.clients.json.*")):
        for name, statuses in (_load(path) or {}).items():
            merged[name].update(statuses)
    return dict(merged)


def _why(out: Path, stem: str) -> dict[str, list[str]]:
    merged: defaultdict[str, set[str]] = defaultdict(set)
    for path in sorted(out.glob(f"{stem}.why.json.*")):
        for name, texts in (_load(path) or {}).items():
            merged[name].update(texts)
    return {name: sorted(texts) for name, texts in sorted(merged.items())}


def _compare(
    suite: str, base: dict[str, Any], other: dict[str, Any], exceptions: Exceptions
) -> dict[str, Any]:
    failures = {
        nodeid: other.get(nodeid)
        for nodeid, record in base.items()
        if record["outcome"] in _OK and other.get(nodeid, {}).get("outcome") not in _OK
    }
    by_group: defaultdict[str, list[str]] = defaultdict(list)
    by_class: Counter[str] = Counter()
    by_file: Counter[str] = Counter()
    new: list[str] = []
    excepted: list[str] = []
    for nodeid, record in sorted(failures.items()):
        by_group[group_of(nodeid)].append(nodeid)
        by_file[nodeid.split("::")[0]] += 1
        for name in (record or {}).get("clients", {}) or {"(none constructed)": {}}:
            by_class[name] += 1
        (excepted if exceptions.covers(suite, nodeid) else new).append(nodeid)
    fixed = [n for n, r in base.items() if r["outcome"] not in _OK and other.get(n, {}).get("outcome") in _OK]
    return {
        "wrapped_only_failures": len(failures),
        "excepted": len(excepted),
        "new": new,
        "fail_bare_pass_wrapped": len(fixed),
        "by_group": {
            key: {
                "title": title_of(key),
                "count": len(ids),
                "functions": sorted({i.split("::")[-1].split("[")[0] for i in ids}),
                "tests": ids,
            }
            for key, ids in sorted(by_group.items(), key=lambda kv: _group_order(kv[0]))
        },
        "by_class": dict(by_class.most_common()),
        "by_file": dict(by_file.most_common()),
        "outcomes": {n: (r or {}).get("outcome") for n, r in sorted(failures.items())},
    }


def _group_order(key: str) -> int:
    keys = [g.key for g in GROUPS] + [UNCLASSIFIED]
    return keys.index(key)


def write(
    out: Path,
    *,
    suites: list[str],
    modes: list[str],
    versions: dict[str, str],
    exceptions_path: Path,
    known_classes: list[str],
    scope: str,
) -> int:
    """Write ``out/report.json`` and ``out/report.md``.

    Returns:
        0; 1 if a wrapped-only failure is not in the exception list; 2 if a run left no results.

    """
    exceptions = Exceptions(exceptions_path)
    data: dict[str, Any] = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "scope": scope,
        "versions": {s: versions[s] for s in suites},
        "suites": {},
        "missing_runs": [],
    }
    for suite in suites:
        entry: dict[str, Any] = {
            "modes": {},
            "comparisons": {},
            "known_classes": [c for c in known_classes if c.split(".")[0] == suite],
        }
        runs: dict[str, dict[str, Any]] = {}
        for mode in modes:
            stem = f"{suite}-{mode}"
            results = _load(out / f"{stem}.json")
            meta = _load(out / f"{stem}.meta.json") or {}
            if results is None:
                data["missing_runs"].append(stem)
                continue
            runs[mode] = results
            counts = Counter(r["outcome"] for r in results.values())
            entry["modes"][mode] = {
                "counts": {k: counts.get(k, 0) for k in _OUTCOMES},
                "tests": len(results),
                "seconds": meta.get("seconds"),
                "summary": meta.get("summary"),
                "tests_with_llmpulse_events": sum(1 for r in results.values() if r.get("events")),
                "classes": {name: dict(statuses) for name, statuses in sorted(_classes(out, stem).items())},
                "why": _why(out, stem),
            }
        if "baseline" in runs:
            for mode, results in runs.items():
                if mode != "baseline":
                    entry["comparisons"][mode] = _compare(suite, runs["baseline"], results, exceptions)
        data["suites"][suite] = entry
    data["stale_exceptions"] = exceptions.stale(suites)
    new = sum(len(c["new"]) for s in data["suites"].values() for c in s["comparisons"].values())
    data["new_failures"] = new
    (out / "report.json").write_text(json.dumps(data, indent=1) + "\n")
    (out / "exceptions-candidates.txt").write_text(_candidates(data))
    markdown = _markdown(data)
    (out / "report.md").write_text(markdown)
    print(markdown)
    if data["missing_runs"]:
        print(f"sdk-suites: no results for {', '.join(data['missing_runs'])} (see their .log)")
        return 2
    if new:
        print(f"sdk-suites: {new} wrapped-only failure(s) not in {exceptions_path} (see {out}/report.md)")
        return 1
    return 0


def _candidates(data: dict[str, Any]) -> str:
    # The new failures in exceptions.txt's format, their group as the reason: to review, not to paste blindly.
    lines = []
    for suite, entry in data["suites"].items():
        new = sorted({n for c in entry["comparisons"].values() for n in c["new"]})
        for nodeid in new:
            lines.append(f"{suite} {nodeid}  # {title_of(group_of(nodeid))}")
    return "\n".join(lines) + ("\n" if lines else "")


def _markdown(data: dict[str, Any]) -> str:
    lines = [f"## The SDKs' own test suites, bare and wrapped ({data['scope']}, {data['generated']})", ""]
    for suite, entry in data["suites"].items():
        lines += [f"### {suite} {data['versions'][suite]}", ""]
        lines += ["| mode | tests | passed | failed | error | skipped | xfailed | with events | time |"]
        lines += ["|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for mode, run in entry["modes"].items():
            c = run["counts"]
            seconds = f"{run['seconds'] / 60:.1f} min" if run["seconds"] is not None else "?"
            lines.append(
                f"| {mode} | {run['tests']} | {c['passed']} | {c['failed']} | {c['error']} | {c['skipped']}"
                f" | {c['xfailed']} | {run['tests_with_llmpulse_events']} | {seconds} |"
            )
        lines.append("")
        comparisons = entry["comparisons"]
        if comparisons:
            lines += ["Wrapped-only failures (pass bare, not wrapped), by group:", ""]
            lines += ["| group | " + " | ".join(comparisons) + " |", "|---|" + "---:|" * len(comparisons)]
            keys = sorted({k for c in comparisons.values() for k in c["by_group"]}, key=_group_order)
            for key in keys:
                counts = [str(c["by_group"].get(key, {}).get("count", 0)) for c in comparisons.values()]
                lines.append(f"| {title_of(key)} | " + " | ".join(counts) + " |")
            totals = [
                f"**{c['wrapped_only_failures']}** ({c['excepted']} excepted, {len(c['new'])} new)"
                for c in comparisons.values()
            ]
            lines += ["| total | " + " | ".join(totals) + " |", ""]
            for mode, c in comparisons.items():
                unclassified = c["by_group"].get(UNCLASSIFIED)
                if unclassified:
                    lines.append(f"Unclassified in {mode}: " + ", ".join(unclassified["functions"]))
                    lines.append("")
        lines += _class_table(entry)
    if data["stale_exceptions"]:
        lines += ["Exception-list entries no failure needed: " + ", ".join(data["stale_exceptions"]), ""]
    lines += [f"New wrapped-only failures (not in the exception list): **{data['new_failures']}**", ""]
    return "\n".join(lines)


def _class_table(entry: dict[str, Any]) -> list[str]:
    wrapped_modes = [m for m in entry["modes"] if m != "baseline"]
    if not wrapped_modes:
        return []
    lines = ["Client classes (constructions; failing: the wrapped-only failures that built one):", ""]
    header = "| class | mode | built by tests | " + " | ".join(s.replace("_", " ") for s in _STATUSES)
    lines += [header + " | failing |", "|---|---|" + "---:|" * (len(_STATUSES) + 2)]
    for mode in wrapped_modes:
        classes = entry["modes"][mode]["classes"]
        failing = entry["comparisons"].get(mode, {}).get("by_class", {})
        names = set(classes) | set(entry["known_classes"]) | {n for n in failing if not n.startswith("(")}
        for name in sorted(names):
            statuses = classes.get(name, {})
            by_tests = sum(statuses.get(s, 0) for s in _BUILT_BY_TESTS)
            cells = " | ".join([str(by_tests), *(str(statuses.get(s, 0)) for s in _STATUSES)])
            lines.append(f"| {name} | {mode} | {cells} | {failing.get(name, 0)} |")
    lines.append("")
    for mode in wrapped_modes:
        for name, texts in entry["modes"][mode].get("why", {}).items():
            lines += [f"- {mode}, {name}: " + " / ".join(f"`{t}`" for t in texts)]
    if any(entry["modes"][m].get("why") for m in wrapped_modes):
        lines.append("")
    return lines
