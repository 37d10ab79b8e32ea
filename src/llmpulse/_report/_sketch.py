"""The report's quantile sketch: the one `llmpulse.stats()` uses (see `llmpulse._bins`).

Sharing it makes the report and ``stats()`` give the same quantiles for the
same calls: within 1 % of an exact order statistic, by the lower rank
``floor(q * (count - 1))``, clamped to the exact min and max.
"""

from __future__ import annotations

from .._bins import MAX_VALUE, MIN_VALUE, RELATIVE_ACCURACY, Sketch

__all__ = ["MAX_VALUE", "MIN_VALUE", "RELATIVE_ACCURACY", "Sketch"]
