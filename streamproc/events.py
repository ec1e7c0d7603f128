"""Input events and their decoding: raw Kafka bytes -> Click | Order | Review, or a DecodeError value.

Decoding never raises on bad input; errors come out as data next to good records so the worker can
send them to the dead-letter topic. JSON is parsed with orjson and checked against the JSON Schemas in
``schemas/`` (compiled once with fastjsonschema).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any, Literal

import fastjsonschema
import orjson

__all__ = [
    "Click",
    "Order",
    "OrderItem",
    "Review",
    "Event",
    "DecodeError",
    "decode_click",
    "decode_order",
    "decode_review",
    "decoder_for",
    "parse_ts",
    "load_schema",
    "DEFAULT_MAX_BYTES",
    "MAX_UNIT_PRICE",
]

DEFAULT_MAX_BYTES = 1 << 20
MAX_UNIT_PRICE = 1e12
"""Largest ``unit_price`` (the order schema's maximum): with at most 1e6 units a line and 1000 lines an order,
revenue sums stay far from float overflow."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

ErrorKind = Literal["not_json", "schema", "oversize", "late", "misrouted"]


@dataclass(frozen=True, slots=True)
class Click:
    """A product view or add-to-cart."""

    event_id: str
    ts_ms: int
    user_id: str
    product_id: str
    category: str | None
    action: str
    """``"view"`` or ``"add_to_cart"`` (absent in the input means ``"view"``)."""
    session_id: str | None


@dataclass(frozen=True, slots=True)
class OrderItem:
    """One line of an order."""

    product_id: str
    quantity: int
    unit_price: float
    category: str | None


@dataclass(frozen=True, slots=True)
class Order:
    """A placed order."""

    order_id: str
    ts_ms: int
    user_id: str
    items: tuple[OrderItem, ...]
    currency: str | None


@dataclass(frozen=True, slots=True)
class Review:
    """A product review."""

    review_id: str
    ts_ms: int
    user_id: str | None
    product_id: str
    rating: int | None
    title: str | None
    text: str
    lang: str | None


Event = Click | Order | Review


@dataclass(frozen=True, slots=True)
class DecodeError:
    """Why a record could not be processed; ``kind`` is the dead-letter reason."""

    kind: ErrorKind
    message: str


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``schemas/<name>.json`` shipped in the package."""
    text = resources.files("streamproc").joinpath("schemas", f"{name}.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator(name: str) -> Callable[[Any], Any]:
    return fastjsonschema.compile(load_schema(name))  # type: ignore[no-any-return]


def parse_ts(value: Any) -> int:
    """Event time in epoch milliseconds from an integer or an RFC 3339 string with offset."""
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():  # JSON Schema counts 1.0 as an integer
        return int(value)
    dt = datetime.fromisoformat(value.replace("z", "Z"))
    if dt.tzinfo is None:
        raise ValueError("timestamp has no UTC offset")
    return (dt - _EPOCH) // _MS  # exact: float timestamp() * 1000 loses a millisecond after 2038


def _load(raw: bytes | None, name: str, max_bytes: int) -> dict[str, Any] | DecodeError:
    if raw is None:
        return DecodeError("not_json", "empty record (no value)")
    if len(raw) > max_bytes:
        return DecodeError("oversize", f"record is {len(raw)} bytes, limit is {max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("number is infinity"):  # valid JSON syntax, but no finite number: out of range
            return DecodeError("schema", f"{name}: number out of range: {exc}")
        return DecodeError("not_json", f"not JSON: {exc}")
    if type(obj) is not dict:
        return DecodeError("schema", f"expected a JSON object, got {type(obj).__name__}")
    try:
        _validator(name)(obj)
    except fastjsonschema.JsonSchemaValueException as exc:
        return DecodeError("schema", f"{name}: {exc.message}")
    return obj


def _ts(obj: dict[str, Any]) -> int | DecodeError:
    try:
        return parse_ts(obj["ts"])
    except (ValueError, OverflowError) as exc:
        return DecodeError("schema", f"bad ts {obj['ts']!r}: {exc}")


def decode_click(raw: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> Click | DecodeError:
    """Decode one ``clicks`` record."""
    obj = _load(raw, "click", max_bytes)
    if isinstance(obj, DecodeError):
        return obj
    ts = _ts(obj)
    if isinstance(ts, DecodeError):
        return ts
    return Click(
        event_id=obj["event_id"],
        ts_ms=ts,
        user_id=obj["user_id"],
        product_id=obj["product_id"],
        category=obj.get("category"),
        action=obj.get("action") or "view",
        session_id=obj.get("session_id"),
    )


def decode_order(raw: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> Order | DecodeError:
    """Decode one ``orders`` record."""
    obj = _load(raw, "order", max_bytes)
    if isinstance(obj, DecodeError):
        return obj
    ts = _ts(obj)
    if isinstance(ts, DecodeError):
        return ts
    items = tuple(
        OrderItem(
            product_id=it["product_id"],
            quantity=int(it["quantity"]),  # JSON Schema counts 2.0 as an integer; the engine wants an int
            unit_price=float(it["unit_price"]),
            category=it.get("category"),
        )
        for it in obj["items"]
    )
    return Order(order_id=obj["order_id"], ts_ms=ts, user_id=obj["user_id"], items=items, currency=obj.get("currency"))


def decode_review(raw: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> Review | DecodeError:
    """Decode one ``reviews`` record."""
    obj = _load(raw, "review", max_bytes)
    if isinstance(obj, DecodeError):
        return obj
    ts = _ts(obj)
    if isinstance(ts, DecodeError):
        return ts
    return Review(
        review_id=obj["review_id"],
        ts_ms=ts,
        user_id=obj.get("user_id"),
        product_id=obj["product_id"],
        rating=None if obj.get("rating") is None else int(obj["rating"]),  # 4.0 is an integer to JSON Schema
        title=obj.get("title"),
        text=obj["text"],
        lang=obj.get("lang"),
    )


_DECODERS: dict[str, Callable[[bytes | None, int], Event | DecodeError]] = {
    "clicks": decode_click,
    "orders": decode_order,
    "reviews": decode_review,
}


def decoder_for(logical_topic: str) -> Callable[[bytes | None, int], Event | DecodeError]:
    """The decoder of an input topic by its logical name (``clicks``, ``orders``, ``reviews``)."""
    return _DECODERS[logical_topic]
