"""Serving /metrics: ASGI and WSGI apps and a standalone server, multiprocess-aware.

In prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set
before Python starts, as under gunicorn) each process only writes files, so
with no registry given these serve a fresh registry holding a
`MultiProcessCollector` over those files (built per request for the apps):
any worker's /metrics then shows the sum over all workers.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, TypeAlias

from prometheus_client import REGISTRY, CollectorRegistry, make_asgi_app, make_wsgi_app, start_http_server

__all__ = [
    "ASGIApp",
    "MetricsServer",
    "WSGIApp",
    "maybe_start_from_env",
    "metrics_asgi_app",
    "metrics_wsgi_app",
    "start_metrics_server",
]

_log = logging.getLogger("llmpulse")

_Scope: TypeAlias = MutableMapping[str, Any]
_Receive: TypeAlias = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send: TypeAlias = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[_Scope, _Receive, _Send], Awaitable[None]]
"""An ASGI 3 application."""
WSGIApp: TypeAlias = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
"""A WSGI application."""


def _multiprocess_dir() -> str | None:
    # prometheus_client also honours the old lowercase name, and switches to
    # multiprocess mode when the variable merely exists: follow it, and say
    # so when an empty value makes every worker write into the working directory.
    for name in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):
        value = os.environ.get(name)
        if value:
            return value
        if value is not None and not _warned_empty:
            _warned_empty.append(name)
            _log.warning(
                "%s is set but empty: prometheus_client writes metric files into the working "
                "directory and /metrics shows this process only; set it to a directory",
                name,
            )
    return None


_warned_empty: list[str] = []


def _multiprocess_registry(path: str) -> CollectorRegistry:
    from prometheus_client import multiprocess  # noqa: PLC0415 - only for multiprocess mode

    # Not the global registry: its in-process metrics would be exported twice.
    registry = CollectorRegistry(support_collectors_without_names=True)
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def metrics_asgi_app(registry: CollectorRegistry | None = None) -> ASGIApp:
    """Return an ASGI app serving the metrics in the Prometheus or OpenMetrics text format.

    Mount it at ``/metrics`` (``app.mount("/metrics", metrics_asgi_app())`` in
    FastAPI or Starlette). It negotiates OpenMetrics (which carries the
    exemplars) and gzip from the request headers.

    Args:
        registry: The registry to serve. None serves the global registry, or in
            multiprocess mode a fresh `MultiProcessCollector` registry per request.

    Returns:
        The ASGI application.

    """
    if registry is not None or (path := _multiprocess_dir()) is None:
        return _asgi(make_asgi_app(registry=REGISTRY if registry is None else registry))
    mp_path = path

    async def per_request(scope: _Scope, receive: _Receive, send: _Send) -> None:
        await make_asgi_app(registry=_multiprocess_registry(mp_path))(scope, receive, send)

    return _asgi(per_request)


def _asgi(inner: Callable[..., Awaitable[None]]) -> ASGIApp:
    # prometheus_client's app asserts an HTTP scope; served on its own (say
    # by uvicorn) it also gets the lifespan protocol, which it must answer.
    async def app(scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] == "http":
            await inner(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    return app


def metrics_wsgi_app(registry: CollectorRegistry | None = None) -> WSGIApp:
    """Return a WSGI app serving the metrics in the Prometheus or OpenMetrics text format.

    Args:
        registry: The registry to serve. None serves the global registry, or in
            multiprocess mode a fresh `MultiProcessCollector` registry per request.

    Returns:
        The WSGI application.

    """
    if registry is not None or (path := _multiprocess_dir()) is None:
        app: WSGIApp = make_wsgi_app(registry=REGISTRY if registry is None else registry)
        return app
    mp_path = path

    def per_request(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        inner: WSGIApp = make_wsgi_app(registry=_multiprocess_registry(mp_path))
        return inner(environ, start_response)

    return per_request


class MetricsServer:
    """A running /metrics HTTP server, serving from a daemon thread.

    Returned by `start_metrics_server`; usable as a context manager that stops it.
    Any path is served (``/metrics`` by convention).

    Attributes:
        host: The address it listens on.
        port: The port it listens on (the real one when 0 was asked for).

    """

    def __init__(self, server: Any, thread: threading.Thread, host: str) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port = int(server.server_address[1])
        self._stopped = False

    @property
    def url(self) -> str:
        """The metrics URL, ``http://host:port/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    @property
    def running(self) -> bool:
        """Whether the server still serves (`stop` not called)."""
        return not self._stopped

    def stop(self) -> None:
        """Stop serving, close the socket and join the thread (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<MetricsServer {self.url} {state}>"


def start_metrics_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve the metrics over HTTP from a daemon thread.

    Args:
        port: The port; 0 picks a free one (read it back from ``.port``).
        addr: The address to bind; the default keeps the metrics on this host.
        registry: As for `metrics_wsgi_app`.

    Returns:
        The running server.

    Raises:
        OSError: The address could not be bound (e.g. the port is taken).

    """
    if registry is None and (path := _multiprocess_dir()) is not None:
        # The server collects on every scrape, so one registry is enough here.
        registry = _multiprocess_registry(path)
    server, thread = start_http_server(port, addr=addr, registry=REGISTRY if registry is None else registry)
    return MetricsServer(server, thread, addr)


_lock = threading.Lock()
# (pid, server or None when binding failed): one attempt per process, and a
# forked child does not inherit its parent's server thread.
_started: tuple[int, MetricsServer | None] | None = None


def maybe_start_from_env(port: int | None) -> MetricsServer | None:
    """Start the configured metrics server once per process (``LLMPULSE_METRICS_PORT``).

    Later calls return the same server while it runs, whatever port they
    pass. A port that
    cannot be bound is logged, not raised: under a multi-worker server only
    the first worker gets it, which in multiprocess mode serves them all.

    Args:
        port: The configured port, or None for no server.

    Returns:
        The process's server, or None when none is configured or binding failed.

    """
    global _started  # noqa: PLW0603 - one server per process
    if port is None:
        return None
    with _lock:
        pid = os.getpid()
        if _started is not None and _started[0] == pid:
            previous = _started[1]
            if previous is None or previous.running:
                return previous
        server: MetricsServer | None = None
        try:
            server = start_metrics_server(port)
        except OSError as exc:
            level = logging.DEBUG if _multiprocess_dir() else logging.WARNING
            _log.log(level, "llmpulse metrics server not started on port %d: %s", port, exc)
        _started = (pid, server)
        return server
