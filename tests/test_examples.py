"""The examples in examples/ run against the fake provider."""

from __future__ import annotations

import asyncio
import os
import runpy
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

import llmpulse
from llmpulse.testing import FakeProvider

EXAMPLES = Path(__file__).parent.parent / "examples"


def _env(fake: FakeProvider) -> dict[str, str]:
    return {
        **os.environ,
        "OPENAI_BASE_URL": fake.openai_base_url,
        "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
        "OPENAI_API_KEY": "sk-example",
        "ANTHROPIC_API_KEY": "sk-ant-example",
        "LLMPULSE_SINKS": "none",
    }


def test_plain_script(fake: FakeProvider) -> None:
    """examples/plain_script.py prints its reply, stats and cost."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "plain_script.py")],
        env=_env(fake),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "calls=2" in result.stdout
    assert "cost=$" in result.stdout


def test_fastapi_app_serves_metrics_and_propagates_context(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The FastAPI example answers, serves /metrics, and its worker continues the correlation id."""
    for key, value in _env(fake).items():
        monkeypatch.setenv(key, value)
    module = runpy.run_path(str(EXAMPLES / "fastapi_app.py"))
    app, jobs, done = module["app"], module["jobs"], module["done"]

    async def scenario() -> tuple[dict[str, str], str]:
        async with app.router.lifespan_context(app):
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://app") as http:
                reply = (
                    await http.post("/chat", json={"message": "hi"}, headers={"x-tenant": "acme"})
                ).json()
                await asyncio.wait_for(jobs.join(), 10)
                metrics = (await http.get("/metrics/")).text
        return reply, metrics

    reply, metrics = asyncio.run(scenario())
    assert reply["reply"]
    assert done == [reply["correlation_id"]]
    assert "llmpulse_requests_total" in metrics
    assert 'tenant="acme"' in metrics
    llmpulse.flush()
