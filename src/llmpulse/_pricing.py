"""USD cost of a call: the user's overrides first, then genai-prices' bundled data (offline).

A genai-prices lookup costs 75-280 µs, too much for every call. So each
(provider, model) is resolved once and cached, unknown ones included, as float
rates per million tokens; pricing a call is then a handful of multiplications.
The float rates reproduce genai-prices' arithmetic (cached and cache-write
tokens are parts of the input, reasoning a part of the output, and a
long-context tier reprices *all* tokens once the input passes its threshold);
``tests/test_pricing.py`` checks that against genai-prices for every bundled
model. Only prices that change with the time of day go through genai-prices on
every call. Unknown models cost ``None``, never 0.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from genai_prices.types import ModelInfo, Provider, TieredPrices

__all__ = ["OVERRIDE_FIELDS", "PriceSource", "PriceTable", "load_price_overrides"]

# The fields of a price override (USD per million tokens), then genai-prices' per-call fee.
_PRICE_KEYS = (
    "input_mtok",
    "output_mtok",
    "cache_read_mtok",
    "cache_write_mtok",
    "output_reasoning_mtok",
    "cache_write_1h_mtok",
    "requests_kcount",
)
OVERRIDE_FIELDS = _PRICE_KEYS[:6]
"""Fields of a price override, in USD per million tokens; the first two are required."""

_MAX_ENTRIES = 4096  # a caller inventing model names must not grow memory forever
# Azure serves OpenAI's models under their own names, and any endpoint may be an
# OpenAI-compatible server for another vendor's models: so try the provider,
# then (for Azure) OpenAI, then whichever provider's models match the name.
_LOOKUP_ORDER: dict[str, tuple[str | None, ...]] = {
    "azure": ("azure", "openai", None),
    # Bedrock and Vertex AI bill under genai-prices' "aws" and "google" (their own model ids).
    "aws.bedrock": ("aws", None),
    "gcp.vertex_ai": ("google", None),
}


class PriceSource(Protocol):
    """Anything that prices a call's usage; llmpulse's own is :class:`PriceTable`."""

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
        cache_write_1h_tokens: int = 0,
    ) -> float | None:
        """USD cost of one call, or None when the price is unknown (never 0 for unknown).

        ``input_tokens`` counts all input, cached and cache-write tokens included
        (the OpenTelemetry rule); ``reasoning_tokens`` is a part of ``output_tokens``;
        ``cache_write_1h_tokens`` the part of ``cache_write_tokens`` cached for an hour.
        """


@dataclasses.dataclass(frozen=True, slots=True)
class _Rates:
    """USD per million tokens of each kind, as genai-prices bills them.

    A kind without a rate of its own carries its parent's (cached input is
    input). ``tiers``: ``(input above, rates)`` pairs, ascending; ``until``: when a
    dated price change makes these rates stale.
    """

    input: float
    cache_read: float
    cache_write: float
    output: float
    reasoning: float
    cache_write_1h: float = 0.0
    per_call: float = 0.0
    tiers: tuple[tuple[int, _Rates], ...] = ()
    until: datetime | None = None

    def cost(self, inp: int, out: int, cached: int, written: int, reasoning: int, written_1h: int) -> float:
        r = self
        for start, tier in self.tiers:
            if inp > start:
                r = tier
        uncached, plain_out = inp - cached - written, out - reasoning
        mtok = uncached * r.input + cached * r.cache_read
        mtok += (written - written_1h) * r.cache_write + written_1h * r.cache_write_1h
        return (mtok + plain_out * r.output + reasoning * r.reasoning) / 1_000_000 + r.per_call


@dataclasses.dataclass(frozen=True, slots=True)
class _Exact:
    """A price that changes with the time of day: genai-prices computes every call."""

    provider: Provider
    model: ModelInfo
    clock: Callable[[], datetime]
    until: None = None

    def cost(self, inp: int, out: int, cached: int, written: int, reasoning: int, written_1h: int) -> float:
        from genai_prices import Usage  # noqa: PLC0415 - already imported by the lookup

        usage = Usage(
            input_tokens=inp,
            output_tokens=out,
            cache_read_tokens=cached,
            cache_write_tokens=written,
            cache_write_1h_tokens=written_1h or None,
            output_reasoning_tokens=reasoning,
        )
        return float(
            self.model.calc_price(usage, self.provider, genai_request_timestamp=self.clock()).total_price
        )


_UNPRICED = _Rates(0.0, 0.0, 0.0, 0.0, 0.0)  # compared by identity: "no price known"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class PriceTable:
    """Price calls from user overrides, else genai-prices' bundled data; thread-safe.

    Args:
        overrides: ``{provider or "*": {model id or prefix: {field: USD per MTok}}}``
            with the fields of :data:`OVERRIDE_FIELDS`; ``cache_read_mtok`` and
            ``cache_write_mtok`` default to the input price, ``output_reasoning_mtok``
            to the output price. Model keys match case-insensitively, exactly or as a
            prefix (the longest wins); the call's own provider is searched before ``"*"``.
            An override also prices models genai-prices does not know.
        on_unpriced: Called with ``(provider, model)`` the first time a model
            without a price is seen.
        clock: "Now" as an aware datetime, for prices that depend on the date.

    Raises:
        ValueError: An override is malformed (naming the entry).

    """

    def __init__(
        self,
        overrides: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
        *,
        on_unpriced: Callable[[str, str], None] | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._overrides = _parse_overrides(overrides or {}, "price override")
        self._on_unpriced = on_unpriced
        self._clock = clock
        self._cache: dict[tuple[str, str], _Rates | _Exact] = {}
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
        cache_write_1h_tokens: int = 0,
        fallback_model: str | None = None,
    ) -> float | None:
        """USD cost of one call, or None when the price is unknown.

        Args:
            provider: An event's ``provider``: ``"openai"``, ``"anthropic"``, ``"azure"``,
                ``"aws.bedrock"`` or ``"gcp.vertex_ai"`` (any other name is tried as a
                genai-prices provider id).
            model: The model id (for Azure, a deployment name or model id).
            input_tokens: All input tokens, cached and cache-write ones included.
            output_tokens: All output tokens, reasoning included.
            cached_input_tokens: Part of the input read from the prompt cache.
            cache_write_tokens: Part of the input written to the prompt cache.
            reasoning_tokens: Part of the output spent on reasoning.
            cache_write_1h_tokens: Part of the cache writes kept for an hour
                (Anthropic bills them higher than the default 5 minutes).
            fallback_model: Tried when ``model`` has no price: the response
                names a dated id the data may lack, the request an alias it knows.

        Raises:
            ValueError: A part exceeds its total, or a count is negative.

        """
        parts = cached_input_tokens + cache_write_tokens
        if min(cached_input_tokens, cache_write_tokens, reasoning_tokens, cache_write_1h_tokens) < 0 or (
            parts > input_tokens
            or reasoning_tokens > output_tokens
            or cache_write_1h_tokens > cache_write_tokens
        ):
            raise ValueError(
                f"inconsistent usage: input {input_tokens} (cached {cached_input_tokens}, cache write "
                f"{cache_write_tokens}, of which 1h {cache_write_1h_tokens}), output {output_tokens} "
                f"(reasoning {reasoning_tokens})"
            )
        price = self._price(provider, model)
        if price is _UNPRICED and fallback_model and fallback_model != model:
            price = self._price(provider, fallback_model)
        if price is _UNPRICED:
            self._report_unpriced(provider, fallback_model or model)
            return None
        return price.cost(
            input_tokens,
            output_tokens,
            cached_input_tokens,
            cache_write_tokens,
            reasoning_tokens,
            cache_write_1h_tokens,
        )

    def warm_up(self) -> None:
        """Import genai-prices and load its data now (~0.3 s) rather than on the first priced call."""
        _find_model("openai", "gpt-4o")

    def unpriced(self) -> set[tuple[str, str]]:
        """The ``(provider, model)`` pairs seen without a price."""
        with self._lock:
            return set(self._unpriced)

    def _now(self) -> datetime:
        now = self._clock()
        return now if now.tzinfo is not None else now.replace(tzinfo=UTC)

    def _price(self, provider: str, model: str) -> _Rates | _Exact:
        key = (provider, model)
        price = self._cache.get(key)
        if price is not None and (price.until is None or self._now() < price.until):
            return price
        # Two threads may both resolve a missing key; both get the same answer.
        price = self._resolve(provider, model)
        with self._lock:
            if len(self._cache) >= _MAX_ENTRIES and key not in self._cache:
                del self._cache[next(iter(self._cache))]
            self._cache[key] = price
        return price

    def _resolve(self, provider: str, model: str) -> _Rates | _Exact:
        lowered = model.lower()
        for scope in (provider, "*"):
            table = self._overrides.get(scope)
            if table:
                best = max((m for m in table if lowered.startswith(m)), key=len, default=None)
                if best is not None:
                    return table[best]
        found = _find_model(provider, model)
        if found is None:
            return _UNPRICED
        return _price_of(*found, self._now, self._now())

    def _report_unpriced(self, provider: str, model: str) -> None:
        key = (provider, model)
        if key in self._unpriced:
            return
        with self._lock:
            if key in self._unpriced or len(self._unpriced) >= _MAX_ENTRIES:
                return
            self._unpriced.add(key)
        if self._on_unpriced is not None:
            self._on_unpriced(provider, model)


def _find_model(provider: str, model: str) -> tuple[Provider, ModelInfo] | None:
    from genai_prices.data_snapshot import get_snapshot  # noqa: PLC0415 - 0.3 s and 40 MB: first use only

    snapshot = get_snapshot()
    for provider_id in _LOOKUP_ORDER.get(provider, (provider, None)):
        try:
            return snapshot.find_provider_model(model, None, provider_id, None)
        except LookupError:
            continue
    return None


def _price_of(
    provider: Provider, info: ModelInfo, clock: Callable[[], datetime], now: datetime
) -> _Rates | _Exact:
    from genai_prices.types import ModelPrice, StartDateConstraint, TieredPrices  # noqa: PLC0415

    constraints = [] if isinstance(info.prices, ModelPrice) else [c.constraint for c in info.prices]
    price = info.get_prices(now)
    values = {key: price.__dict__.get(key) for key in _PRICE_KEYS}
    if any(c is not None and not isinstance(c, StartDateConstraint) for c in constraints) or not all(
        v is None or isinstance(v, Decimal | TieredPrices) for v in values.values()
    ):
        return _Exact(provider, info, clock)
    # Prices of usage llmpulse never reports (audio, images, searches...) are
    # left out: genai-prices bills them nothing for the same usage.
    changes = [
        c.start_date for c in constraints if isinstance(c, StartDateConstraint) and c.start_date > now.date()
    ]
    starts = sorted({t.start for v in values.values() if isinstance(v, TieredPrices) for t in v.tiers})
    base, *tiers = (_rates({k: _at(v, above) for k, v in values.items()}) for above in (-1, *starts))
    until = datetime.combine(min(changes), time(), UTC) if changes else None
    return dataclasses.replace(base, tiers=tuple(zip(starts, tiers, strict=True)), until=until)


def _at(value: Decimal | TieredPrices | None, above: int) -> float | None:
    """The rate for inputs just above ``above`` tokens (-1: the base rate)."""
    if value is None or isinstance(value, Decimal):
        return None if value is None else float(value)
    return float(next((t.price for t in reversed(value.tiers) if t.start <= above), value.base))


def _rates(p: Mapping[str, float | None]) -> _Rates:
    input_, output = p.get("input_mtok") or 0.0, p.get("output_mtok") or 0.0

    def own(key: str, parent: float) -> float:  # a kind without a rate is billed at its parent's
        value = p.get(key)
        return parent if value is None else value

    cache_write = own("cache_write_mtok", input_)
    return _Rates(
        input=input_,
        cache_read=own("cache_read_mtok", input_),
        cache_write=cache_write,
        output=output,
        reasoning=own("output_reasoning_mtok", output),
        cache_write_1h=own("cache_write_1h_mtok", cache_write),
        per_call=(p.get("requests_kcount") or 0.0) / 1000,
    )


def _parse_overrides(data: Any, where: str) -> dict[str, dict[str, _Rates]]:
    shape = "expected {provider: {model: {field: USD per million tokens}}}"
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: {shape}, got {type(data).__name__}")
    table: dict[str, dict[str, _Rates]] = {}
    for provider, models in data.items():
        if not isinstance(models, Mapping):
            raise ValueError(f"{where}: entry [{json.dumps(provider)}]: {shape}, got {type(models).__name__}")
        for model, spec in models.items():
            entry = f"{where}: entry [{json.dumps(provider)}][{json.dumps(model)}]"
            if not isinstance(model, str) or not model:
                raise ValueError(f"{entry}: the model id or prefix must be a non-empty string")
            table.setdefault(provider, {})[model.lower()] = _override(entry, spec)
    return table


def _override(entry: str, spec: Any) -> _Rates:
    if not isinstance(spec, Mapping):
        raise ValueError(f"{entry}: expected an object of prices, got {spec!r}")
    unknown = sorted(str(k) for k in spec if k not in OVERRIDE_FIELDS)
    if unknown:
        raise ValueError(
            f"{entry}: unknown field(s) {', '.join(unknown)}; accepted: {', '.join(OVERRIDE_FIELDS)}"
        )
    for name in ("input_mtok", "output_mtok"):
        if name not in spec:
            raise ValueError(f"{entry}: {name} is required")
    for name, value in spec.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
            raise ValueError(f"{entry}: {name} must be a non-negative number, got {value!r}")
    return _rates({name: float(value) for name, value in spec.items()})


def load_price_overrides(path: str | os.PathLike[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Read and validate a JSON file of price overrides (the ``overrides`` shape of :class:`PriceTable`).

    Raises:
        ValueError: The file cannot be read, is not JSON, or has a bad entry;
            the message names the file and the entry.

    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ValueError(f"price file {path}: cannot be read: {exc.strerror or exc}") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"price file {path}: not valid JSON: {exc}") from exc
    _parse_overrides(data, f"price file {path}")
    return {
        p: {m: {f: float(v) for f, v in spec.items()} for m, spec in ms.items()} for p, ms in data.items()
    }
