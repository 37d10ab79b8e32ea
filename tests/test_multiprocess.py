"""prometheus_client multiprocess mode under a real gunicorn: two workers, one /metrics for both.

Runs examples/gunicorn_app.py in gunicorn (sync workers, ``PROMETHEUS_MULTIPROC_DIR``
set) against the fake provider, drives traffic over real HTTP and reads the
aggregate back from /metrics.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmpulse.testing import FakeProvider, Fault, FaultPlan

pytestmark = pytest.mark.skipif(os.name != "posix", reason="gunicorn runs on POSIX only")

ROOT = Path(__file__).parent.parent
TENANTS = ("acme", "globex", "initech")
WORKERS = 2
WAIT_TIMEOUT_S = 60.0

# The hook from the example's docstring, plus a ready marker per worker for the test
# to poll. gunicorn ignores unknown settings, so the control socket line (gunicorn
# >= 25, shared ~/.gunicorn/gunicorn.ctl by default) is harmless on older versions.
GUNICORN_CONF = """\
import os
from pathlib import Path

from prometheus_client import multiprocess

control_socket_disable = True


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    Path(os.environ["READY_DIR"], str(worker.pid)).touch()
"""

Samples = list[tuple[str, dict[str, str], float]]


@dataclass
class Gunicorn:
    """A running gunicorn serving examples/gunicorn_app.py."""

    proc: subprocess.Popen[bytes]
    port: int
    prom_dir: Path
    ready_dir: Path
    log: Path

    def ready_pids(self) -> set[int]:
        """Pids of every worker that has initialised the app so far (dead ones included)."""
        return {int(p.name) for p in self.ready_dir.iterdir()}

    def get(self, path: str) -> tuple[int, bytes]:
        """GET ``path`` on a new connection that gunicorn closes after the response."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def chat(self, tenant: str) -> dict[str, Any]:
        """One /chat request; the reply names the worker pid and the call's tokens."""
        status, body = self.get(f"/chat?tenant={tenant}")
        assert status == 200, body
        reply: dict[str, Any] = json.loads(body)
        return reply

    def scrape(self) -> Samples:
        """GET /metrics and parse every sample."""
        status, body = self.get("/metrics")
        assert status == 200, body
        return [
            (s.name, s.labels, s.value)
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        ]

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """Poll ``condition`` until it holds; fail with gunicorn's log if it does not in time."""
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while not condition():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gunicorn: {what} did not happen; log:\n{self.log.read_text()[-4000:]}")
            time.sleep(0.05)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        value for n, lab, value in samples if n == name and all(lab.get(k) == v for k, v in labels.items())
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(server: Gunicorn) -> bool:
    try:
        return server.get("/metrics")[0] == 200
    except OSError:
        return False


@pytest.fixture(name="server")
def _server(fake: FakeProvider, tmp_path: Path) -> Iterator[Gunicorn]:
    prom_dir, ready_dir = tmp_path / "prometheus", tmp_path / "ready"
    prom_dir.mkdir()
    ready_dir.mkdir()
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(GUNICORN_CONF)
    port = _free_port()
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(prom_dir),
        "FAKE_BASE_URL": fake.openai_base_url,
        "READY_DIR": str(ready_dir),
        "LLMPULSE_SINKS": "none",
    }
    env.pop("LLMPULSE_METRICS_PORT", None)
    argv = [sys.executable, "-m", "gunicorn", "--config", str(conf), "--chdir", str(ROOT)]
    argv += ["--workers", str(WORKERS), "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "10"]
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "examples.gunicorn_app:app"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    server = Gunicorn(proc, port, prom_dir, ready_dir, log)
    try:
        server.wait_until(lambda: len(server.ready_pids()) >= WORKERS and _answers(server), "startup")
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _traffic(server: Gunicorn, n: int) -> tuple[list[dict[str, Any]], Counter[str]]:
    """``n`` /chat requests over 4 concurrent connections, tenants in turn."""
    tenants = [TENANTS[i % len(TENANTS)] for i in range(n)]
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(server.chat, tenants))
    return replies, Counter(tenants)


def test_any_worker_serves_the_sum_over_all_workers(server: Gunicorn, fake: FakeProvider) -> None:
    """Requests spread over both workers; every scrape shows exact totals over both."""
    # Each call holds its worker for 50 ms, so the concurrent requests reach both workers.
    fake.plan = FaultPlan(latency_s=0.05)
    n = 20
    replies, per_tenant = _traffic(server, n)

    pids = Counter(reply["pid"] for reply in replies)
    assert len(pids) >= 2, f"one worker served everything: {pids}"
    assert set(pids) <= server.ready_pids()
    assert fake.stats().requests == n  # one upstream call each, no retries
    input_tokens = sum(reply["input_tokens"] for reply in replies)
    output_tokens = sum(reply["output_tokens"] for reply in replies)
    assert input_tokens > 0
    assert output_tokens > 0

    for _ in range(4):  # each scrape lands on whichever worker accepts it
        samples = server.scrape()
        assert total(samples, "llmpulse_requests_total") == n
        for tenant in TENANTS:
            got = total(samples, "llmpulse_requests_total", outcome="ok", tenant=tenant, route="/chat")
            assert got == per_tenant[tenant], tenant
        assert total(samples, "gen_ai_client_operation_duration_seconds_count") == n
        assert total(samples, "gen_ai_client_operation_duration_seconds_sum") >= 0.05 * n
        assert total(samples, "llmpulse_attempts_total", status_class="2xx") == n
        assert total(samples, "llmpulse_tokens_total", token_type="input") == input_tokens
        assert total(samples, "llmpulse_tokens_total", token_type="output") == output_tokens
        inflight = [(lab, v) for name, lab, v in samples if name == "llmpulse_inflight_requests"]
        # livesum: one series summed over the workers, no per-pid series.
        assert inflight == [({"gen_ai_provider_name": "openai"}, 0.0)]


def test_inflight_sums_a_call_in_progress_in_another_worker(server: Gunicorn, fake: FakeProvider) -> None:
    """A call held upstream in one worker shows as 1 in flight on the other worker's /metrics."""
    fake.enqueue(Fault.latency(2.0))
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(server.chat, "acme")
        assert fake.wait_for_requests(1, timeout=30)
        # The held worker is busy (sync worker): the other one answers this scrape.
        during = server.scrape()
        reply = held.result(timeout=30)
    after = server.scrape()

    assert total(during, "llmpulse_inflight_requests", gen_ai_provider_name="openai") == 1
    assert total(during, "llmpulse_requests_total") == 0
    assert total(after, "llmpulse_inflight_requests", gen_ai_provider_name="openai") == 0
    assert total(after, "llmpulse_requests_total", outcome="ok", tenant="acme") == 1
    assert reply["pid"] in server.ready_pids()


def test_a_dead_workers_counts_stay_and_its_live_gauge_goes(server: Gunicorn, fake: FakeProvider) -> None:
    """With the child_exit hook, a replaced worker's counters stay in the totals and its gauge file goes."""
    fake.plan = FaultPlan(latency_s=0.05)
    replies, _ = _traffic(server, 8)
    victim = replies[0]["pid"]
    gauge_file = server.prom_dir / f"gauge_livesum_{victim}.db"
    assert gauge_file.exists()
    assert (server.prom_dir / f"counter_{victim}.db").exists()

    os.kill(victim, signal.SIGTERM)
    # gunicorn reaps it (running child_exit) and starts a replacement.
    server.wait_until(lambda: not gauge_file.exists(), "child_exit for the stopped worker")
    server.wait_until(lambda: len(server.ready_pids()) > WORKERS, "a replacement worker")

    samples = server.scrape()
    assert total(samples, "llmpulse_requests_total", outcome="ok") == 8
    assert total(samples, "llmpulse_inflight_requests") == 0

    more, _ = _traffic(server, 6)
    assert victim not in {reply["pid"] for reply in more}
    samples = server.scrape()
    assert total(samples, "llmpulse_requests_total", outcome="ok") == 14
    assert total(samples, "gen_ai_client_operation_duration_seconds_count") == 14
    assert fake.stats().requests == 14
