"""`llmpulse report`: latency, errors, retries, tokens and cost from llmpulse's JSON logs.

Private: the command line is the interface (see docs/report.md).
"""

from ._command import add_arguments, run_report

__all__ = ["add_arguments", "run_report"]
