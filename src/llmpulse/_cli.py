"""The ``llmpulse`` command: ``demo``, ``report`` and ``fake-provider``."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


EXIT_INTERRUPTED = 130
"""Ctrl-C: 128 + SIGINT, what shells report for a process stopped by it."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``llmpulse`` command: the exit code (130 after Ctrl-C, without a traceback)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # `llmpulse demo` handles Ctrl-C itself once its traffic runs; this catches one during start-up
        # (the SDK imports take a second or two) and in the other commands.
        print("\nllmpulse: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: list[str] | None) -> int:
    from . import __version__  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="llmpulse", description="See and control every LLM API call.")
    parser.add_argument("--version", action="version", version=f"llmpulse {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a multi-tenant workload against the fake provider")
    from ._demo import add_arguments  # noqa: PLC0415

    add_arguments(demo)
    report = commands.add_parser("report", help="summarise latency, errors and cost from JSON log files")
    from ._report import add_arguments as add_report_arguments  # noqa: PLC0415

    add_report_arguments(report)
    commands.add_parser("fake-provider", help="serve the OpenAI/Anthropic fake provider", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "fake-provider":
        from .testing._fake_provider import main as fake_main  # noqa: PLC0415

        return fake_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "report":
        from ._report import run_report  # noqa: PLC0415

        return run_report(args)
    from ._demo import run_demo  # noqa: PLC0415

    return run_demo(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
