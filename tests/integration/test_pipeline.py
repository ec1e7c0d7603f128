"""The demand path end to end on a real broker: generator -> worker -> alerts, features, HTTP.

One scripted scenario (seeded) with two surges and a drop after 40 minutes of history; the detector's
warm-up is shortened to fit (the shipped default is a day). On the embedded broker the same records are
run twice, once loaded all at once before the worker reads them and once paced over ~20 s while it runs;
on Apache Kafka once, loaded all at once (the case that once read nothing: see the test broker's
retention). Every run must give exactly the alerts and feature records of the pure engine over the same
records, so the speed of the replay and the broker make no difference.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path
from typing import Any

import pytest

from streamproc import generator, loadgen
from streamproc.evaluation import match_alerts
from streamproc.settings import Settings

from .reference import offline
from .support import PRODUCTS_ONLY, isolated_env, read_topic, start_worker, values, wait_for

pytestmark = pytest.mark.integration

MIN = 60_000
START_MS = 1_780_000_000_000 - 1_780_000_000_000 % MIN
DURATION_MS = 2 * 3_600_000
DETECTOR = {"STREAMPROC_DETECT_WARMUP_MS": str(40 * MIN), "STREAMPROC_DETECT_COOLDOWN_MS": str(60 * MIN)}


def _scenario() -> generator.Scenario:
    return generator.scenario("surges", start_ms=START_MS, duration_ms=DURATION_MS, rate_eps=20.0, seed=1,
                              products=80)


def _run(bootstrap: str, tmp: Path, *, paced: bool) -> dict[str, Any]:
    sc = _scenario()
    env = isolated_env(bootstrap, tmp, {**PRODUCTS_ONLY, **DETECTOR})
    names = {t: env[f"STREAMPROC_TOPIC_{t.upper().replace('-', '_')}"] for t in ("clicks", "orders", "reviews")}
    worker = None
    try:
        if paced:
            worker = start_worker(env, tmp)
            speed = DURATION_MS / 20_000  # the whole scenario in about 20 s
            report = asyncio.run(loadgen.produce(bootstrap, generator.events(sc, 1), speed=speed, progress=False,
                                                 topic_names=names))
        else:
            # Everything is in the topics before the worker starts: it reads in large batches.
            from streamproc.broker import create_topics, topic_specs

            asyncio.run(create_topics(bootstrap, topic_specs(Settings.from_env(env))))
            report = asyncio.run(loadgen.produce(bootstrap, generator.events(sc, 1), speed=None, progress=False,
                                                 topic_names=names))
            worker = start_worker(env, tmp)
        assert report.errors == 0
        sent = report.events
        features_topic = env["STREAMPROC_TOPIC_PRODUCT_FEATURES"]

        # Wait until every input record is counted and the scenario's last bucket has been emitted.
        def done() -> bool:
            text = asyncio.run(_text(worker.url + "/metrics"))  # type: ignore[union-attr]
            counted = sum(float(line.split()[-1]) for line in text.splitlines()
                          if line.startswith(("streamproc_records_processed_total{", "streamproc_dead_letters_total{"))
                          and "order-items" not in line)
            return counted >= sent

        wait_for(done, 180)
        def all_closed(rs: list[Any]) -> bool:
            # Products publish for six buckets after their last event, so each one that published five
            # minutes before the end also publishes the scenario's last bucket.
            recent, final = set(), set()
            for f in values(rs):
                if f["as_of_ms"] == sc.end_ms - 5 * MIN:
                    recent.add(f["product_id"])
                elif f["as_of_ms"] == sc.end_ms:
                    final.add(f["product_id"])
            return bool(recent) and recent <= final

        recs = asyncio.run(read_topic(bootstrap, features_topic, timeout_s=120, until=all_closed, idle_s=1.0))
        features = [f for f in values(recs) if f["as_of_ms"] <= sc.end_ms]
        alerts = [a for a in values(asyncio.run(read_topic(bootstrap, env["STREAMPROC_TOPIC_ALERTS"], timeout_s=10,
                                                             idle_s=1.0)))
                  if a["window"]["start_ms"] < sc.end_ms]
        ids = sorted({f["product_id"] for f in features})
        served = worker.get("/features?ids=" + ",".join(ids))["results"]
        firing = worker.get("/alerts?status=firing")["alerts"]
        trending = worker.get("/trending?signal=orders&limit=5")
        return {"features": features, "alerts": alerts, "served": served, "firing": firing, "trending": trending,
                "sent": sent, "env": env}
    finally:
        if worker is not None:
            assert worker.stop() is not None


async def _text(url: str) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return await r.text()


@pytest.fixture(scope="module")
def runs(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp(f"pipeline-{broker.kind}")
    t0 = time.monotonic()
    out = {"bulk": _run(broker, tmp, paced=False)}
    t1 = time.monotonic()
    if broker.kind == "embedded":  # on Apache Kafka the bulk run only (suite time); both match the pure engine
        out["paced"] = _run(broker, tmp, paced=True)
    print(f"{broker.kind}: bulk run {t1 - t0:.1f}s, paced run {time.monotonic() - t1:.1f}s, "
          f"{out['bulk']['sent']} events each")
    return out


def test_alerts_are_exactly_the_injected_anomalies(runs: dict[str, dict[str, Any]]) -> None:
    truth = generator.truth(_scenario())
    assert len(truth) >= 3
    for run in runs.values():
        m = match_alerts(run["alerts"], truth)
        assert m.missed == [], f"missed: {m.missed}"
        assert m.false_alerts == [], f"false alerts: {[a['dedup_key'] for a in m.false_alerts]}"
        # One incident per dedup key until it resolves: firing and resolved alternate.
        by_key: dict[str, list[str]] = collections.defaultdict(list)
        for a in run["alerts"]:
            by_key[a["dedup_key"]].append(a["status"])
        for key, statuses in by_key.items():
            assert statuses[0] == "firing", key
            assert all(x != y for x, y in zip(statuses, statuses[1:], strict=False)), (key, statuses)
        # Every injected anomaly is found at product level on the orders signal, the one the shop cares
        # most about (a category alert may come too when the product carries its category).
        for t in truth:
            assert any(a["labels"]["product_id"] == t["product_id"] and a["labels"]["alertname"] == t["kind"]
                       and a["labels"]["signal"] == "orders" for a in run["alerts"]), t


@pytest.fixture(scope="module")
def reference() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pure engine's outputs over the same records (does not depend on the broker: computed once)."""
    return offline(Settings.from_env(DETECTOR), _scenario(), 1)


def test_same_records_at_different_speeds_give_identical_outputs(
        runs: dict[str, dict[str, Any]], reference: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> None:
    def key_alert(a: dict[str, Any]) -> tuple[Any, ...]:
        return (a["alert_id"], a["dedup_key"], a["status"], a["window"]["start_ms"], a["observed"], a["expected"],
                a["score"])

    def key_feature(f: dict[str, Any]) -> tuple[Any, ...]:
        return (f["product_id"], f["as_of_ms"], tuple(sorted(f["features"].items())))

    if "paced" in runs:
        bulk, paced = runs["bulk"], runs["paced"]
        assert sorted(map(key_alert, bulk["alerts"])) == sorted(map(key_alert, paced["alerts"]))
        assert len(bulk["features"]) > 1000
        assert sorted(map(key_feature, bulk["features"])) == sorted(map(key_feature, paced["features"]))
    # Each run (each speed, each broker) gives exactly the pure engine's outputs.
    ref_features, ref_alerts = reference
    assert len(ref_features) > 1000
    for name, run in runs.items():
        assert sorted(map(key_alert, run["alerts"])) == sorted(map(key_alert, ref_alerts)), name
        assert sorted(map(key_feature, run["features"])) == sorted(map(key_feature, ref_features)), name


def test_features_equal_counts_computed_independently(runs: dict[str, dict[str, Any]]) -> None:
    sc = _scenario()
    events = [(t, __import__("orjson").loads(v), ts) for t, _k, v, ts in generator.events(sc, 1)]
    for run in runs.values():
        checked = 0
        for rec in run["served"]:
            assert rec["status"] == "PRESENT", rec
            as_of = rec["as_of_ms"]
            pid = rec["product_id"]
            exp = collections.Counter()
            for topic, ev, ts in events:
                if topic == "clicks" and ev["product_id"] == pid and as_of - 5 * MIN <= ts < as_of:
                    exp["clicks_5m"] += 1
                elif topic == "orders":
                    for item in ev["items"]:
                        if item["product_id"] != pid:
                            continue
                        if as_of - 5 * MIN <= ts < as_of:
                            exp["orders_5m"] += 1
                            exp["units_5m"] += item["quantity"]
                            exp["revenue_5m"] += item["quantity"] * item["unit_price"]
                        if as_of - 60 * MIN <= ts < as_of:
                            exp["units_1h"] += item["quantity"]
            f = rec["features"]
            assert f["clicks_5m"] == exp["clicks_5m"], pid
            assert f["orders_5m"] == exp["orders_5m"], pid
            assert f["units_5m"] == exp["units_5m"], pid
            assert f["units_1h"] == exp["units_1h"], pid
            assert f["revenue_5m"] == pytest.approx(exp["revenue_5m"], abs=0.011), pid
            checked += 1 if exp["units_1h"] else 0
        assert checked >= 10  # products that actually sold in the last hour were compared


def test_http_views(runs: dict[str, dict[str, Any]]) -> None:
    run = runs["bulk"]
    trending = run["trending"]
    assert trending["signal"] == "orders" and len(trending["products"]) == 5
    scores = [p["surge_score"] for p in trending["products"]]
    assert scores == sorted(scores, reverse=True)
    # Incidents still open at the end are the ones /alerts lists; each is a firing alert from the topic.
    firing_ids = {a["alert_id"] for a in run["alerts"] if a["status"] == "firing"}
    assert {a["alert_id"] for a in run["firing"]} <= firing_ids
