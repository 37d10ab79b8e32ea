"""Store updates that need not delay the caller: budget spend and token settlements on a remote store.

When a call ends, its tenant's budgets are charged and its token
reservation settled. On the in-memory store that is a few microseconds and
runs inline; on Redis it is a network round trip, so it goes to one daemon
thread instead (never the caller's thread, never an event loop). A bounded
backlog keeps a dead Redis from piling up work: beyond it updates are
dropped and counted (the quotas then err on the generous side).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable

from .._exit import start_daemon

__all__ = ["WriteBack"]

_log = logging.getLogger("llmpulse")


class WriteBack:
    """A single background worker for store updates.

    Args:
        max_pending: Updates queued at most; later ones are dropped and counted.

    """

    def __init__(self, max_pending: int = 10_000) -> None:
        self.max_pending = max_pending
        self.dropped = 0
        self.failed = 0
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # After fork() the worker thread is gone; the parent's backlog is the parent's.
        self._queue: queue.Queue[Callable[[], None]] = queue.Queue(self.max_pending)
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, update: Callable[[], None]) -> bool:
        """Queue ``update``; False (and counted) when the backlog is full."""
        try:
            self._queue.put_nowait(update)
        except queue.Full:
            self.dropped += 1
            return False
        self._ensure_worker()
        return True

    def _ensure_worker(self) -> bool:
        # False at interpreter exit, when no thread may start: queued updates then wait, unrun.
        if self._worker is None or not self._worker.is_alive():
            with self._lock:
                if self._worker is None or not self._worker.is_alive():
                    self._worker = start_daemon(self._run, "llmpulse-store")
                    return self._worker is not None
        return True

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every queued update ran (flush, shutdown, tests); True if none is left."""
        if self._worker is None and self._queue.empty():
            return True  # never used: nothing to wait for, no thread to start
        done = threading.Event()
        try:
            self._queue.put(done.set, timeout=timeout)  # waits for room, unlike submit
        except queue.Full:
            return False
        if not self._ensure_worker():
            return False
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            update = self._queue.get()
            try:
                update()
            except Exception:  # noqa: BLE001 - a store failure must not kill the worker
                self.failed += 1
                if self.failed <= 3 or self.failed % 1000 == 0:
                    _log.warning("llmpulse store update failed", exc_info=True)
