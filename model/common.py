"""Shared helpers for the sentiment model pipeline (training side; numpy + tokenizers only).

Input encoding (the contract the in-stream scorer implements from model.json):
  ids = tokenizer.encode(prefix + text).ids            # <s> content... </s>  (prefix "query: ")
  if len(ids) > max_length:                            # head + tail truncation of long reviews
      ids = ids[:1 + head_tokens] + ids[-(tail_tokens + 1):]   # head_tokens + tail_tokens + 2 == max_length
  batch: right-padded with <pad> (id 1), attention_mask 1 for real tokens, both int64.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "sentiment"
DATA = BUILD / "data"
PAD_ID = 1
LABELS = ["negative", "neutral", "positive"]


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def head_tail(ids: Sequence[int], max_length: int, head_tokens: int) -> list[int]:
    if len(ids) <= max_length:
        return list(ids)
    tail_tokens = max_length - 2 - head_tokens
    return list(ids[: 1 + head_tokens]) + list(ids[len(ids) - (tail_tokens + 1) :])


def encode_texts(tok, texts: Iterable[str], prefix: str, max_length: int, head_tokens: int) -> list[list[int]]:
    texts = [prefix + t for t in texts]
    out: list[list[int]] = []
    for i in range(0, len(texts), 4096):
        out += [head_tail(e.ids, max_length, head_tokens) for e in tok.encode_batch(texts[i : i + 4096])]
    return out


def pad_batch(seqs: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    n = max(len(s) for s in seqs)
    ids = np.full((len(seqs), n), PAD_ID, dtype=np.int64)
    mask = np.zeros((len(seqs), n), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask


def length_buckets(seqs: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (sorted by length), in length order."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def ort_session(path: str | Path, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_logits(sess, seqs: Sequence[Sequence[int]], batch_size: int = 32) -> np.ndarray:
    out: np.ndarray | None = None
    for b in length_buckets(seqs, batch_size):
        ids, mask = pad_batch([seqs[i] for i in b])
        logits = sess.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        if out is None:
            out = np.zeros((len(seqs), logits.shape[1]), dtype=np.float32)
        out[b] = logits
    return out if out is not None else np.zeros((0, len(LABELS)), dtype=np.float32)
