"""The ``report`` subcommand: arguments, the one pass over the input, the output."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import IO, NamedTuple, TextIO

from ._aggregate import DIMENSIONS, Aggregate
from ._read import newest_started_at, open_inputs, parse_line
from ._render_html import render_html
from ._render_text import render_text
from ._tables import build_tables, summary_lines

__all__ = ["add_arguments", "aggregate", "run_report"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_TITLE = "llmpulse report"

_TIME_HELP = (
    "a duration (30s, 5m, 2h, 1d, 1w) counted back from the NEWEST call event in the input, not from "
    "now, so an old file gives the same answer tomorrow; or an ISO 8601 time (UTC if no offset)"
)


class TimeBound(NamedTuple):
    """A ``--since`` / ``--until`` value: seconds before the newest event, or an absolute time."""

    seconds_before_newest: float | None
    epoch: float | None

    def resolve(self, newest: float | None) -> float | None:
        """The bound as epoch seconds (None if relative and there is no event)."""
        if self.epoch is not None:
            return self.epoch
        if newest is None or self.seconds_before_newest is None:
            return None
        return newest - self.seconds_before_newest


def parse_time_bound(value: str) -> TimeBound:
    """Parse ``5m`` / ``2h`` / ``2026-01-01T10:00`` for argparse.

    Raises:
        argparse.ArgumentTypeError: Neither a duration nor an ISO 8601 time
            (argparse turns it into a usage error naming the value: exit 2).

    """
    match = _DURATION.fullmatch(value.strip())
    if match:
        return TimeBound(float(match.group(1)) * _UNITS[match.group(2)], None)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        msg = f"invalid time {value!r}: expected a duration like 30s, 5m, 2h, 1d, 1w or an ISO 8601 time"
        raise argparse.ArgumentTypeError(msg) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return TimeBound(None, moment.timestamp())


def _dimensions(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    bad = [name for name in names if name not in DIMENSIONS]
    if bad or not names:
        msg = f"invalid --by {value!r}: expected a comma-separated list of {', '.join(DIMENSIONS)}"
        raise argparse.ArgumentTypeError(msg)
    return names


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        msg = f"invalid --top {value!r}: expected a positive integer"
        raise argparse.ArgumentTypeError(msg)
    return number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the report's command-line options."""
    parser.description = (
        "Summarise llmpulse call events from JSONL sink files or JSON log lines: latency quantiles "
        "(within 1 %), TTFT, error and 429 rates, attempts, tokens and cost per model, tenant and route. "
        "Streams the input once in bounded memory; lines that are not call events are skipped and counted."
    )
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="JSONL or JSON log files; .gz is read; - is stdin"
    )
    parser.add_argument(
        "--since",
        type=parse_time_bound,
        metavar="WHEN",
        help=f"only calls started at or after WHEN: {_TIME_HELP}",
    )
    parser.add_argument(
        "--until",
        type=parse_time_bound,
        metavar="WHEN",
        help=f"only calls started at or before WHEN: {_TIME_HELP}",
    )
    parser.add_argument(
        "--by",
        type=_dimensions,
        default=list(DIMENSIONS),
        metavar="DIMS",
        help="sections to show, comma-separated: model, tenant, route (default: all three)",
    )
    parser.add_argument(
        "--top", type=_positive, default=5, metavar="N", help="tenants and routes to list (default 5)"
    )
    parser.add_argument(
        "--html", metavar="OUT", help="also write a self-contained HTML report with charts to OUT"
    )
    parser.add_argument("--json", action="store_true", help="print the aggregate as JSON instead of tables")


def aggregate(lines: Iterable[bytes], since: float | None = None, until: float | None = None) -> Aggregate:
    """One pass over ``lines``: every call event started within ``[since, until]`` is counted."""
    agg = Aggregate()
    skipped = agg.skipped
    for line in lines:
        call = parse_line(line, skipped)
        if call is None:
            continue
        if (since is not None and call.time < since) or (until is not None and call.time > until):
            agg.outside_window += 1
            continue
        agg.add(call)
    return agg


class _InputError(Exception):
    """An input could not be read; the message names it."""


def _lines(paths: list[str], streams: list[IO[bytes]]) -> Iterator[bytes]:
    # Read errors (a corrupt or truncated .gz, an I/O error) surface mid-stream: name the file.
    for path, stream in zip(paths, streams, strict=True):
        try:
            yield from stream
        except (OSError, EOFError) as exc:
            raise _InputError(f"cannot read {path}: {exc}") from None


def _newest(paths: list[str], streams: list[IO[bytes]]) -> float | None:
    newest: float | None = None
    for path, stream in zip(paths, streams, strict=True):
        try:
            found = newest_started_at(stream)
            stream.seek(0)
        except (OSError, EOFError) as exc:
            raise _InputError(f"cannot read {path}: {exc}") from None
        if found is not None and (newest is None or found > newest):
            newest = found
    return newest


def _read(
    paths: list[str], since: TimeBound | None, until: TimeBound | None
) -> tuple[Aggregate, tuple[float | None, float | None]]:
    relative = any(bound is not None and bound.epoch is None for bound in (since, until))
    with ExitStack() as stack:
        try:
            streams = open_inputs(stack, paths, seekable=relative)
        except OSError as exc:
            raise _InputError(f"cannot read {exc.filename or '-'}: {exc.strerror or exc}") from None
        # A relative window is anchored on the newest event: a quick scan (no JSON parse) first.
        newest = _newest(paths, streams) if relative else None
        window = (since.resolve(newest) if since else None, until.resolve(newest) if until else None)
        return aggregate(_lines(paths, streams), *window), window


def run_report(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``llmpulse report``; returns the exit code (2: an input or output cannot be used)."""
    out = out or sys.stdout
    try:
        agg, window = _read(args.files, args.since, args.until)
    except _InputError as exc:
        print(f"llmpulse report: {exc}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(agg.to_dict(), out, indent=2)
        out.write("\n")
    lines = summary_lines(agg, window)
    tables = build_tables(agg, args.by, args.top)
    if args.html:
        try:
            with open(args.html, "w", encoding="utf-8") as file:
                file.write(render_html(_TITLE, lines, tables, agg))
        except OSError as exc:
            print(f"llmpulse report: cannot write {args.html}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    if not args.json:
        render_text(_TITLE, lines, tables, out)
        if args.html:
            out.write(f"HTML report written to {args.html}\n")
    return 0
