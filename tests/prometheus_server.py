"""A real, throwaway Prometheus server on a free 127.0.0.1 port, for tests/test_deploy.py.

Its storage is a temporary directory removed on `stop`. Without the ``prometheus`` or
``promtool`` binary (Debian package ``prometheus``) the tests are skipped, except under
``CI=true`` (as `.ci/run` sets), where they fail, as for redis-server (tests/redis_server.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from redis_server import free_port

START_TIMEOUT_S = 20.0


def prometheus_binary(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``; skips the test (fails it under CI=true) without it."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the Prometheus tests")
        pytest.skip(reason)
    return path


class PrometheusServer:
    """One ``prometheus`` process with the given configuration (rule files copied next to it)."""

    def __init__(self, config: str, rule_files: dict[str, str] | None = None) -> None:
        self.binary = prometheus_binary("prometheus")
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="llmpulse-prometheus-")
        self.dir = Path(self._dir.name)
        for name, text in (rule_files or {}).items():
            (self.dir / name).write_text(text)
        (self.dir / "prometheus.yml").write_text(config)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = self.dir / "prometheus.log"

    @property
    def url(self) -> str:
        """The base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and wait until ``/-/ready`` answers 200, at most `START_TIMEOUT_S`."""
        args = [
            self.binary,
            f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self._proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prometheus not ready within {START_TIMEOUT_S} s: {self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        """What the server logged so far."""
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def api(self, path: str, **params: str | float) -> tuple[int, dict[str, Any]]:
        """POST form ``params`` to ``/api/v1/<path>``; return the HTTP status and the decoded JSON."""
        data = urllib.parse.urlencode({k: str(v) for k, v in params.items()}).encode()
        request = urllib.request.Request(f"{self.url}/api/v1/{path}", data=data, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.load(exc)

    def get(self, path: str) -> dict[str, Any]:
        """GET ``/api/v1/<path>`` and return its ``data``."""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}", timeout=10) as response:
            body: dict[str, Any] = json.load(response)
        assert body["status"] == "success", body
        return body["data"]  # type: ignore[no-any-return]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant-vector result of ``expr`` now (raises on any error)."""
        status, body = self.api("query", query=expr)
        assert status == 200, body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def stop(self) -> None:
        """Stop the server, wait for it to exit and remove its storage."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._dir.cleanup()

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
