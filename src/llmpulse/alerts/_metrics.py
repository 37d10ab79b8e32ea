"""Alerts in Prometheus: how many fired and resolved, and how their delivery went."""

from __future__ import annotations

import threading
import weakref

from prometheus_client import REGISTRY, CollectorRegistry, Counter

from ._alert import Alert

__all__ = ["AlertMetrics"]


class _Counters:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.alerts = Counter(
            "llmpulse_alerts_total",
            "Alerts sent by the in-process rules, by rule, severity and status (firing, resolved).",
            ("rule", "severity", "status"),
            registry=registry,
        )
        self.deliveries = Counter(
            "llmpulse_alert_deliveries_total",
            "Alert deliveries per alert sink: ok, failed (counted and logged), dropped (queue full).",
            ("sink", "result"),
            registry=registry,
        )


_lock = threading.Lock()
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, _Counters] = weakref.WeakKeyDictionary()


class AlertMetrics:
    """An alert sink that counts alerts, and the engine's delivery callback.

    Args:
        registry: Where the counters live (None: prometheus_client's global registry).

    """

    inline = True  # a counter: the engine's thread calls it, no thread of its own

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        target = REGISTRY if registry is None else registry
        with _lock:
            counters = _by_registry.get(target)
            if counters is None:
                counters = _by_registry[target] = _Counters(target)
        self._c = counters

    def emit(self, alert: Alert) -> None:
        """Count one alert sent."""
        self._c.alerts.labels(alert.rule, alert.severity, alert.status).inc()

    def delivered(self, sink: str, result: str) -> None:
        """Count one delivery to ``sink`` ("ok", "failed" or "dropped")."""
        self._c.deliveries.labels(sink, result).inc()
