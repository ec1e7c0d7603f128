"""Check the project's own review corpus (model/corpus/<voice>.jsonl) against CORPUS spec (issue 15).

    python3 model/corpus/validate.py FILE...           # exit 1 with one line per problem
    python3 model/corpus/validate.py --stats FILE...   # also print counts per voice x label, lang, ...

Stdlib only, so the data can be checked without the training venv. The split rule lives here too:
`split(record)` is "test" iff the record's voice is a TEST voice (test voices are the only ones allowed
to write the HELD-OUT categories, so held-out categories never reach training).
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "ASPECTS",
    "CATEGORIES",
    "HELD_OUT_CATEGORIES",
    "LABELS",
    "LANGS",
    "PHENOMENA",
    "TEST_VOICES",
    "TRAIN_CATEGORIES",
    "TRAIN_VOICES",
    "VOICES",
    "check_records",
    "load",
    "main",
    "normalise",
    "split",
    "stats",
]

TRAIN_VOICES = frozenset({"terse_en", "detail_en", "netizen_zh", "careful_zh", "switcher"})
TEST_VOICES = frozenset({"dry_uk", "practical_zh", "hk_sg_mixed"})
VOICES = TRAIN_VOICES | TEST_VOICES
TRAIN_CATEGORIES = frozenset(
    {
        "electronics", "phone_accessories", "clothing", "shoes", "beauty_skincare", "home_kitchen",
        "groceries_snacks", "toys_games", "books", "sports_outdoors", "furniture", "appliances",
        "health_supplements", "jewelry_watches",
    }
)
HELD_OUT_CATEGORIES = frozenset({"pet_supplies", "baby_products", "automotive_parts", "office_stationery"})
CATEGORIES = TRAIN_CATEGORIES | HELD_OUT_CATEGORIES
LABELS = ("negative", "neutral", "positive")
LANGS = ("en", "zh", "mixed")
ASPECTS = (
    "quality", "fit_size", "delivery", "packaging", "customer_service", "price_value", "authenticity",
    "durability", "battery", "taste_smell", "appearance", "ease_of_use",
)
PHENOMENA = (
    "negation", "contrast", "sarcasm", "faint_praise", "mixed_aspects", "verdict_at_end", "typo", "slang",
    "emoji", "rating_only", "question", "comparison", "negative_words_positive", "complaint_in_happy",
    "long", "short",
)
FIELDS = ("id", "voice", "lang", "category", "label", "aspects", "phenomena", "rating", "text")

NEAR_DUP_JACCARD = 0.5  # character 5-gram Jaccard (normalised text) at or above which two texts are near-duplicates
SHINGLE = 5
SHORT_WORDS = 5  # "short" = at most 5 English words / 8 汉字 (a 汉字 counts 5/8 of a word in mixed text)
SHORT_HANZI = 8

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z'’\-]*|\d+(?:[.,/]\d+)*")
_ID = re.compile(r"^(?P<voice>[a-z_]+)-(?P<num>\d{4})$")


def split(record: dict) -> str:
    """Return "test" iff the record's voice is a TEST voice, else "train"."""
    return "test" if record.get("voice") in TEST_VOICES else "train"


def normalise(text: str) -> str:
    """NFKC, lower case, only letters/digits/CJK kept: what two texts must share to be 'the same'."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if ch.isalnum())


def _has_emoji(text: str) -> bool:
    return any(
        0x1F000 <= ord(ch) <= 0x1FAFF or 0x2600 <= ord(ch) <= 0x27BF or 0x2300 <= ord(ch) <= 0x23FF
        or 0x2B00 <= ord(ch) <= 0x2BFF or ch in "☺♥❤✨⭐✅❌" for ch in text
    ) or bool(re.search(r"[:;]-?[()DPp]|<3|\^_\^|QAQ|orz", text))


def _word_units(text: str) -> float:
    return len(_LATIN_WORD.findall(text)) + len(_CJK.findall(text)) * SHORT_WORDS / SHORT_HANZI


def _shingles(norm: str) -> frozenset[str]:
    if len(norm) <= SHINGLE:
        return frozenset({norm})
    return frozenset(norm[i : i + SHINGLE] for i in range(len(norm) - SHINGLE + 1))


def _check_one(rec: object, where: str, voice_of_file: str | None) -> list[str]:
    if not isinstance(rec, dict):
        return [f"{where}: not a JSON object"]
    problems: list[str] = []
    missing = [f for f in FIELDS if f not in rec]
    extra = sorted(set(rec) - set(FIELDS))
    if missing:
        problems.append(f"{where}: missing field(s) {', '.join(missing)}")
    if extra:
        problems.append(f"{where}: unknown field(s) {', '.join(extra)}")
    voice = rec.get("voice")
    if voice not in VOICES:
        problems.append(f"{where}: voice {voice!r} is not one of the spec's voices")
    elif voice_of_file is not None and voice != voice_of_file:
        problems.append(f"{where}: voice {voice!r} in file of voice {voice_of_file!r}")
    rid = rec.get("id")
    m = _ID.match(rid) if isinstance(rid, str) else None
    if m is None or m["voice"] != voice:
        problems.append(f"{where}: id {rid!r} is not '<voice>-NNNN' for voice {voice!r}")
    lang = rec.get("lang")
    if lang not in LANGS:
        problems.append(f"{where}: lang {lang!r} not in {LANGS}")
    cat = rec.get("category")
    if cat not in CATEGORIES:
        problems.append(f"{where}: category {cat!r} unknown")
    elif cat in HELD_OUT_CATEGORIES and voice not in TEST_VOICES:
        problems.append(f"{where}: held-out category {cat!r} written by non-test voice {voice!r}")
    if rec.get("label") not in LABELS:
        problems.append(f"{where}: label {rec.get('label')!r} not in {LABELS}")
    for field, allowed in (("aspects", ASPECTS), ("phenomena", PHENOMENA)):
        values = rec.get(field)
        if not isinstance(values, list):
            problems.append(f"{where}: {field} is not a list")
            continue
        bad = [v for v in values if v not in allowed]
        if bad:
            problems.append(f"{where}: {field} has unknown value(s) {bad}")
        if len(set(map(str, values))) != len(values):
            problems.append(f"{where}: {field} has repeated values")
    rating = rec.get("rating")
    if rating is not None and (type(rating) is not int or not 1 <= rating <= 5):
        problems.append(f"{where}: rating {rating!r} is not 1-5 or null")
    text = rec.get("text")
    if not isinstance(text, str) or not text.strip():
        problems.append(f"{where}: text is empty or not a string")
        return problems
    if text != text.strip():
        problems.append(f"{where}: text has leading/trailing whitespace")
    has_cjk = bool(_CJK.search(text))
    has_latin = bool(re.search(r"[A-Za-z]{2,}", text))
    if lang == "en" and has_cjk:
        problems.append(f"{where}: lang en but text has Chinese characters")
    if lang == "zh" and not has_cjk:
        problems.append(f"{where}: lang zh but text has no Chinese characters")
    if lang == "mixed" and not (has_cjk and has_latin):
        problems.append(f"{where}: lang mixed but text lacks Chinese or English words")
    raw_phen = rec.get("phenomena")
    phen: list[object] = raw_phen if isinstance(raw_phen, list) else []
    if "short" in phen and _word_units(text) > SHORT_WORDS:
        problems.append(f"{where}: tagged short but longer than {SHORT_WORDS} words / {SHORT_HANZI} 汉字")
    if "short" in phen and "long" in phen:
        problems.append(f"{where}: tagged both short and long")
    if "emoji" in phen and not _has_emoji(text):
        problems.append(f"{where}: tagged emoji but text has none")
    return problems


def _near_duplicates(items: Sequence[tuple[str, str]]) -> list[tuple[str, str, float]]:
    """Pairs (id, id, jaccard) among (id, normalised text) whose 5-gram Jaccard >= NEAR_DUP_JACCARD."""
    sh = [(rid, _shingles(norm)) for rid, norm in items if len(norm) > SHINGLE]
    index: dict[str, list[int]] = defaultdict(list)
    for i, (_, grams) in enumerate(sh):
        for g in grams:
            index[g].append(i)
    shared: Counter[tuple[int, int]] = Counter()
    for members in index.values():
        if len(members) > 200:  # a very common 5-gram says nothing about duplication
            continue
        for a_pos, a in enumerate(members):
            for b in members[a_pos + 1 :]:
                shared[(a, b)] += 1
    out = []
    for (a, b), common in shared.items():
        union = len(sh[a][1]) + len(sh[b][1]) - common
        jac = common / union
        if jac >= NEAR_DUP_JACCARD:
            out.append((sh[a][0], sh[b][0], jac))
    return sorted(out)


def check_records(files: Iterable[tuple[str, Sequence[object]]]) -> list[str]:
    """Every problem in the given (file name, parsed records) pairs, one human-readable line each."""
    problems: list[str] = []
    seen_ids: dict[str, str] = {}
    seen_text: dict[str, str] = {}
    by_voice: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for name, records in files:
        stem = Path(name).stem
        voice_of_file = stem if stem in VOICES else None
        for n, rec in enumerate(records, start=1):
            where = f"{name}:{n}"
            problems.extend(_check_one(rec, where, voice_of_file))
            if not isinstance(rec, dict):
                continue
            rid = rec.get("id")
            if isinstance(rid, str):
                if rid in seen_ids:
                    problems.append(f"{where}: id {rid} repeats {seen_ids[rid]}")
                seen_ids[rid] = where
                m = _ID.match(rid)
                if voice_of_file and m and int(m["num"]) != n:
                    problems.append(f"{where}: id {rid} out of sequence (expected number {n:04d})")
            text = rec.get("text")
            if isinstance(text, str) and text.strip():
                norm = normalise(text)
                key = norm or text.strip()
                if key in seen_text:
                    problems.append(f"{where}: duplicate text of {seen_text[key]} ({text[:40]!r})")
                else:
                    seen_text[key] = f"{rid} ({where})"
                    by_voice[str(rec.get("voice"))].append((str(rid), norm))
    for voice in sorted(by_voice):
        for a, b, jac in _near_duplicates(by_voice[voice]):
            problems.append(f"{voice}: near-duplicate texts {a} and {b} (5-gram Jaccard {jac:.2f})")
    return problems


def load(path: Path) -> tuple[list[object], list[str]]:
    """Parsed lines of a JSONL file and the lines that are not JSON (as problems)."""
    records: list[object] = []
    problems: list[str] = []
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [], [f"{path}: not UTF-8 ({exc})"]
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            if n != len(text.split("\n")):
                problems.append(f"{path}:{n}: blank line")
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{n}: not JSON ({exc.msg})")
            records.append(None)
    return records, problems


def _length_bucket(rec: dict) -> str:
    units = _word_units(str(rec.get("text", "")))
    return "short(<=5w)" if units <= SHORT_WORDS else "medium" if units <= 45 else "long(>45w)"


def stats(records: Sequence[dict]) -> str:
    """Counts per voice x label, and per voice of lang, category, aspect, phenomenon, length, rating."""
    voices = sorted({str(r.get("voice")) for r in records})
    lines: list[str] = [f"records: {len(records)}  (train {sum(split(r) == 'train' for r in records)}, "
                        f"test {sum(split(r) == 'test' for r in records)})"]

    def table(title: str, key, columns: Sequence[str]) -> None:
        counts: dict[str, Counter[str]] = {v: Counter() for v in voices}
        for r in records:
            for k in key(r):
                counts[str(r.get("voice"))][k] += 1
        lines.append("")
        lines.append(f"{title:<24}" + "".join(f"{v:>13}" for v in voices) + f"{'total':>9}")
        for c in columns:
            row = [counts[v][c] for v in voices]
            lines.append(f"{c:<24}" + "".join(f"{x:>13}" for x in row) + f"{sum(row):>9}")

    table("label", lambda r: [r.get("label")], LABELS)
    table("lang", lambda r: [r.get("lang")], LANGS)
    table("length", lambda r: [_length_bucket(r)], ("short(<=5w)", "medium", "long(>45w)"))
    table("rating", lambda r: [str(r.get("rating"))], ("1", "2", "3", "4", "5", "None"))
    table("category", lambda r: [r.get("category")],
          sorted(TRAIN_CATEGORIES) + sorted(HELD_OUT_CATEGORIES))
    table("aspect", lambda r: r.get("aspects") or [], ASPECTS)
    table("phenomenon", lambda r: r.get("phenomena") or [], PHENOMENA)
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    want_stats = "--stats" in args
    paths = [Path(a) for a in args if a != "--stats"]
    if not paths:
        print("usage: validate.py [--stats] FILE.jsonl...", file=sys.stderr)
        return 2
    problems: list[str] = []
    files: list[tuple[str, list[object]]] = []
    for path in paths:
        if not path.is_file():
            problems.append(f"{path}: no such file")
            continue
        records, load_problems = load(path)
        problems.extend(load_problems)
        files.append((str(path), [r for r in records if r is not None]))
    problems.extend(check_records(files))
    for p in problems:
        print(p)
    if want_stats:
        print(stats([r for _, recs in files for r in recs if isinstance(r, dict)]))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
