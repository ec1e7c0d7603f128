"""The wire contract: what the decoders accept agrees with the JSON Schemas, every rejection comes out as a
``DecodeError`` with the dead-letter reason, and the output schemas accept what the code produces."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import fastjsonschema
import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from streamproc import alerts
from streamproc.clock import FakeClock
from streamproc.demand import DemandEngine
from streamproc.detectors import DetectorConfig
from streamproc.events import (
    Click,
    DecodeError,
    Order,
    Review,
    decode_click,
    decode_order,
    decode_review,
    decoder_for,
    load_schema,
)
from streamproc.runtime import Record, Runtime
from streamproc.settings import Settings
from streamproc.windows import WindowSpec

T_MS = 1_714_000_000_000  # 2024-04-24T23:06:40Z
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

CLICK = {"event_id": "e1", "ts": T_MS, "user_id": "u1", "session_id": "s1", "product_id": "P1",
         "category": "shoes", "action": "add_to_cart"}
ORDER = {"order_id": "o1", "ts": T_MS, "user_id": "u1", "currency": "EUR",
         "items": [{"product_id": "P1", "quantity": 2, "unit_price": 9.5, "category": "shoes"},
                   {"product_id": "P2", "quantity": 1, "unit_price": 0}]}
REVIEW = {"review_id": "r1", "ts": T_MS, "user_id": "u1", "product_id": "P1", "rating": 1,
          "title": "Broke", "text": "坏了 after two days", "lang": "mixed"}
MINIMAL = {
    "click": {"event_id": "e1", "ts": T_MS, "user_id": "u1", "product_id": "P1"},
    "order": {"order_id": "o1", "ts": T_MS, "user_id": "u1", "items": [{"product_id": "P1", "quantity": 1, "unit_price": 1.5}]},
    "review": {"review_id": "r1", "ts": T_MS, "product_id": "P1", "text": "ok"},
}
FULL = {"click": CLICK, "order": ORDER, "review": REVIEW}
DECODE = {"click": decode_click, "order": decode_order, "review": decode_review}
KINDS = ("click", "order", "review")


def raw(obj: Any) -> bytes:
    return orjson.dumps(obj)


def with_(obj: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(obj))
    out.update(changes)
    return out


def without(obj: dict[str, Any], key: str) -> dict[str, Any]:
    out = json.loads(json.dumps(obj))
    del out[key]
    return out


def schema_validator(name: str) -> Any:
    return fastjsonschema.compile(load_schema(name))


# -- valid input ---------------------------------------------------------------------------------


def test_full_click_decodes_to_its_fields() -> None:
    assert decode_click(raw(CLICK)) == Click(event_id="e1", ts_ms=T_MS, user_id="u1", product_id="P1",
                                             category="shoes", action="add_to_cart", session_id="s1")


def test_minimal_click_is_a_view_with_no_category() -> None:
    ev = decode_click(raw(MINIMAL["click"]))
    assert isinstance(ev, Click)
    assert ev.action == "view"
    assert ev.category is None and ev.session_id is None


def test_order_keeps_every_line_with_its_quantity_and_price() -> None:
    ev = decode_order(raw(ORDER))
    assert isinstance(ev, Order)
    assert ev.ts_ms == T_MS and ev.currency == "EUR"
    assert [(i.product_id, i.quantity, i.unit_price, i.category) for i in ev.items] == [
        ("P1", 2, 9.5, "shoes"), ("P2", 1, 0.0, None)]


def test_review_with_chinese_and_english_text() -> None:
    ev = decode_review(raw(REVIEW))
    assert isinstance(ev, Review)
    assert (ev.review_id, ev.product_id, ev.rating, ev.text) == ("r1", "P1", 1, "坏了 after two days")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", ["minimal", "full"])
def test_valid_examples_are_accepted_by_decoder_and_schema(kind: str, variant: str) -> None:
    obj = (MINIMAL if variant == "minimal" else FULL)[kind]
    schema_validator(kind)(obj)  # raises if the schema disagrees
    assert not isinstance(DECODE[kind](raw(obj)), DecodeError)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("ts", "ms"), [
    ("2024-04-24T23:06:40Z", T_MS),
    ("2024-04-24T23:06:40.000Z", T_MS),
    ("2024-04-25T01:06:40+02:00", T_MS),
    ("2024-04-24T18:06:40.123-05:00", T_MS + 123),
    ("2024-04-24t23:06:40z", T_MS),
    ("2024-04-24 23:06:40Z", T_MS),
])
def test_rfc3339_with_offset_means_the_same_instant(kind: str, ts: str, ms: int) -> None:
    obj = with_(MINIMAL[kind], ts=ts)
    schema_validator(kind)(obj)
    ev = DECODE[kind](raw(obj))
    assert not isinstance(ev, DecodeError), ev
    assert ev.ts_ms == ms


@given(ms=st.integers(0, 253_402_300_799_999), offset_min=st.integers(-23 * 60, 23 * 60))
@example(ms=2_176_898_522_713, offset_min=0)  # 2038-12-25T14:02:02.713: float maths made it .712
def test_rfc3339_milliseconds_round_trip_exactly(ms: int, offset_min: int) -> None:
    tz = timezone(timedelta(minutes=offset_min))
    try:
        text = (EPOCH + timedelta(milliseconds=ms)).astimezone(tz).isoformat(timespec="milliseconds")
    except OverflowError:  # the local time would fall outside years 1..9999
        return
    ev = decode_click(raw(with_(MINIMAL["click"], ts=text)))
    assert isinstance(ev, Click) and ev.ts_ms == ms


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_fields_are_kept_and_ignored(kind: str) -> None:
    plain = DECODE[kind](raw(MINIMAL[kind]))
    extra = with_(MINIMAL[kind], campaign="spring", nested={"a": [1, 2]}, referrer=None)
    schema_validator(kind)(extra)
    assert DECODE[kind](raw(extra)) == plain


def test_unknown_fields_inside_order_lines_are_ignored() -> None:
    obj = with_(MINIMAL["order"], items=[{"product_id": "P1", "quantity": 1, "unit_price": 1.5, "sku": "X"}])
    assert decode_order(raw(obj)) == decode_order(raw(MINIMAL["order"]))


@pytest.mark.parametrize("kind", KINDS)
def test_integral_float_ts_accepted_by_the_schema_is_decoded_not_raised(kind: str) -> None:
    # JSON Schema counts 1714000000000.0 as an integer; the decoder must agree (and never raise).
    obj = with_(MINIMAL[kind], ts=float(T_MS))
    schema_validator(kind)(obj)
    ev = DECODE[kind](raw(obj))
    assert not isinstance(ev, DecodeError), ev
    assert ev.ts_ms == T_MS


def test_decoder_for_maps_logical_topics() -> None:
    assert decoder_for("clicks") is decode_click
    assert decoder_for("orders") is decode_order
    assert decoder_for("reviews") is decode_review


# -- invalid input -------------------------------------------------------------------------------


def assert_rejected(kind: str, payload: bytes | None, reason: str) -> None:
    out = DECODE[kind](payload)
    assert isinstance(out, DecodeError), out
    assert out.kind == reason
    assert out.message


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("payload", [b"not json", b"{\"ts\": ", b"", b"\xff\xfe", b"{'a': 1}", b"NaN"])
def test_not_json_is_rejected_as_not_json(kind: str, payload: bytes) -> None:
    assert_rejected(kind, payload, "not_json")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("payload", [b"[]", b"[1, 2]", b"\"click\"", b"42", b"null", b"true"])
def test_json_that_is_not_an_object_fails_the_schema(kind: str, payload: bytes) -> None:
    assert_rejected(kind, payload, "schema")


@pytest.mark.parametrize("kind", KINDS)
def test_no_value_is_rejected(kind: str) -> None:
    assert_rejected(kind, None, "not_json")


REQUIRED = {
    "click": ["event_id", "ts", "user_id", "product_id"],
    "order": ["order_id", "ts", "user_id", "items"],
    "review": ["review_id", "ts", "product_id", "text"],
}


@pytest.mark.parametrize(("kind", "field"), [(k, f) for k, fs in REQUIRED.items() for f in fs])
def test_missing_required_field_fails_the_schema(kind: str, field: str) -> None:
    assert_rejected(kind, raw(without(MINIMAL[kind], field)), "schema")


def order_line(**changes: Any) -> dict[str, Any]:
    return with_(MINIMAL["order"], items=[{"product_id": "P1", "quantity": 1, "unit_price": 1.5, **changes}])


INVALID = [
    # wrong types
    ("click", with_(MINIMAL["click"], product_id=123)),
    ("click", with_(MINIMAL["click"], user_id=None)),
    ("order", with_(MINIMAL["order"], items={"product_id": "P1"})),
    ("review", with_(MINIMAL["review"], text=["a"])),
    ("order", order_line(quantity="2")),
    ("order", order_line(unit_price="9.99")),
    # bad enum / ranges
    ("click", with_(MINIMAL["click"], action="purchase")),
    ("order", order_line(quantity=0)),
    ("order", order_line(quantity=1.5)),
    ("order", order_line(unit_price=-0.01)),
    ("order", with_(MINIMAL["order"], items=[])),
    ("review", with_(MINIMAL["review"], rating=6)),
    ("review", with_(MINIMAL["review"], rating=0)),
    ("click", with_(MINIMAL["click"], product_id="")),
    # bad timestamps
    ("click", with_(MINIMAL["click"], ts="2024-04-24T23:06:40")),  # RFC 3339 without offset
    ("order", with_(MINIMAL["order"], ts="2024-04-24T23:06:40")),
    ("review", with_(MINIMAL["review"], ts="2024-04-24T23:06:40")),
    ("click", with_(MINIMAL["click"], ts=True)),  # bool is not an integer
    ("click", with_(MINIMAL["click"], ts=False)),
    ("click", with_(MINIMAL["click"], ts=-1)),
    ("click", with_(MINIMAL["click"], ts=1.5)),
    ("click", with_(MINIMAL["click"], ts="yesterday")),
    ("click", with_(MINIMAL["click"], ts="24/04/2024 23:06")),
]
# These match the schema's RFC 3339 pattern but are not instants; the decoder rejects them as "schema".
IMPOSSIBLE_DATES = [
    ("click", with_(MINIMAL["click"], ts="2024-02-30T00:00:00Z")),
    ("review", with_(MINIMAL["review"], ts="2024-04-24T25:00:00Z")),
    ("order", with_(MINIMAL["order"], ts="2024-04-24T23:60:00+01:00")),
]


@pytest.mark.parametrize(("kind", "obj"), INVALID + IMPOSSIBLE_DATES,
                         ids=[f"{k}-{i}" for i, (k, _) in enumerate(INVALID + IMPOSSIBLE_DATES)])
def test_invalid_record_fails_the_schema(kind: str, obj: dict[str, Any]) -> None:
    assert_rejected(kind, raw(obj), "schema")


@pytest.mark.parametrize("kind", KINDS)
def test_record_over_max_bytes_is_oversize(kind: str) -> None:
    obj = with_(MINIMAL[kind], padding="x" * 2_000)
    payload = raw(obj)
    assert not isinstance(DECODE[kind](payload, len(payload)), DecodeError)  # exactly at the limit is fine
    assert_rejected_oversize = DECODE[kind](payload, len(payload) - 1)
    assert isinstance(assert_rejected_oversize, DecodeError)
    assert assert_rejected_oversize.kind == "oversize"


JSON_VALUES = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.integers(0, 10).map(float)
               | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
               | st.sampled_from(["2024-04-24T23:06:40", "9999-12-31T23:59:59.999-05:00", "0000-01-01T00:00:00Z",
                                  "2024-02-30T00:00:00Z"])
               | st.lists(st.integers(0, 9), max_size=2) | st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2))
FIELDS = sorted({f for fs in REQUIRED.values() for f in fs} | {"action", "rating", "category", "currency"})
LINE_FIELDS = ["product_id", "quantity", "unit_price", "category"]


@given(kind=st.sampled_from(KINDS), changes=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=3),
       line_changes=st.dictionaries(st.sampled_from(LINE_FIELDS), JSON_VALUES, max_size=2))
def test_decoders_never_raise_and_agree_with_the_schema(kind: str, changes: dict[str, Any],
                                                         line_changes: dict[str, Any]) -> None:
    obj = with_(MINIMAL[kind], **changes)
    if kind == "order" and "items" not in changes:
        obj["items"][0].update(line_changes)
    out = DECODE[kind](raw(obj))  # must not raise, whatever the record
    try:
        schema_validator(kind)(obj)
    except fastjsonschema.JsonSchemaValueException:
        assert isinstance(out, DecodeError) and out.kind == "schema"


def test_oversize_is_decided_before_parsing() -> None:
    out = decode_click(b"x" * 100, 10)
    assert isinstance(out, DecodeError) and out.kind == "oversize"


# -- the schemas themselves ----------------------------------------------------------------------

ALL_SCHEMAS = ("click", "order", "review", "alert", "dead-letter", "product-features")


@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_every_shipped_schema_is_a_valid_schema(name: str) -> None:
    schema = load_schema(name)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["title"] == name
    fastjsonschema.compile(schema)


@pytest.mark.parametrize(("kind", "obj"), INVALID, ids=[f"{k}-{i}" for i, (k, _) in enumerate(INVALID)])
def test_schema_files_reject_what_the_decoders_reject(kind: str, obj: dict[str, Any]) -> None:
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        schema_validator(kind)(obj)


def alert_records() -> list[dict[str, Any]]:
    firing = alerts.new_alert(
        alertname="demand_surge", signal="orders", product_id="P1", category="shoes", severity="critical",
        window_start_ms=T_MS, window_end_ms=T_MS + 60_000, observed=42, expected=3.5, score=0.93)
    no_category = alerts.new_alert(
        alertname="demand_drop", signal="clicks", product_id="P2", category=None, severity="warning",
        window_start_ms=T_MS, window_end_ms=T_MS + 60_000, observed=0, expected=0.0, score=0.5)
    spike = alerts.new_alert(
        alertname="negative_review_spike", signal="reviews", product_id="P3", category="toys", severity="warning",
        window_start_ms=T_MS, window_end_ms=T_MS + 60_000, observed=4, expected=0.2, score=0.7,
        evidence={"review_ids": ["r1", "r2"], "snippets": ["坏了", "broke"]})
    resolved = alerts.resolve_alert(firing, window_start_ms=T_MS + 600_000, window_end_ms=T_MS + 660_000,
                                    observed=3, expected=3.4, score=0.01)
    return [firing, no_category, spike, resolved]


def test_alert_schema_accepts_what_the_code_produces() -> None:
    validate = schema_validator("alert")
    for record in alert_records():
        validate(orjson.loads(orjson.dumps(record)))


def test_resolved_alert_keeps_the_incident_identity() -> None:
    firing, *_, resolved = alert_records()
    assert resolved["status"] == "resolved" and firing["status"] == "firing"
    assert resolved["alert_id"] == firing["alert_id"]
    assert resolved["dedup_key"] == firing["dedup_key"] == "demand_surge:orders:P1"
    assert resolved["fingerprint"] == firing["fingerprint"]
    assert firing["ends_at"] is None and resolved["ends_at"] == alerts.rfc3339(T_MS + 660_000)


def test_features_schema_accepts_what_the_engine_produces() -> None:
    spec = WindowSpec(bucket_ms=60_000, allowed_lateness_ms=0, idle_timeout_ms=10**12)
    engine = DemandEngine(spec, DetectorConfig())
    wall = T_MS
    for i in range(12):
        ts = T_MS + i * 30_000
        ck = decode_click(raw(with_(CLICK, ts=ts, event_id=f"e{i}")))
        assert isinstance(ck, Click)
        assert engine.apply_click(0, "clicks/0", ck, wall) is None
        order = decode_order(raw(with_(ORDER, ts=ts)))
        assert isinstance(order, Order)
        assert engine.admit_order(0, "clicks/0", order.ts_ms, wall) is None
        for item in order.items:
            engine.apply_item(0, order.ts_ms, item)
        review = decode_review(raw(with_(REVIEW, ts=ts)))
        assert isinstance(review, Review)
        assert engine.apply_review(0, "clicks/0", review, wall, negative=0.9 if i % 2 else 0.1) is None
    quiet = decode_click(raw(with_(MINIMAL["click"], product_id="QUIET", ts=T_MS)))
    assert isinstance(quiet, Click)
    engine.apply_click(0, "clicks/0", quiet, wall)
    outputs = engine.tick(wall)
    features = [o.value for o in outputs if o.kind == "features"]
    assert {f["product_id"] for f in features} == {"P1", "P2", "QUIET"}
    validate = schema_validator("product-features")
    for record in features:
        validate(orjson.loads(orjson.dumps(record)))
    assert any(f["features"]["sentiment_mean_24h"] is not None for f in features)  # the nullable branches too
    assert any(f["features"]["conversion_5m"] is None for f in features)


async def test_dead_letter_schema_accepts_what_the_runtime_produces() -> None:
    sent: list[tuple[str, bytes | None, bytes, Any]] = []

    async def send(topic: str, key: bytes | None, value: bytes, headers: Any) -> None:
        sent.append((topic, key, value, headers))

    rt = Runtime(Settings(max_record_bytes=200), send, clock=FakeClock(T_MS))
    bad = [b"nope", raw([1]), raw(with_(MINIMAL["click"], ts="2024-04-24T23:06:40")), b"{" + b" " * 300 + b"}", None]
    records = [Record("clicks", 0, i, b"k", v, [("trace", b"abc")]) for i, v in enumerate(bad)]
    await rt.on_records("clicks", records)
    validate = schema_validator("dead-letter")
    dead = [(k, orjson.loads(v), h) for t, k, v, h in sent if t == "dead-letters"]
    assert len(dead) == len(bad)
    for _, body, _ in dead:
        validate(body)
    assert [b["error"]["kind"] for _, b, _ in dead] == ["not_json", "schema", "schema", "oversize", "not_json"]
    # A webhook delivery that failed for good is dead-lettered by the delivery code in the same shape.
    from streamproc.delivery import Receiver, Result, dead_letter_record

    validate(orjson.loads(dead_letter_record(
        topic="alerts", partition=0, offset=7, value=orjson.dumps(alert_records()[0]),
        receiver=Receiver("http://hook"), now_ms=T_MS, result=Result("rejected", 400, "bad request", 1))))
    # original bytes, key and headers intact
    for (key, body, headers), original in zip(dead, records, strict=False):
        assert base64.b64decode(body["payload_b64"]) == (original.value or b"")
        assert key == original.key
        assert ("trace", b"abc") in headers
        assert body["source"] == {"topic": "clicks", "partition": 0, "offset": original.offset}



def test_numbers_that_overflow_are_schema_violations() -> None:
    def order(price: str) -> bytes:
        return ('{"order_id":"o","ts":1780000000000,"user_id":"u","items":[{"product_id":"P","quantity":1000000,'
                f'"unit_price":{price}}}]}}').encode()

    for price in ("1e308", "1e400", "-1e400", "1000000000001"):
        err = decode_order(order(price))
        assert isinstance(err, DecodeError) and err.kind == "schema", (price, err)
    ok = decode_order(order("1000000000000"))
    assert not isinstance(ok, DecodeError)
    assert ok.items[0].unit_price * ok.items[0].quantity * 1000 < 1e300
