"""Exceptions raised by llmpulse itself.

Errors from the provider are never wrapped: the SDK's own exception classes
reach the caller unchanged. llmpulse raises only for misuse it can name::

    LLMPulseError
    ├── ConfigError          a bad LLMPULSE_* value or configure() argument
    └── UnsupportedClientError (also a TypeError)  wrap() of something it cannot wrap
"""

from __future__ import annotations

__all__ = ["ConfigError", "LLMPulseError", "UnsupportedClientError"]


class LLMPulseError(Exception):
    """Root of every exception llmpulse raises itself."""


class ConfigError(LLMPulseError, ValueError):
    """A configuration value is invalid; the message names it and what is accepted."""


class UnsupportedClientError(LLMPulseError, TypeError):
    """`llmpulse.wrap()` was given an object it cannot instrument."""
