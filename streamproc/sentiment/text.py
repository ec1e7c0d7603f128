"""Pure pieces of the scorer: text clipping, head+tail truncation, length buckets, softmax, labels.

No onnxruntime and no tokenizer here, so all of it is unit-tested with plain lists and numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Sentiment", "clip_text", "head_tail", "length_buckets", "pad_batch", "softmax", "label_of", "sentiments",
           "is_probability"]


@dataclass(frozen=True, slots=True)
class Sentiment:
    """The model's verdict on one text."""

    label: str
    """``"negative"``, ``"neutral"`` or ``"positive"``."""
    probabilities: dict[str, float]
    """Calibrated class probabilities by class name (``negative``, ``positive``, and ``neutral`` when the
    model has that class); they sum to 1."""

    @property
    def negative(self) -> float:
        return self.probabilities.get("negative", 0.0)

    @property
    def positive(self) -> float:
        return self.probabilities.get("positive", 0.0)


def clip_text(text: str, max_chars: int) -> str:
    """At most ``max_chars`` characters: the head and the tail of a longer text (what the token-level
    truncation keeps anyway), so a megabyte review costs no more to tokenize than a long one."""
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return text[:half] + " … " + text[len(text) - (max_chars - half):]


def head_tail(ids: Sequence[int], head: int, tail: int) -> list[int]:
    """``ids`` if it has at most ``head + tail`` tokens, else its first ``head`` and last ``tail`` tokens.

    Reviews put the verdict at the start ("Terrible.") or at the end ("... so I returned it"); keeping both
    ends loses less than cutting the tail. Special tokens stay in place: the first is in the head, the
    last in the tail.
    """
    if len(ids) <= head + tail:
        return list(ids)
    return list(ids[:head]) + (list(ids[len(ids) - tail:]) if tail else [])


def length_buckets(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches of similar length (sorted, then cut every
    ``batch_size`` items, or earlier once ``len(batch) * longest`` would pass ``max_tokens``), so that
    padding to each batch's longest text wastes little. The caller scatters results back by index."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) >= batch_size or (max_tokens is not None and (len(cur) + 1) * lengths[i] > max_tokens)):
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` and ``attention_mask`` (int64 ``[batch, longest]``), right-padded with ``pad_id``."""
    width = max((len(s) for s in seqs), default=0)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = s
        mask[row, : len(s)] = 1
    return ids, mask


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (temperature > 1 softens over-confident models)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def label_of(probs: dict[str, float], negative_threshold: float, positive_threshold: float) -> str:
    """``negative`` when P(negative) reaches its threshold, else ``positive`` when P(positive) reaches
    its threshold, else ``neutral`` (a two-class model is unsure, or a three-class one says neutral)."""
    if probs.get("negative", 0.0) >= negative_threshold:
        return "negative"
    if probs.get("positive", 0.0) >= positive_threshold:
        return "positive"
    return "neutral"


def sentiments(probs: np.ndarray, labels: Sequence[str], negative_threshold: float, positive_threshold: float,
               digits: int = 6) -> list[Sentiment]:
    """Rows of class probabilities as :class:`Sentiment` values (probabilities rounded to ``digits``)."""
    out = []
    for row in probs.tolist():
        p = {name: round(float(v), digits) for name, v in zip(labels, row, strict=True)}
        out.append(Sentiment(label_of(p, negative_threshold, positive_threshold), p))
    return out


def is_probability(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and 0.0 <= x <= 1.0
