"""The examples in examples/ run against the fake provider."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import runpy
import subprocess
import sys
import textwrap
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


def _docstring_examples() -> list[tuple[str, str]]:
    # Every fenced Python block in the docstring of a public name: the API reference shows them.
    found = []
    for name in llmpulse.__all__:
        doc = inspect.getdoc(getattr(llmpulse, name)) or ""
        for index, block in enumerate(re.findall(r"```python\n(.*?)```", doc, flags=re.S)):
            found.append((f"{name}-{index}", textwrap.dedent(block)))
    return found


DOCSTRING_EXAMPLES = _docstring_examples()


def test_the_api_reference_has_examples() -> None:
    """wrap(), unwrap() and stats() show an example each (the extraction below found them)."""
    assert {key.split("-")[0] for key, _ in DOCSTRING_EXAMPLES} >= {"wrap", "unwrap", "stats"}


@pytest.mark.parametrize(("key", "code"), DOCSTRING_EXAMPLES, ids=[key for key, _ in DOCSTRING_EXAMPLES])
def test_docstring_example_runs(key: str, code: str, fake: FakeProvider, tmp_path: Path) -> None:
    """Each docstring example runs as written, in a fresh interpreter, against the fake provider."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=_env(fake),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
