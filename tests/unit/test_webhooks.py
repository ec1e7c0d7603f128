"""Webhook signatures. (Retries, Retry-After, giving up and batching are tested on the delivery code the
worker runs: tests/unit/test_delivery.py and tests/integration/test_delivery.py.)"""

from __future__ import annotations

from typing import Any

import orjson

from streamproc.alerts import new_alert
from streamproc.webhooks import sign, verify

SECRET = "webhook-secret"
T_MS = 1_714_000_000_000


def alert(i: int) -> dict[str, Any]:
    return new_alert(alertname="demand_surge", signal="orders", product_id=f"P{i}", category="shoes",
                     severity="warning", window_start_ms=T_MS, window_end_ms=T_MS + 60_000,
                     observed=30, expected=2.0, score=0.9)


# -- signatures ----------------------------------------------------------------------------------


def test_signature_verifies_with_the_secret() -> None:
    body = orjson.dumps({"version": "1", "alerts": [alert(1)]})
    header = sign(body, SECRET)
    assert header.startswith("sha256=") and len(header) == len("sha256=") + 64
    assert verify(body, SECRET, header)


def test_signature_fails_with_another_secret_another_body_or_no_header() -> None:
    body = orjson.dumps({"version": "1", "alerts": [alert(1)]})
    header = sign(body, SECRET)
    assert not verify(body, "other-secret", header)
    assert not verify(body + b" ", SECRET, header)
    assert not verify(body, SECRET, None)
    assert not verify(body, SECRET, header.replace("sha256=", "sha1="))
