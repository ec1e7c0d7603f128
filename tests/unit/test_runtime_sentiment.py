"""Reviews through the runtime with a fake scorer (no model): scored first and outside the engine's lock,
published once to ``scored-reviews`` in the topic's schema, counted into the sentiment features, replays
neither rescored nor republished, malformed reviews dead-lettered as before."""

from __future__ import annotations

from typing import Any

import fastjsonschema
import orjson

from streamproc.clock import FakeClock
from streamproc.events import load_schema
from streamproc.runtime import Record, Runtime, partition_for
from streamproc.sentiment import Sentiment
from streamproc.settings import Settings

MIN = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % MIN


class WordScorer:
    """Negative when the text says "bad", positive otherwise; records what it was asked."""

    model_version = "fake-1"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def score(self, texts: list[str]) -> list[Sentiment]:
        self.calls.append(list(texts))
        return [Sentiment("negative", {"negative": 0.9, "positive": 0.1}) if "bad" in t
                else Sentiment("positive", {"negative": 0.2, "positive": 0.8}) for t in texts]


P1_UNIT = partition_for("P1", 4)  # records sit on their product's partition (else: dead-lettered as misrouted)


def review(i: int, text: str, pid: str = "P1", ts: int = T0) -> bytes:
    return orjson.dumps({"review_id": f"r{i}", "ts": ts + i, "product_id": pid, "text": text, "lang": "en"})


def make() -> tuple[Runtime, WordScorer, list[tuple[str, bytes | None, bytes]], FakeClock]:
    sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(topic: str, key: bytes | None, value: bytes, headers: Any) -> None:
        sent.append((topic, key, value))

    clock = FakeClock(T0)
    scorer = WordScorer()
    return Runtime(Settings(), send, clock=clock, scorer=scorer), scorer, sent, clock


async def test_reviews_are_scored_published_and_counted() -> None:
    rt, scorer, sent, clock = make()
    recs = [Record("reviews", P1_UNIT, i, b"P1", review(i, t)) for i, t in enumerate(["bad", "good", "bad bad", "fine"])]
    recs.append(Record("reviews", P1_UNIT, 4, b"P1", b"{not json"))
    scored = await rt.score_reviews(recs)  # what the agent does outside the lock
    assert scorer.calls == [["bad", "good", "bad bad", "fine"]] and scored[4] is None
    await rt.on_records("reviews", recs, scored)
    assert len(scorer.calls) == 1  # not scored again under the lock
    validate = fastjsonschema.compile(load_schema("scored-review"))
    out = [(k, orjson.loads(v)) for t, k, v in sent if t == "scored-reviews"]
    assert [v["review_id"] for _, v in out] == ["r0", "r1", "r2", "r3"]
    for key, v in out:
        validate(v)
        assert key == b"P1" and v["model_version"] == "fake-1" and v["lang"] == "en"
    assert [v["label"] for _, v in out] == ["negative", "positive", "negative", "positive"]
    assert [orjson.loads(v)["error"]["kind"] for t, _k, v in sent if t == "dead-letters"] == ["not_json"]
    clock.advance(10 * MIN)
    await rt.tick()
    f = [orjson.loads(v) for t, _k, v in sent if t == "product-features"][-1]["features"]
    assert f["reviews_24h"] == 4 and f["negative_share_24h"] == 0.5
    assert abs(f["sentiment_mean_24h"] - (2 * -0.8 + 2 * 0.6) / 4) < 1e-9


async def test_a_replayed_review_is_neither_rescored_nor_republished() -> None:
    rt, scorer, sent, _ = make()
    recs = [Record("reviews", P1_UNIT, i, b"P1", review(i, "bad")) for i in range(3)]
    await rt.on_records("reviews", recs)  # scored inline when no scores are handed in
    n = len(sent)
    await rt.on_records("reviews", recs[1:])  # the same offsets again, as after a crash
    assert len(sent) == n and scorer.calls == [["bad", "bad", "bad"]]
    assert rt.engine.index["P1"].open[T0][5] == 3  # REVIEWS counted once each


async def test_without_a_scorer_reviews_are_counted_unscored() -> None:
    sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(topic: str, key: bytes | None, value: bytes, headers: Any) -> None:
        sent.append((topic, key, value))

    rt = Runtime(Settings(), send, clock=FakeClock(T0))
    await rt.on_records("reviews", [Record("reviews", P1_UNIT, 0, b"P1", review(0, "bad"))])
    assert [t for t, _k, _v in sent] == []
    assert rt.engine.index["P1"].open[T0][5] == 1
