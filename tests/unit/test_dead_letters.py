"""Dead letters always fit one produce request, and say what they cut."""

from __future__ import annotations

import base64
import hashlib

import fastjsonschema
import orjson

from streamproc.dead_letters import MAX_DEAD_LETTER_BYTES, MAX_KEY_BYTES, dead_letter
from streamproc.events import load_schema

BODY = {"source": {"topic": "clicks", "partition": 0, "offset": 7}, "error": {"kind": "schema", "message": "bad"}}
valid = fastjsonschema.compile(load_schema("dead-letter"))


def test_a_small_record_is_kept_whole() -> None:
    dl = dead_letter(BODY, payload=b"{oops", key=b"P1", headers=[("h", b"v")], extra_headers=[("streamproc-error", b"schema")])
    body = orjson.loads(dl.value)
    valid(body)
    assert base64.b64decode(body["payload_b64"]) == b"{oops" and "payload_truncated" not in body
    assert dl.key == b"P1" and dl.headers == [("h", b"v"), ("streamproc-error", b"schema")] and not dl.truncated


def test_a_record_near_the_input_limit_is_cut_with_its_digest_and_size() -> None:
    raw = b'{"event_id":"poison","pad":"' + b"p" * 1_048_000 + b'"}'
    dl = dead_letter(BODY, payload=raw, key=b"V", headers=[("h", b"v")])
    body = orjson.loads(dl.value)
    valid(body)
    assert dl.size <= MAX_DEAD_LETTER_BYTES and dl.truncated
    assert body["payload_truncated"] is True and body["payload_bytes"] == len(raw)
    assert body["payload_sha256"] == hashlib.sha256(raw).hexdigest()
    kept = base64.b64decode(body["payload_b64"])
    assert raw.startswith(kept) and len(kept) > 600_000  # as much as fits


def test_a_huge_key_and_headers_are_replaced_by_what_identifies_them() -> None:
    key = b"k" * (MAX_KEY_BYTES + 1)
    headers = [(f"h{i}", b"x" * 30_000) for i in range(20)]
    dl = dead_letter(BODY, payload=b"y" * 900_000, key=key, headers=headers)
    body = orjson.loads(dl.value)
    valid(body)
    assert dl.size <= MAX_DEAD_LETTER_BYTES
    assert dl.key == hashlib.sha256(key).hexdigest().encode()
    assert body["key_truncated"] == {"bytes": len(key), "sha256": hashlib.sha256(key).hexdigest()}
    assert body["headers_dropped"] == 20 - len(dl.headers) > 0
