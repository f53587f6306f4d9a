"""Prometheus metrics of the incident clocks, on the default registry, registered once.

`dispatch_incident_clocks_overdue_total` (counter: clocks that went overdue, each once) and
`dispatch_incident_clocks_overdue` (gauge: overdue right now). prometheus_client reserves a
counter's bare name too, so the gauge is registered through a wrapper that skips the name
clash check; the text exposition keeps the two families apart (`_total` vs bare name).
A second import (reload, two apps in one process) reuses what is already registered.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

OVERDUE_TOTAL_NAME = "dispatch_incident_clocks_overdue_total"
OVERDUE_NOW_NAME = "dispatch_incident_clocks_overdue"
_MARK = "dispatch_incident_overdue_gauge"


class _SharedNameGauge(Collector):
    """Exposes a gauge whose name is the bare name of a counter (not checked for clashes)."""

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        setattr(self, _MARK, True)

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        return self.gauge.collect()


def _counter() -> Counter:
    existing = REGISTRY._names_to_collectors.get(OVERDUE_TOTAL_NAME)
    if existing is not None:
        return cast(Counter, existing)
    return Counter(
        OVERDUE_NOW_NAME,
        "Incident clocks that went overdue (each reported once), by clock.",
        ["clock"],
    )


def _gauge() -> Gauge:
    for collector in list(REGISTRY._collector_to_names):
        if getattr(collector, _MARK, False):
            return cast(Gauge, collector.gauge)  # type: ignore[attr-defined]
    gauge = Gauge(
        OVERDUE_NOW_NAME,
        "Incident clocks overdue right now, by clock.",
        ["clock"],
        registry=None,
        multiprocess_mode="max",
    )
    REGISTRY.register(_SharedNameGauge(gauge))
    return gauge


OVERDUE_TOTAL = _counter()
OVERDUE_NOW = _gauge()
