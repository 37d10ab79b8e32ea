"""What `llmpulse demo` prints and where it writes: numbers, plain tables, grouped alerts, run files.

Kept apart from the workload in `_demo` so each piece is a plain function a
test can call with made-up values.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from ._units import fmt_count
from .alerts import Alert

__all__ = [
    "LATEST_NAME",
    "RunLog",
    "alert_lines",
    "new_run_log",
    "plain_table",
]

LATEST_NAME = "llmpulse-events-latest.jsonl"
"""The symlink in the output directory that always names the newest run's log."""


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> list[str]:
    """Lines of a text table as wide as its cells: nothing is cut, whatever the width.

    For output that is not a terminal (a pipe, a CI log), where rich would
    assume 80 columns and shorten cells to fit. The first ``left`` columns
    are left-aligned, the others (numbers) right-aligned.

    Raises:
        ValueError: A row does not have one cell per header.

    """
    for row in rows:
        if len(row) != len(headers):
            msg = f"plain_table: a row has {len(row)} cells for {len(headers)} headers: {list(row)!r}"
            raise ValueError(msg)
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return [line(headers), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]


def alert_lines(alerts: Sequence[Alert], *, limit: int = 20) -> list[str]:
    """The alerts grouped by rule and subject, what still fires first, in at most ``limit`` lines.

    A rule that fired, escalated and resolved is one group, not three lines:
    its last state, how many alerts it sent, and its top tenants while
    firing. Groups that do not fit are counted on a last line.

    Raises:
        ValueError: ``limit`` is under 2 (no room for a group and the count line).

    """
    if limit < 2:  # one group and the "more" line
        msg = f"alert_lines: limit must be at least 2, got {limit}"
        raise ValueError(msg)
    groups: dict[str, list[Alert]] = {}
    for alert in alerts:
        groups.setdefault(alert.key, []).append(alert)
    # What still fires first (pages before warnings), then what resolved; the newest first in each.
    ordered = sorted(
        groups.values(),
        key=lambda g: (
            g[-1].status != "firing",
            g[-1].status == "firing" and g[-1].severity != "page",
            -g[-1].at.timestamp(),
        ),
    )
    lines: list[str] = []
    for shown, group in enumerate(ordered):
        last = group[-1]
        block = [_group_line(group)]
        top = ", ".join(f"{t} {n:.0f}" for t, n in last.evidence.top_tenants_by_requests[:3])
        if last.status == "firing" and top:
            block.append(f"      top tenants by calls: {top}")
        left = len(ordered) - shown
        room = limit - len(lines) - (0 if left == 1 else 1)
        if len(block) > room:
            lines.append(f"  ... and {left:,} more not shown (one line per rule and subject)")
            break
        lines.extend(block)
    return lines


def _group_line(group: Sequence[Alert]) -> str:
    last = group[-1]
    mark = "resolved" if last.status == "resolved" else last.severity.upper()
    sent = f" ({fmt_count(len(group), 'alert')} since {group[0].since:%H:%M:%S})" if len(group) > 1 else ""
    return f"  {last.at:%H:%M:%S} [{mark}] {last.rule}: {last.summary}{sent}"


class RunLog(NamedTuple):
    """This run's JSON log file, and the link to it when one could be made."""

    path: Path
    latest: Path | None


def new_run_log(out_dir: str | os.PathLike[str], now: datetime) -> RunLog:
    """Create an empty ``llmpulse-events-<UTC time>.jsonl`` for this run and point the latest link at it.

    Each run gets its own file, so a report never mixes two runs: the
    name is the UTC start time to the second (``20261202T021530Z``), with
    ``-2``, ``-3`` ... when runs start within the same second. The file
    is created here (exclusively), before the JSONL sink appends to it.
    ``llmpulse-events-latest.jsonl`` is a relative symlink, replaced
    atomically, so it names the newest run even while it is running; where
    symlinks cannot be made (some Windows accounts), there is no link.

    Raises:
        OSError: ``out_dir`` cannot be created or written.

    """
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    n = 1
    while True:
        path = directory / (
            f"llmpulse-events-{stamp}.jsonl" if n == 1 else f"llmpulse-events-{stamp}-{n}.jsonl"
        )
        try:
            path.open("x").close()
        except FileExistsError:
            n += 1
            continue
        break
    latest = directory / LATEST_NAME
    tmp = directory / f".{LATEST_NAME}.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(path.name)
        tmp.replace(latest)
    except OSError:
        tmp.unlink(missing_ok=True)
        return RunLog(path, None)
    return RunLog(path, latest)
