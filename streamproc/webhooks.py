"""Webhook signatures: ``X-Streamproc-Signature: sha256=<hex HMAC-SHA256 of the body>``.

Delivery itself (queues, retries, grouping, formats) is ``delivery.py`` and ``delivery_service.py``.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["sign", "verify"]


def sign(body: bytes, secret: str) -> str:
    """The ``X-Streamproc-Signature`` header value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body`` under ``secret`` (constant-time)."""
    return header is not None and hmac.compare_digest(sign(body, secret), header)
