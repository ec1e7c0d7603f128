"""Alert records as the contract shapes them, and their identities.

An incident is one ``dedup_key`` (``<alertname>:<signal>:<product_id>``) from ``firing`` until
``resolved``. Identities are derived from content, not drawn at random, so that re-processing the same
input re-emits the same ``alert_id`` and receivers can dedupe.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["dedup_key", "fingerprint", "alert_id", "rfc3339", "event_time_text", "new_alert", "resolve_alert", "ALERT_NAMESPACE"]

ALERT_NAMESPACE = uuid.UUID("8f6b7a52-3c1e-4d2a-9a55-6d0c2f1b7e11")


def dedup_key(alertname: str, signal: str, subject: str) -> str:
    """``demand_surge:orders:P123``."""
    return f"{alertname}:{signal}:{subject}"


def fingerprint(labels: dict[str, Any]) -> str:
    """A stable hash of the labels that identify an incident (severity excluded)."""
    ident = {k: v for k, v in labels.items() if k != "severity"}
    return hashlib.sha256(orjson.dumps(ident, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def alert_id(key: str, starts_ms: int) -> str:
    """One id per incident: the dedup key and when it started."""
    return str(uuid.uuid5(ALERT_NAMESPACE, f"{key}@{starts_ms}"))


def rfc3339(ms: int) -> str:
    """Epoch milliseconds as an RFC 3339 UTC string."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_time_text(ms: int) -> str:
    """Event time for a person reading a description: ``2026-12-07 17:28 UTC (event time)`` (labelled, as
    event time may run far from the wall clock in replays and the demo)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC (event time)")


_WORDS = {"demand_surge": "surge", "demand_drop": "drop", "negative_review_spike": "negative-review spike"}
_UNITS = {"orders": "orders", "clicks": "clicks", "reviews": "negative reviews"}


def new_alert(
    *,
    alertname: str,
    signal: str,
    product_id: str,
    category: str | None,
    severity: str,
    window_start_ms: int,
    window_end_ms: int,
    observed: float,
    expected: float,
    score: float,
    evidence: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """A ``firing`` alert for a product, as published on ``alerts`` and sent to webhooks."""
    labels = {
        "alertname": alertname,
        "product_id": product_id,
        "category": category,
        "signal": signal,
        "severity": severity,
    }
    key = dedup_key(alertname, signal, product_id)
    minutes = (window_end_ms - window_start_ms) / 60_000
    ratio = f"{observed / expected:.1f}x" if expected > 0 else "from nothing"
    unit = _UNITS.get(signal, signal)
    return {
        "alert_id": alert_id(key, window_start_ms),
        "fingerprint": fingerprint(labels),
        "dedup_key": key,
        "status": "firing",
        "labels": labels,
        "annotations": {
            "summary": f"Demand {_WORDS.get(alertname, alertname)} on {product_id} ({signal})"
            if alertname != "negative_review_spike"
            else f"Negative-review spike on {product_id}",
            "description": (
                f"{observed:g} {unit} in the {minutes:g} min window starting {event_time_text(window_start_ms)}, "
                f"expected {expected:.2f} from the product's own history ({ratio}); score {score:.3f}."
            ),
        },
        "starts_at": rfc3339(window_start_ms),
        "ends_at": None,
        "window": {"start_ms": window_start_ms, "end_ms": window_end_ms},
        "observed": float(observed),
        "expected": float(expected),
        "score": float(score),
        "evidence": evidence or {"review_ids": [], "snippets": []},
    }


def resolve_alert(firing: dict[str, Any], *, window_start_ms: int, window_end_ms: int,
                  observed: float, expected: float, score: float) -> dict[str, Any]:
    """The ``resolved`` record of an incident: same ``alert_id``, ``ends_at`` set, latest window."""
    out = dict(firing)
    out["status"] = "resolved"
    out["ends_at"] = rfc3339(window_end_ms)
    out["window"] = {"start_ms": window_start_ms, "end_ms": window_end_ms}
    out["observed"] = float(observed)
    out["expected"] = float(expected)
    out["score"] = float(score)
    out["annotations"] = {
        "summary": firing["annotations"]["summary"].replace("Demand", "Resolved: demand", 1),
        "description": f"Back to normal: {observed:g} in the window ending {event_time_text(window_end_ms)}, "
        f"expected {expected:.2f}. Started {_started_text(firing)}.",
    }
    return out


def _started_text(firing: dict[str, Any]) -> str:
    try:
        ms = int(datetime.fromisoformat(str(firing["starts_at"]).replace("Z", "+00:00")).timestamp() * 1000)
    except (KeyError, ValueError):
        return str(firing.get("starts_at"))
    return event_time_text(ms).removesuffix(" (event time)")
