"""The worker's HTTP API over a Runtime fed directly (no broker): health, features and their freshness,
trending, alerts and metrics. Time is a FakeClock."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamproc.clock import FakeClock
from streamproc.runtime import Record, Runtime
from streamproc.settings import Settings
from streamproc.web import make_web_app
from streamproc.windows import WindowSpec

MIN = 60_000
HOUR = 60 * MIN
T0 = 1_700_006_400_000 - 1_700_006_400_000 % (24 * HOUR)  # midnight UTC
SETTINGS = Settings(partitions=1, feature_max_age_ms=10 * MIN,
                    window=WindowSpec(bucket_ms=MIN, allowed_lateness_ms=5_000, idle_timeout_ms=5_000))

Sent = list[tuple[str, bytes | None, bytes, Any]]


class World:
    """A runtime with a fake clock whose outputs go to a list."""

    def __init__(self, settings: Settings = SETTINGS, start_ms: int = T0) -> None:
        self.clock = FakeClock(start_ms)
        self.sent: Sent = []
        self.offsets: dict[str, int] = {}
        self.settings = settings
        self.runtime = Runtime(settings, self.send, clock=self.clock)

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Any) -> None:
        self.sent.append((topic, key, value, headers))

    async def records(self, topic: str, *values: bytes | dict[str, Any]) -> None:
        recs = []
        for v in values:
            off = self.offsets.get(topic, 0)
            self.offsets[topic] = off + 1
            raw = v if isinstance(v, bytes) else orjson.dumps(v)
            recs.append(Record(topic, 0, off, None, raw))
        await self.runtime.on_records(topic, recs)

    def published(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(v) for t, _, v, _ in self.sent if t == topic]


def click(pid: str, ts: int, i: int = 0) -> dict[str, Any]:
    return {"event_id": f"e-{pid}-{ts}-{i}", "ts": ts, "user_id": "u", "product_id": pid, "category": "shoes"}


def order(pid: str, ts: int, qty: int = 1, price: float = 10.0, i: int = 0) -> dict[str, Any]:
    return {"order_id": f"o-{pid}-{ts}-{i}", "ts": ts, "user_id": "u",
            "items": [{"product_id": pid, "quantity": qty, "unit_price": price, "category": "shoes"}]}


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
async def client(aiohttp_client: Any, world: World) -> Any:
    return await aiohttp_client(make_web_app(world.runtime, world.settings))


async def get_json(client: Any, path: str, status: int = 200) -> Any:
    resp = await client.get(path)
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    return await resp.json()


# -- health --------------------------------------------------------------------------------------


async def test_healthz_is_200(client: Any) -> None:
    assert (await get_json(client, "/healthz")) == {"status": "ok"}


async def test_readyz_is_503_until_the_runtime_is_ready(client: Any, world: World) -> None:
    assert (await get_json(client, "/readyz", 503)) == {"ready": False}
    world.runtime.ready = True
    assert (await get_json(client, "/readyz")) == {"ready": True}


# -- features ------------------------------------------------------------------------------------


async def feed_first_minute(world: World) -> None:
    #   T0 (wall = event time)   +1m           +1m10
    #   [  b0: P1 3 clicks, 1 order (2 x 10.0), P2 1 click  )[ clicks at 1m10 -> wm 1m05: b0 final
    await world.records("clicks", click("P1", T0 + 5_000), click("P1", T0 + 15_000, 1), click("P1", T0 + 25_000, 2),
                        click("P2", T0 + 30_000))
    await world.records("orders", order("P1", T0 + 20_000, qty=2))
    world.clock.advance(70_000)
    await world.records("clicks", click("P3", T0 + 70_000))
    await world.records("orders", order("P3", T0 + 70_000))
    await world.runtime.tick()


async def test_features_not_found_then_present_after_the_window_closes(client: Any, world: World) -> None:
    # A single-resource GET for a product with no features yet is a 404, with the same body shape.
    assert (await get_json(client, "/features/P1", 404)) == {
        "product_id": "P1", "status": "NOT_FOUND", "as_of_ms": None, "features": {}}
    await feed_first_minute(world)
    body = await get_json(client, "/features/P1")
    assert body["status"] == "PRESENT"
    assert body["product_id"] == "P1" and body["as_of_ms"] == T0 + MIN
    f = body["features"]
    assert (f["clicks_5m"], f["orders_5m"], f["units_5m"], f["revenue_5m"]) == (3, 1, 2, 20.0)
    assert f["conversion_5m"] == pytest.approx(1 / 3)
    for name in ("clicks_5m", "orders_5m", "units_5m", "revenue_5m", "conversion_5m", "units_1h",
                 "expected_units_next_5m", "surge_score", "reviews_24h", "sentiment_mean_24h",
                 "negative_share_24h"):
        assert name in f
    # the same record was published on product-features
    published = [r for r in world.published("product-features") if r["product_id"] == "P1"]
    assert published and published[-1]["features"] == f
    # a product still inside its open window is not served yet
    assert (await get_json(client, "/features/P3", 404))["status"] == "NOT_FOUND"


async def test_features_outside_max_age_when_not_recomputed_for_too_long(client: Any, world: World) -> None:
    await feed_first_minute(world)
    world.clock.advance(SETTINGS.feature_max_age_ms)
    assert (await get_json(client, "/features/P1"))["status"] == "PRESENT"  # exactly at the limit
    world.clock.advance(1)
    stale = await get_json(client, "/features/P1")
    assert stale["status"] == "OUTSIDE_MAX_AGE"
    assert stale["as_of_ms"] == T0 + MIN and stale["features"]["clicks_5m"] == 3  # still shown, marked stale


async def test_features_for_several_ids(client: Any, world: World) -> None:
    await feed_first_minute(world)
    body = await get_json(client, "/features?ids=P1,NOPE,P2")
    assert [(r["product_id"], r["status"]) for r in body["results"]] == [
        ("P1", "PRESENT"), ("NOPE", "NOT_FOUND"), ("P2", "PRESENT")]
    assert body["results"][2]["features"]["clicks_5m"] == 1
    await get_json(client, "/features", 400)
    await get_json(client, "/features?ids=" + ",".join(f"P{i}" for i in range(1001)), 400)


# -- trending and alerts: a real surge through the runtime ---------------------------------------


async def surge(world: World) -> None:
    """26 hours of orders for HOT and STEADY (5-minute buckets); HOT surges 20-fold in hour 25."""
    rng = random.Random(4)
    bucket = world.settings.window.bucket_ms
    for b in range(26 * HOUR // bucket):
        ts = T0 + b * bucket
        values = [order("STEADY", ts + rng.randrange(bucket), i=b), order("HOT", ts + rng.randrange(bucket), i=b)]
        if b in (25 * 12, 25 * 12 + 1):
            values += [order("HOT", ts + rng.randrange(bucket), i=1000 * b + k) for k in range(30)]
        world.clock.advance(ts + bucket - world.clock.now_ms())
        await world.records("orders", *values)
        await world.runtime.tick()


@pytest.fixture
async def surged(aiohttp_client: Any) -> tuple[Any, World]:
    w = World(Settings(partitions=1, window=WindowSpec(bucket_ms=5 * MIN, allowed_lateness_ms=5_000,
                                                       idle_timeout_ms=5_000)))
    await surge(w)
    return await aiohttp_client(make_web_app(w.runtime, w.settings)), w


async def test_trending_ranks_the_surging_product_first(surged: tuple[Any, World]) -> None:
    client, _ = surged
    body = await get_json(client, "/trending?signal=orders&limit=5")
    assert body["signal"] == "orders"
    ranked = body["products"]
    assert [p["product_id"] for p in ranked] == ["HOT", "STEADY"]
    assert ranked[0]["firing"] is True and ranked[1]["firing"] is False
    assert ranked[0]["surge_score"] > ranked[1]["surge_score"]
    assert [p["product_id"] for p in (await get_json(client, "/trending?limit=1"))["products"]] == ["HOT"]
    await get_json(client, "/trending?signal=reviews", 400)
    await get_json(client, "/trending?limit=many", 400)


async def test_alerts_lists_the_open_incident(surged: tuple[Any, World]) -> None:
    client, world = surged
    firing = (await get_json(client, "/alerts"))["alerts"]
    assert [a["dedup_key"] for a in firing] == ["demand_surge:orders:HOT"]
    a = firing[0]
    assert a["status"] == "firing" and a["labels"]["product_id"] == "HOT"
    assert a == (await get_json(client, "/alerts?status=firing"))["alerts"][0]
    assert [x["alert_id"] for x in world.published("alerts")] == [a["alert_id"]]  # also on the alerts topic
    assert (await get_json(client, "/alerts?status=resolved"))["alerts"] == []
    assert [x["alert_id"] for x in (await get_json(client, "/alerts?status=all"))["alerts"]] == [a["alert_id"]]
    await get_json(client, "/alerts?status=bogus", 400)


async def test_alerts_empty_before_anything_happened(client: Any) -> None:
    assert (await get_json(client, "/alerts"))["alerts"] == []


# -- metrics -------------------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_count_every_record_as_processed_or_dead_lettered(client: Any, world: World) -> None:
    await world.records("clicks", click("P1", T0 + 1_000), b"not json", orjson.dumps({"ts": T0}),
                        click("P1", T0 + 2_000, 1), b"x" * (SETTINGS.max_record_bytes + 1))
    await world.records("orders", order("P1", T0 + 3_000), orjson.dumps(order("P1", T0, qty=0)))
    world.clock.advance(10 * MIN)
    await world.records("clicks", click("P2", T0 + 10 * MIN))
    await world.runtime.tick()
    await world.records("clicks", click("P1", T0 + 1_000, 9))  # its window is final now: late
    await world.records("reviews", orjson.dumps({"review_id": "r1", "ts": T0 + 10 * MIN, "product_id": "P1",
                                                 "text": "great"}))

    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    m = samples(await resp.text())
    for topic, n_in, n_ok in (("clicks", 7, 3), ("orders", 2, 1), ("reviews", 1, 1)):
        records_in = m[("streamproc_records_in_total", (("topic", topic),))]
        processed = m[("streamproc_records_processed_total", (("topic", topic),))]
        dead = sum(v for (name, labels), v in m.items()
                   if name == "streamproc_dead_letters_total" and ("topic", topic) in labels)
        assert (records_in, processed, dead) == (n_in, n_ok, n_in - n_ok), topic
    reasons = {dict(labels)["reason"]: v for (name, labels), v in m.items()
               if name == "streamproc_dead_letters_total" and ("topic", "clicks") in labels}
    assert reasons == {"not_json": 1, "schema": 1, "oversize": 1, "late": 1}
    assert len(world.published("dead-letters")) == 5
    assert m[("streamproc_features_published_total", ())] >= 1
