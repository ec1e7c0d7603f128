"""Hostile input, property-based: whatever bytes arrive on an input topic, a decoder returns an event or a
``DecodeError`` — it never raises — and the runtime accounts for every record exactly once
(records in = processed + dead-lettered, and one dead-letter record per dead-lettered input)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamproc.clock import FakeClock
from streamproc.events import (
    Click,
    DecodeError,
    Order,
    OrderItem,
    Review,
    decode_click,
    decode_order,
    decode_review,
)
from streamproc.runtime import ORDER_ITEMS, Record, Runtime, _decode_item
from streamproc.settings import Settings

T_MS = 1_714_000_000_000
MAX_TS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the schema's maximum

DECODERS = {"clicks": decode_click, "orders": decode_order, "reviews": decode_review}
EVENT_TYPES = {"clicks": Click, "orders": Order, "reviews": Review}

CLICK = {"event_id": "e1", "ts": T_MS, "user_id": "u1", "session_id": "s1", "product_id": "P1",
         "category": "shoes", "action": "view"}
ORDER = {"order_id": "o1", "ts": T_MS, "user_id": "u1", "currency": "EUR",
         "items": [{"product_id": "P1", "quantity": 2, "unit_price": 9.5, "category": "shoes"},
                   {"product_id": "P2", "quantity": 1, "unit_price": 0}]}
REVIEW = {"review_id": "r1", "ts": T_MS, "user_id": "u1", "product_id": "P1", "rating": 4, "title": "ok",
          "text": "good shoes 很好", "lang": "en"}
VALID = {"clicks": CLICK, "orders": ORDER, "reviews": REVIEW}
ITEM_LINE = {"ts": T_MS, "order_id": "o1", "product_id": "P2", "quantity": 1, "unit_price": 3.0, "category": None}

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.data_too_large])

# -- strategies ---------------------------------------------------------------------------------------

ODD_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),  # anything UTF-8 can carry: NUL, controls, RTL marks, CJK, emoji
        st.sampled_from(["\x00", "\u200f", "\u202e", "\u2066", "\ufeff", "\U0001f600", "\u0301", "é", "好"]),
    ),
    max_size=300,
)
HUGE_TEXT = st.sampled_from([201, 10_000, 300_000]).map(lambda n: "x" * n)

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    ODD_TEXT,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ODD_TEXT, inner, max_size=4),
    max_leaves=20,
)

RFC3339 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
TIMESTAMPS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(min_value=-1, max_value=MAX_TS + 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, -1, MAX_TS, MAX_TS + 1, 1.0, 1.5, float(T_MS), 1e300, -0.0, 2**53 + 1]),
    st.from_regex(RFC3339, fullmatch=True),
    st.sampled_from([
        "0000-01-01T00:00:00Z", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59.999-23:59",
        "9999-12-31T23:59:59.999999999Z", "2026-02-30T00:00:00Z", "2026-01-01T24:00:00Z",
        "2026-12-31T23:59:60Z", "2026-01-01t10:00:00z", "2026-01-01 10:00:00+00:00", "2026-01-01T10:00:00",
        "2026-01-01T10:00:00+99:99", "2026-01-01T10:00:00Z\n", "1969-12-31T23:59:59.999Z", "",
        "２０２６-01-01T00:00:00Z", "2026-01-01T10:00:00.Z", "2026-01-01T10:00:00-00:00",
    ]),
    ODD_TEXT,
    JSON_VALUES,
)


@st.composite
def mutated_records(draw: st.DrawFn, kind: str) -> bytes:
    """A valid record with fields removed, retyped, re-timed or padded, as JSON bytes."""
    obj: dict[str, Any] = orjson.loads(orjson.dumps(VALID[kind]))
    for field in draw(st.lists(st.sampled_from(sorted(obj)), max_size=3, unique=True)):
        choice = draw(st.integers(0, 3))
        if choice == 0:
            del obj[field]
        elif choice == 1:
            obj[field] = draw(JSON_VALUES)
        elif choice == 2:
            obj[field] = draw(ODD_TEXT)
        else:
            obj[field] = draw(HUGE_TEXT)
    if draw(st.booleans()):
        obj["ts"] = draw(TIMESTAMPS)
    if kind == "reviews" and draw(st.booleans()):
        obj["rating"] = draw(st.sampled_from([1.0, 4.0, 5.5, 0, 6, True, None, "5"]))
    if kind == "orders" and draw(st.booleans()):
        items = obj.get("items")
        if isinstance(items, list) and items and isinstance(items[0], dict):
            items[0][draw(st.sampled_from(["product_id", "quantity", "unit_price", "category", "x"]))] = \
                draw(st.one_of(JSON_VALUES, st.integers(-(2**63), 2**64 - 1),
                               st.sampled_from([1.0, 2.0, 1e6, 1e6 + 1, 0.5, True, -0.0, 1e308])))
    if draw(st.booleans()):
        obj[draw(ODD_TEXT)] = draw(JSON_VALUES)  # unknown fields are ignored
    return orjson.dumps(obj)


def _nested(depth: int, open_: bytes, close: bytes, inner: bytes = b"1") -> bytes:
    return open_ * depth + inner + close * depth


HOSTILE_LITERALS = [
    b"", b"null", b"[]", b"{}", b"0", b'"x"', b"\x00", b"\xff\xfe", b"\xef\xbb\xbf{}",
    _nested(10_000, b"[", b"]"),
    _nested(10_000, b'{"a":', b"}"),
    b'{"event_id":"e","ts":1,"user_id":"u","product_id":' + _nested(5_000, b"[", b"]") + b"}",
    b'{"event_id":"\\ud800","ts":1714000000000,"user_id":"u","product_id":"P1"}',  # lone high surrogate
    b'{"event_id":"e","ts":1714000000000,"user_id":"u","product_id":"\\udc00"}',  # lone low surrogate
    b'{"event_id":"e","ts":1714000000000,"user_id":"u","product_id":"P\\u0000\\u202e1"}',  # NUL, RTL override
    b'{"event_id":"e","ts":1e400,"user_id":"u","product_id":"P1"}',  # infinity
    b'{"event_id":"e","ts":18446744073709551616,"user_id":"u","product_id":"P1"}',  # > 64 bit
    b'{"event_id":"e","ts":NaN,"user_id":"u","product_id":"P1"}',
    b'{"event_id":"e","ts":1714000000000,"user_id":"u","product_id":"P1"',  # truncated
    b'{"event_id":"e","event_id":"f","ts":1714000000000,"user_id":"u","product_id":"P1"}',  # duplicate key
    b'{"event_id":"e","ts":"2026-01-01T10:00:00Z","user_id":"u","product_id":"\xc3\x28"}',  # invalid UTF-8
]

ODD_BUT_VALID = {HOSTILE_LITERALS[14], HOSTILE_LITERALS[19]}  # NUL/RTL in an id; a duplicate key (last wins)

GARBAGE = st.one_of(
    st.binary(max_size=2_000),
    st.sampled_from(HOSTILE_LITERALS),
    JSON_VALUES.map(orjson.dumps),
    st.none(),
)


def _any_record(kind: str) -> st.SearchStrategy[bytes | None]:
    return st.one_of(GARBAGE, mutated_records(kind), st.just(orjson.dumps(VALID[kind])))


# -- decoders -----------------------------------------------------------------------------------------


def _check_event(kind: str, result: object) -> None:
    """An event's fields have the types the engine relies on; otherwise it is a DecodeError with a reason."""
    if isinstance(result, DecodeError):
        assert result.kind in ("not_json", "schema", "oversize")
        assert isinstance(result.message, str) and result.message
        return
    assert isinstance(result, EVENT_TYPES[kind]), result
    assert type(result.ts_ms) is int
    if isinstance(result, Order):
        assert result.items
        for it in result.items:
            assert isinstance(it.product_id, str) and it.product_id
            assert type(it.quantity) is int and it.quantity >= 1
            assert isinstance(it.unit_price, float) and math.isfinite(it.unit_price) and it.unit_price >= 0
    else:
        assert isinstance(result.product_id, str) and result.product_id
        result.product_id.encode()
    if isinstance(result, Review):
        assert result.rating is None or type(result.rating) is int  # keys are encoded for Kafka: no lone surrogates may get through


@FUZZ
@given(data=st.data())
def test_clicks_decoder_never_raises(data: st.DataObject) -> None:
    _check_event("clicks", decode_click(data.draw(_any_record("clicks"))))


@FUZZ
@given(data=st.data())
def test_orders_decoder_never_raises(data: st.DataObject) -> None:
    _check_event("orders", decode_order(data.draw(_any_record("orders"))))


@FUZZ
@given(data=st.data())
def test_reviews_decoder_never_raises(data: st.DataObject) -> None:
    _check_event("reviews", decode_review(data.draw(_any_record("reviews"))))


@FUZZ
@given(kind=st.sampled_from(sorted(DECODERS)), ts=TIMESTAMPS)
@example(kind="clicks", ts="0001-01-01T00:00:00+23:59")
@example(kind="clicks", ts="9999-12-31T23:59:59.999-23:59")
@example(kind="reviews", ts="2026-12-31T23:59:60Z")
@example(kind="orders", ts=1e300)
@example(kind="orders", ts=1.5)
def test_any_timestamp_decodes_or_is_a_schema_error(kind: str, ts: Any) -> None:
    raw = orjson.dumps({**VALID[kind], "ts": ts})
    result = DECODERS[kind](raw)
    _check_event(kind, result)
    if isinstance(result, DecodeError):
        assert result.kind == "schema"


@given(kind=st.sampled_from(sorted(DECODERS)), literal=st.sampled_from(HOSTILE_LITERALS))
@settings(max_examples=len(HOSTILE_LITERALS) * 3, deadline=None)
def test_hostile_literals_are_decode_errors(kind: str, literal: bytes) -> None:
    result = DECODERS[kind](literal)
    _check_event(kind, result)
    if literal not in ODD_BUT_VALID:
        assert isinstance(result, DecodeError)


def test_ten_thousand_nested_arrays_are_not_json_not_a_crash() -> None:
    for kind, decode in DECODERS.items():
        result = decode(_nested(10_000, b"[", b"]"))
        assert isinstance(result, DecodeError) and result.kind == "not_json", (kind, result)


def test_escaped_lone_surrogate_is_not_json() -> None:
    result = decode_click(HOSTILE_LITERALS[12])
    assert isinstance(result, DecodeError) and result.kind == "not_json"


def test_integral_float_quantity_and_rating_come_out_as_ints() -> None:
    # found by the fuzzer: JSON Schema accepts 1.0 as an integer; a float quantity then failed the
    # forwarded order line's type check on the other partition and was dead-lettered there
    order = decode_order(orjson.dumps({**ORDER, "items": [{"product_id": "P", "quantity": 1.0, "unit_price": 5}]}))
    assert isinstance(order, Order) and type(order.items[0].quantity) is int
    review = decode_review(orjson.dumps({**REVIEW, "rating": 4.0}))
    assert isinstance(review, Review) and type(review.rating) is int and review.rating == 4


def test_nul_and_rtl_marks_in_ids_are_kept_as_data() -> None:
    result = decode_click(HOSTILE_LITERALS[14])
    assert isinstance(result, Click) and result.product_id == "P\x00\u202e1"


# -- the forwarded order-line decoder (internal topic, but still bytes from Kafka) ----------------------


def _check_item(result: object) -> None:
    if isinstance(result, DecodeError):
        assert result.kind == "schema" and result.message
        return
    assert isinstance(result, tuple)
    ts, item = result[0], result[1]  # (ts, item, ...): what the runtime needs to count the line
    assert type(ts) is int
    assert isinstance(item, OrderItem)
    assert isinstance(item.product_id, str) and item.product_id
    item.product_id.encode()
    assert type(item.quantity) is int and item.quantity >= 1
    assert isinstance(item.unit_price, (int, float)) and math.isfinite(item.unit_price) and item.unit_price >= 0
    assert item.category is None or isinstance(item.category, str)


@st.composite
def mutated_lines(draw: st.DrawFn) -> bytes:
    obj: dict[str, Any] = dict(ITEM_LINE)
    for field in draw(st.lists(st.sampled_from(sorted(obj)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del obj[field]
        else:
            obj[field] = draw(st.one_of(JSON_VALUES, TIMESTAMPS))
    return orjson.dumps(obj)


@FUZZ
@given(raw=st.one_of(GARBAGE, mutated_lines(), st.just(orjson.dumps(ITEM_LINE))))
@example(raw=orjson.dumps({**ITEM_LINE, "ts": "2026-01-01T00:00:00Z"}))
@example(raw=orjson.dumps({**ITEM_LINE, "product_id": 7}))
@example(raw=orjson.dumps({**ITEM_LINE, "quantity": "1"}))
@example(raw=orjson.dumps({**ITEM_LINE, "ts": None}))
@example(raw=b"[1, 2]")
@example(raw=b"7")
def test_forwarded_order_line_decoder_never_raises(raw: bytes | None) -> None:
    _check_item(_decode_item(raw, 1 << 20))


def test_forwarded_order_line_round_trips() -> None:
    result = _decode_item(orjson.dumps(ITEM_LINE), 1 << 20)
    assert isinstance(result, tuple)
    ts, item = result[0], result[1]
    assert ts == T_MS and item == OrderItem("P2", 1, 3.0, None)


# -- the runtime: every record is processed or dead-lettered, exactly once ------------------------------


def _records_strategy() -> st.SearchStrategy[list[tuple[str, bytes | None, int]]]:
    """(logical topic, value, partition) in arrival order; valid records get plausible ids and times."""
    def valid(kind: str) -> st.SearchStrategy[bytes]:
        return st.tuples(st.integers(0, 30), st.integers(-3_600_000, 600_000)).map(
            lambda t, k=kind: orjson.dumps(_retime(VALID[k], f"P{t[0]}", T_MS + t[1])))

    one = st.sampled_from(sorted(DECODERS)).flatmap(
        lambda kind: st.tuples(st.just(kind), st.one_of(valid(kind), valid(kind), _any_record(kind)),
                               st.integers(0, 3)))
    return st.lists(one, min_size=1, max_size=60)


def _retime(obj: dict[str, Any], pid: str, ts: int) -> dict[str, Any]:
    out = dict(obj, ts=ts)
    if "items" in out:
        out["items"] = [dict(out["items"][0], product_id=pid), dict(out["items"][1], product_id=pid + "b")]
    else:
        out["product_id"] = pid
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(batches=st.lists(st.tuples(_records_strategy(), st.integers(0, 120_000)), min_size=1, max_size=4))
async def test_runtime_accounts_for_every_record(batches: list[tuple[list[tuple[str, bytes | None, int]], int]]) -> None:
    sent: list[tuple[str, bytes | None, bytes, Any]] = []

    async def send(topic: str, key: bytes | None, value: bytes, headers: Any) -> None:
        sent.append((topic, key, value, headers))

    clock = FakeClock(T_MS)
    rt = Runtime(Settings(max_record_bytes=64 * 1024), send, clock=clock)
    for unit in range(rt.partitions):
        for kind in DECODERS:
            rt.assign(kind, unit)
    offsets: Counter[tuple[str, int]] = Counter()
    fed: Counter[str] = Counter()
    forwarded_seen = 0
    for records, advance_ms in batches:
        by_topic: dict[str, list[Record]] = {}
        for kind, value, partition in records:
            off = offsets[(kind, partition)]
            offsets[(kind, partition)] += 1
            by_topic.setdefault(kind, []).append(Record(kind, partition, off, b"k", value, [("h", b"v")]))
            fed[kind] += 1
        for kind, recs in by_topic.items():
            await rt.on_records(kind, recs)
        # forwarded order lines come back on the internal topic, to their home partition
        lines = [s for s in sent[forwarded_seen:] if s[0] == ORDER_ITEMS]
        forwarded_seen = len(sent)
        if lines:
            await rt.on_records(ORDER_ITEMS, [
                Record("order-items", _home(key, rt.partitions), i, key, value) for i, (_t, key, value, _h)
                in enumerate(lines)])
        clock.advance(advance_ms)
        await rt.tick()

    reg = rt.metrics.registry
    dead_by_topic: Counter[str] = Counter()
    for topic, _key, value, headers in sent:
        if topic == "dead-letters":
            body = orjson.loads(value)
            src = body["source"]["topic"]
            dead_by_topic["order-items" if src == "order-items" else src] += 1
            assert dict(headers)["streamproc-error"].decode() == body["error"]["kind"]
    for kind in DECODERS:
        records_in = reg.get_sample_value("streamproc_records_in_total", {"topic": kind}) or 0
        processed = reg.get_sample_value("streamproc_records_processed_total", {"topic": kind}) or 0
        dead = sum(reg.get_sample_value("streamproc_dead_letters_total", {"topic": kind, "reason": r}) or 0
                   for r in ("not_json", "schema", "oversize", "late", "misrouted"))
        assert records_in == fed[kind]
        assert records_in == processed + dead, (kind, records_in, processed, dead)
        assert dead == dead_by_topic[kind]


def _home(key: bytes, partitions: int) -> int:
    from streamproc.runtime import partition_for

    return partition_for(key.decode(), partitions)


async def test_a_record_from_1970_does_not_make_the_worker_walk_every_minute_since() -> None:
    # found by the live fuzz test: the first record of a unit with ts=0 froze the worker for minutes, its
    # tick stepping through ~29 million empty minute buckets (one pass over every product each)
    async def send(*_a: Any) -> None:
        return None

    clock = FakeClock(T_MS)
    rt = Runtime(Settings(), send, clock=clock)
    rt.assign("clicks", 0)
    steps = 0
    close = rt.engine._close

    def counting_close(*args: Any) -> None:
        nonlocal steps
        steps += 1
        close(*args)

    rt.engine._close = counting_close  # type: ignore[method-assign]
    click = {"event_id": "e", "user_id": "u"}
    await rt.on_records("clicks", [Record("clicks", 0, 0, None, orjson.dumps({**click, "ts": 0, "product_id": "old"}))])
    await rt.tick()
    await rt.on_records("clicks", [Record("clicks", 0, 1, None, orjson.dumps({**click, "ts": T_MS, "product_id": "newer"}))])
    clock.advance(120_000)
    await rt.tick()
    assert steps < 5_000  # a day of minutes for the old product (then it is evicted), not 29 million
    assert "newer" in rt.engine.index  # on unit 0, as "old"
