"""The dashboard's data and delivery over a Runtime fed directly (no broker): the page and its packaged
assets, /dashboard/state (alerts with evidence and silences, trending with last-hour series, sentiment
without a model, health), the server-sent event stream, and the metrics they share. Time is a FakeClock."""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamproc import alerts as alerts_mod
from streamproc.clock import FakeClock
from streamproc.dashboard import product_series
from streamproc.observability import RateTracker, record_consumer_lag
from streamproc.runtime import Record, Runtime
from streamproc.settings import Settings
from streamproc.silences import SilenceService, SilenceStore
from streamproc.web import make_web_app
from streamproc.windows import WindowSpec

MIN = 60_000
HOUR = 60 * MIN
T0 = 1_700_006_400_000 - 1_700_006_400_000 % (24 * HOUR)
# Snapshots of any age 0: each request sees the state the test just changed (read_model.py).
SETTINGS = Settings(partitions=1, window=WindowSpec(bucket_ms=MIN, allowed_lateness_ms=5_000, idle_timeout_ms=5_000),
                    web_snapshot_max_age_ms=0)


class World:
    def __init__(self) -> None:
        self.clock = FakeClock(T0)
        self.sent: list[Any] = []
        self.offsets: dict[str, int] = {}
        self.runtime = Runtime(SETTINGS, self.send, clock=self.clock)
        self.silences = SilenceService(SilenceStore())

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Any) -> None:
        self.sent.append((topic, key, value, headers))

    async def records(self, topic: str, *values: bytes | dict[str, Any]) -> None:
        recs = []
        for v in values:
            off = self.offsets.get(topic, 0)
            self.offsets[topic] = off + 1
            recs.append(Record(topic, 0, off, None, v if isinstance(v, bytes) else orjson.dumps(v)))
        await self.runtime.on_records(topic, recs)

    async def minutes(self, n: int, clicks_per_min: int = 2, orders_per_min: int = 1) -> None:
        """``n`` minutes of steady traffic on P1; the wall clock follows event time, so idle streams let
        every minute close (the last one 10 s after its end)."""
        for m in range(n):
            start = T0 + m * MIN
            await self.records("clicks", *[click("P1", start + 1000 * i, i) for i in range(clicks_per_min)])
            await self.records("orders", *[order("P1", start + 2000 + 1000 * i, i) for i in range(orders_per_min)])
            self.clock.advance(MIN if m < n - 1 else MIN + 10_000)
            await self.runtime.tick()


def click(pid: str, ts: int, i: int = 0) -> dict[str, Any]:
    return {"event_id": f"e-{pid}-{ts}-{i}", "ts": ts, "user_id": "u", "product_id": pid, "category": "shoes"}


def order(pid: str, ts: int, i: int = 0) -> dict[str, Any]:
    return {"order_id": f"o-{pid}-{ts}-{i}", "ts": ts, "user_id": "u",
            "items": [{"product_id": pid, "quantity": 1, "unit_price": 10.0, "category": "shoes"}]}


def review(pid: str, ts: int, i: int = 0) -> dict[str, Any]:
    return {"review_id": f"r-{pid}-{ts}-{i}", "ts": ts, "product_id": pid, "rating": 1, "text": "broke on day one"}


def fire(world: World, pid: str = "P1", *, alertname: str = "demand_surge", snippets: list[str] | None = None
         ) -> dict[str, Any]:
    """Open an incident on a product as the engine would."""
    alert = alerts_mod.new_alert(alertname=alertname, signal="orders", product_id=pid, category="shoes",
                                 severity="critical", window_start_ms=T0, window_end_ms=T0 + MIN, observed=40,
                                 expected=4, score=0.99,
                                 evidence={"review_ids": ["r1"], "snippets": snippets} if snippets else None)
    world.runtime.engine.index[pid].incidents["orders"] = alert
    return alert


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
async def client(aiohttp_client: Any, world: World) -> Any:
    return await aiohttp_client(make_web_app(world.runtime, SETTINGS, world.silences))


async def state(client: Any) -> dict[str, Any]:
    resp = await client.get("/dashboard/state")
    assert resp.status == 200 and resp.content_type == "application/json"
    return await resp.json()


# -- the page -----------------------------------------------------------------------------------------


async def test_page_and_its_assets_are_served_from_the_package_without_outside_links(client: Any) -> None:
    page = await client.get("/")
    html = await page.text()
    assert page.status == 200 and page.content_type == "text/html"
    for asset, ctype in (("/static/dashboard.js", "application/javascript"), ("/static/dashboard.css", "text/css")):
        assert asset in html
        resp = await client.get(asset)
        assert resp.status == 200 and resp.content_type == ctype
    for name in ("index.html", "dashboard.js", "dashboard.css"):
        text = resources.files("streamproc").joinpath("static", name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
    assert (await client.get("/static/../settings.py")).status == 404
    assert (await client.get("/static/nothing.js")).status == 404


# -- state ----------------------------------------------------------------------------------------------


async def test_trending_rows_carry_the_last_hour_of_bucket_counts(client: Any, world: World) -> None:
    await world.minutes(3, clicks_per_min=2, orders_per_min=1)
    body = await state(client)
    orders = body["trending"]["orders"]
    clicks = body["trending"]["clicks"]
    assert [p["product_id"] for p in orders] == ["P1"] and [p["product_id"] for p in clicks] == ["P1"]
    # 60 one-minute buckets ending with the newest closed one; three minutes counted so far
    assert len(orders[0]["series"]) == 60
    assert orders[0]["series"][-3:] == [1, 1, 1] and sum(orders[0]["series"]) == 3
    assert clicks[0]["series"][-3:] == [2, 2, 2]
    assert orders[0]["orders_5m"] == 3 and orders[0]["firing"] is False


def test_series_puts_zeros_where_nothing_happened_and_drops_what_is_older_than_an_hour() -> None:
    from streamproc.demand import ProductState

    counts = [0.0] * 9
    counts[2] = 5  # ORDERS
    p = ProductState("P", next_close_ms=T0 + HOUR, minutes={T0 - MIN: counts, T0 + 30 * MIN: counts,
                                                            T0 + HOUR - MIN: counts})
    s = product_series(p, "orders", MIN)
    #   T0-1m (too old) | T0 ... T0+30m ... T0+59m |
    assert len(s) == 60 and s[30] == 5 and s[-1] == 5 and sum(s) == 10


async def test_firing_alerts_show_evidence_snippets_and_the_silences_muting_them(client: Any, world: World) -> None:
    await world.minutes(2)
    alert = fire(world, alertname="negative_review_spike", snippets=["broke on day one", "碎了"])
    body = await state(client)
    assert [a["dedup_key"] for a in body["alerts"]] == [alert["dedup_key"]]
    assert body["alerts"][0]["evidence"]["snippets"] == ["broke on day one", "碎了"]
    assert body["alerts"][0]["silenced_by"] == [] and body["silences_enabled"] is True
    # what the page's Silence button sends: the alert's labels but severity, ending in two hours
    matchers = [{"name": k, "value": v, "isRegex": False, "isEqual": True}
                for k, v in alert["labels"].items() if k != "severity"]
    resp = await client.post("/silences", json={"matchers": matchers, "endsAt": T0 + 4 * HOUR,
                                                "comment": "from the dashboard", "createdBy": "dashboard"})
    assert resp.status == 200, await resp.text()
    sid = (await resp.json())["silenceID"]
    body = await state(client)
    assert body["alerts"][0]["silenced_by"] == [sid] and body["silences_active"] == 1


async def test_sentiment_is_listed_per_reviewed_product_with_null_scores_until_a_model_ships(
        client: Any, world: World) -> None:
    await world.records("reviews", review("P1", T0 + 1000), review("P1", T0 + 2000, 1))
    await world.minutes(2)
    body = await state(client)
    assert body["sentiment_model"] is False
    assert body["sentiment"] == [{"product_id": "P1", "category": "shoes", "reviews_24h": 2,
                                  "sentiment_mean_24h": None, "negative_share_24h": None, "negative_24h": None,
                                  "firing": False, "negative_share_adjusted_24h": None}]
    assert body["negative_share_shop_24h"] is None


def _reviewed(world: World, pid: str, reviews: int, negative: int) -> None:
    """A product whose latest features record counts ``negative`` of ``reviews`` scored reviews as negative."""
    from streamproc.demand import ProductState

    p = world.runtime.engine.index.setdefault(pid, ProductState(pid, next_close_ms=T0 + MIN, category="shoes"))
    p.features = {"product_id": pid, "features": {"reviews_24h": float(reviews), "sentiment_mean_24h": 0.0,
                                                  "negative_share_24h": negative / reviews}}


async def test_sentiment_ranks_by_evidence_not_by_the_share_of_a_single_review(client: Any, world: World) -> None:
    _reviewed(world, "ONE-BAD", 1, 1)        # 100 % of one review
    _reviewed(world, "MANY-BAD", 40, 24)     # 60 % of forty
    _reviewed(world, "SOME-BAD", 10, 6)      # 60 % of ten
    _reviewed(world, "FINE", 50, 2)
    body = await state(client)
    rows = body["sentiment"]
    assert [r["product_id"] for r in rows] == ["MANY-BAD", "SOME-BAD", "ONE-BAD", "FINE"]
    assert (rows[0]["negative_24h"], rows[2]["negative_24h"]) == (24, 1)
    assert body["negative_share_shop_24h"] == pytest.approx(33 / 101)
    # 24 of 40 plus 10 reviews at the shop's 33/101: (24 + 10 * 33/101) / 50
    assert rows[0]["negative_share_adjusted_24h"] == pytest.approx((24 + 10 * 33 / 101) / 50, abs=1e-4)
    # an open negative-review incident goes first, whatever the counts
    fire(world, "FINE", alertname="negative_review_spike")
    assert [r["product_id"] for r in (await state(client))["sentiment"]][0] == "FINE"


async def test_trending_lists_only_products_with_activity_on_that_signal(client: Any, world: World) -> None:
    await world.records("clicks", click("BROWSED", T0 + 500))  # clicks, never an order
    await world.minutes(3)  # P1: clicks and orders every minute
    body = await state(client)
    assert [p["product_id"] for p in body["trending"]["orders"]] == ["P1"]
    assert {p["product_id"] for p in body["trending"]["clicks"]} == {"P1", "BROWSED"}
    # ties on the surge score are broken by the activity itself, the busiest first
    assert [p["product_id"] for p in body["trending"]["clicks"]] == ["P1", "BROWSED"]


async def test_snapshot_carries_wall_clock_and_event_time(client: Any, world: World) -> None:
    await world.minutes(2)
    body = await state(client)
    assert body["now_ms"] == world.clock.now_ms()
    wm = body["watermark_ms"]
    assert wm is not None and T0 + MIN <= wm <= world.clock.now_ms()


async def test_favicon_is_served(client: Any) -> None:
    for path in ("/favicon.ico", "/static/favicon.svg"):
        resp = await client.get(path)
        assert resp.status == 200 and resp.content_type == "image/svg+xml", path
        assert (await resp.read()).startswith(b"<svg")


async def test_health_counts_records_per_topic_dead_letters_and_watermark_delay(client: Any, world: World) -> None:
    await world.minutes(2)
    await world.records("clicks", b"not json")
    h = (await state(client))["health"]
    assert h["topics"]["clicks"]["records_total"] == 5 and h["topics"]["clicks"]["dead_letters_total"] == 1
    assert h["topics"]["orders"]["records_total"] == 2
    assert h["dead_letters_total"] == 1 and h["dead_letters_by_reason"] == {"not_json": 1}
    assert h["watermark_delay_s"].keys() == {"0"} and h["watermark_delay_max_s"] is not None
    assert h["webhooks"] == [] and h["webhooks_configured"] is False


# -- live updates -----------------------------------------------------------------------------------------


async def test_event_stream_pushes_state_snapshots_until_the_server_stops(client: Any, world: World) -> None:
    await world.minutes(1)
    resp = await client.get("/events/stream")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    events = []
    async with asyncio.timeout(10):
        while len(events) < 2:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if line.startswith("data: "):
                events.append(orjson.loads(line[6:]))
    assert {"alerts", "trending", "sentiment", "health"} <= events[0].keys()
    fire(world)
    async with asyncio.timeout(10):
        while True:
            line = (await resp.content.readline()).decode()
            if line.startswith("data: ") and orjson.loads(line[6:])["alerts"]:
                break  # the new incident arrives without a reload
    resp.close()


# -- metrics ------------------------------------------------------------------------------------------------


async def test_metrics_follow_prometheus_conventions_and_add_up(client: Any, world: World) -> None:
    await world.minutes(3)
    await world.records("clicks", b"{", click("P1", T0 - HOUR))  # not JSON; late
    fire(world)
    text = await (await client.get("/metrics")).text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind in (("streamproc_records_in", "counter"), ("streamproc_records_processed", "counter"),
                       ("streamproc_dead_letters", "counter"), ("streamproc_alerts", "counter"),
                       ("streamproc_webhook_deliveries", "counter"),
                       ("streamproc_batch_processing_seconds", "histogram"),
                       ("streamproc_window_close_latency_seconds", "histogram"),
                       ("streamproc_window_close_duration_seconds", "histogram"),
                       ("streamproc_watermark_delay_seconds", "gauge"), ("streamproc_consumer_lag_records", "gauge"),
                       ("streamproc_model_inference_seconds", "histogram"), ("streamproc_model_batch_size", "histogram"),
                       ("streamproc_table_keys", "gauge"), ("streamproc_alerts_firing", "gauge")):
        assert families[name].type == kind, name

    def total(name: str, **labels: str) -> float:
        return sum(s.value for s in families[name].samples if s.name == name + "_total"
                   and all(s.labels.get(k) == v for k, v in labels.items()))

    for topic in ("clicks", "orders"):
        assert total("streamproc_records_in", topic=topic) == (
            total("streamproc_records_processed", topic=topic) + total("streamproc_dead_letters", topic=topic))
    assert total("streamproc_dead_letters", topic="clicks") == 2
    tables = {s.labels["table"]: s.value for s in families["streamproc_table_keys"].samples}
    assert tables["products"] == 1
    firing = [(s.labels, s.value) for s in families["streamproc_alerts_firing"].samples]
    assert firing == [({"alertname": "demand_surge", "signal": "orders"}, 1.0)]
    latency = {s.name: s.value for s in families["streamproc_window_close_latency_seconds"].samples}
    assert latency["streamproc_window_close_latency_seconds_count"] == 3  # one per closed bucket


def test_consumer_lag_is_what_the_broker_holds_beyond_the_last_processed_offset() -> None:
    from aiokafka.structs import TopicPartition
    from prometheus_client import CollectorRegistry, Gauge

    g = Gauge("lag", "", ["topic", "partition"], registry=CollectorRegistry())
    a, b, c = TopicPartition("clicks", 0), TopicPartition("clicks", 1), TopicPartition("orders", 0)
    record_consumer_lag(g, {a: 100, b: 50, c: 10}, {("clicks", 0): 89}, {b: 40})
    values = {(s.labels["topic"], s.labels["partition"]): s.value for s in g.collect()[0].samples}
    assert values == {("clicks", "0"): 10, ("clicks", "1"): 10, ("orders", "0"): 10}
    record_consumer_lag(g, {a: 100}, {("clicks", 0): 99})  # b and c revoked: their series go away
    assert [(s.labels["partition"], s.value) for s in g.collect()[0].samples] == [("0", 0)]


def test_rates_come_from_samples_over_the_window_and_survive_a_counter_reset() -> None:
    now = [0.0]
    r = RateTracker(window_s=10, min_step_s=1, monotonic=lambda: now[0])
    assert r.rates({"x": 0}) == {"x": None}
    now[0] = 2
    assert r.rates({"x": 20}) == {"x": 10}
    now[0] = 2.5  # too soon for a new sample: same answer
    assert r.rates({"x": 999}) == {"x": 10}
    now[0] = 30
    assert r.rates({"x": 40}) == {"x": pytest.approx(20 / 28)}
    now[0] = 31
    assert r.rates({"x": 5}) == {"x": pytest.approx(5 / 29)}  # went down: counted from zero


def test_grafana_dashboard_plots_only_metrics_the_worker_exports() -> None:
    import json
    import re
    from pathlib import Path

    from streamproc.metrics import Metrics

    async def send(*_: Any) -> None:
        return None

    metrics = Metrics()
    Runtime(SETTINGS, send, metrics=metrics)  # binds the scrape-time collector
    families = {f.name: f.type for f in metrics.registry.collect()}
    dash = json.loads((Path(__file__).parents[2] / "deploy" / "grafana" / "streamproc.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\bstreamproc_[a-z_]+", e)}
    assert len(used) >= 15
    for name in used:
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        assert base in families or name in families, f"{name} is plotted but not exported"
        if name.endswith("_bucket"):
            assert families[base] == "histogram", name
    exported = {n for n in families if n.startswith("streamproc_")}
    plotted = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used} | used
    assert exported - plotted <= {"streamproc_products_tracked", "streamproc_webhook_retries",
                                  "streamproc_webhook_alerts"}, exported - plotted


# -- marketing triggers ---------------------------------------------------------------------------------


async def test_triggers_panel_counts_published_triggers_by_kind_and_lists_the_latest(aiohttp_client: Any) -> None:
    """Customers through the runtime (forwarded and read back by the testing harness): a browse loop and an
    abandoned cart. The dashboard counts what went to ``marketing-triggers``, newest first; an erased
    customer leaves the latest list (the counts name nobody and stay)."""
    from streamproc.testing import Harness

    h = Harness(SETTINGS, start_ms=T0, assign=True)
    client = await aiohttp_client(make_web_app(h.runtime, SETTINGS))

    def c(uid: str, ts: int, pid: str, action: str = "view") -> tuple[bytes, bytes]:
        return pid.encode(), orjson.dumps({"event_id": f"{uid}-{ts}", "ts": ts, "user_id": uid, "product_id": pid,
                                           "category": "shoes", "action": action, "session_id": f"{uid}-s"})

    await h.feed("clicks", [c("loop", T0 + 1000, "P3"), c("loop", T0 + 2000, "P3"), c("loop", T0 + 3000, "P3"),
                            c("cart", T0 + 4000, "P2", "add_to_cart")])
    empty = await state(client)
    assert empty["triggers_enabled"] and empty["triggers"]["total"] == 0 and empty["triggers"]["latest"] == []
    for m in range(1, 63):  # a click a minute moves event time (and the customer watermark) past the deadlines
        h.clock.set(T0 + m * MIN + 10_000)
        await h.feed("clicks", [c("clock", T0 + m * MIN, "P9")])
        await h.tick()
    published = h.outputs("marketing-triggers")
    assert sorted(t["kind"] for t in published) == ["browse_abandoned", "cart_abandoned"]
    tr = (await state(client))["triggers"]
    assert tr["counts"] == {"cart_abandoned": 1, "browse_abandoned": 1, "win_back": 0, "interest_surging": 0}
    assert tr["total"] == 2
    assert [(t["kind"], t["user_id"], t["product_ids"]) for t in tr["latest"]] == [
        ("cart_abandoned", "cart", ["P2"]), ("browse_abandoned", "loop", ["P3"])]
    assert [t["trigger_id"] for t in tr["latest"]] == [t["trigger_id"] for t in reversed(published)]
    text = await (await client.get("/metrics")).text()
    counted = {s.labels["kind"]: s.value for f in text_string_to_metric_families(text)
               if f.name == "streamproc_marketing_triggers" for s in f.samples if s.name.endswith("_total")}
    assert counted == {"cart_abandoned": 1.0, "browse_abandoned": 1.0}

    assert (await client.delete("/customers/cart")).status == 200
    tr = (await state(client))["triggers"]
    assert [t["user_id"] for t in tr["latest"]] == ["loop"] and tr["total"] == 2
