"""Fresh process-wide policy state between tests."""

from __future__ import annotations

__all__ = ["reset"]


def reset() -> None:
    """Forget the state of the process's default `llmpulse.Policies`.

    Breakers, retry budgets, concurrency limits and the endpoints remembered
    as refusing ``stream_options`` belong to the default policies, which
    clients wrapped without ``policies=`` share. After this, the next
    `llmpulse.wrap()` starts from fresh state, as a new process would;
    clients wrapped earlier keep theirs. Settings are not touched
    (`llmpulse.configure` sets them).
    """
    from .._wrap import _defaults  # noqa: PLC0415 - the call path is not imported by the test kit itself

    _defaults.clear()
