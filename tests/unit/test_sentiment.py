"""The scorer's logic without a model: truncation, length buckets and order, softmax with temperature,
thresholds to labels, model directory errors. A fake session and tokenizer stand in for onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamproc.errors import ConfigError
from streamproc.sentiment import ModelNotFound, Scorer, Sentiment, load_model_info, resolve_model_dir
from streamproc.sentiment.model import ModelInfo
from streamproc.sentiment.onnx import OnnxScorer, default_threads
from streamproc.sentiment.text import clip_text, head_tail, label_of, length_buckets, pad_batch, softmax

INFO = ModelInfo(model_version="test-1", labels=("negative", "positive"), prefix="query: ", max_length=8,
                 head_tokens=4, tail_tokens=2, temperature=1.0, negative_threshold=0.6, positive_threshold=0.6)


# -- pure pieces -----------------------------------------------------------------------------------


def test_head_tail_keeps_both_ends_of_a_long_text() -> None:
    ids = list(range(20))
    assert head_tail(ids, 5, 3) == [0, 1, 2, 3, 4, 17, 18, 19]
    assert head_tail(ids[:8], 5, 3) == ids[:8]  # short enough: unchanged
    assert head_tail(ids, 8, 0) == ids[:8]


def test_clip_text_keeps_head_and_tail_characters() -> None:
    text = "A" * 5000 + "B" * 5000
    clipped = clip_text(text, 100)
    assert len(clipped) <= 103 and clipped.startswith("A" * 50) and clipped.endswith("B" * 50)
    assert clip_text("short", 100) == "short"


def test_length_buckets_group_similar_lengths_and_cover_every_index_once() -> None:
    lengths = [30, 3, 12, 4, 31, 5, 11, 2]
    batches = length_buckets(lengths, 3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 3 for b in batches)
    assert [[lengths[i] for i in b] for b in batches] == [[2, 3, 4], [5, 11, 12], [30, 31]]
    # A token budget cuts long batches earlier.
    assert all(len(b) * max(lengths[i] for i in b) <= 40 for b in length_buckets(lengths, 8, max_tokens=40))


def test_pad_batch_right_pads_with_a_mask() -> None:
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=1)
    assert ids.dtype == np.int64 and mask.dtype == np.int64
    assert ids.tolist() == [[5, 6, 7], [8, 1, 1]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_softmax_temperature_softens_without_changing_the_order() -> None:
    logits = np.array([[2.0, -1.0], [0.0, 0.0]])
    p1, p2 = softmax(logits, 1.0), softmax(logits, 2.0)
    assert np.allclose(p1.sum(axis=1), 1.0) and np.allclose(p2.sum(axis=1), 1.0)
    assert p1[0, 0] == pytest.approx(1 / (1 + np.exp(-3.0)))
    assert 0.5 < p2[0, 0] < p1[0, 0]  # calibrated: less confident, same winner
    assert p2[1].tolist() == [0.5, 0.5]


def test_thresholds_decide_the_label_and_the_middle_is_neutral() -> None:
    assert label_of({"negative": 0.9, "positive": 0.1}, 0.6, 0.6) == "negative"
    assert label_of({"negative": 0.1, "positive": 0.9}, 0.6, 0.6) == "positive"
    assert label_of({"negative": 0.55, "positive": 0.45}, 0.6, 0.6) == "neutral"
    assert label_of({"negative": 0.2, "neutral": 0.7, "positive": 0.1}, 0.5, 0.5) == "neutral"


# -- the scorer around a fake session --------------------------------------------------------------


class FakeEncoding:
    def __init__(self, ids: list[int]) -> None:
        self.ids = ids


class FakeTokenizer:
    """One token per character between <s>=0 and </s>=2; ``<pad>`` is 1."""

    padding = None

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode_batch(self, texts: list[str]) -> list[FakeEncoding]:
        self.seen += texts
        return [FakeEncoding([0] + [10 + (ord(c) % 50) for c in t] + [2]) for t in texts]

    def token_to_id(self, token: str) -> int | None:
        return {"<pad>": 1}.get(token)


class FakeInput:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeSession:
    """Logits from the number of real tokens (mask sum): long texts positive, short ones negative."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def get_inputs(self) -> list[FakeInput]:
        return [FakeInput("input_ids"), FakeInput("attention_mask")]

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        ids, mask = feed["input_ids"], feed["attention_mask"]
        assert ids.shape == mask.shape and ids.dtype == np.int64
        assert (ids[mask == 0] == 1).all()  # padding uses the pad id
        self.calls.append(ids.shape)
        n = mask.sum(axis=1).astype(np.float32)
        return [np.stack([8.0 - n, n - 8.0], axis=1)]


class BatchDependentSession(FakeSession):
    """Like a dynamically quantized model: a row's logits depend on the whole batch (here its size)."""

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        (logits,) = super().run(names, feed)
        return [logits + 0.01 * len(logits)]


def fake_scorer(batch_size: int = 2, info: ModelInfo = INFO, session: FakeSession | None = None,
                threads: int = 1) -> tuple[OnnxScorer, FakeSession, FakeTokenizer]:
    sess, tok = session or FakeSession(), FakeTokenizer()
    scorer = OnnxScorer(sess, tok, info, batch_size=batch_size, threads=threads)
    sess.calls.clear()
    tok.seen.clear()
    return scorer, sess, tok


def test_scores_come_back_in_input_order_from_length_bucketed_batches() -> None:
    scorer, sess, tok = fake_scorer(batch_size=2)
    texts = ["a", "abcdefghijklmnop", "ab", "abcdefghij", "abc"]
    out = scorer.score(texts)
    assert tok.seen == ["query: " + t for t in texts]  # the model's prefix is added
    # Token counts: prefix + text + 2 special tokens, truncated to <s> + 4 | 2 + </s>.
    lengths = [min(len("query: " + t) + 2, 8) for t in texts]
    for s, n in zip(out, lengths, strict=True):
        assert s.positive == pytest.approx(1 / (1 + np.exp(-2 * (n - 8.0))), abs=1e-6)
        assert s.negative + s.positive == pytest.approx(1.0)
    assert len(sess.calls) == 3 and all(b <= 2 for b, _ in sess.calls)


def test_a_long_text_keeps_its_special_tokens_and_both_ends() -> None:
    scorer, _, _ = fake_scorer()
    text = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    (ids,) = scorer.encode([text])
    full = FakeTokenizer().encode_batch(["query: " + text])[0].ids
    assert len(ids) == INFO.max_length
    assert ids == full[:1 + INFO.head_tokens] + full[-(INFO.tail_tokens + 1):]
    assert ids[0] == 0 and ids[-1] == 2


def test_each_batch_is_padded_to_its_own_longest_text() -> None:
    info = ModelInfo(model_version="t", labels=("negative", "positive"), max_length=40, head_tokens=28,
                     tail_tokens=10)
    scorer, sess, _ = fake_scorer(batch_size=2, info=info)
    texts = ["x" * 30, "x", "x" * 4, "x" * 2, "x" * 100]
    out = scorer.score(texts)
    # Sorted lengths (with the 2 special tokens): 3, 4 | 6, 32 | 40 (truncated).
    assert sess.calls == [(2, 4), (2, 32), (1, 40)]
    assert [round(s.positive, 6) for s in out] == [round(float(1 / (1 + np.exp(-2 * (n - 8.0)))), 6)
                                                  for n in (32, 3, 6, 4, 40)]


def test_scores_are_the_same_whatever_the_batch_size() -> None:
    texts = [("x" * k) for k in (1, 9, 3, 20, 2, 5)]
    one = [s.probabilities for s in fake_scorer(batch_size=1)[0].score(texts)]
    many = [s.probabilities for s in fake_scorer(batch_size=4)[0].score(texts)]
    assert one == many


def test_a_batch_dependent_model_gets_one_call_per_text_so_results_do_not_depend_on_batching() -> None:
    scorer, sess, _ = fake_scorer(batch_size=4, session=BatchDependentSession(), threads=2)
    assert not scorer.batched
    texts = [("x" * k) for k in (1, 9, 3, 20, 2, 5)]
    together = [s.probabilities for s in scorer.score(texts)]
    assert all(b == 1 for b, _ in sess.calls) and len(sess.calls) == len(texts)
    apart = [scorer.score([t])[0].probabilities for t in texts]
    assert together == apart
    assert fake_scorer(batch_size=4)[0].batched  # a row-independent model is run in batches


def test_labels_follow_the_model_thresholds_and_temperature() -> None:
    info = ModelInfo(model_version="t", labels=("negative", "positive"), max_length=64, head_tokens=62,
                     tail_tokens=0, temperature=10.0, negative_threshold=0.6, positive_threshold=0.6)
    scorer, _, _ = fake_scorer(info=info)
    short, mid, long_ = scorer.score(["", "abcdef", "a" * 40])
    assert short.label == "negative" and long_.label == "positive"
    assert mid.label == "neutral"  # 8 tokens: logits equal, 0.5/0.5 is below both thresholds
    assert isinstance(short, Sentiment)


def test_empty_input_scores_nothing() -> None:
    scorer, sess, _ = fake_scorer()
    assert scorer.score([]) == [] and sess.calls == []


def test_fake_satisfies_the_protocol() -> None:
    scorer: Scorer = fake_scorer()[0]
    assert scorer.model_version == "test-1"


def test_default_threads_is_at_most_two() -> None:
    assert 1 <= default_threads() <= 2


# -- model directory errors ------------------------------------------------------------------------


def test_missing_model_directory_is_a_config_error_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such directory.*STREAMPROC_MODEL_DIR"):
        resolve_model_dir(tmp_path / "nope")
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(ModelNotFound, match="missing model.onnx, tokenizer.json"):
        resolve_model_dir(tmp_path)


@pytest.mark.parametrize("bad", [
    "not json", "[]", json.dumps({"labels": ["a", "b"], "model_version": "v"}),
    json.dumps({"labels": ["negative", "positive"]}),
    json.dumps({"labels": ["negative", "positive"], "model_version": "v", "temperature": 0}),
    json.dumps({"labels": ["negative", "positive"], "model_version": "v", "negative_threshold": 2}),
    json.dumps({"labels": ["negative", "positive"], "model_version": "v", "max_length": 8, "head_tokens": 8,
                "tail_tokens": 4}),
])
def test_invalid_model_json_is_a_config_error(tmp_path: Path, bad: str) -> None:
    (tmp_path / "model.json").write_text(bad)
    with pytest.raises(ModelNotFound, match="model.json"):
        load_model_info(tmp_path)


def test_model_json_is_read(tmp_path: Path) -> None:
    d: dict[str, Any] = {"model_version": "abc", "labels": ["negative", "positive"], "prefix": "query: ",
                         "max_length": 128, "head_tokens": 94, "tail_tokens": 32, "temperature": 1.2,
                         "negative_threshold": 0.55, "positive_threshold": 0.6}
    (tmp_path / "model.json").write_text(json.dumps(d))
    info = load_model_info(tmp_path)
    assert info == ModelInfo(model_version="abc", labels=("negative", "positive"), prefix="query: ", max_length=128,
                             head_tokens=94, tail_tokens=32, temperature=1.2, negative_threshold=0.55,
                             positive_threshold=0.6)
