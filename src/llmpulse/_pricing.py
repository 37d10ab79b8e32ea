"""USD cost of a call's usage: genai-prices' bundled data, behind a small interface, with overrides.

A genai-prices lookup costs 75-280 µs, too much for every call; so each
(provider, model) is resolved once to per-million-token float rates, and a
call's cost is a handful of multiplications. Unknown models cost ``None``
(never 0), reported once each through ``on_unpriced``.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

__all__ = ["PriceSource", "PriceTable", "Rates", "load_price_overrides"]

_RATE_FIELDS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "output_reasoning_mtok")
_MAX_CACHED = 4096


class PriceSource(Protocol):
    """Anything that can price a call's usage (plug your own into llmpulse)."""

    def cost(
        self,
        provider: str,
        model: str,
        *,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> float | None:
        """USD cost, or None when the model's price is unknown."""


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens; ``tiers`` switch every rate above an input size.

    Attributes:
        input_mtok: Uncached input.
        output_mtok: Output (reasoning included unless priced separately).
        cache_read_mtok: Input read from the cache (default: the input rate).
        cache_write_mtok: Input written to the cache (default: the input rate).
        output_reasoning_mtok: Reasoning output, when priced apart.
        tiers: ``(above_input_tokens, Rates)`` pairs, ascending (long-context prices).
    """

    input_mtok: float
    output_mtok: float
    cache_read_mtok: float | None = None
    cache_write_mtok: float | None = None
    output_reasoning_mtok: float | None = None
    tiers: tuple[tuple[int, Rates], ...] = ()

    def cost(self, input_tokens: int, output_tokens: int, cached: int, cache_write: int, reasoning: int) -> float:
        """Price one call's usage."""
        rates = self
        for start, tier in self.tiers:
            if input_tokens > start:
                rates = tier
        uncached = max(input_tokens - cached - cache_write, 0)
        total = uncached * rates.input_mtok
        total += cached * (rates.input_mtok if rates.cache_read_mtok is None else rates.cache_read_mtok)
        total += cache_write * (rates.input_mtok if rates.cache_write_mtok is None else rates.cache_write_mtok)
        if rates.output_reasoning_mtok is not None:
            total += reasoning * rates.output_reasoning_mtok + max(output_tokens - reasoning, 0) * rates.output_mtok
        else:
            total += output_tokens * rates.output_mtok
        return total / 1_000_000


class PriceTable:
    """Prices from user overrides first, then genai-prices' bundled data (offline).

    Args:
        overrides: ``{provider or "*": {model id or prefix: {field: USD per MTok}}}``
            (fields: ``input_mtok``, ``output_mtok``, ``cache_read_mtok``,
            ``cache_write_mtok``, ``output_reasoning_mtok``). Longest prefix wins.
        on_unpriced: Called once per (provider, model) without a price.
        clock: Returns "now" for genai-prices' dated prices.
    """

    def __init__(
        self,
        overrides: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
        *,
        on_unpriced: Callable[[str, str], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._overrides = {
            provider: {model: _rates_from_mapping(f"{provider}/{model}", spec) for model, spec in models.items()}
            for provider, models in (overrides or {}).items()
        }
        self._on_unpriced = on_unpriced
        self._clock = clock
        self._cache: dict[tuple[str, str], Rates | None] = {}
        self._unpriced: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def cost(
        self,
        provider: str,
        model: str,
        *,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
        fallback_model: str | None = None,
    ) -> float | None:
        """USD cost of the usage, or None when the model's price is unknown.

        ``fallback_model`` is tried when ``model`` has no price: the response
        names a dated or regional id that the price data may not know, while
        the requested alias is known.
        """
        rates = self._rates(provider, model)
        if rates is None and fallback_model is not None and fallback_model != model:
            rates = self._rates(provider, fallback_model)
        if rates is None:
            self._report_unpriced((provider, fallback_model or model))
            return None
        return rates.cost(input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens)

    def _rates(self, provider: str, model: str) -> Rates | None:
        key = (provider, model)
        try:
            return self._cache[key]
        except KeyError:
            rates = self._resolve(provider, model)
            if len(self._cache) < _MAX_CACHED:
                self._cache[key] = rates
            return rates

    def unpriced(self) -> set[tuple[str, str]]:
        """The (provider, model) pairs seen without a price."""
        with self._lock:
            return set(self._unpriced)

    def _report_unpriced(self, key: tuple[str, str]) -> None:
        if key in self._unpriced:
            return
        with self._lock:
            if key in self._unpriced:
                return
            self._unpriced.add(key)
        if self._on_unpriced is not None:
            self._on_unpriced(*key)

    def _resolve(self, provider: str, model: str) -> Rates | None:
        for scope in (provider, "*"):
            table = self._overrides.get(scope)
            if table:
                match = max((m for m in table if model == m or model.startswith(m)), key=len, default=None)
                if match is not None:
                    return table[match]
        return _from_genai_prices(provider, model, self._clock())


def _from_genai_prices(provider: str, model: str, now: datetime) -> Rates | None:
    from genai_prices import data_snapshot  # noqa: PLC0415 - 0.4 s to import: only when first needed

    snapshot = data_snapshot.get_snapshot()
    # Azure deployments are usually named after the model; OpenAI-compatible
    # servers serve models other providers price: try the provider, then OpenAI,
    # then any provider whose models match.
    candidates: list[str | None] = [provider]
    if provider == "azure":
        candidates.append("openai")
    candidates.append(None)
    for provider_id in candidates:
        try:
            _, info = snapshot.find_provider_model(model, None, provider_id, None)
        except LookupError:
            continue
        return _rates_from_model_price(info.get_prices(now))
    return None


def _rates_from_model_price(price: Any) -> Rates | None:
    values = {name: getattr(price, name, None) for name in _RATE_FIELDS}
    if values["input_mtok"] is None or values["output_mtok"] is None:
        return None
    starts = sorted(
        {tier.start for v in values.values() if v is not None and hasattr(v, "tiers") for tier in v.tiers}
    )

    def level(limit: int | None) -> Rates:
        def pick(value: Any) -> float | None:
            if value is None:
                return None
            if not hasattr(value, "tiers"):
                return float(value)
            rate = value.base
            for tier in value.tiers:
                if limit is not None and limit >= tier.start:
                    rate = tier.price
            return float(rate)

        return Rates(
            input_mtok=pick(values["input_mtok"]) or 0.0,
            output_mtok=pick(values["output_mtok"]) or 0.0,
            cache_read_mtok=pick(values["cache_read_mtok"]),
            cache_write_mtok=pick(values["cache_write_mtok"]),
            output_reasoning_mtok=pick(values["output_reasoning_mtok"]),
        )

    base = level(None)
    if not starts:
        return base
    tiers = tuple((start, level(start)) for start in starts)
    return Rates(
        input_mtok=base.input_mtok,
        output_mtok=base.output_mtok,
        cache_read_mtok=base.cache_read_mtok,
        cache_write_mtok=base.cache_write_mtok,
        output_reasoning_mtok=base.output_reasoning_mtok,
        tiers=tiers,
    )


def _rates_from_mapping(where: str, spec: Mapping[str, Any]) -> Rates:
    if not isinstance(spec, Mapping):
        raise ValueError(f"price override {where}: expected an object of prices, got {spec!r}")
    unknown = set(spec) - set(_RATE_FIELDS)
    if unknown:
        raise ValueError(
            f"price override {where}: unknown field(s) {', '.join(sorted(unknown))}; "
            f"accepted: {', '.join(_RATE_FIELDS)}"
        )
    for name in ("input_mtok", "output_mtok"):
        if name not in spec:
            raise ValueError(f"price override {where}: {name} is required")
    rates: dict[str, float] = {}
    for name, value in spec.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError(f"price override {where}: {name} must be a non-negative number, got {value!r}")
        rates[name] = float(value)
    return Rates(**rates)


def load_price_overrides(path: str) -> dict[str, dict[str, dict[str, float]]]:
    """Read and validate a JSON price-override file.

    Raises:
        ValueError: Naming the file and the bad entry.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ValueError(f"price file {path}: cannot be read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"price file {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"price file {path}: expected {{provider: {{model: {{field: price}}}}}}")
    try:
        for provider, models in data.items():
            for model, spec in models.items():
                _rates_from_mapping(f"{provider}/{model}", spec)
    except ValueError as exc:
        raise ValueError(f"price file {path}: {exc}") from None
    return data
