"""A clock for the policies in tests: time moves only when the test says so, or when llmpulse sleeps."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """Pass as ``llmpulse.Policies(clock=FakeClock())``; backoff sleeps then take no real time.

    Attributes:
        now: The current time (seconds).
        slept: Every sleep llmpulse asked for, in order.

    Example:
        >>> clock = FakeClock()
        >>> clock.sleep(0.5)
        >>> clock.monotonic(), clock.slept
        (1000.5, [0.5])

    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def monotonic(self) -> float:
        """The current time."""
        return self.now

    def __call__(self) -> float:
        """The current time: the clock also serves where a ``time.monotonic``-like function is asked for."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        """Record the sleep and move time forward by it, at once."""
        self.slept.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        """Like `sleep`, then let other tasks run once (as a real sleep would)."""
        self.sleep(seconds)
        import anyio  # noqa: PLC0415 - the SDKs' dependency; works under asyncio and trio

        await anyio.sleep(0)
