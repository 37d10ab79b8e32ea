"""How numbers are printed for people: durations, costs and counts, with the digits they have.

One place, so the demo, `llmpulse report`, ``str(llmpulse.stats())`` and the
alert texts agree.
"""

from __future__ import annotations

import math

__all__ = ["fmt_cost", "fmt_count", "fmt_duration", "fmt_seconds"]


def fmt_seconds(value: float | None) -> str:
    """A duration to 3 significant figures, the digits a 1 % sketch supports: ``"123 ms"``, ``"1.23 s"``.

    Below 1 s in milliseconds (``"45.2 ms"``, ``"0.123 ms"``), from 1 s in
    seconds (``"12.3 s"``, ``"1,230 s"``); ``"-"`` when unknown.
    """
    if value is None or math.isnan(value):
        return "-"
    if abs(value) < 1:
        unit, scaled = "ms", value * 1000
    else:
        unit, scaled = "s", value
    rounded = float(f"{scaled:.3g}")
    if abs(rounded) >= 1000 and unit == "ms":  # 999.6 ms rounds up to a whole second
        unit, rounded = "s", float(f"{rounded / 1000:.3g}")
    if abs(rounded) >= 100 or rounded == 0:
        return f"{rounded:,.0f} {unit}"
    decimals = 2 - math.floor(math.log10(abs(rounded)))
    return f"{rounded:.{decimals}f} {unit}"


def fmt_cost(usd: float | None) -> str:
    """US dollars with the digits they have: ``"$0"``, ``"$0.000412"``, ``"$0.0383"``, ``"$12.35"``.

    Under a dollar, 3 significant figures (a demo run costs fractions of a
    cent: ``$0.0000`` would hide it); from a dollar, cents. ``"-"`` when unknown.
    """
    if usd is None or math.isnan(usd):
        return "-"
    if usd == 0:
        return "$0"
    sign = "-" if usd < 0 else ""
    usd = abs(usd)
    rounded = float(f"{usd:.3g}")
    if rounded >= 1:  # 0.9996 rounds to 1.00: print it as cents too
        return f"{sign}${usd:,.2f}"
    decimals = 2 - math.floor(math.log10(rounded))
    return f"{sign}${rounded:.{decimals}f}"


def fmt_count(n: int, noun: str, plural: str | None = None) -> str:
    """``"1 call"``, ``"0 calls"``, ``"1,234 calls"``; ``plural`` for nouns not made with an "s"."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def fmt_duration(seconds: float) -> str:
    """A span in whole seconds: ``"45 s"``, ``"4 min 10 s"``, ``"52 min"``, ``"5 h 12 min"``, ``"1 d 2 h"``.

    Each unit drops the one two below it (hours drop seconds, days drop minutes):
    past an hour nobody reads the seconds.
    """
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    parts = [f"{hours} h"] if hours else []
    if minutes:
        parts.append(f"{minutes} min")
    if secs and not hours:
        parts.append(f"{secs} s")
    return " ".join(parts) or "0 s"
