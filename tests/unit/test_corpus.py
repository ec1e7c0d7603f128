"""The project's own review corpus (model/corpus/*.jsonl): the validator's checks and the split rule."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "model/corpus"


def _load_validator():
    spec = importlib.util.spec_from_file_location("_corpus_validate_under_test", CORPUS / "validate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


v = _load_validator()
FILES = sorted(CORPUS.glob("*.jsonl"))


def _all_records() -> list[dict]:
    out = []
    for path in FILES:
        records, problems = v.load(path)
        assert problems == []
        out.extend(records)
    return out


def _rec(**over) -> dict:
    base = {"id": "switcher-0001", "voice": "switcher", "lang": "mixed", "category": "shoes",
            "label": "positive", "aspects": ["fit_size"], "phenomena": [], "rating": None,
            "text": "这双 sneakers 码数很准，穿了一周 still comfy"}
    base.update(over)
    return base


def test_every_corpus_file_passes_the_validator():
    if not FILES:
        # No corpus yet: the checks over an empty corpus must then find nothing to complain about.
        assert list(CORPUS.glob("*.jsonl")) == []
        assert v.check_records([]) == []
        return
    files = []
    for path in FILES:
        records, problems = v.load(path)
        assert problems == [], problems[:5]
        files.append((str(path.relative_to(REPO)), records))
    problems = v.check_records(files)
    assert problems == [], "\n".join(problems[:20])


def test_corpus_files_are_named_after_known_voices():
    assert {p.stem for p in FILES} <= v.VOICES


def test_split_rule_keeps_held_out_voices_and_categories_out_of_training():
    assert v.TRAIN_VOICES.isdisjoint(v.TEST_VOICES)
    assert v.TRAIN_CATEGORIES.isdisjoint(v.HELD_OUT_CATEGORIES)
    records = _all_records()
    train = [r for r in records if v.split(r) == "train"]
    test = [r for r in records if v.split(r) == "test"]
    assert len(train) + len(test) == len(records)
    assert all(r["voice"] in v.TRAIN_VOICES for r in train)
    assert all(r["category"] in v.TRAIN_CATEGORIES for r in train)
    assert all(r["voice"] in v.TEST_VOICES for r in test)
    # No text is shared between the splits, not even after normalisation.
    assert not {v.normalise(r["text"]) for r in train} & {v.normalise(r["text"]) for r in test}


def test_split_is_decided_by_voice_alone():
    assert v.split(_rec()) == "train"
    assert v.split(_rec(voice="dry_uk", category="pet_supplies")) == "test"
    assert v.split(_rec(voice="hk_sg_mixed", category="shoes")) == "test"
    # A held-out category in a train voice does not make it test: the validator rejects it instead.
    assert v.split(_rec(category="baby_products")) == "train"


def test_a_good_record_passes():
    assert v.check_records([("switcher.jsonl", [_rec()])]) == []


def test_schema_problems_are_reported():
    bad = [
        _rec(id="switcher-1"),
        _rec(id="switcher-0002", lang="fr"),
        _rec(id="switcher-0003", label="meh", text="完全不一样的 text here ok"),
        _rec(id="switcher-0004", aspects=["colour"], text="另一条 review 的内容 quite different"),
        _rec(id="switcher-0005", rating=6, text="rating 错了 but text is fine la"),
        _rec(id="switcher-0006", category="pet_supplies", text="猫砂 smells ok, 猫主子 approved"),
        _rec(id="switcher-0007", voice="nobody", text="unknown voice 的 review"),
    ]
    problems = v.check_records([("switcher.jsonl", bad)])
    joined = "\n".join(problems)
    assert "is not '<voice>-NNNN'" in joined
    assert "lang 'fr'" in joined
    assert "label 'meh'" in joined
    assert "unknown value(s) ['colour']" in joined
    assert "rating 6" in joined
    assert "held-out category 'pet_supplies' written by non-test voice 'switcher'" in joined
    assert "voice 'nobody'" in joined


def test_ids_must_be_unique_and_sequential():
    recs = [_rec(), _rec(id="switcher-0001", text="第二条 totally other words")]
    problems = v.check_records([("switcher.jsonl", recs)])
    assert any("repeats" in p for p in problems)
    assert any("out of sequence" in p for p in problems)


def test_lang_must_match_the_script():
    recs = [_rec(lang="en"), _rec(id="switcher-0002", lang="zh", text="only english words in this one")]
    problems = v.check_records([("switcher.jsonl", recs)])
    assert any("lang en but text has Chinese" in p for p in problems)
    assert any("lang zh but text has no Chinese" in p for p in problems)


def test_short_and_emoji_tags_are_checked_against_the_text():
    recs = [
        _rec(phenomena=["short"], text="这个 text is definitely more than five words long"),
        _rec(id="switcher-0002", phenomena=["emoji"], text="没有表情 no emoji at all here"),
        _rec(id="switcher-0003", phenomena=["short"], text="好评 yyds"),
    ]
    problems = v.check_records([("switcher.jsonl", recs)])
    assert [p.split(": ", 1)[0] for p in problems] == ["switcher.jsonl:1", "switcher.jsonl:2"]


def test_exact_and_near_duplicates_are_reported():
    text = "The strap broke after two weeks of light use, and the seller never answered my emails."
    recs = [
        _rec(lang="en", text=text),
        _rec(id="switcher-0002", lang="en", text=text.upper() + "!!"),
        _rec(id="switcher-0003", lang="en", text=text.replace("two weeks", "three weeks")),
        _rec(id="switcher-0004", lang="en", text="Arrived early, fits well, the colour is as pictured."),
    ]
    problems = v.check_records([("switcher.jsonl", recs)])
    assert any("switcher.jsonl:2: duplicate text" in p for p in problems)
    assert any("near-duplicate texts switcher-0001 and switcher-0003" in p for p in problems)
    assert not any("switcher-0004" in p for p in problems)


def test_cli_exit_codes_and_stats(tmp_path, capsys):
    good = tmp_path / "switcher.jsonl"
    good.write_text(json.dumps(_rec(), ensure_ascii=False) + "\n", encoding="utf-8")
    assert v.main(["--stats", str(good)]) == 0
    out = capsys.readouterr().out
    assert "records: 1  (train 1, test 0)" in out
    assert "positive" in out and "fit_size" in out
    bad = tmp_path / "dry_uk.jsonl"
    bad.write_text('{"id": "dry_uk-0001"\n', encoding="utf-8")
    assert v.main([str(bad)]) == 1
    assert "not JSON" in capsys.readouterr().out
