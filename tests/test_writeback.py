"""Store updates after a call: off the caller's thread for remote stores, bounded, never raising."""

from __future__ import annotations

import threading
import uuid

import openai
import pytest
from prometheus_client import CollectorRegistry

import llmpulse
from conftest import MESSAGES, OPENAI_KEY
from llmpulse import Budget, Policies
from llmpulse.state import WRITE_BACK, RedisStore, WriteBack
from llmpulse.testing import CapturingSink, FakeProvider
from redis_server import RedisServer


def test_updates_run_on_the_worker_thread_in_order() -> None:
    """Submitted updates run one by one, in order, on the llmpulse-store thread."""
    writeback = WriteBack()
    seen: list[tuple[int, str]] = []
    for i in range(5):
        writeback.submit(lambda i=i: seen.append((i, threading.current_thread().name)))
    assert writeback.join(5)
    assert seen == [(i, "llmpulse-store") for i in range(5)]


def test_a_full_backlog_drops_and_counts() -> None:
    """Beyond max_pending, updates are dropped and counted, never queued without bound."""
    writeback = WriteBack(max_pending=2)
    release = threading.Event()
    entered = threading.Event()

    def block() -> None:
        entered.set()
        release.wait(5)

    assert writeback.submit(block)
    assert entered.wait(5)  # the worker holds the first update
    assert writeback.submit(lambda: None)
    assert writeback.submit(lambda: None)
    assert not writeback.submit(lambda: None)
    assert writeback.dropped == 1
    release.set()
    assert writeback.join(5)


def test_a_failing_update_is_counted_and_the_worker_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    """An update that raises is logged and counted; the next one still runs."""
    writeback = WriteBack()
    ran = threading.Event()

    def boom() -> None:
        raise ConnectionError("store down")

    writeback.submit(boom)
    writeback.submit(ran.set)
    assert ran.wait(5)
    assert writeback.failed == 1
    assert "store update failed" in caplog.text


def test_budget_spend_on_redis_happens_off_the_callers_thread(raw_openai: openai.OpenAI) -> None:
    """With Redis, a call's spend is charged by the worker; the tenant is blocked once it landed."""
    sink = CapturingSink()
    with RedisServer() as server:
        store = RedisStore(server.url, prefix=f"wb-{uuid.uuid4().hex[:6]}:", timeout_s=2.0)
        try:
            policies = Policies(budget=Budget(tokens_per_hour=1, action="block"), store=store)
            client = llmpulse.wrap(raw_openai, sinks=[sink], registry=CollectorRegistry(), policies=policies)
            with llmpulse.context(tenant="acme"):
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                assert WRITE_BACK.join(10)
                with pytest.raises(llmpulse.BudgetExceededError):
                    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            spent = store.add("budget:tokens:3600:acme", 0.0, window_s=3600)
        finally:
            store.close()
    assert spent == (sink.calls[0].input_tokens or 0) + (sink.calls[0].output_tokens or 0)


async def test_replicas_share_cached_answers_through_redis(
    fake: FakeProvider, raw_openai: openai.OpenAI
) -> None:
    """Two replicas on one Redis: what one fetched, the other (sync or async) answers without a call."""
    sink = CapturingSink()
    with RedisServer() as server:
        prefix = f"c-{uuid.uuid4().hex[:6]}:"  # both replicas' stores see the same keys
        stores = [RedisStore(server.url, prefix=prefix, timeout_s=2.0) for _ in range(2)]
        try:
            first = llmpulse.wrap(
                raw_openai, sinks=[sink], registry=CollectorRegistry(), policies=Policies(store=stores[0])
            )
            raw_async = openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url)
            second = llmpulse.wrap(
                raw_async, sinks=[sink], registry=CollectorRegistry(), policies=Policies(store=stores[1])
            )
            with llmpulse.context(cache=True):
                fetched = first.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                assert WRITE_BACK.join(10)  # stored off the caller's thread
                cached = await second.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            await raw_async.close()
        finally:
            await stores[1].aclose()
            for store in stores:
                store.close()
    assert cached.choices[0].message.content == fetched.choices[0].message.content
    assert len(fake.requests) == 1
    assert [e.cache_hit for e in sink.calls] == [False, True]
