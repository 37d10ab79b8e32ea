"""A real, throwaway Prometheus server on a free 127.0.0.1 port, for tests/test_deploy.py.

Its storage is a temporary directory removed on `stop`. Without the ``prometheus`` or
``promtool`` binary (Debian package ``prometheus``) the tests are skipped, except under
``CI=true`` (as `.ci/run` sets), where they fail, as for redis-server (tests/redis_server.py).
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from local_server import LocalServer, free_port, system_binary


def prometheus_binary(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``; skips the test (fails it under CI=true) without it."""
    return system_binary(name, "prometheus")


class PrometheusServer(LocalServer):
    """One ``prometheus`` process with the given configuration (rule files copied next to it)."""

    name = "prometheus"
    start_timeout_s = 20.0

    def __init__(self, config: str, rule_files: dict[str, str] | None = None) -> None:
        self.binary = prometheus_binary("prometheus")
        super().__init__()
        self.port = free_port()
        self.dir = Path(self._dir.name)
        for name, text in (rule_files or {}).items():
            (self.dir / name).write_text(text)
        (self.dir / "prometheus.yml").write_text(config)
        self._log = self.dir / "prometheus.log"

    @property
    def url(self) -> str:
        """The base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and wait until ``/-/ready`` answers 200, at most `start_timeout_s`."""
        args = [
            self.binary,
            f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    return bool(response.status == 200)
            except urllib.error.URLError:
                return False

        self.wait_until_ready(ready, self.log)

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
