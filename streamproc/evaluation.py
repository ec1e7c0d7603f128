"""Scoring alerts against injected ground truth (the generator's ``truth`` rows): pure functions used by
the integration tests and the detection-quality benchmark."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Match", "match_alerts"]

_ALERT_KIND = {"demand_surge": "demand_surge", "demand_drop": "demand_drop",
               "negative_review_spike": "negative_review_spike"}


@dataclass
class Match:
    """Outcome of matching firing alerts to injected anomalies."""

    detected: list[dict[str, Any]] = field(default_factory=list)
    """Truth rows with at least one matching alert (with ``delay_ms`` of the first one)."""
    missed: list[dict[str, Any]] = field(default_factory=list)
    false_alerts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def precision(self) -> float:
        tp = sum(d["alerts"] for d in self.detected)
        return tp / (tp + len(self.false_alerts)) if tp + len(self.false_alerts) else 1.0

    @property
    def recall(self) -> float:
        n = len(self.detected) + len(self.missed)
        return len(self.detected) / n if n else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def match_alerts(alerts: Iterable[Mapping[str, Any]], truth: Iterable[Mapping[str, Any]], *,
                 slack_ms: int = 5 * 60_000, kinds: Iterable[str] = ("demand_surge", "demand_drop")) -> Match:
    """Match ``firing`` alerts to truth rows by product, kind and time.

    An alert matches a truth row of the same product and kind when its window starts between the
    anomaly's start and its end plus ``slack_ms``; a category alert (no ``product_id``) matches an
    anomaly of a product in that category. Every other firing alert of those kinds is false.
    """
    kinds = set(kinds)
    rows = [dict(t) for t in truth if t["kind"] in kinds and t.get("expect_alert", True)]
    for r in rows:
        r["alerts"] = 0
        r["delay_ms"] = None
    m = Match()
    for a in alerts:
        if a["status"] != "firing" or a["labels"]["alertname"] not in kinds:
            continue
        start = a["window"]["start_ms"]
        hit = None
        labels = a["labels"]
        for r in rows:
            if labels.get("product_id"):
                same_subject = r["product_id"] in (labels["product_id"], "*")
            else:  # a category alert: it stands for an anomaly of a product in that category
                same_subject = r.get("category") in (labels.get("category"), "*")
            if (r["kind"] == labels["alertname"] and same_subject
                    and r["start_ms"] <= start <= r["end_ms"] + slack_ms):
                hit = r
                break
        if hit is None:
            m.false_alerts.append(dict(a))
        else:
            hit["alerts"] += 1
            delay = a["window"]["end_ms"] - hit["start_ms"]
            if hit["delay_ms"] is None or delay < hit["delay_ms"]:
                hit["delay_ms"] = delay
    for r in rows:
        (m.detected if r["alerts"] else m.missed).append(r)
    return m
