"""Shared fixtures: one fake provider per session, a capturing sink and wrapped real SDK clients."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator

import anthropic
import openai
import pytest
from prometheus_client import CollectorRegistry

import llmpulse
from llmpulse.testing import CapturingSink, FakeProvider, FaultPlan

# Tests must never reach a real provider or download anything.
os.environ.setdefault("OPENAI_API_KEY", "sk-test-not-a-real-key")
os.environ.setdefault("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key")
# Tests look at every call's details (test_alerts.py checks the sampling itself), and alerts
# stay out of the output of the subprocesses they start (test_alerts.py picks its alert sinks).
os.environ.setdefault("LLMPULSE_SAMPLE_RATE", "1")
os.environ.setdefault("LLMPULSE_ALERT_SINKS", "none")
# The fake provider answers as api.openai.com does: usage only when asked. Tests of
# learning an endpoint's behaviour use "localhost", which is not in this list.
os.environ.setdefault("LLMPULSE_STREAM_USAGE_HOSTS", "127.0.0.1")

OPENAI_KEY = "sk-test-abcdefghijklmnop"
ANTHROPIC_KEY = "sk-ant-test-abcdefghijklmnop"


@pytest.fixture(autouse=True, scope="session")
def _quiet_defaults() -> Iterator[None]:
    # No default log output in tests; each test picks its sinks.
    llmpulse.configure(sinks=("none",))
    yield
    llmpulse.shutdown(5)


@pytest.fixture(name="fake", scope="session")
def _fake() -> Iterator[FakeProvider]:
    # The default fake answers as the hosted APIs do: JSON gzipped when accepted, streams plain.
    with FakeProvider() as fp:
        yield fp


@pytest.fixture(name="plain_fake", scope="session")
def _plain_fake() -> Iterator[FakeProvider]:
    # For the modules that run both ways (a `fake` of theirs picks one of these per test).
    with FakeProvider(compress=False) as fp:
        yield fp


@pytest.fixture(name="gzip_streams_fake", scope="session")
def _gzip_streams_fake() -> Iterator[FakeProvider]:
    # Streams gzipped too: the hosted APIs' streams are plain, which would leave nothing to decode.
    with FakeProvider(compress_streams=True) as fp:
        yield fp


@pytest.fixture(autouse=True)
def _reset_fake(fake: FakeProvider) -> None:
    fake.plan = FaultPlan()
    fake.clear()
    # Each test starts with fresh policy state (breakers, retry budgets): the
    # fake provider is one endpoint for the whole session.
    llmpulse.testing.reset()


@pytest.fixture(name="sink")
def _sink() -> CapturingSink:
    return CapturingSink()


@pytest.fixture(name="registry")
def _registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture(name="raw_openai")
def _raw_openai(fake: FakeProvider) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(
        api_key=OPENAI_KEY, base_url=fake.openai_base_url, _strict_response_validation=True
    )
    yield client
    client.close()


@pytest.fixture(name="oai")
def _oai(raw_openai: openai.OpenAI, sink: CapturingSink, registry: CollectorRegistry) -> openai.OpenAI:
    return llmpulse.wrap(raw_openai, sinks=[sink], registry=registry)


@pytest.fixture(name="aoai")
async def _aoai(
    fake: FakeProvider, sink: CapturingSink, registry: CollectorRegistry
) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(
        api_key=OPENAI_KEY, base_url=fake.openai_base_url, _strict_response_validation=True
    )
    yield llmpulse.wrap(client, sinks=[sink], registry=registry)
    await client.close()


@pytest.fixture(name="ant")
def _ant(
    fake: FakeProvider, sink: CapturingSink, registry: CollectorRegistry
) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(
        api_key=ANTHROPIC_KEY, base_url=fake.anthropic_base_url, _strict_response_validation=True
    )
    yield llmpulse.wrap(client, sinks=[sink], registry=registry)
    client.close()


@pytest.fixture(name="aant")
async def _aant(
    fake: FakeProvider, sink: CapturingSink, registry: CollectorRegistry
) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(
        api_key=ANTHROPIC_KEY, base_url=fake.anthropic_base_url, _strict_response_validation=True
    )
    yield llmpulse.wrap(client, sinks=[sink], registry=registry)
    await client.close()


MESSAGES = [{"role": "user", "content": "Say hello to the on-call engineer."}]


def http_errors() -> tuple[type[Exception], ...]:
    """The HTTPError classes of whichever HTTP stacks are loaded (httpx2 now, httpx for older SDKs)."""
    return tuple(sys.modules[name].HTTPError for name in ("httpx", "httpx2") if name in sys.modules)
