"""What the tests' throwaway servers share: their binary, a free port, and a process that always stops.

A missing binary skips the tests that need it, except under ``CI=true`` (as
`.ci/run` sets), where it fails them: CI must not go green by skipping.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

import pytest


def system_binary(name: str, package: str) -> str:
    """The path of ``name``; skips the test (fails it under CI=true) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (apt-get install {package})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the tests that need it")
        pytest.skip(reason)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalServer:
    """A server process on 127.0.0.1 with a temporary directory; a context manager that always stops it.

    Subclasses start their process in `start` and call `wait_until_ready`.
    """

    name = "server"
    start_timeout_s = 10.0

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix=f"llmpulse-{self.name}-")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process and wait until it serves."""
        raise NotImplementedError

    def wait_until_ready(self, ready: Callable[[], bool], output: Callable[[], str]) -> None:
        """Poll ``ready`` until it is true, the process exits, or `start_timeout_s` passes (then stop)."""
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {proc.returncode}: {output()}")
            try:
                if ready():
                    return
            except OSError:  # not listening yet
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not ready within {self.start_timeout_s} s: {output()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the process and wait for it to exit (its port is free again after); `start` may follow."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=self.start_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self._dir.cleanup()


class WebhookReceiver:
    """A local HTTP server on a free port that records the bodies POSTed to it.

    Each POST is answered with the next status of ``statuses`` (200 when none
    is left), so a test can script a webhook that fails and then recovers.
    """

    def __init__(self, path: str = "/hooks/T0/B0/s3cr3t-token") -> None:
        self.bodies: list[bytes] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}{path}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
