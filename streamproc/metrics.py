"""Prometheus metrics of one worker, in a registry of its own (several workers may share a process in tests)."""

from __future__ import annotations

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
        self.alerts = Counter("streamproc_alerts_total", "Alert transitions", ["alertname", "status"], registry=r)
        self.features_published = Counter(
            "streamproc_features_published_total", "Feature records published", registry=r)
        self.webhook_deliveries = Counter(
            "streamproc_webhook_deliveries_total", "Webhook POSTs by outcome", ["receiver", "outcome"], registry=r)
        self.webhook_queue = Gauge("streamproc_webhook_queue_depth", "Alerts waiting for delivery", ["receiver"],
                                   registry=r)
        self.watermark_delay = Gauge(
            "streamproc_watermark_delay_seconds", "Wall clock minus watermark, per unit", ["unit"], registry=r)
        self.batch_seconds = Histogram(
            "streamproc_batch_processing_seconds", "Time to process one batch of input records", ["topic"],
            registry=r, buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
        self.products = Gauge("streamproc_products_tracked", "Products with live state", registry=r)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
