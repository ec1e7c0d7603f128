"""Webhook signatures (``X-Streamproc-Signature: sha256=<hex HMAC-SHA256 of the body>``) and per-receiver
options (``#timeout_ms=N&max_copies=N`` after a receiver's URL: a fragment is never sent to the server).

Delivery itself (queues, retries, grouping, formats) is ``delivery.py`` and ``delivery_service.py``.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl

__all__ = ["sign", "verify", "receiver_options", "RECEIVER_OPTIONS"]


def sign(body: bytes, secret: str) -> str:
    """The ``X-Streamproc-Signature`` header value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body`` under ``secret`` (constant-time)."""
    return header is not None and hmac.compare_digest(sign(body, secret), header)


RECEIVER_OPTIONS = {"timeout_ms": (1, 10**9), "max_copies": (1, 1000)}
"""Options a receiver's URL fragment may set, with their allowed ranges."""


def receiver_options(fragment: str) -> dict[str, int]:
    """``timeout_ms=30000&max_copies=2`` as a dict; ValueError saying what is wrong."""
    out: dict[str, int] = {}
    for name, value in parse_qsl(fragment, keep_blank_values=True, strict_parsing=bool(fragment)):
        if name not in RECEIVER_OPTIONS:
            raise ValueError(f"unknown receiver option {name!r} (use {', '.join(RECEIVER_OPTIONS)})")
        lo, hi = RECEIVER_OPTIONS[name]
        if not value.isdigit() or not lo <= int(value) <= hi:
            raise ValueError(f"receiver option {name}={value!r}: expected an integer in [{lo}, {hi}]")
        out[name] = int(value)
    return out
