"""② Decisions taken in the call path, before and between attempts.

For now this is the SDK's own retry rule, so wrapping a client changes
nothing about when it retries; the resilience policies build on it.
"""

from ._retry import parse_retry_after, sdk_retry_delay

__all__ = ["parse_retry_after", "sdk_retry_delay"]
