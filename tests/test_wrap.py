"""wrap()/unwrap(): same class, original untouched, copies instrumented, fail-safe."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from prometheus_client import CollectorRegistry

import llmpulse
from conftest import MESSAGES, OPENAI_KEY
from llmpulse import _wrap
from llmpulse.testing import CapturingSink, FakeProvider


def _clients(fake: FakeProvider) -> list[Any]:
    return [
        openai.OpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url),
        openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url),
        openai.AzureOpenAI(api_key="k" * 20, api_version="2024-10-21", azure_endpoint=fake.base_url),
        openai.AsyncAzureOpenAI(api_key="k" * 20, api_version="2024-10-21", azure_endpoint=fake.base_url),
        anthropic.Anthropic(api_key="sk-ant-x" * 3, base_url=fake.anthropic_base_url),
        anthropic.AsyncAnthropic(api_key="sk-ant-x" * 3, base_url=fake.anthropic_base_url),
    ]


def test_wrap_returns_a_new_client_of_the_same_class(fake: FakeProvider) -> None:
    """Each supported class comes back as exactly that class, its max_retries as the caller's."""
    for client in _clients(fake):
        wrapped = llmpulse.wrap(client)
        assert type(wrapped) is type(client)
        assert wrapped is not client
        assert wrapped.max_retries == client.max_retries == 2
        assert wrapped.base_url == client.base_url
        assert llmpulse.unwrap(wrapped) is client
        assert llmpulse.wrap(wrapped) is wrapped
        _close(client)


def _close(client: Any) -> None:
    result = client.close()
    if result is not None:  # async clients
        asyncio.run(result)


def test_original_client_is_left_alone(raw_openai: openai.OpenAI, sink: CapturingSink) -> None:
    """The argument keeps its transport and produces no events."""
    transport = raw_openai._client._transport
    llmpulse.wrap(raw_openai, sinks=[sink])
    raw_openai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raw_openai._client._transport is transport
    assert sink.calls == []


def test_unsupported_object_raises_type_error_naming_it() -> None:
    """Wrapping something else raises a TypeError naming it and what is supported."""
    with pytest.raises(TypeError, match=r"builtins\.dict.*openai\.OpenAI.*anthropic\.AsyncAnthropic"):
        llmpulse.wrap({})
    with pytest.raises(llmpulse.UnsupportedClientError), httpx2.Client() as http:
        llmpulse.wrap(http)


def test_copies_stay_instrumented(oai: openai.OpenAI, sink: CapturingSink) -> None:
    """with_options() and copy() results are the same class and still observed; unwrap gives the original."""
    copy = oai.with_options(timeout=20, default_headers={"x-team": "search"})
    assert type(copy) is openai.OpenAI
    copy.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    oai.copy(max_retries=1).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(sink.calls) == 2
    assert llmpulse.unwrap(copy) is llmpulse.unwrap(oai)


def test_user_headers_and_strict_validation_survive(
    fake: FakeProvider, sink: CapturingSink, registry: CollectorRegistry
) -> None:
    """Client default headers reach the wire and strict response validation stays on."""
    client = openai.OpenAI(
        api_key=OPENAI_KEY,
        base_url=fake.openai_base_url,
        default_headers={"X-Corp": "1"},
        _strict_response_validation=True,
    )
    wrapped = llmpulse.wrap(client, sinks=[sink], registry=registry)
    assert wrapped._strict_response_validation is True
    with client:
        wrapped.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert fake.requests[-1].headers["x-corp"] == "1"
    assert fake.requests[-1].headers["authorization"] == f"Bearer {OPENAI_KEY}"


def test_new_http_client_in_with_options_is_instrumented(oai: openai.OpenAI, sink: CapturingSink) -> None:
    """Passing a fresh http_client to with_options() keeps the copy instrumented."""
    with httpx2.Client() as http:
        copy = oai.with_options(http_client=http)
        copy.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(sink.calls) == 1


def test_unknown_sdk_internals_fall_back_to_the_plain_client(raw_openai: openai.OpenAI) -> None:
    """If the SDK's internals are not what llmpulse expects, wrap() warns once and returns the client."""
    registry = CollectorRegistry()
    saved = raw_openai._client
    raw_openai._client = object()  # an SDK release with a different http client
    try:
        with pytest.warns(RuntimeWarning, match="could not instrument"):
            result = llmpulse.wrap(raw_openai, registry=registry)
    finally:
        raw_openai._client = saved
    assert result is raw_openai


def test_disabled_returns_the_client(raw_openai: openai.OpenAI) -> None:
    """LLMPULSE_ENABLED=0 makes wrap() a no-op."""
    llmpulse.configure(enabled=False, sinks=("none",))
    try:
        assert llmpulse.wrap(raw_openai) is raw_openai
    finally:
        llmpulse.configure(sinks=("none",))


def test_closing_the_wrapped_client(fake: FakeProvider) -> None:
    """close() and the context manager protocol work on wrapped clients."""
    with llmpulse.wrap(openai.OpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url)) as client:
        client.models.list()
    assert client.is_closed()


def test_the_wrapped_client_holds_only_what_the_sdks_own_copy_holds(fake: FakeProvider) -> None:
    """vars() of a wrapped client has the SDK copy's names; its http client and transport are the caller's."""
    for client in _clients(fake):
        transport = client._client._transport
        wrapped = llmpulse.wrap(client)
        bare_copy = client.copy()
        assert vars(wrapped).keys() == vars(bare_copy).keys()
        assert wrapped._client is client._client
        assert wrapped._client._transport is transport
        copied = wrapped.with_options(timeout=9.0)
        assert vars(copied).keys() == vars(bare_copy).keys()
        assert copied._client is client._client
        _close(client)


def test_a_bare_client_is_untouched_by_another_clients_wrapping(
    fake: FakeProvider, sink: CapturingSink, registry: CollectorRegistry
) -> None:
    """Clients never wrapped (made before or after a wrap) send as they did: no event, the same request."""
    before = openai.OpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url, max_retries=0)
    wrapped = openai.OpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url)
    llmpulse.wrap(wrapped, sinks=[sink], registry=registry)
    after = openai.OpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url, max_retries=0)
    with before, after, wrapped:
        for client in (before, after, before.with_options(timeout=5.0)):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert fake.requests[-1].headers["x-stainless-retry-count"] == "0"
    assert sink.calls == []


def test_closing_the_wrapped_client_closes_what_the_bare_copy_would(fake: FakeProvider) -> None:
    """The caller's own http client is shared, as with the SDK's copy(): closing either closes it."""
    with httpx2.Client() as http:
        client = openai.OpenAI(api_key=OPENAI_KEY, base_url=fake.openai_base_url, http_client=http)
        llmpulse.wrap(client).close()
        assert http.is_closed is client.copy()._client.is_closed is True


def test_a_subclass_that_overrides_copy_is_wrapped_once(fake: FakeProvider, sink: CapturingSink) -> None:
    """An override calling super().copy() gets a wrapped copy, and one event per call."""

    class Team(openai.OpenAI):
        def copy(self, *args: Any, **kwargs: Any) -> Any:
            result = super().copy(*args, **kwargs)
            result.team = "search"
            return result

        with_options = copy

    with Team(api_key=OPENAI_KEY, base_url=fake.openai_base_url) as team:
        copied = llmpulse.wrap(team, sinks=[sink]).with_options(timeout=5.0)
        assert type(copied) is Team
        assert copied.team == "search"
        copied.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(sink.calls) == 1


def test_a_client_the_sdk_cannot_copy_is_returned_with_a_warning_naming_the_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Credentials removed after construction: the SDK's copy() refuses, wrap() says so and returns it."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with openai.OpenAI(api_key=OPENAI_KEY) as client:
        client.api_key = ""  # what copy() passes on, and the SDK then refuses
        _wrap._warned.discard(openai.OpenAI)
        with pytest.warns(RuntimeWarning, match=r"the SDK's copy\(\) of it failed"):
            assert llmpulse.wrap(client, registry=CollectorRegistry()) is client


def test_the_wrapped_client_keeps_settings_the_sdks_copy_would_normalise() -> None:
    """An empty Vertex project_id stays empty (copy() makes it None): the call fails as it does bare."""
    bare = anthropic.AnthropicVertex(region="us-east5", project_id="", access_token="ya29.test-token")
    wrapped = llmpulse.wrap(bare, registry=CollectorRegistry())
    assert wrapped.project_id == bare.project_id == ""
    for client in (bare, wrapped):
        with pytest.raises(ValueError, match="non-empty value for `project_id`"):
            client.messages.create(model="claude-sonnet-4-5@20250929", max_tokens=8, messages=MESSAGES)
    bare.close()
