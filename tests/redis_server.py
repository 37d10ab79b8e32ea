"""A real, throwaway ``redis-server`` on a free 127.0.0.1 port, for the shared-state tests.

Nothing is persisted (``--save '' --appendonly no``) and the working directory is
a temporary one. Without the binary the tests are skipped, except under
``CI=true`` (as `.ci/run` sets), where they fail: CI must not go green by
skipping the only test of the shared store.
"""

from __future__ import annotations

import subprocess

import redis

from local_server import LocalServer, free_port, system_binary

__all__ = ["RedisServer", "free_port", "redis_server_binary"]


def redis_server_binary() -> str:
    """The path of ``redis-server``; skips the test (fails it under CI=true) when there is none."""
    return system_binary("redis-server", "redis-server")


class RedisServer(LocalServer):
    """One ``redis-server`` process: `start`, `stop`, and `start` again on the same port."""

    name = "redis-server"

    def __init__(self, *, password: str | None = None, port: int | None = None) -> None:
        self.binary = redis_server_binary()
        super().__init__()
        self.password = password
        self.port = free_port() if port is None else port

    @property
    def url(self) -> str:
        """The URL to connect with (it holds the password, if any)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A plain client for assertions; close it after use."""
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2.0)

    def start(self) -> None:
        """Start the server and wait for PING, at most `start_timeout_s`."""
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
        self._proc = proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def ping() -> bool:
            try:
                with self.client() as c:
                    return bool(c.ping())
            except redis.exceptions.ConnectionError:
                return False

        def stderr() -> str:
            return (
                proc.stderr.read().decode(errors="replace") if proc.stderr and proc.poll() is not None else ""
            )

        self.wait_until_ready(ping, stderr)
