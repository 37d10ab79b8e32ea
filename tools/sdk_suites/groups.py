"""The groups of wrapped-only failures: which known difference a failing test exercises, by its name.

Ported from the 2026-12-01 report's classify.py. A rule matches ``file::Class::function`` (the
parameters stripped); the first matching rule wins, and a test no rule matches is ``unclassified``
(listed by name in the report, so a new kind of failure stays visible).
"""

from __future__ import annotations

import re
from typing import NamedTuple


class Group(NamedTuple):
    """One known difference: a short key, what it is, our verdict, and the test names that exercise it."""

    key: str
    title: str
    verdict: str
    pattern: re.Pattern[str]


def _group(key: str, title: str, verdict: str, *alternatives: str) -> Group:
    return Group(key, title, verdict, re.compile("|".join(alternatives)))


UNCLASSIFIED = "unclassified"

GROUPS = (
    _group(
        "A",
        "non-replayable upload body replayed on retry",
        "real",
        r"one_shot",
        r"non_seekable",
        r"rewinds_seekable",
        r"retry_checks_prepared_options",
        r"body_replay_fixture",
    ),
    _group(
        "B",
        "per-attempt auth, signing or middleware bypassed (retries below the SDK)",
        "real",
        r"refresh",
        r"resigns",
        r"retry_signing",
        r"credential_ownership",
        r"_401_",
        r"middleware_runs_per_attempt",
        r"retryable_error_is_retried",
        r"error_with_retryable_cause",
        r"modifications_do_not_persist",
        r"every_attempt_has_the_qualifiers",
    ),
    _group(
        "C",
        "retry bookkeeping: retries_taken, x-stainless-retry-count, the SDK's retry logs and spans",
        "real (minor)",
        r"retries_taken",
        r"retry_count_header",
        r"failure_and_retry_metadata",
        r"resend_count",
        r"retried_has_the_url",
        r"retried_call_has_the_url",
        r"retries_all_fail_counts_them",
        r"time_to_first_chunk_counts_from_the_first_attempt",
        r"propagation_env",
        r"false_sends_no_trace_context",
    ),
    _group(
        "D",
        "max_retries surface: the attribute, with_options()/request validation, per-request value, copy()",
        "real (minor)",
        r"copy_default_options",
        r"invalid_request_retry_limit",
        r"retry_limits_and_backoff",
        r"with_options_alias",
        r"with_options_overrides_win",
        r"copy_signature",
    ),
    _group(
        "D2",
        "vars(client) holds llmpulse's per-instance attributes",
        "by design",
        r"copy_keeps_every_constructor_argument",
        r"copy_of_a_client_built_from_the_environment",
    ),
    _group(
        "E",
        "an overflowing retry-after hint is retried",
        "real (minor)",
        r"retry_after_numeric_overflow",
        r"honors_server_retry_refusals",
    ),
    _group(
        "F",
        "non-HTTP transport exceptions: the retry classification differs",
        "real (minor)",
        r"unmapped_transport_errors",
    ),
    _group("G", "gzip-encoded JSON judged malformed", "real (severe)", r"large_payload_contract"),
    _group(
        "J",
        "the wrapped client's HTTP client: identity, close(), private transport",
        "by design",
        r"copy_reuses_effective_transport",
        r"copy_accepts_an_explicit_x509",
        r"copy_can_switch",
        r"independently_close_caller_transport",
        r"doesnt_leak",
    ),
    _group(
        "H",
        "llmpulse deadlines replace the SDK's and the client's timeouts",
        "by design (documented)",
        r"timeout",
        r"pagination_streaming_and_options",
        r"poll_http_options",
        r"options_are_forwarded",
        r"preserves_options",
        r"input_order_and_options",
        r"httpx2_family_for_parsed_raw",
        r"replaces_each_request_option",
    ),
    _group(
        "I",
        "the x509 token exchange is hooked too: retried and timed by llmpulse",
        "real (minor)",
        r"x509_retries_transient",
        r"x509_connection_retries_are_bounded",
        r"x509_exchange_retries_are_bounded",
        r"millisecond_retry_delay",
    ),
    _group(
        "K",
        "llmpulse's process-wide state (breaker, retry budget, concurrency) across tests",
        "by design",
        r"thread_tool_runner",
    ),
    _group(
        "L",
        "llmpulse reads the OpenTelemetry context itself (SDK spans disabled)",
        "by design",
        r"disabled_spans_call_nothing_of_opentelemetry",
    ),
)


def group_of(nodeid: str) -> str:
    """The key of the first group matching ``nodeid`` (parameters stripped), or ``unclassified``."""
    name = nodeid.split("[", 1)[0]
    for group in GROUPS:
        if group.pattern.search(name):
            return group.key
    return UNCLASSIFIED


def title_of(key: str) -> str:
    """``"<key> <title> [<verdict>]"`` for a group key; ``unclassified`` as it is."""
    for group in GROUPS:
        if group.key == key:
            return f"{group.key} {group.title} [{group.verdict}]"
    return key
