"""A plain WSGI app under gunicorn: several worker processes, one /metrics for all of them.

Each gunicorn worker is its own process with its own counters. prometheus_client's
multiprocess mode makes them write to files in a shared directory, and
``llmpulse.metrics_wsgi_app()`` then serves the sum over all workers, whichever
worker answers the scrape. Point ``PROMETHEUS_MULTIPROC_DIR`` at an empty
directory before gunicorn starts (clear it on every deploy)::

    .venv/bin/llmpulse fake-provider --port 8080 &
    rm -rf /tmp/llmpulse-prom && mkdir /tmp/llmpulse-prom
    PROMETHEUS_MULTIPROC_DIR=/tmp/llmpulse-prom FAKE_BASE_URL=http://127.0.0.1:8080/v1 \
    .venv/bin/gunicorn -c gunicorn.conf.py --workers 2 --bind 127.0.0.1:8000 examples.gunicorn_app:app

    curl 'http://127.0.0.1:8000/chat?tenant=acme'
    curl http://127.0.0.1:8000/metrics

where ``gunicorn.conf.py`` holds the hook that drops a dead worker's live gauges
(``llmpulse_inflight_requests`` sums the live workers only); its counters stay in the totals::

    from prometheus_client import multiprocess

    def child_exit(server, worker):
        multiprocess.mark_process_dead(worker.pid)

The client is created on a worker's first request, after the fork: a client
made in the master (``--preload``) would share its connection pool with every worker.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from urllib.parse import parse_qs
from wsgiref.types import StartResponse, WSGIEnvironment

from openai import OpenAI

import llmpulse

metrics = llmpulse.metrics_wsgi_app()

_client: OpenAI | None = None
_client_lock = threading.Lock()


def client() -> OpenAI:
    """This worker's wrapped client, created on first use."""
    global _client  # noqa: PLW0603 - one client per worker process
    with _client_lock:
        if _client is None:
            _client = llmpulse.wrap(
                OpenAI(base_url=os.environ["FAKE_BASE_URL"], api_key="sk-test", max_retries=0)
            )
        return _client


def chat(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """GET /chat?tenant=NAME: one model call tagged with the tenant; replies with this worker's pid."""
    tenant = parse_qs(environ.get("QUERY_STRING", "")).get("tenant", ["anonymous"])[0]
    with llmpulse.context(tenant=tenant, route="/chat"):
        reply = client().chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello to the on-call engineer."}]
        )
    usage = reply.usage
    body = json.dumps(
        {
            "pid": os.getpid(),
            "reply": reply.choices[0].message.content,
            "input_tokens": usage.prompt_tokens if usage else None,
            "output_tokens": usage.completion_tokens if usage else None,
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI entry point: /chat and /metrics."""
    path = environ.get("PATH_INFO", "")
    if path == "/chat":
        return chat(environ, start_response)
    if path == "/metrics":
        return metrics(environ, start_response)
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"not found\n"]
