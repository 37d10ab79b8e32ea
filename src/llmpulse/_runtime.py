"""Process-wide helpers built on first use: the price table and the token counter."""

from __future__ import annotations

import functools
import logging
import threading
from typing import TYPE_CHECKING, Any

from ._config import get_settings, on_configure
from .exceptions import ConfigError

if TYPE_CHECKING:
    from ._config import Settings
    from ._pricing import PriceTable
    from ._tokens import TokenCounter

__all__ = ["price_table", "token_counter"]

_log = logging.getLogger("llmpulse")
_lock = threading.Lock()
_prices: PriceTable | None = None


def _on_unpriced(provider: str, model: str) -> None:
    _log.warning(
        "llmpulse: no price known for model %r of provider %r; its calls get cost_usd=None "
        "(add one with LLMPULSE_PRICES_FILE or llmpulse.configure(prices=...); see docs/configuration.md)",
        model,
        provider,
    )


def price_table() -> PriceTable:
    """Return the process price table (bundled prices + the user's overrides)."""
    global _prices  # noqa: PLW0603 - built lazily: genai-prices is heavy to import
    current = _prices
    if current is None:
        with _lock:
            if _prices is None:
                _prices = _build_price_table(get_settings())
            current = _prices
    return current


def _build_price_table(settings: Settings) -> PriceTable:
    from ._pricing import PriceTable, load_price_overrides  # noqa: PLC0415

    overrides: dict[str, dict[str, Any]] = {}
    if settings.prices_file:
        overrides = load_price_overrides(settings.prices_file)
    for provider, models in (settings.prices or {}).items():
        overrides.setdefault(provider, {}).update(models)
    return PriceTable(overrides=overrides, on_unpriced=_on_unpriced)


def _reset_prices(settings: Settings) -> None:
    global _prices  # noqa: PLW0603
    with _lock:
        _prices = None
    if settings.prices_file or settings.prices:
        # Read them now: a bad price must fail configure(), not a call.
        try:
            price_table()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


on_configure(_reset_prices)


@functools.cache
def token_counter() -> TokenCounter:
    """Return the process token counter (offline-safe tiktoken, else a heuristic)."""
    from ._tokens import TokenCounter  # noqa: PLC0415

    return TokenCounter(allow_download=get_settings().tiktoken_download)
