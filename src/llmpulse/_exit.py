"""Where the process is in its exit, and the one way llmpulse starts a thread.

Global state department. At interpreter exit Python joins the non-daemon
threads, runs the atexit handlers (the last registered first), then tears
the modules down and collects what is left: ``__del__`` methods and
generator finalizers of objects the app still held run there, so a stream a
global still references is closed, or collected, after every atexit handler.
By then a new thread can never run: ``Thread.start()`` blocks forever on
3.11 and raises on 3.12+ (3.12.0 and 3.12.1 raise inside atexit handlers
already), and lazy imports fail.

So llmpulse's own atexit hook (`llmpulse._pipeline`) calls `begin`, then
reports the bodies the app left open and delivers what is queued on the
exiting thread, then calls `end`. From `begin` on, `start_daemon` starts
nothing; from `end` on, a call whose body ends is counted as dropped
(reason "shutdown") instead of being recorded.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["STATE", "ExitState", "begin", "end", "exiting", "start_daemon"]


class ExitState:
    """The process's exit state; code that may run during module teardown keeps a reference.

    (Teardown sets module globals to None, so reading this module's functions
    from a ``__del__`` then can fail; an attribute of an object held elsewhere
    cannot.)
    """

    __slots__ = ("exited", "exiting")

    def __init__(self) -> None:
        self.exiting = False  # llmpulse's atexit hook has begun
        self.exited = False  # ... and returned


STATE = ExitState()


def begin() -> None:
    """The exit hook has begun: no more threads."""
    STATE.exiting = True


def end() -> None:
    """The exit hook has returned: calls that end from now on are counted, not recorded."""
    STATE.exited = True


def exiting() -> bool:
    """Whether llmpulse's exit hook has begun (or the interpreter is finalizing)."""
    return STATE.exiting or sys.is_finalizing()


def start_daemon(
    target: Callable[..., object], name: str, args: tuple[Any, ...] = ()
) -> threading.Thread | None:
    """Start a daemon thread running ``target(*args)``; None when the process is exiting.

    Args:
        target: What the thread runs.
        name: The thread's name.
        args: Arguments for ``target``.

    Returns:
        The started thread, or None if none may start now.

    """
    if exiting():
        return None
    thread = threading.Thread(target=target, name=name, args=args, daemon=True)
    try:
        thread.start()
    except RuntimeError:  # an atexit handler that runs before ours, on 3.12.0 / 3.12.1
        return None
    return thread
