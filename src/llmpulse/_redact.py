"""The one scrubbing step between a call and every output.

API keys travel in ``Authorization``, ``api-key`` (Azure) and ``x-api-key``
(Anthropic) headers and sometimes in URLs (``?api-key=``); providers echo a
key, whole or masked, in their 401 messages, and quote the caller's input in
their 400s. Events never carry headers or raw URLs; every free-text string
that reaches a sink (error messages, captured content, alert texts) passes
`Scrubber.scrub` once, before the event or alert exists, so each sink, the
JSONL file and the report built from it see the same scrubbed text.

What is removed, always (it cannot be switched off):

- the exact credentials of the client that made the call (its API key,
  Anthropic ``auth_token``, Azure AD token), whatever their shape, and their
  masked echoes (``sk-abc12***...wxyz``: first characters or last four beside
  a mask);
- keys of the known shapes: ``sk-``/``rk-``/``pk-`` (OpenAI, Anthropic's
  ``sk-ant-``), AWS ``AKIA``/``ASIA`` access key ids, Google ``AIza`` keys,
  JWTs, bearer tokens, anything after ``api-key:``/``x-api-key=``/
  ``authorization:``, URL credentials and secret query parameters.

Then the user's own rules (``LLMPULSE_REDACT``: the built-in ``pii`` set of
emails, phone and card numbers, or in code any ``str -> str`` callable).
Nothing of this runs on a healthy call that captures no content: it has no
error text to scrub.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Final

__all__ = [
    "ERROR_TEXT_MODES",
    "MAX_ERROR_CHARS",
    "MAX_FULL_ERROR_CHARS",
    "PII_RULES",
    "SECRET_HEADERS",
    "Scrubber",
    "Secret",
    "pii",
    "redact",
    "secret_values",
    "secrets_of",
]

_log = logging.getLogger("llmpulse")

SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "proxy-authorization", "cookie"})

MAX_ERROR_CHARS: Final = 500
"""Longest error text kept with ``LLMPULSE_CAPTURE_ERROR_TEXT=scrubbed`` (the default)."""

MAX_FULL_ERROR_CHARS: Final = 8192
"""Longest error text kept with ``LLMPULSE_CAPTURE_ERROR_TEXT=full``."""

ERROR_TEXT_MODES: Final = ("none", "scrubbed", "full")

_MASK = "[REDACTED]"

# Keys of known shapes, and the places a key sits in text, each with the substrings
# one of which any match contains: Python's re scans a pattern that starts with a
# class or \b at every position, and `in` is a hundred times cheaper, so a rule runs
# only on text that holds one of its triggers. Lower-case triggers are looked up in
# the lower-cased text. Order matters: URL credentials go before the generic "key=".
_PATTERNS: tuple[tuple[re.Pattern[str], str, tuple[str, ...], tuple[str, ...]], ...] = (
    (re.compile(r"(https?://)[^/\s:@]+:[^/\s@]+@"), r"\1[REDACTED]@", ("@",), ()),
    # OpenAI sk-/sk-proj-/sk-svcacct-, Anthropic sk-ant-, restricted rk-, publishable pk-
    # (also their masked echoes: sk-abc1****wxyz).
    (
        re.compile(r"\b(sk|rk|pk)-(?:[A-Za-z0-9_\-*]|\.(?=[A-Za-z0-9_\-*])){6,}"),
        r"\1-[REDACTED]",
        ("sk-", "rk-", "pk-"),
        (),
    ),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), _MASK, ("AKIA", "ASIA"), ()),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{35}"), _MASK, ("AIza",), ()),
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"), _MASK, ("eyJ",), ()),
    (
        re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9_\-\.=:/+~]{6,}"),
        r"\1 [REDACTED]",
        (),
        ("bearer", "basic"),
    ),
    (
        re.compile(
            r"(?i)([?&](?:api[-_]?key|key|code|token|access_token|refresh_token|id_token|sig|signature"
            r"|x-amz-signature|x-amz-credential|x-amz-security-token|client_secret|password|secret)=)[^&\s#\"']+"
        ),
        r"\1[REDACTED]",
        ("?", "&"),
        (),
    ),
    (
        re.compile(
            r"(?i)(\b(?:api[-_]?key|x-api-key|authorization|proxy-authorization|client[-_]secret)"
            r"[\"']?\s*[:=]\s*[\"']?)(?!\[REDACTED\]|(?i:bearer|basic)\s)[^\s\"',}]+"
        ),
        r"\1[REDACTED]",
        (),
        ("key", "authorization", "secret"),
    ),
    # Any word with a run of mask characters in it: a provider's masked echo of some key.
    (
        re.compile(r"[A-Za-z0-9_\-]{2,}[*•]{3,}[A-Za-z0-9_\-*•]*|[*•]{4,}[A-Za-z0-9_\-]{3,}"),
        _MASK,
        ("***", "•••"),
        (),
    ),
)


def redact(text: str) -> str:
    """Return ``text`` with keys of known shapes, bearer tokens, JWTs and URL credentials masked."""
    low: str | None = None
    for pattern, replacement, triggers, lower_triggers in _PATTERNS:
        if triggers:
            if not any(t in text for t in triggers):
                continue
        else:
            if low is None:
                low = text.lower()
            if not any(t in low for t in lower_triggers):
                continue
        text = pattern.sub(replacement, text)
        low = None  # the text changed
    return text


class Secret:
    """One credential of a client, and the ways a provider echoes it."""

    __slots__ = ("echo", "head", "tail", "value")

    def __init__(self, value: str) -> None:
        self.value, self.head, self.tail = value, value[:8], value[-4:]
        head, tail = re.escape(self.head), re.escape(self.tail)
        # "sk-abc12345...", "sk-abc12***wxyz", "****wxyz", "...wxyz": the key's first
        # eight or last four characters beside a mask are the key as far as a log goes.
        self.echo = re.compile(
            rf"{head}[\w\-]*(?:[*•]+[\w\-]*|\.{{3}}|…)|(?:[*•]+|\.{{3}}|…){tail}\b|{head}[\w\-]*"
        )

    def scrub(self, text: str) -> str:
        if self.value in text:
            text = text.replace(self.value, _MASK)
        if self.head in text or self.tail in text:
            text = self.echo.sub(_MASK, text)
        return text


def secret_values(values: Iterable[object]) -> tuple[str, ...]:
    """The credentials among ``values`` worth looking for (strings of 8 characters or more), once each."""
    return tuple(dict.fromkeys(v for v in values if isinstance(v, str) and len(v) >= 8))


def secrets_of(values: Iterable[object]) -> tuple[Secret, ...]:
    """`Secret` for each of `secret_values` ``values``."""
    return tuple(Secret(value) for value in secret_values(values))


# Built-in personal-data rules (``LLMPULSE_REDACT=pii``): what providers' validation and
# content-policy errors most often quote back from a user's input.
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b")
_DIGIT_RUN = re.compile(r"\d\d")
_CARD = re.compile(r"\b\d(?:[ \-]?\d){12,18}\b")
_PHONE = re.compile(
    r"\+\d{1,3}(?:[ .\-]?\(?\d{1,4}\)?){2,5}\d"  # international: +44 20 7946 0958
    r"|(?:\(\d{3}\)\s?|\b\d{3}[ .\-])\d{3}[ .\-]\d{4}\b"  # North American: (415) 555-0100
    r"|\b0\d{2,4}[ .\-]\d{3,4}[ .\-]\d{3,4}\b"  # national, trunk 0: 020 7946 0958
)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match[0])
    return "[CARD]" if _luhn(digits) else match[0]


def _phone(match: re.Match[str]) -> str:
    # Nine digits at least: shorter runs are counts and codes, not phone numbers.
    return "[PHONE]" if sum(ch.isdigit() for ch in match[0]) >= 9 else match[0]


def pii(text: str) -> str:
    """Mask email addresses, card numbers (Luhn-checked) and phone numbers in ``text``."""
    if "@" in text:
        text = _EMAIL.sub("[EMAIL]", text)
    if _DIGIT_RUN.search(text) is None:
        return text  # cards and phone numbers have digits in groups of 2 or more
    text = _CARD.sub(_card, text)
    return _PHONE.sub(_phone, text)


PII_RULES: Final[dict[str, Callable[[str], str]]] = {"pii": pii}
"""The built-in rule sets ``LLMPULSE_REDACT`` can name."""

Rule = Callable[[str], str]

# Tests flip this to prove the scrubbing step is what keeps secrets out (see llmpulse.testing).
_ENABLED = True


class Scrubber:
    """The scrubbing step: secrets first, then the user's rules.

    Args:
        rules: The user's rules, applied in order after the secrets are gone.
        error_text: How much provider error text reaches the outputs:
            "none", "scrubbed" (default) or "full" (see docs/events.md).

    """

    __slots__ = ("_failed", "error_text", "rules")

    def __init__(self, rules: tuple[Rule, ...] = (), error_text: str = "scrubbed") -> None:
        self.rules = rules
        self.error_text = error_text
        self._failed: set[int] = set()

    def scrub(self, text: str, secrets: tuple[Secret, ...] = (), *, rules: bool = True) -> str:
        """Return ``text`` without ``secrets``, known key shapes and what the user's rules remove."""
        if not _ENABLED:
            return text
        for secret in secrets:
            text = secret.scrub(text)
        text = redact(text)
        if rules:
            for rule in self.rules:
                text = self._apply(rule, text)
        return text

    def error(self, message: str | None, secrets: tuple[Secret, ...] = ()) -> str | None:
        """The error text an event carries, by ``error_text``; None when there is none to keep."""
        if message is None or self.error_text == "none":
            return None
        full = self.error_text == "full"
        limit = MAX_FULL_ERROR_CHARS if full else MAX_ERROR_CHARS
        # Cut before and after: a huge message costs no more than a short one, and a
        # key split by the first cut (at twice the limit) lies past the second one.
        return self.scrub(message[: limit * 2], secrets, rules=not full)[:limit]

    def _apply(self, rule: Rule, text: str) -> str:
        try:
            out = rule(text)
        except Exception:  # noqa: BLE001 - a user's rule must never break the call
            out = None
        if isinstance(out, str):
            return out
        # Unsure what the rule would have removed: keep nothing rather than leak it.
        if id(rule) not in self._failed:
            self._failed.add(id(rule))
            _log.warning(
                "llmpulse redact rule %r raised or returned a non-string; the text it was given is "
                "replaced by [REDACTION FAILED]",
                getattr(rule, "__name__", rule),
            )
        return "[REDACTION FAILED]"


_current = Scrubber()


def current() -> Scrubber:
    """The process's scrubber, as `configure()` last set it."""
    return _current


def install(scrubber: Scrubber) -> None:
    """Make ``scrubber`` the process's (called on every `configure()`)."""
    global _current  # noqa: PLW0603 - one scrubber per process, like the settings
    _current = scrubber
