"""Which SDK clients are wrapped, and with what: a weak map, so the clients hold nothing of llmpulse's.

A wrapped client is an ordinary instance of the SDK's class with the SDK's
own attributes only (``vars(client)`` is what the bare client's would be);
llmpulse's entry points, installed once on the SDK's classes, look the client
up here and pass everything else through untouched.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._hook import Hook

__all__ = ["hook_of", "original_of", "register"]

_WRAPPED: weakref.WeakKeyDictionary[Any, tuple[Hook, Any]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def register(client: Any, hook: Hook, original: Any) -> None:
    """Record ``client`` as wrapped with ``hook``, made from ``original`` (what `unwrap` returns)."""
    with _LOCK:
        _WRAPPED[client] = (hook, original)


def hook_of(client: Any) -> Hook | None:
    """The hook of a wrapped client, or None for any other object."""
    try:
        entry = _WRAPPED.get(client)
    except TypeError:  # not weakly referenceable, or unhashable: never registered
        return None
    return None if entry is None else entry[0]


def original_of(client: Any) -> Any:
    """The client ``client`` was made from by `llmpulse.wrap`, or ``client`` itself."""
    try:
        entry = _WRAPPED.get(client)
    except TypeError:
        return client
    return client if entry is None else entry[1]
