"""Prometheus metrics of one worker, in a registry of its own (several workers may share a process in tests)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]


class Metrics:
    """The worker's counters, gauges and histograms."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.records_in = Counter("streamproc_records_in_total", "Input records read", ["topic"], registry=r)
        self.records_processed = Counter(
            "streamproc_records_processed_total", "Input records counted into windows", ["topic"], registry=r)
        self.dead_letters = Counter(
            "streamproc_dead_letters_total", "Records sent to the dead-letter topic", ["topic", "reason"], registry=r)
        self.duplicates = Counter(
            "streamproc_duplicates_total", "Input records dropped as duplicates of an id within the dedup horizon "
            "(also counted as processed)", ["topic"], registry=r)
        self.alerts = Counter("streamproc_alerts_total", "Alert transitions", ["alertname", "status"], registry=r)
        self.features_published = Counter(
            "streamproc_features_published_total", "Feature records published", registry=r)
        self.triggers = Counter(
            "streamproc_marketing_triggers_total", "Marketing triggers published", ["kind"], registry=r)
        self.webhook_deliveries = Counter(
            "streamproc_webhook_deliveries_total", "Webhook POSTs by outcome", ["receiver", "outcome"], registry=r)
        self.webhook_queue = Gauge("streamproc_webhook_queue_depth", "Alerts waiting for delivery", ["receiver"],
                                   registry=r)
        self.webhook_retries = Counter(
            "streamproc_webhook_retries_total", "Webhook POSTs retried, by cause", ["receiver", "cause"], registry=r)
        self.webhook_alerts = Counter(
            "streamproc_webhook_alerts_total", "Alerts by delivery outcome", ["receiver", "outcome"], registry=r)
        self.webhook_latency = Histogram(
            "streamproc_webhook_delivery_latency_seconds", "From an alert's publication to its delivery",
            ["receiver"], registry=r, buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600))
        self.alerts_suppressed = Counter(
            "streamproc_alerts_suppressed_total", "Alert notifications marked silenced or inhibited", ["reason"],
            registry=r)
        self.watermark_delay = Gauge(
            "streamproc_watermark_delay_seconds", "Wall clock minus watermark, per unit", ["unit"], registry=r)
        self.batch_seconds = Histogram(
            "streamproc_batch_processing_seconds", "Time to process one batch of input records", ["topic"],
            registry=r, buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
        self.products = Gauge("streamproc_products_tracked", "Products with live state (in memory and parked)",
                              registry=r)
        self.products_hot = Gauge("streamproc_products_in_memory",
                                  "Products held as objects in the heap (the rest are parked as compressed snapshots)",
                                  registry=r)
        # Observability (dashboard issue): latencies, lag, the sentiment model; sizes come from bind_runtime.
        self.window_close_latency = Histogram(
            "streamproc_window_close_latency_seconds",
            "Wall clock when a bucket's results are emitted minus the bucket's event-time end", registry=r,
            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600, 21600, 86400))
        self.window_close_seconds = Histogram(
            "streamproc_window_close_duration_seconds", "Time to close the buckets that became final in one tick",
            registry=r, buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
        self.consumer_lag = Gauge(
            "streamproc_consumer_lag_records", "Records in the broker not yet processed, per input partition",
            ["topic", "partition"], registry=r)
        self.model_inference_seconds = Histogram(
            "streamproc_model_inference_seconds", "Time of one sentiment model call (a batch of texts)", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.model_batch_size = Histogram(
            "streamproc_model_batch_size", "Texts per sentiment model call", registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))

    def bind_runtime(self, runtime: Any) -> None:
        """Report the runtime's table sizes and open incidents at scrape time (nothing to update on the hot path)."""
        from .observability import RuntimeCollector

        if getattr(self, "_runtime_collector", None) is None:
            self._runtime_collector = RuntimeCollector(runtime)
            self.registry.register(self._runtime_collector)

    def observe_tick(self, outputs: Sequence[Any], now_ms: int, seconds: float) -> None:
        """After a tick: how long closing took, and how late (wall clock) each closed bucket came out."""
        ends = {o.value["as_of_ms"] for o in outputs if o.kind == "features"}
        if ends:
            self.window_close_seconds.observe(seconds)
        for end_ms in ends:
            self.window_close_latency.observe(max(0.0, (now_ms - end_ms) / 1000))

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
