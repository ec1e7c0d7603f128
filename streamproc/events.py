"""Input events and their decoding: raw Kafka bytes -> Click | Order | Review, or a DecodeError value.

Decoding never raises on bad input; errors come out as data next to good records so the worker can
send them to the dead-letter topic. JSON is parsed with orjson and checked against the JSON Schemas in
``schemas/``: first by a fast check compiled from the same schema (plain ``type(x) is ...`` tests, no
exceptions), which only ever accepts what the schema accepts; a record it does not accept goes to
fastjsonschema, which has the last word and the error message.
"""

from __future__ import annotations

import copy
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
    # a copy: fastjsonschema rewrites every "$ref" of the schema it is given into an absolute URI
    return fastjsonschema.compile(copy.deepcopy(load_schema(name)))  # type: ignore[no-any-return]


_TYPE_TESTS = {"string": "type({v}) is str", "integer": "type({v}) is int", "number": "type({v}) in (int, float)",
               "null": "{v} is None", "object": "type({v}) is dict", "array": "type({v}) is list",
               "boolean": "type({v}) is bool"}
_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description", "examples", "$comment", "default"}


class _FastCheck:
    """Compiles a JSON Schema into one Python expression that is True only for instances the schema accepts
    (a sufficient test). Keywords it does not model (``pattern``, ``format``, ...) make their subschema
    False, and overlapping ``oneOf`` branches too: such records take fastjsonschema's path."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.funcs: list[str] = []
        self.n = 0

    def var(self) -> str:
        self.n += 1
        return f"v{self.n}"

    def expr(self, schema: Any, v: str) -> str:  # noqa: C901 - one branch per keyword
        if schema is True or schema == {}:
            return "True"
        if not isinstance(schema, dict):
            return "False"
        if "$ref" in schema:
            ref = schema["$ref"]
            ref = ref[len(self.root.get("$id", "")):] if ref.startswith(self.root.get("$id", "") + "#") else ref
            if not ref.startswith("#/$defs/") or len(schema) > 1:  # (the absolute form: fastjsonschema's rewrite)
                return "False"
            return self.expr(self.root["$defs"][ref[len("#/$defs/"):]], v)
        parts: list[str] = []
        types = schema.get("type")
        types = [types] if isinstance(types, str) else types
        only = types[0] if types and len(types) == 1 else None

        def when(kind: tuple[str, ...], test: str, cond: str) -> str:
            return cond if only in kind else f"({test} or {cond})"  # a keyword applies to its types only

        lo, hi = schema.get("minLength"), schema.get("maxLength")
        if (lo is None or type(lo) is int) and (hi is None or type(hi) is int) and (lo is not None or hi is not None):
            bounds = f"{lo} <= len({v})" if lo is not None else f"len({v})"
            parts.append(when(("string",), f"type({v}) is not str", bounds + (f" <= {hi}" if hi is not None else "")))
        required: list[Any] = schema["required"] if isinstance(schema.get("required"), list) else []
        props: dict[str, Any] = schema["properties"] if isinstance(schema.get("properties"), dict) else {}
        for key, val in schema.items():
            if key in _ANNOTATIONS or key in ("type", "minLength", "maxLength") and (key == "type" or type(val) is int):
                continue
            if key == "required" and props and all(type(x) is str for x in val):  # with "properties" below
                parts.extend(when(("object",), f"type({v}) is not dict", f"{k!r} in {v}") for k in val if k not in props)
            elif key in ("minimum", "maximum") and type(val) in (int, float):
                op = ">=" if key == "minimum" else "<="
                parts.append(when(("integer", "number"), f"type({v}) not in (int, float)", f"{v} {op} {val!r}"))
            elif key in ("minItems", "maxItems") and type(val) is int:
                op = ">=" if key == "minItems" else "<="
                parts.append(when(("array",), f"type({v}) is not list", f"len({v}) {op} {val}"))
            elif key == "enum" and val and all(type(x) is str for x in val):
                parts.append(f"(type({v}) is str and {v} in {tuple(val)!r})")
            elif key == "required" and all(type(x) is str for x in val):
                parts.extend(when(("object",), f"type({v}) is not dict", f"{k!r} in {v}") for k in val)
            elif key == "properties":
                for k, sub in val.items():
                    w = self.var()
                    check = (f"(({w} := {v}.get({k!r}, _MISSING)) is not _MISSING and {self.expr(sub, w)})"
                             if k in required else
                             f"(({w} := {v}.get({k!r}, _MISSING)) is _MISSING or {self.expr(sub, w)})")
                    parts.append(when(("object",), f"type({v}) is not dict", check))
            elif key == "items" and isinstance(val, dict):
                f = f"_f{len(self.funcs)}"
                self.funcs.append("")
                w = self.var()
                self.funcs[int(f[2:])] = f"def {f}({w}):\n    return {self.expr(val, w)}\n"
                parts.append(when(("array",), f"type({v}) is not list", f"all(map({f}, {v}))"))
            elif key in ("oneOf", "anyOf") and isinstance(val, list):
                branch_types = [b.get("type") if isinstance(b, dict) else None for b in val]
                flat = [t for t in branch_types for t in ([t] if isinstance(t, str) else (t or [None]))]
                if key == "oneOf" and (None in flat or len(flat) != len(set(flat)) or "number" in flat):
                    return "False"  # branches may overlap: only fastjsonschema can count the matches
                parts.append("(" + " or ".join(self.expr(b, v) for b in val) + ")")
            else:
                return "False"
        if types is not None:
            if not all(t in _TYPE_TESTS for t in types):
                return "False"
            parts.insert(0, "(" + " or ".join(_TYPE_TESTS[t].format(v=v) for t in types) + ")")
        return "(" + " and ".join(parts) + ")" if parts else "True"

    def compile(self) -> Callable[[Any], bool]:
        body = self.expr(self.root, "v0")
        src = "".join(self.funcs) + f"def check(v0):\n    return {body}\n"
        ns: dict[str, Any] = {"_MISSING": object()}
        exec(compile(src, "<fastcheck>", "exec"), ns)  # noqa: S102 - code generated from our own schemas
        return ns["check"]  # type: ignore[no-any-return]


@cache
def _fast_check(name: str) -> Callable[[Any], bool]:
    """A check that accepts only records valid under schema ``name`` (most valid ones: the common shape)."""
    return _FastCheck(load_schema(name)).compile()


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
    if _fast_check(name)(obj):
        return obj
    try:
        _validator(name)(obj)
    except fastjsonschema.JsonSchemaValueException as exc:
        return DecodeError("schema", f"{name}: {exc.message}")
    return obj


def _ts(obj: dict[str, Any]) -> int | DecodeError:
    ts = obj["ts"]
    if type(ts) is int:
        return ts
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
