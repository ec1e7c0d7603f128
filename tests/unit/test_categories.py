"""Category-level surges from the closed product buckets, and the product surges they inhibit."""

from __future__ import annotations

import dataclasses

from streamproc.categories import CategoryEngine
from streamproc.demand import DemandEngine
from streamproc.detectors import DetectorConfig
from streamproc.events import Click
from streamproc.lifecycle import Notifier
from streamproc.windows import WindowSpec

MIN = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % MIN
STREAM = "clicks/0"


def run(minutes: int, surge_from: int, per_product: int = 2, surge_factor: int = 6) -> list[dict]:
    """20 shoes with ``per_product`` clicks a minute each, ``surge_factor`` times that from ``surge_from``.

    Returns every alert record the notifier let out, in order.
    """
    cfg = dataclasses.replace(DetectorConfig(), warmup_ms=30 * MIN, cooldown_ms=120 * MIN)
    eng = DemandEngine(WindowSpec(idle_timeout_ms=100), cfg)
    notifier = Notifier(categories=CategoryEngine(eng, cfg))
    eng.register_stream(0, STREAM, T0)
    published: list[dict] = []
    n = 0
    for m in range(minutes):
        start = T0 + m * MIN
        k = per_product * (surge_factor if m >= surge_from else 1)
        for p in range(20):
            for j in range(k):
                n += 1
                eng.apply_click(0, STREAM, Click(f"e{n}", start + j * (MIN // (k + 1)), "u", f"S{p}", "shoes",
                                                 "view", None), start)
        out = eng.tick(start + MIN - 1)
        published += [o.value for o in notifier.process(out, start) if o.kind == "alert"]
    return published


def test_a_category_wide_surge_fires_one_category_alert_and_inhibits_the_products() -> None:
    published = run(minutes=50, surge_from=45)
    cat = [a for a in published if a["labels"].get("scope") == "category"]
    assert [(a["dedup_key"], a["status"]) for a in cat] == [("demand_surge:clicks:category:shoes", "firing")]
    assert "product_id" not in cat[0]["labels"] and cat[0]["labels"]["category"] == "shoes"
    products = [a for a in published if a["labels"].get("product_id") and a["labels"]["signal"] == "clicks"
                and a["status"] == "firing"]
    assert products, "the products surge too"
    after = [a for a in products if a["window"]["start_ms"] >= cat[0]["window"]["start_ms"]]
    assert after and all(a["inhibited_by"] == cat[0]["dedup_key"] for a in after)


def test_no_category_alert_without_a_surge() -> None:
    published = run(minutes=50, surge_from=10_000)
    assert [a for a in published if a["labels"].get("scope") == "category"] == []
