"""The negative-review spike test: honest at low counts, blind to volume alone, with hysteresis, evidence
and state that survives a restart. Pure functions first, then the engine fed reviews directly."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from streamproc.demand import DemandEngine, Output, ProductState
from streamproc.detectors import DetectorConfig
from streamproc.events import Review
from streamproc.review_spikes import ReviewSpikeConfig, ReviewSpikeState, baseline_share, judge, wilson_lower
from streamproc.windows import WindowSpec

MIN = 60_000
HOUR = 60 * MIN
T0 = 1_700_006_400_000 - 1_700_006_400_000 % (24 * HOUR)
CFG = ReviewSpikeConfig()


# -- the test on one window ------------------------------------------------------------------------


def test_three_negative_out_of_four_is_not_a_spike() -> None:
    (v,) = judge([(HOUR, 4, 3)], 0.15, CFG)
    assert not v.spike
    assert v.bound < 0.15 + CFG.fire_margin
    assert v.score < 0.5


def test_thirty_negative_out_of_forty_is_a_spike() -> None:
    (v,) = judge([(HOUR, 40, 30)], 0.15, CFG)
    assert v.spike
    assert v.bound > 0.45 and v.score > 0.5


def test_same_share_is_a_spike_only_once_there_are_enough_reviews() -> None:
    # 75% negative against a 15% baseline in each window: 3 of 4 is not enough evidence, 30 of 40 is.
    assert [v.spike for v in judge([(HOUR, 4, 3), (HOUR, 40, 30)], 0.15, CFG)] == [False, True]


def test_a_rise_in_volume_at_the_usual_share_does_not_fire() -> None:
    # Ten times the reviews, 15% negative as usual: the bound only tightens around 15%.
    for n in (20, 200, 2000):
        (v,) = judge([(HOUR, n, 0.15 * n)], 0.15, CFG)
        assert not v.spike, n
        assert v.bound <= 0.15


def test_minimum_negative_count() -> None:
    (v,) = judge([(HOUR, 4, 4)], 0.0, dataclasses.replace(CFG, prior_share=0.0))
    assert v.bound > 0.15 and not v.spike  # four of four over a 0% baseline: still below min_negative=5


def test_wilson_lower_bound_known_values() -> None:
    assert wilson_lower(0, 0, 2.326) == 0.0
    assert wilson_lower(3, 4, 2.326) == pytest.approx(0.247, abs=0.002)
    assert wilson_lower(30, 40, 2.326) == pytest.approx(0.567, abs=0.002)
    assert wilson_lower(50, 100, 1.96) == pytest.approx(0.4038, abs=0.0005)


def test_baseline_starts_at_the_prior_and_follows_the_product() -> None:
    assert baseline_share(ReviewSpikeState(), CFG) == pytest.approx(CFG.prior_share)
    # 200 reviews at 40% negative outweigh the 20 pseudo-reviews of the prior.
    assert baseline_share(ReviewSpikeState(base_n=200, base_neg=80), CFG) == pytest.approx((80 + 3) / 220)


def test_config_rejects_impossible_values() -> None:
    for bad in ({"windows_ms": ()}, {"windows_ms": (2 * HOUR,)}, {"fire_margin": 0.1, "resolve_margin": 0.2},
                {"min_negative": 0}, {"prior_share": 1.5}, {"evidence_k": 0}):
        with pytest.raises(ValueError):
            ReviewSpikeConfig(**bad)  # type: ignore[arg-type]


# -- in the engine ----------------------------------------------------------------------------------


class Shop:
    """One unit, one reviews stream; reviews fed in event-time order, a tick every minute."""

    def __init__(self, cfg: ReviewSpikeConfig = CFG) -> None:
        spec = WindowSpec(allowed_lateness_ms=0, idle_timeout_ms=10**12)
        self.engine = DemandEngine(spec, DetectorConfig(), review_cfg=cfg)
        self.engine.register_stream(0, "reviews/0", T0)
        self.outputs: list[Output] = []
        self.fed: list[tuple[str, str, int, bool, float]] = []
        """(review_id, product, ts, negative?, P(negative)) of every review fed."""
        self.n = 0
        self.now = T0

    def minute(self, reviews: list[tuple[str, bool, float]]) -> None:
        """One minute of reviews: ``(product, negative?, P(negative))``, spread over the minute."""
        for i, (pid, neg, p_neg) in enumerate(reviews):
            self.n += 1
            ts = self.now + i * (MIN // max(1, len(reviews)))
            ev = Review(review_id=f"r{self.n}", ts_ms=ts, user_id=None, product_id=pid, rating=None, title=None,
                        text=("awful " if neg else "fine ") + f"review {self.n} " + "x" * 200, lang="en")
            self.fed.append((ev.review_id, pid, ts, neg, p_neg))
            assert self.engine.apply_review(0, "reviews/0", ev, ts, p_neg, positive=1 - p_neg,
                                            label="negative" if neg else "positive") is None
        self.now += MIN
        # A marker in the next minute moves the watermark past this one.
        self.outputs += self.engine.tick(self.now)

    def alerts(self, pid: str | None = None) -> list[dict[str, Any]]:
        return [o.value for o in self.outputs if o.kind == "alert"
                and o.value["labels"]["alertname"] == "negative_review_spike"
                and (pid is None or o.value["labels"]["product_id"] == pid)]


def normal(pid: str, n: int, minute: int, share: float = 0.1) -> list[tuple[str, bool, float]]:
    """``n`` reviews, every ``1/share``-th one negative (deterministic)."""
    every = round(1 / share)
    return [(pid, (minute * n + i) % every == 0, 0.9 if (minute * n + i) % every == 0 else 0.05) for i in range(n)]


def history(shop: Shop, minutes: int, mix: dict[str, int]) -> None:
    for m in range(minutes):
        shop.minute([r for pid, n in mix.items() for r in normal(pid, n, m)])


def test_spike_fires_once_with_evidence_and_resolves_after_it_ends() -> None:
    shop = Shop()
    history(shop, 90, {"P1": 2, "P2": 2})
    assert shop.alerts() == []
    # P1: 15 minutes at 6 reviews a minute, 5 of them negative (some more negative than others).
    for m in range(15):
        shop.minute([("P1", i < 5, 0.80 + 0.01 * i + 0.001 * m) for i in range(6)] + normal("P2", 2, m))
    firing = [a for a in shop.alerts("P1") if a["status"] == "firing"]
    assert len(firing) == 1
    a = firing[0]
    assert a["dedup_key"] == "negative_review_spike:reviews:P1"
    assert a["labels"] == {"alertname": "negative_review_spike", "product_id": "P1", "category": None,
                           "signal": "reviews", "severity": a["labels"]["severity"]}
    assert a["observed"] > a["expected"] + CFG.fire_margin and 0.5 <= a["score"] <= 1.0
    assert "reviews negative" in a["annotations"]["description"]
    ev = a["evidence"]
    assert 1 <= len(ev["review_ids"]) == len(ev["snippets"]) <= CFG.evidence_k
    assert all(s.startswith("awful") and len(s) <= 120 for s in ev["snippets"])
    assert shop.alerts("P2") == []
    # Back to normal: resolves (once), after the window has cleared.
    for m in range(80):
        shop.minute(normal("P1", 2, m) + normal("P2", 2, m))
    statuses = [x["status"] for x in shop.alerts("P1")]
    assert statuses == ["firing", "resolved"]
    assert shop.alerts("P1")[1]["alert_id"] == a["alert_id"]


def test_evidence_is_the_most_negative_reviews_of_the_window() -> None:
    shop = Shop()
    history(shop, 61, {"P1": 1})
    for _m in range(4):
        shop.minute([("P1", True, 0.6 + 0.01 * i) for i in range(10)])
    (a,) = [x for x in shop.alerts("P1") if x["status"] == "firing"]
    start, end = a["window"]["start_ms"], a["window"]["end_ms"]
    window = [(p_neg, rid) for rid, pid, ts, neg, p_neg in shop.fed if neg and pid == "P1" and start <= ts < end]
    assert a["evidence"]["review_ids"] == [rid for _p, rid in sorted(window, key=lambda e: (-e[0], e[1]))[:5]]


def test_volume_rise_at_the_usual_share_does_not_fire() -> None:
    shop = Shop()
    history(shop, 90, {"P1": 2})
    for m in range(30):  # five times the reviews, still one in ten negative
        shop.minute(normal("P1", 10, m))
    assert shop.alerts() == []


def test_sparse_negative_reviews_do_not_fire() -> None:
    shop = Shop()
    history(shop, 61, {"P1": 1})
    for m in range(20):  # three of four negative, then quiet: too few to say
        shop.minute([("P1", m % 5 != 0, 0.9)] if m < 4 else [])
    assert shop.alerts() == []


def test_hysteresis_keeps_firing_between_the_bars() -> None:
    cfg = dataclasses.replace(CFG, windows_ms=(15 * MIN,))
    shop = Shop(cfg)
    history(shop, 61, {"P1": 4})
    for m in range(5):
        shop.minute([("P1", True, 0.9)] * 8 + normal("P1", 2, m))
    assert [a["status"] for a in shop.alerts()] == ["firing"]
    # 25% negative for 40 minutes: the lower bound (about 0.19) is below the firing bar (baseline 0.10 +
    # 0.15) but above the resolve bar (+ 0.05); the baseline stays frozen while the incident fires.
    for _m in range(40):
        shop.minute([("P1", i < 5, 0.9 if i < 5 else 0.1) for i in range(20)])
    assert [a["status"] for a in shop.alerts()] == ["firing"]
    for m in range(25):
        shop.minute(normal("P1", 4, m))
    assert [a["status"] for a in shop.alerts()] == ["firing", "resolved"]


def test_state_survives_a_restart_mid_incident() -> None:
    shop = Shop()
    history(shop, 70, {"P1": 2})
    for _m in range(5):
        shop.minute([("P1", True, 0.9)] * 6)
    assert [a["status"] for a in shop.alerts()] == ["firing"]
    p = shop.engine.index["P1"]
    snap = orjson.loads(orjson.dumps(p.to_dict()))
    back = ProductState.from_dict(snap)
    assert back.review == p.review and back.neg_top == p.neg_top and back.incidents == p.incidents
    assert p.review.window_ms is not None and p.review.base_n > 0


def test_category_review_windows_sum_their_products() -> None:
    from streamproc.categories import CategoryEngine
    from streamproc.events import Click

    shop = Shop()
    cats = CategoryEngine(shop.engine, DetectorConfig())
    for pid in ("S1", "S2"):  # reviews carry no category: a click tells the product's
        shop.engine.apply_click(0, "reviews/0", Click(f"c{pid}", T0, "u", pid, "shoes", "view", None), T0)
    for m in range(90):
        shop.minute([("S1", m % 4 == 0, 0.9 if m % 4 == 0 else 0.1), ("S2", False, 0.2)])
        cats.observe(shop.outputs)
        shop.outputs.clear()
    w = cats.review_windows("shoes")  # 89 minutes closed (the 90th waits for the watermark)
    assert w["reviews_1h"] == 120 and w["reviews_24h"] == 178
    assert w["negative_share_1h"] == pytest.approx(15 / 120)
    assert w["sentiment_mean_24h"] == pytest.approx((23 * -0.8 + 66 * 0.8 + 89 * 0.6) / 178)
    assert cats.review_windows("toys") == {"reviews_1h": 0, "negative_share_1h": None, "sentiment_mean_1h": None,
                                           "reviews_24h": 0, "negative_share_24h": None, "sentiment_mean_24h": None}
