"""A real, throwaway ``redis-server`` on a free 127.0.0.1 port, for the shared-state tests.

Nothing is persisted (``--save '' --appendonly no``) and the working directory is
a temporary one. Without the binary the tests are skipped, except under
``CI=true`` (as `.ci/run` sets), where they fail: CI must not go green by
skipping the only test of the shared store.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType

import pytest
import redis

START_TIMEOUT_S = 10.0


def redis_server_binary() -> str:
    """The path of ``redis-server``; skips the test (fails it under CI=true) when there is none."""
    path = shutil.which("redis-server")
    if path is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the Redis tests")
        pytest.skip(reason)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process: `start`, `stop`, and `start` again on the same port."""

    def __init__(self, *, password: str | None = None, port: int | None = None) -> None:
        self.binary = redis_server_binary()
        self.password = password
        self.port = free_port() if port is None else port
        self._dir = tempfile.TemporaryDirectory(prefix="llmpulse-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL to connect with (it holds the password, if any)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A plain client for assertions; close it after use."""
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2.0)

    def start(self) -> None:
        """Start the server and wait for PING, at most `START_TIMEOUT_S`."""
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        args += ["--dir", self._dir.name, "--loglevel", "warning", "--daemonize", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                stderr = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}: {stderr}")
            try:
                with self.client() as c:
                    if c.ping():
                        return
            except redis.exceptions.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT_S} s")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop the server and wait for it to exit (the port is free again after)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self._dir.cleanup()
