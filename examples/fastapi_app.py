"""A FastAPI app: /metrics for Prometheus, a context per request, carried into a background worker.

    OPENAI_API_KEY=... .venv/bin/uvicorn examples.fastapi_app:app

The request handler tags its calls with the caller's tenant; the summary it
queues is made later by a worker that continues the same correlation id
from the headers the handler attached, as a Celery or RQ job would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Header
from openai import AsyncOpenAI

import llmpulse

client = llmpulse.wrap(AsyncOpenAI())
jobs: asyncio.Queue[tuple[dict[str, str], str]] = asyncio.Queue()
done: list[str] = []  # correlation ids of finished jobs, for the example's test


async def worker() -> None:
    """Background worker: rebuilds the request's context from headers, then calls the model."""
    while True:
        headers, text = await jobs.get()
        with llmpulse.context_from_headers(headers) as ctx, llmpulse.context(feature="summary"):
            await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": f"Summarise: {text}"}],
                max_tokens=30,
            )
            done.append(ctx.correlation_id or "")
        jobs.task_done()


@contextlib.asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    task = asyncio.create_task(worker())
    yield
    task.cancel()
    await llmpulse.aflush()


app = FastAPI(lifespan=lifespan)
app.mount("/metrics", llmpulse.metrics_asgi_app())


@app.post("/chat")
async def chat(body: dict[str, str], x_tenant: str = Header(default="anonymous")) -> dict[str, str]:
    with llmpulse.context(tenant=x_tenant, route="/chat") as ctx:
        reply = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": body["message"]}], max_tokens=50
        )
        text = reply.choices[0].message.content or ""
        await jobs.put((ctx.to_headers(), text))
    return {"reply": text, "correlation_id": ctx.correlation_id or ""}
