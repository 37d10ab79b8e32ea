"""PriceTable: genai-prices' test vectors, its exact arithmetic, overrides, the price file and the cache."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import genai_prices
import pytest
from genai_prices import Usage
from genai_prices.data_snapshot import DataSnapshot, get_snapshot
from genai_prices.types import ModelPrice, TimeOfDateConstraint

from llmpulse import _pricing
from llmpulse._pricing import PriceTable, load_price_overrides

NOW = datetime(2026, 11, 1, tzinfo=UTC)
M = 1_000_000


@pytest.fixture(name="table")
def _table() -> PriceTable:
    return PriceTable(clock=lambda: NOW)


@pytest.fixture(name="lookups")
def _lookups(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str | None, str]]:
    """Every genai-prices model lookup, as (provider_id, model)."""
    calls: list[tuple[str | None, str]] = []
    original = DataSnapshot.find_provider_model

    def counting(self, model_ref, provider, provider_id, provider_api_url):
        calls.append((provider_id, model_ref))
        return original(self, model_ref, provider, provider_id, provider_api_url)

    monkeypatch.setattr(DataSnapshot, "find_provider_model", counting)
    return calls


SONNET = "claude-sonnet-4-5-20250929"


@pytest.mark.parametrize(
    ("provider", "model", "usage", "expected"),
    [
        (
            "openai",
            "gpt-4o",
            {"input_tokens": 10_000, "cached_input_tokens": 6_000, "output_tokens": 2_000},
            0.0375,
        ),
        (
            "openai",
            "o3",
            {
                "input_tokens": 10_000,
                "cached_input_tokens": 6_000,
                "output_tokens": 2_000,
                "reasoning_tokens": 1_500,
            },
            0.027,
        ),
        (
            "openai",
            "o3",
            {"input_tokens": 10_000, "cached_input_tokens": 6_000, "output_tokens": 2_000},
            0.027,
        ),
        ("openai", "gpt-4o-2024-08-06", {"input_tokens": M, "output_tokens": M}, 12.50),
        (
            "anthropic",
            SONNET,
            {
                "input_tokens": 24_500,
                "cache_write_tokens": 4_000,
                "cached_input_tokens": 20_000,
                "output_tokens": 800,
            },
            0.0345,
        ),
        (
            "anthropic",
            SONNET,
            {
                "input_tokens": 24_500,
                "cache_write_tokens": 4_000,
                "cache_write_1h_tokens": 4_000,
                "cached_input_tokens": 20_000,
                "output_tokens": 800,
            },
            0.0435,
        ),
        ("anthropic", SONNET, {"input_tokens": 300_000, "output_tokens": 0}, 1.80),
        ("anthropic", SONNET, {"input_tokens": 300_000, "output_tokens": 1_000}, 1.8225),
        ("anthropic", SONNET, {"input_tokens": 200_000, "output_tokens": 0}, 0.60),
    ],
    ids=[
        "gpt-4o-cached",
        "o3-reasoning",
        "o3-reasoning-unsaid",
        "dated-id",
        "sonnet-cache-write-and-read",
        "sonnet-1h-cache-write",
        "sonnet-300k-tier",
        "sonnet-300k-tier-with-output",
        "sonnet-200k-still-base",
    ],
)
def test_observability_facts_vectors(
    table: PriceTable, provider: str, model: str, usage: dict[str, int], expected: float
):
    """The test vectors of observability-facts.md §3.1 come out exactly through PriceTable."""
    assert table.cost(provider, model, **usage) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2025, 5, 1, tzinfo=UTC), 50.0),
        (datetime(2025, 7, 1, tzinfo=UTC), 10.0),
        (datetime(2025, 5, 1), 50.0),  # naive: taken as UTC
    ],
)
def test_dated_prices_follow_the_injected_clock(now: datetime, expected: float):
    """o3's June 2025 price cut is applied according to the table's clock."""
    table = PriceTable(clock=lambda: now)
    assert table.cost("openai", "o3", input_tokens=M, output_tokens=M) == pytest.approx(expected)


def test_cached_rates_expire_at_a_dated_price_change(lookups: list[tuple[str | None, str]]):
    """A process running across a dated price change switches to the new price that day (one new lookup)."""
    now = [datetime(2025, 6, 9, 23, 59, tzinfo=UTC)]
    table = PriceTable(clock=lambda: now[0])
    assert table.cost("openai", "o3", input_tokens=M, output_tokens=M) == pytest.approx(50.0)
    now[0] = datetime(2025, 6, 10, tzinfo=UTC)
    assert table.cost("openai", "o3", input_tokens=M, output_tokens=M) == pytest.approx(10.0)
    assert table.cost("openai", "o3", input_tokens=M, output_tokens=M) == pytest.approx(10.0)
    assert lookups == [("openai", "o3"), ("openai", "o3")]


USAGES = [  # input, output, cache read, cache write (of which 1h), reasoning
    (0, 0, 0, 0, 0, 0),
    (10_000, 2_000, 6_000, 0, 0, 1_500),
    (24_500, 800, 20_000, 4_000, 0, 0),
    (24_500, 800, 20_000, 4_000, 1_500, 0),
    (300_000, 5_000, 100_000, 50_000, 20_000, 1_000),
]


def test_float_rates_match_genai_prices_for_every_bundled_model():
    """For every bundled model of every provider, the cached rates give genai-prices' own total."""
    mismatches, exact = [], []
    for provider in get_snapshot().providers:
        for info in provider.models:
            price = _pricing._price_of(provider, info, lambda: NOW, NOW)
            if isinstance(price, _pricing._Exact):
                exact.append(info)
            for inp, out, cached, written, written_1h, reasoning in USAGES:
                usage = Usage(
                    input_tokens=inp,
                    output_tokens=out,
                    cache_read_tokens=cached,
                    cache_write_tokens=written,
                    cache_write_1h_tokens=written_1h or None,
                    output_reasoning_tokens=reasoning,
                )
                expected = float(info.calc_price(usage, provider, genai_request_timestamp=NOW).total_price)
                got = price.cost(inp, out, cached, written, reasoning, written_1h)
                if got != pytest.approx(expected, rel=1e-9, abs=1e-15):
                    mismatches.append(
                        (
                            provider.id,
                            info.id,
                            (inp, out, cached, written, written_1h, reasoning),
                            got,
                            expected,
                        )
                    )
    assert mismatches == []
    # Only prices that change with the time of day need genai-prices on every call.
    assert all(
        not isinstance(info.prices, ModelPrice)
        and any(isinstance(c.constraint, TimeOfDateConstraint) for c in info.prices)
        for info in exact
    )


def test_time_of_day_prices_are_computed_per_call(lookups: list[tuple[str | None, str]]):
    """DeepSeek's off-peak discount (via an OpenAI-compatible endpoint) depends on the call's time."""
    now = [datetime(2026, 11, 1, 12, tzinfo=UTC)]
    table = PriceTable(clock=lambda: now[0])
    peak = table.cost("openai", "deepseek-chat", input_tokens=M, output_tokens=M)
    now[0] = datetime(2026, 11, 1, 20, tzinfo=UTC)
    off_peak = table.cost("openai", "deepseek-chat", input_tokens=M, output_tokens=M)
    assert (peak, off_peak) == (pytest.approx(0.27 + 1.1), pytest.approx(0.135 + 0.55))
    assert lookups == [("openai", "deepseek-chat"), (None, "deepseek-chat")]


def test_second_call_does_not_look_up_again(table: PriceTable, lookups: list[tuple[str | None, str]]):
    """A (provider, model) is looked up in genai-prices once; later calls use the cached rates."""
    for _ in range(3):
        assert table.cost("openai", "gpt-4o", input_tokens=10, output_tokens=5) is not None
    assert lookups == [("openai", "gpt-4o")]


def test_unknown_model_costs_none_and_is_reported_once(lookups: list[tuple[str | None, str]]):
    """An unknown model costs None (not 0), is reported once and is not looked up again."""
    seen: list[tuple[str, str]] = []
    table = PriceTable(on_unpriced=lambda p, m: seen.append((p, m)), clock=lambda: NOW)
    for _ in range(3):
        assert table.cost("openai", "my-finetune-xyz", input_tokens=10, output_tokens=5) is None
    assert seen == [("openai", "my-finetune-xyz")]
    assert table.unpriced() == {("openai", "my-finetune-xyz")}
    assert lookups == [("openai", "my-finetune-xyz"), (None, "my-finetune-xyz")]


def test_azure_tries_azure_then_openai_then_any_provider(
    table: PriceTable, lookups: list[tuple[str | None, str]]
):
    """An Azure model id is priced; an unknown deployment name is tried everywhere, then costs None."""
    usage = {"input_tokens": 10_000, "cached_input_tokens": 6_000, "output_tokens": 2_000}
    assert table.cost("azure", "gpt-4o", **usage) == pytest.approx(0.0375)
    assert table.cost("azure", "prod-chat", **usage) is None
    assert lookups == [
        ("azure", "gpt-4o"),
        ("azure", "prod-chat"),
        ("openai", "prod-chat"),
        (None, "prod-chat"),
    ]


def test_openai_compatible_endpoint_is_priced_by_model_name(table: PriceTable):
    """A Claude model served through an OpenAI-compatible endpoint gets Anthropic's price."""
    usage = {
        "input_tokens": 24_500,
        "cache_write_tokens": 4_000,
        "cached_input_tokens": 20_000,
        "output_tokens": 800,
    }
    assert table.cost("openai", SONNET, **usage) == pytest.approx(0.0345)


def test_fallback_model_prices_an_unknown_response_model():
    """An unknown response model falls back to the requested one; if neither is known, that is reported."""
    seen: list[tuple[str, str]] = []
    table = PriceTable(on_unpriced=lambda p, m: seen.append((p, m)), clock=lambda: NOW)
    assert table.cost("azure", "odd-build-7", fallback_model="gpt-4o", input_tokens=M, output_tokens=0) == 2.5
    assert (
        table.cost("azure", "odd-build-7", fallback_model="prod-chat", input_tokens=1, output_tokens=0)
        is None
    )
    assert seen == [("azure", "prod-chat")]


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": 10, "cached_input_tokens": 8, "cache_write_tokens": 3, "output_tokens": 0},
        {"input_tokens": 10, "output_tokens": 5, "reasoning_tokens": 6},
        {"input_tokens": 10, "output_tokens": 5, "cached_input_tokens": -1},
    ],
)
def test_inconsistent_usage_is_rejected(table: PriceTable, usage: dict[str, int]):
    """A part larger than its total, or a negative count, raises ValueError like genai-prices does."""
    with pytest.raises(ValueError, match="inconsistent usage"):
        table.cost("openai", "gpt-4o", **usage)


OVERRIDES = {
    "openai": {
        "ft:gpt-4o-mini:acme": {"input_mtok": 0.3, "output_mtok": 1.2, "cache_read_mtok": 0.15},
        "ft:gpt-4o-mini:acme:v2": {"input_mtok": 1.0, "output_mtok": 1.0},
        "gpt-4o-2024-08-06": {"input_mtok": 2.0, "output_mtok": 8.0},
    },
    "*": {
        "ft:gpt-4o-mini": {"input_mtok": 9.0, "output_mtok": 9.0},
        "my-vllm-model": {"input_mtok": 0.1, "output_mtok": 0.2, "cache_write_mtok": 0.5},
    },
}


@pytest.mark.parametrize(
    ("provider", "model", "expected"),
    [
        ("openai", "ft:gpt-4o-mini:acme", 0.6 * 0.3 + 0.4 * 0.15 + 1.2),  # exact, with a cache-read price
        ("openai", "FT:GPT-4o-mini:Acme", 0.6 * 0.3 + 0.4 * 0.15 + 1.2),  # case-insensitive
        ("openai", "ft:gpt-4o-mini:acme:v1:abc", 0.6 * 0.3 + 0.4 * 0.15 + 1.2),  # prefix
        ("openai", "ft:gpt-4o-mini:acme:v2:xyz", 2.0),  # the longest prefix wins
        ("openai", "gpt-4o-2024-08-06", 2.0 + 8.0),  # beats the bundled price
        ("azure", "ft:gpt-4o-mini:acme", 18.0),  # "*" for a provider without its own entry
        ("anthropic", "my-vllm-model-q4", 0.1 + 0.2),  # "*" prices a model genai-prices does not know
    ],
)
def test_overrides(provider: str, model: str, expected: float):
    """Overrides match exactly or by longest prefix, case-insensitively; the provider's own beat "*"."""
    table = PriceTable(OVERRIDES, clock=lambda: NOW)
    usage = {"input_tokens": M, "cached_input_tokens": 400_000, "output_tokens": M}
    assert table.cost(provider, model, **usage) == pytest.approx(expected)


def test_override_defaults_follow_genai_prices_rules():
    """Without their own prices, cache reads cost input, reasoning costs output; cache writes use theirs."""
    seen: list[tuple[str, str]] = []
    table = PriceTable(OVERRIDES, on_unpriced=lambda p, m: seen.append((p, m)))
    cost = table.cost(
        "openai",
        "my-vllm-model",
        input_tokens=3 * M,
        cached_input_tokens=M,
        cache_write_tokens=M,
        output_tokens=2 * M,
        reasoning_tokens=M,
    )
    assert cost == pytest.approx(0.1 + 0.1 + 0.5 + 0.2 + 0.2)
    assert seen == []


def test_prices_are_computed_without_genai_prices_until_it_is_needed():
    """Importing llmpulse and pricing an overridden model do not import genai-prices; warm_up() does."""
    code = (
        "import sys, llmpulse, llmpulse._pricing as p\n"
        "t = p.PriceTable({'*': {'m': {'input_mtok': 1, 'output_mtok': 1}}})\n"
        "assert t.cost('openai', 'm', input_tokens=1, output_tokens=1) is not None\n"
        "assert 'genai_prices' not in sys.modules\n"
        "t.warm_up()\n"
        "assert 'genai_prices' in sys.modules\n"
        "assert t.cost('openai', 'gpt-4o', input_tokens=1, output_tokens=1) is not None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_concurrent_calls_agree():
    """Threads pricing the same models at once all get the single-threaded answers."""
    models = ["gpt-4o", "o3", "gpt-4o-mini", "no-such-model", "claude-haiku-4-5"]
    usage = {"input_tokens": 1_000, "cached_input_tokens": 200, "output_tokens": 300}
    expected = {m: PriceTable(clock=lambda: NOW).cost("openai", m, **usage) for m in models}
    table = PriceTable(clock=lambda: NOW)
    barrier = threading.Barrier(8)
    results: list[tuple[str, float | None]] = []

    def work() -> None:
        barrier.wait()
        results.extend((m, table.cost("openai", m, **usage)) for _ in range(100) for m in models)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 * 100 * len(models)
    assert all(cost == expected[m] for m, cost in results)
    assert table.unpriced() == {("openai", "no-such-model")}


def test_memory_is_bounded(monkeypatch: pytest.MonkeyPatch):
    """Callers inventing model names cannot grow the cache or the unpriced set past their bound."""
    monkeypatch.setattr(_pricing, "_MAX_ENTRIES", 3)
    table = PriceTable(clock=lambda: NOW)
    for i in range(6):
        assert table.cost("openai", f"invented-{i}", input_tokens=1, output_tokens=1) is None
    assert len(table._cache) == 3
    assert table.unpriced() == {("openai", f"invented-{i}") for i in range(3)}
    assert table.cost("openai", "gpt-4o", input_tokens=M, output_tokens=0) == pytest.approx(2.5)


def test_price_file_loads(tmp_path: Path):
    """A valid price file loads as floats and plugs into PriceTable."""
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"openai": {"ft:gpt-4o-mini:acme": {"input_mtok": 1, "output_mtok": 0.5}}}))
    overrides = load_price_overrides(path)
    assert overrides == {"openai": {"ft:gpt-4o-mini:acme": {"input_mtok": 1.0, "output_mtok": 0.5}}}
    table = PriceTable(overrides)
    assert table.cost("openai", "ft:gpt-4o-mini:acme:v1", input_tokens=M, output_tokens=M) == pytest.approx(
        1.5
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"openai": {"m": {"input_mtok": 1, "output_mtok": 1, "cached_mtok": 1}}}',
            r'\["openai"\]\["m"\]: unknown field\(s\) cached_mtok',
        ),
        (
            '{"openai": {"m": {"input_mtok": -1, "output_mtok": 1}}}',
            r"input_mtok must be a non-negative number, got -1",
        ),
        (
            '{"openai": {"m": {"input_mtok": "0.3", "output_mtok": 1}}}',
            r"input_mtok must be a non-negative number, got '0.3'",
        ),
        ('{"openai": {"m": {"input_mtok": true, "output_mtok": 1}}}', r"got True"),
        ('{"openai": {"m": {"input_mtok": null, "output_mtok": 1}}}', r"got None"),
        ('{"openai": {"m": {"input_mtok": NaN, "output_mtok": 1}}}', r"got nan"),
        ('{"openai": {"m": {"input_mtok": 1}}}', r'\["openai"\]\["m"\]: output_mtok is required'),
        ('{"openai": {"m": 0.3}}', r"expected an object of prices, got 0.3"),
        ('{"openai": {"": {"input_mtok": 1, "output_mtok": 1}}}', r"must be a non-empty string"),
        ('{"openai": ["m"]}', r'entry \["openai"\]: expected \{provider'),
        ("[]", r"expected \{provider: \{model: \{field"),
        ('{"openai": ', r"not valid JSON"),
    ],
)
def test_bad_price_file_names_the_file_and_the_entry(tmp_path: Path, content: str, message: str):
    """Each kind of malformed price file raises ValueError naming the file and what is wrong."""
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_price_overrides(path)
    assert str(info.value).startswith(f"price file {path}: ")


def test_missing_price_file(tmp_path: Path):
    """A price file that cannot be read raises ValueError naming it."""
    with pytest.raises(ValueError, match=r"price file .*nope\.json: cannot be read: No such file"):
        load_price_overrides(tmp_path / "nope.json")


def test_bad_override_in_code_is_rejected():
    """Overrides given in code are validated like the file, naming the entry."""
    with pytest.raises(ValueError, match=r'price override: entry \["\*"\]\["m"\]: output_mtok is required'):
        PriceTable({"*": {"m": {"input_mtok": 1}}})


def test_1h_cache_writes_above_the_tier_use_the_tier_rate(table: PriceTable):
    """Above 200k input tokens the 1h write rate doubles too (12 $/MTok), as genai-prices computes it."""
    usage = {
        "input_tokens": 300_000,
        "cache_write_tokens": 100_000,
        "cache_write_1h_tokens": 60_000,
        "output_tokens": 0,
    }
    expected = genai_prices.calc_price(
        Usage(
            input_tokens=300_000, cache_write_tokens=100_000, cache_write_1h_tokens=60_000, output_tokens=0
        ),
        SONNET,
        provider_id="anthropic",
        genai_request_timestamp=NOW,
    ).total_price
    assert table.cost("anthropic", SONNET, **usage) == pytest.approx(float(expected), rel=1e-12)
    assert float(expected) == pytest.approx((200_000 * 6 + 40_000 * 7.5 + 60_000 * 12) / 1e6)


def test_1h_cache_writes_cannot_exceed_the_cache_writes(table: PriceTable):
    """The 1h part of the cache writes is a part: more than the whole is a clear error."""
    with pytest.raises(ValueError, match="cache write 10, of which 1h 20"):
        table.cost(
            "anthropic",
            SONNET,
            input_tokens=100,
            cache_write_tokens=10,
            cache_write_1h_tokens=20,
            output_tokens=0,
        )


def test_override_prices_one_hour_cache_writes():
    """cache_write_1h_mtok prices the one-hour part of the writes; without it they cost the write rate."""
    spec = {"input_mtok": 1.0, "output_mtok": 2.0, "cache_write_mtok": 1.25}
    table = PriceTable({"anthropic": {"with-1h": {**spec, "cache_write_1h_mtok": 2.0}, "without": spec}})
    usage = {
        "input_tokens": 3 * M,
        "cache_write_tokens": 2 * M,
        "cache_write_1h_tokens": M,
        "output_tokens": 0,
    }
    assert table.cost("anthropic", "with-1h", **usage) == pytest.approx(1.0 + 1.25 + 2.0)
    assert table.cost("anthropic", "without", **usage) == pytest.approx(1.0 + 1.25 + 1.25)
