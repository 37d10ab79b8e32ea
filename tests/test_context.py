"""Context: merging, inheritance across tasks and threads, headers, interactions."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

import llmpulse
from conftest import MESSAGES
from llmpulse.testing import CapturingSink


def test_nested_contexts_merge_and_inherit_the_correlation_id() -> None:
    """Inner values win, tags merge, and the correlation id is the outer one."""
    with llmpulse.context(tenant="acme", route="/chat", tags={"a": "1"}) as outer:
        with llmpulse.context(route="/chat/{id}", tags={"b": "2"}) as inner:
            assert inner.tenant == "acme"
            assert inner.route == "/chat/{id}"
            assert inner.tags == {"a": "1", "b": "2"}
            assert inner.correlation_id == outer.correlation_id
            assert llmpulse.current_context() == inner
        assert llmpulse.current_context() == outer
    assert llmpulse.current_context().tenant is None


def test_outside_any_context_each_call_gets_a_fresh_correlation_id() -> None:
    """current_context() outside a block has a new 16-char base62 id each time."""
    first, second = llmpulse.current_context(), llmpulse.current_context()
    assert first.correlation_id != second.correlation_id
    assert first.correlation_id is not None
    assert len(first.correlation_id) == 16
    assert first.correlation_id.isalnum()
    assert first.priority == "interactive"


def test_bad_priority_and_tags_are_refused() -> None:
    """An unknown priority or a non-string tag raises ValueError naming it."""
    with pytest.raises(ValueError, match="urgent"):
        llmpulse.context(priority="urgent")
    with pytest.raises(ValueError, match="tags"):
        llmpulse.context(tags={"n": 1})  # type: ignore[dict-item]


def test_decorator_sync_and_async() -> None:
    """A Context decorates sync and async functions."""

    @llmpulse.context(tenant="t1")
    def sync_fn() -> str | None:
        return llmpulse.current_context().tenant

    @llmpulse.context(tenant="t2")
    async def async_fn() -> str | None:
        return llmpulse.current_context().tenant

    assert sync_fn() == "t1"
    assert asyncio.run(async_fn()) == "t2"


async def test_tasks_inherit_the_context() -> None:
    """asyncio tasks created inside a block see its context."""
    with llmpulse.context(tenant="acme") as ctx:
        seen = await asyncio.create_task(asyncio.sleep(0, result=llmpulse.current_context()))
        inner = await asyncio.gather(*(asyncio.to_thread(llmpulse.current_context) for _ in range(2)))
    assert seen.correlation_id == ctx.correlation_id
    assert {c.tenant for c in inner} == {"acme"}


def test_with_context_carries_context_into_a_thread_pool() -> None:
    """with_context binds a callable to the submitting code's context."""
    with llmpulse.context(tenant="acme") as ctx, ThreadPoolExecutor(2) as pool:
        bound = pool.submit(llmpulse.with_context(llmpulse.current_context)).result()
        unbound = pool.submit(llmpulse.current_context).result()
    assert bound.correlation_id == ctx.correlation_id
    assert unbound.tenant is None


def test_headers_round_trip_through_baggage() -> None:
    """to_headers() and context_from_headers() carry every field, escaping included."""
    with llmpulse.context(
        tenant="acme, inc",
        route="/chat/{id}",
        feature="f",
        tags={"k=1": "v;2"},
        priority="background",
        private=True,
    ) as ctx:
        headers = ctx.to_headers()
    assert headers["baggage"].startswith("llmpulse.")
    back = llmpulse.context_from_headers({"Baggage": "other=1," + headers["baggage"]})
    assert (back.tenant, back.route, back.feature) == ("acme, inc", "/chat/{id}", "f")
    assert back.tags == {"k=1": "v;2"}
    assert (back.priority, back.private, back.correlation_id) == (
        "background",
        True,
        ctx.correlation_id,
    )
    with back as continued:
        assert continued.correlation_id == ctx.correlation_id


def test_context_from_headers_ignores_garbage() -> None:
    """Malformed or foreign baggage members are ignored."""
    back = llmpulse.context_from_headers({"baggage": "junk,,=x,llmpulse.priority=urgent"})
    assert back.tenant is None
    assert back.priority is None


def test_calls_carry_the_context(oai: openai.OpenAI, sink: CapturingSink) -> None:
    """Every call in a block has the block's tenant and correlation id; outside, a fresh one."""
    with llmpulse.context(tenant="acme", priority="background") as ctx:
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    a, b, c = sink.calls
    assert a.correlation_id == b.correlation_id == ctx.correlation_id
    assert (a.tenant, a.priority) == ("acme", "background")
    assert c.correlation_id != a.correlation_id
    assert c.tenant is None
    assert len({a.call_id, b.call_id, c.call_id}) == 3


def test_interaction_emits_one_summary(oai: openai.OpenAI, sink: CapturingSink) -> None:
    """interaction() groups its calls under one id and sums tokens and cost at exit."""
    summary_sink = CapturingSink()
    llmpulse.configure(sinks=[summary_sink])
    try:
        with llmpulse.interaction("answer", tenant="acme") as ctx:
            oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    finally:
        llmpulse.configure(sinks=("none",))
    calls = sink.calls
    [summary] = summary_sink.interactions
    assert {c.interaction_id for c in calls} == {ctx.interaction_id}
    assert summary.interaction_id == ctx.interaction_id
    assert (summary.name, summary.calls, summary.errors, summary.tenant) == ("answer", 2, 0, "acme")
    assert summary.input_tokens == sum(c.input_tokens or 0 for c in calls)
    assert summary.cost_usd == pytest.approx(sum(c.cost_usd or 0 for c in calls))


def test_a_call_outside_any_context_is_its_own_correlation(oai: openai.OpenAI, sink: CapturingSink) -> None:
    """Without a context each call gets a fresh 16-char base62 correlation id: its own call id."""
    oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    first, second = sink.calls
    assert first.correlation_id == first.call_id
    assert first.correlation_id != second.correlation_id
    assert re.fullmatch(r"[0-9A-Za-z]{16}", first.correlation_id)
