"""Fallback chains: which model serves a call when its own cannot.

A chain per requested model, e.g. ``{"gpt-4o": ["gpt-4o-mini"],
"claude-sonnet-4-6": [Fallback("claude-haiku-4-5", max_tokens=1024)]}``. A
fallback is used when the model is overloaded (a 529, or a 503 that says
so), when its circuit breaker is open, or (later) when a budget says
"downgrade"; never once output reached the caller, since the attempt loop
has handed the response over by then. The request is re-sent with the
fallback's model (and a lower ``max_tokens`` cap if set), so the SDK
returns its usual type; the event records the model that served it.

Only APIs that name the model in the JSON body can fall back: Azure names
its deployment in the URL, so Azure clients never do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["Fallback", "FallbackChains", "chain_for", "rewrite_body"]

# The request fields that cap the answer, in every wire format llmpulse knows.
_CAP_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


@dataclass(frozen=True, slots=True)
class Fallback:
    """One step of a fallback chain.

    Attributes:
        model: The model to ask instead.
        max_tokens: A lower cap on the answer for this model (None: keep the request's).

    """

    model: str
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("Fallback.model must be a model name")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"Fallback.max_tokens must be >= 1, got {self.max_tokens!r}")


FallbackChains = Mapping[str, Sequence["str | Fallback"]]
"""Requested model -> the models to try instead, in order."""


def chain_for(chains: FallbackChains, model: str | None) -> list[Fallback]:
    """The fallbacks of ``model``, as `Fallback` objects (empty when it has none)."""
    if model is None:
        return []
    return [step if isinstance(step, Fallback) else Fallback(step) for step in chains.get(model, ())]


def rewrite_body(body: bytes, fallback: Fallback) -> bytes | None:
    """The request body asking ``fallback.model`` instead; None if the body is not a JSON object."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or "model" not in data:
        return None
    data["model"] = fallback.model
    if fallback.max_tokens is not None:
        for key in _CAP_KEYS:
            value = data.get(key)
            if isinstance(value, int) and value > fallback.max_tokens:
                data[key] = fallback.max_tokens
    return orjson.dumps(data)
