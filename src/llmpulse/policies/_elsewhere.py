"""Cross-provider fallback: a call its provider cannot serve, offered to the user's function.

When a provider is overloaded (503/529 through every retry and fallback
model) or its circuit is open, llmpulse can hand the call to a function the
user supplies (``Policies(cross_provider=...)``), which serves it on another
wrapped client, e.g. Anthropic overloaded -> OpenAI. llmpulse decides when,
calls it, and records who served the call; the function only translates.

The caller asked one SDK for its own type, so the function answers in the
*requested* provider's wire format: the JSON body of a successful response
(a dict, or an SDK model such as ``anthropic.types.Message``). The SDK then
parses it as it would the provider's own answer. Returning None declines:
the call fails as it would have without the function.

Only non-streaming calls are offered: a stream would need the function to
produce the original provider's event stream, chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import orjson

__all__ = [
    "CrossProvider",
    "ServeElsewhere",
    "Served",
    "UnavailableCall",
    "collecting_served",
    "encode_answer",
    "record_served",
]

UnavailableReason = Literal["overloaded", "circuit_open", "queue_full"]


@dataclass(frozen=True, slots=True)
class UnavailableCall:
    """A call its provider cannot serve now, as the cross-provider function sees it.

    Attributes:
        provider: The provider asked (``gen_ai.provider.name``, e.g. "anthropic").
        model: The model asked for (before any fallback model).
        operation: e.g. "chat", "messages", "responses".
        path: The URL path of the request, e.g. "/v1/messages".
        body: The request's JSON body, as the caller's SDK sent it.
        reason: "overloaded" (503/529 after retries and fallback models),
            "circuit_open", or "queue_full" (this process has too many calls
            waiting for the provider).
        tenant: The caller's tenant, if the context names one.

    """

    provider: str
    model: str | None
    operation: str
    path: str
    body: Mapping[str, Any]
    reason: UnavailableReason
    tenant: str | None


CrossProvider = Callable[[UnavailableCall], "Mapping[str, Any] | Any | Awaitable[Any] | None"]
"""Serves an `UnavailableCall` elsewhere: returns the answer's JSON body in the
requested provider's format (a dict or an SDK model), or None to decline.
Wrapped async clients may be given an ``async def`` function."""


class ServeElsewhere(Exception):
    """Raised inside the attempt loop: this call may be served by the cross-provider function.

    ``refuse`` ends the call as it would have ended without the function
    (it raises the `PolicyError` or returns the provider's own answer).
    """

    def __init__(self, call: UnavailableCall, refuse: Callable[[], tuple[int, Any, bytes]]) -> None:
        super().__init__(call.reason)
        self.call = call
        self.refuse = refuse


@dataclass(frozen=True, slots=True)
class Served:
    """A wrapped call made while the cross-provider function ran."""

    provider: str
    model: str | None
    ok: bool


# Set while a cross-provider function runs: the wrapped calls it makes report here.
_serving: ContextVar[list[Served] | None] = ContextVar("llmpulse_serving", default=None)


def collecting_served() -> tuple[list[Served], Any]:
    """Start collecting the wrapped calls of this context; returns (list, token to reset)."""
    served: list[Served] = []
    return served, _serving.set(served)


def stop_collecting(token: Any) -> None:
    """Stop collecting (the token from `collecting_served`)."""
    _serving.reset(token)


def record_served(provider: str, model: str | None, ok: bool) -> None:
    """Report a finished wrapped call to the cross-provider fallback running it, if any."""
    served = _serving.get()
    if served is not None:
        served.append(Served(provider, model, ok))


def encode_answer(answer: object) -> bytes:
    """The JSON body of the function's answer.

    Raises:
        TypeError: The answer is neither a mapping nor an SDK model.

    """
    if isinstance(answer, Mapping):
        return orjson.dumps(dict(answer))
    dump = getattr(answer, "model_dump", None)  # pydantic models: every SDK type
    if callable(dump):
        return orjson.dumps(dump(mode="json", exclude_unset=True))
    raise TypeError(
        f"the cross_provider function returned {type(answer).__name__}; expected the answer's JSON "
        "body as a dict or an SDK model, or None to decline"
    )
