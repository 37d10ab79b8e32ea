"""The response cache's key and store: pure, with a fake clock."""

from __future__ import annotations

import pytest

from llmpulse.policies import ResponseCache, cache_key
from llmpulse.testing import FakeClock

BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"temperature":0}'


def test_key_ignores_key_order_and_separates_endpoints_and_api_keys() -> None:
    """The same request in another key order is one entry; another host, path or API key is another."""
    key = cache_key("openai", "api.openai.com", "key-1", "/v1/chat/completions", BODY)
    reordered = b'{"temperature":0,"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o-mini"}'
    assert key == cache_key("openai", "api.openai.com", "key-1", "/v1/chat/completions", reordered)
    others = [
        cache_key("openai", "proxy.internal", "key-1", "/v1/chat/completions", BODY),
        cache_key("openai", "api.openai.com", "key-2", "/v1/chat/completions", BODY),
        cache_key("openai", "api.openai.com", "key-1", "/v1/completions", BODY),
        cache_key("openai", "api.openai.com", "key-1", "/v1/chat/completions", BODY.replace(b"hi", b"ho")),
    ]
    assert key not in others
    assert len(set(others)) == 4


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"model":"m","stream":true}'])
def test_non_json_objects_and_streams_have_no_key(body: bytes) -> None:
    """Only JSON object bodies of non-streamed calls are cacheable."""
    assert cache_key("openai", "h", "k", "/v1/chat/completions", body) is None


def test_lru_with_ttl_and_size_limit() -> None:
    """Least recently used answers go first; expired ones are misses; oversized ones are not kept."""
    clock = FakeClock()
    cache = ResponseCache(ttl_s=10.0, max_entries=2, max_entry_bytes=100, clock=clock.monotonic)
    assert cache.put("a", 200, (), b"A", 0.1)
    assert cache.put("b", 200, (), b"B", 0.1)
    assert cache.get("a") is not None  # "a" is now the most recent
    assert cache.put("c", 200, (), b"C", 0.1)  # evicts "b"
    assert cache.get("b") is None
    assert not cache.put("big", 200, (), b"x" * 101, 0.1)
    clock.advance(10.0)
    assert cache.get("a") is None  # expired
    assert (cache.hits, cache.misses, cache.stores) == (1, 2, 3)
    assert len(cache) == 1


def test_limits_must_be_positive() -> None:
    """A zero TTL or size is a mistake, named in the error."""
    with pytest.raises(ValueError, match="ttl_s"):
        ResponseCache(ttl_s=0)
