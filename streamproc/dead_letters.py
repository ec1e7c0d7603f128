"""Dead-letter records that always fit in one Kafka produce request.

A dead letter carries the original record's bytes (base64, a third larger), its key and headers, and the
reason. A record close to the 1 MiB input limit would then exceed the producer's request limit (~1 MB):
the produce fails, and the record is neither dead-lettered nor counted. So the whole dead-letter record
(key + headers + JSON value) is kept under :data:`MAX_DEAD_LETTER_BYTES`; what does not fit is cut, and the
record says so: ``payload_truncated`` with the original's ``payload_bytes`` and ``payload_sha256``
(likewise for headers and a key too large to keep).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = ["MAX_DEAD_LETTER_BYTES", "MAX_KEY_BYTES", "DeadLetter", "dead_letter"]

MAX_DEAD_LETTER_BYTES = 900_000
"""Key + headers + value of one dead-letter record: under the producers' default 1,000,000-byte request
limit (Faust's and aiokafka's ``max_request_size``) with room for the batch and record framing."""
MAX_KEY_BYTES = 16_384
"""A longer original key is replaced by its SHA-256 (hex) in the dead letter, and the body says so."""
MAX_HEADERS_BYTES = 65_536
"""Original headers beyond this total are left out (counted in ``headers_dropped``)."""
_ENVELOPE_SLACK = 2_048
"""Room kept for the JSON around the payload (source, error, sizes, digests)."""

Headers = Sequence[tuple[str, bytes]]


class DeadLetter:
    """One dead-letter record ready to produce: ``key``, ``value`` and ``headers`` within the size limit."""

    __slots__ = ("key", "value", "headers", "truncated")

    def __init__(self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]], truncated: bool) -> None:
        self.key = key
        self.value = value
        self.headers = headers
        self.truncated = truncated
        """Whether the payload (or key, or headers) was cut to fit."""

    @property
    def size(self) -> int:
        return len(self.key or b"") + len(self.value) + sum(len(k) + len(v) for k, v in self.headers)


def dead_letter(body: dict[str, Any], *, payload: bytes | None, key: bytes | None, headers: Headers | None,
                extra_headers: Headers = (), limit: int = MAX_DEAD_LETTER_BYTES) -> DeadLetter:
    """Build a dead letter from ``body`` (``source``, ``error``, ...): adds ``payload_b64`` and, when the
    payload, key or headers had to be cut to stay within ``limit`` bytes, says what was cut and how to
    recognise the original (``payload_bytes``, ``payload_sha256``, ``payload_truncated``, ...)."""
    out = dict(body)
    raw = payload or b""
    cut = False
    if key is not None and len(key) > MAX_KEY_BYTES:
        out["key_truncated"] = {"bytes": len(key), "sha256": hashlib.sha256(key).hexdigest()}
        key, cut = hashlib.sha256(key).hexdigest().encode(), True
    kept: list[tuple[str, bytes]] = []
    used, dropped = 0, 0
    for name, value in headers or ():
        size = len(name.encode()) + len(value or b"")
        if used + size > MAX_HEADERS_BYTES:
            dropped += 1
            continue
        kept.append((name, value))
        used += size
    if dropped:
        out["headers_dropped"], cut = dropped, True
    kept.extend(extra_headers)
    fixed = len(key or b"") + sum(len(n.encode()) + len(v or b"") for n, v in kept)
    room = limit - fixed - len(orjson.dumps(out)) - _ENVELOPE_SLACK
    if len(raw) * 4 // 3 + 4 > room:
        keep = max(0, room * 3 // 4 - 4)
        keep -= keep % 3  # whole base64 groups: the excerpt decodes to exactly the first ``keep`` bytes
        out["payload_truncated"] = True
        out["payload_bytes"] = len(raw)
        out["payload_sha256"] = hashlib.sha256(raw).hexdigest()
        out["payload_b64"] = base64.b64encode(raw[:keep]).decode()
        cut = True
    else:
        out["payload_b64"] = base64.b64encode(raw).decode()
    return DeadLetter(key, orjson.dumps(out), kept, cut)
