"""Built-in alert sinks: a JSON log line, and webhooks for Slack, Discord or any JSON receiver.

Each alert sink has its own delivery thread (`_Delivery`), never a caller's, so a
webhook's retries hold back no other sink. A webhook's URL
is a secret (Slack's and Discord's carry their token in the path): it never
appears in a log line, an exception message or a repr; errors name the host.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Any, Literal
from urllib.parse import urlsplit

import orjson

from .._exit import start_daemon
from .._units import fmt_duration
from ._alert import Alert

__all__ = ["LogAlertSink", "WebhookAlertSink", "WebhookError"]

WebhookFormat = Literal["json", "slack", "discord"]
_FORMATS = ("json", "slack", "discord")
_DISCORD_MAX = 2000  # characters in a Discord message
_log = logging.getLogger("llmpulse")


class LogAlertSink:
    """One JSON line per alert (``"event": "llmpulse.alert"``), for log-based alerting and humans.

    Args:
        stream: Where lines go (default: stdout, like the event log).

    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream

    def emit(self, alert: Alert) -> None:
        """Write the alert as one JSON line."""
        level = "warning" if alert.status == "firing" else "info"
        line = {"event": "llmpulse.alert", "level": level, **alert.to_dict()}
        stream = self._stream or sys.stdout
        stream.write(orjson.dumps(line).decode() + "\n")
        stream.flush()


class WebhookError(Exception):
    """A webhook kept failing; the message names the host, never the URL."""


class WebhookAlertSink:
    """POST each alert to a webhook, with a timeout and retries.

    Args:
        url: The webhook URL (kept out of logs and errors).
        format: "json" (the alert's fields), "slack" (an incoming-webhook
            ``text``) or "discord" (a webhook ``content``).
        timeout_s: Per attempt.
        retries: Attempts after the first, with doubling backoff from ``backoff_s``.
        backoff_s: The first backoff.
        sleep: How to wait between attempts (tests pass a fake).

    Raises:
        ValueError: An unknown format or a URL that is not http(s).

    """

    def __init__(
        self,
        url: str,
        *,
        format: WebhookFormat = "json",
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "WebhookAlertSink needs an http(s) URL (the URL itself is not shown: it is a secret)"
            )
        if format not in _FORMATS:
            raise ValueError(f"WebhookAlertSink format must be one of {_FORMATS}, got {format!r}")
        self._url = url
        self.host = parts.hostname
        self.format = format
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"WebhookAlertSink(host={self.host!r}, format={self.format!r})"

    def emit(self, alert: Alert) -> None:
        """POST the alert; retry on errors and 5xx/429 answers.

        Raises:
            WebhookError: Every attempt failed (the engine counts and logs it).

        """
        import urllib.error  # noqa: PLC0415 - only a process with a webhook pays for urllib
        import urllib.request  # noqa: PLC0415

        body = orjson.dumps(self.payload(alert))
        problem = ""
        for attempt in range(self._retries + 1):
            if attempt:
                self._sleep(self._backoff_s * 2 ** (attempt - 1))
            request = urllib.request.Request(
                self._url, data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                    response.read()
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code}"
                if exc.code < 500 and exc.code != 429:
                    break  # the receiver refuses this payload: retrying will not help
            except (OSError, TimeoutError) as exc:
                problem = type(exc).__name__
            else:
                return
        raise WebhookError(f"webhook at {self.host} failed after {attempt + 1} attempt(s): {problem}")

    def payload(self, alert: Alert) -> dict[str, Any]:
        """The JSON body sent for ``alert`` in this sink's format."""
        if self.format == "json":
            return alert.to_dict()
        text = _text(alert)
        if self.format == "slack":
            return {"text": text}
        return {"content": text[:_DISCORD_MAX]}


def _text(alert: Alert) -> str:
    """The alert as a chat message: the headline, then the evidence."""
    mark = "RESOLVED" if alert.status == "resolved" else alert.severity.upper()
    about = ", ".join(f"{k}={v}" for k, v in alert.labels.items())
    lines = [f"[{mark}] {alert.rule}{f' ({about})' if about else ''}: {alert.summary}"]
    evidence = alert.evidence
    if evidence.top_tenants_by_requests:
        top = ", ".join(f"{t} {n:,.0f}" for t, n in evidence.top_tenants_by_requests)
        lines.append(f"top tenants by calls ({fmt_duration(evidence.window_s)}): {top}")
    if evidence.top_tenants_by_tokens:
        top = ", ".join(f"{t} {n:,.0f}" for t, n in evidence.top_tenants_by_tokens)
        lines.append(f"top tenants by tokens ({fmt_duration(evidence.window_s)}): {top}")
    if evidence.correlation_ids:
        lines.append("example correlation ids: " + ", ".join(evidence.correlation_ids))
    if evidence.request_ids:
        lines.append("provider request ids: " + ", ".join(evidence.request_ids))
    return "\n".join(lines)


class _Delivery:
    """One alert sink's queue and thread: a slow or dead sink holds back only its own alerts.

    The thread starts on the first alert and ends after ``idle_s`` without
    one. A full queue drops the new alert. ``on_result`` gets (sink name,
    "ok" | "failed" | "dropped") once per alert.
    """

    def __init__(
        self,
        sink: Any,
        name: str,
        on_result: Callable[[str, str], None],
        *,
        capacity: int = 100,
        idle_s: float = 60.0,
    ) -> None:
        self.sink = sink
        self.name = name
        self.inline = bool(getattr(sink, "inline", False))  # in memory: called on the engine's thread
        self._on_result = on_result
        self._capacity = capacity
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: deque[Alert] = deque()
        self._busy = False  # an alert is being delivered
        self._thread: threading.Thread | None = None

    def put(self, alert: Alert) -> None:
        """Queue ``alert`` for the sink (an inline sink gets it at once); never blocks."""
        if self.inline:
            self.deliver(alert)
            return
        with self._lock:
            if len(self._queue) + self._busy >= self._capacity:
                full = True
            else:
                full = False
                self._queue.append(alert)
                if self._thread is None:
                    # None at exit (see `llmpulse._exit`): the alert waits, and `stop` counts it.
                    self._thread = start_daemon(self._run, f"llmpulse-alert-{self.name}")
                self._changed.notify_all()
        if full:
            self._on_result(self.name, "dropped")

    def deliver(self, alert: Alert) -> None:
        """Hand ``alert`` to the sink on this thread; a failure is counted and logged, never raised."""
        try:
            self.sink.emit(alert)
        except Exception:  # noqa: BLE001 - a failing sink is counted and logged, never raised
            _log.warning("llmpulse alert sink %s failed", self.name, exc_info=True)
            self._on_result(self.name, "failed")
        else:
            self._on_result(self.name, "ok")

    def _run(self) -> None:
        me = threading.current_thread()
        try:
            while True:
                with self._lock:
                    while not self._queue:
                        if not self._changed.wait(self.idle_s) and not self._queue:
                            self._thread = None  # the next alert starts another
                            return
                    alert = self._queue.popleft()
                    self._busy = True
                try:
                    self.deliver(alert)
                finally:
                    with self._lock:
                        self._busy = False
                        self._changed.notify_all()
        finally:
            with self._lock:
                if self._thread is me:  # only reached by a bug: let the next alert start a thread
                    self._thread = None

    def flush(self, deadline: float) -> bool:
        """Wait until the queued alerts were delivered, at most until ``deadline`` (monotonic)."""
        with self._lock:
            while self._queue or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None:
                    return False
                self._changed.wait(remaining)
            return True

    def stop(self) -> None:
        """Count the alerts still queued as dropped (the one being delivered finishes on its own)."""
        with self._lock:
            left = len(self._queue)
            self._queue.clear()
        for _ in range(left):
            self._on_result(self.name, "dropped")
