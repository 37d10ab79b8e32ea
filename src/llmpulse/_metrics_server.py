"""Serving /metrics: ASGI and WSGI apps and a standalone server, multiprocess-aware.

In prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set
before Python starts, as under gunicorn) each request reads every worker's
files through a fresh `MultiProcessCollector` registry, so any worker's
/metrics shows the sum over workers.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, make_asgi_app, make_wsgi_app, start_http_server

__all__ = ["MetricsServer", "metrics_asgi_app", "metrics_wsgi_app", "start_metrics_server"]


def _multiprocess_registry() -> CollectorRegistry | None:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return None
    from prometheus_client import multiprocess  # noqa: PLC0415

    registry = CollectorRegistry(support_collectors_without_names=True)
    multiprocess.MultiProcessCollector(registry)
    return registry


def _registry(registry: CollectorRegistry | None) -> CollectorRegistry:
    if registry is not None:
        return registry
    return _multiprocess_registry() or REGISTRY


def metrics_asgi_app(registry: CollectorRegistry | None = None) -> Any:
    """An ASGI app serving the metrics (mount it at ``/metrics``)."""
    return make_asgi_app(registry=_registry(registry))


def metrics_wsgi_app(registry: CollectorRegistry | None = None) -> Any:
    """A WSGI app serving the metrics."""
    return make_wsgi_app(registry=_registry(registry))


@dataclass
class MetricsServer:
    """A running /metrics server (a daemon thread).

    Attributes:
        port: The port it listens on (the real one when 0 was asked for).
        host: The address it listens on.
    """

    port: int
    host: str
    _server: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving and join the thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def start_metrics_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve /metrics on ``addr:port`` from a daemon thread (``port=0`` picks a free port)."""
    server, thread = start_http_server(port, addr=addr, registry=_registry(registry))
    return MetricsServer(port=int(server.server_address[1]), host=addr, _server=server, _thread=thread)


_started: MetricsServer | None = None
_lock = threading.Lock()


def maybe_start_from_env(port: int | None) -> MetricsServer | None:
    """Start the server for ``LLMPULSE_METRICS_PORT`` once per process."""
    global _started  # noqa: PLW0603 - one server per process
    if port is None:
        return None
    with _lock:
        if _started is None:
            _started = start_metrics_server(port)
        return _started
