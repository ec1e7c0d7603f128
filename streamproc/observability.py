"""Metrics computed from the worker's state at scrape time, consumer lag, and counter rates for the dashboard.

:class:`RuntimeCollector` is registered on a worker's registry by ``Metrics.bind_runtime``: table sizes
and open incidents are read when Prometheus scrapes, so the hot path updates nothing for them.
:class:`RateTracker` turns counter totals sampled over time into per-second rates (what ``rate()`` does
in PromQL) for the dashboard, which has no Prometheus to ask.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["RuntimeCollector", "RateTracker", "record_consumer_lag", "sample_values"]


class RuntimeCollector(Collector):
    """``streamproc_table_keys{table}`` and ``streamproc_alerts_firing{alertname,signal}`` from a Runtime."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rt = self.runtime
        tables = GaugeMetricFamily("streamproc_table_keys", "Entries in the worker's state tables", labels=["table"])
        tables.add_metric(["products"], rt.engine.product_count())
        tables.add_metric(["recent_alerts"], len(rt.recent_alerts))
        customers = getattr(rt, "customers", None)
        if customers is not None:
            tables.add_metric(["customers"], sum(len(e.customers) for e in customers.engines.values()))
        store = getattr(getattr(rt, "notifier", None), "silences", None)
        if store is not None and hasattr(store, "silences"):
            tables.add_metric(["silences"], len(store.silences))
        yield tables
        firing = GaugeMetricFamily("streamproc_alerts_firing", "Open incidents (firing alerts)",
                                   labels=["alertname", "signal"])
        counts = Counter((a["labels"]["alertname"], a["labels"]["signal"]) for a in rt.engine.firing())
        for (name, signal), n in sorted(counts.items()):
            firing.add_metric([name, signal], n)
        yield firing


def record_consumer_lag(gauge: Gauge, highwaters: Mapping[Any, int], done: Mapping[tuple[str, int], int],
                        committed: Mapping[Any, int | None] | None = None) -> None:
    """Set ``gauge{topic,partition}`` to the records waiting per assigned partition.

    ``highwaters``: per TopicPartition, the offset the next record will get; ``done``: the last offset
    processed per ``(topic, partition)``; ``committed``: the consumer's committed offsets (next to read),
    used for partitions nothing has been processed from yet. Partitions no longer given are dropped."""
    gauge.clear()
    for tp, high in highwaters.items():
        last = done.get((tp.topic, tp.partition))
        if last is None:
            nxt = (committed or {}).get(tp)
            last = (nxt - 1) if nxt is not None else -1
        gauge.labels(tp.topic, str(tp.partition)).set(max(0, high - 1 - last))


def sample_values(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of a registry by sample name (``..._total``, ``..._bucket``, ...): labels and value."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in registry.collect():
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


class RateTracker:
    """Per-second rates of named totals, from samples taken at most every ``min_step_s`` over ``window_s``."""

    def __init__(self, window_s: float = 10.0, min_step_s: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.min_step_s = min_step_s
        self.monotonic = monotonic
        self.samples: deque[tuple[float, dict[str, float]]] = deque()

    def rates(self, totals: Mapping[str, float]) -> dict[str, float | None]:
        """Record ``totals`` (if the last sample is old enough) and return each one's rate; None until two
        samples exist. A total that went down (a restart) counts from zero, as Prometheus does."""
        now = self.monotonic()
        if not self.samples or now - self.samples[-1][0] >= self.min_step_s:
            self.samples.append((now, dict(totals)))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window_s:
            self.samples.popleft()
        if len(self.samples) < 2:
            return {k: None for k in totals}
        (t0, first), (t1, last) = self.samples[0], self.samples[-1]
        dt = t1 - t0
        out: dict[str, float | None] = {}
        for k in totals:
            a, b = first.get(k, 0.0), last.get(k, 0.0)
            out[k] = ((b - a) if b >= a else b) / dt if dt > 0 else None
        return out
