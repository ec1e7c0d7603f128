"""``streamproc score``: sentiment of texts given as arguments or as JSON lines, JSON lines out in input order.

Each output line is the input object (``{"text": ...}`` for an argument) plus ``label`` and the class
probabilities ``negative``, ``positive`` (and ``neutral`` when the model has that class). Lines are read
and scored in chunks, so a large file streams through in bounded memory.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

import orjson

from .errors import ConfigError
from .settings import Settings

__all__ = ["score_main", "CHUNK"]

CHUNK = 256
"""Texts scored per call (the scorer groups them by length into smaller model batches)."""


def _objects(texts: Sequence[str], path: str | None) -> Iterator[dict[str, Any]]:
    for t in texts:
        yield {"text": t}
    if path is None:
        return
    try:
        fh = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ConfigError(f"--file {path}: {exc.strerror or exc}") from None
    try:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise ConfigError(f"{path}:{n}: not JSON; each line must be an object with a `text` string") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise ConfigError(f"{path}:{n}: each line must be a JSON object with a `text` string")
            yield obj
    finally:
        if fh is not sys.stdin:
            fh.close()


def _count_lines(path: str | None) -> int | None:
    if path is None or path == "-":
        return None
    try:
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return None


def score_main(texts: Sequence[str], path: str | None, settings: Settings, out: TextIO, *,
               progress: bool = False) -> int:
    """Score and print; ConfigError (exit 2) for no input, an unreadable file or line, or no model."""
    from .progress import bar, wanted
    from .sentiment import load_scorer

    if not texts and path is None:
        raise ConfigError("nothing to score: give TEXT arguments or --file F.jsonl (JSON lines with a `text` field)")
    scorer = load_scorer(settings.model_dir, threads=settings.sentiment_threads)
    total = len(texts) + (_count_lines(path) or 0) if path not in (None, "-") else None
    show = path is not None and wanted(progress)
    chunk: list[dict[str, Any]] = []

    def flush() -> None:
        results = scorer.score([o["text"] for o in chunk])
        lines = []
        for obj, s in zip(chunk, results, strict=True):
            lines.append(orjson.dumps({**obj, "label": s.label, **s.probabilities}))
        out.write(b"\n".join(lines).decode() + "\n")
        out.flush()
        chunk.clear()

    for obj in bar(_objects(texts, path), enabled=show, desc="scoring", unit="review", total=total):
        chunk.append(obj)
        if len(chunk) >= CHUNK:
            flush()
    if chunk:
        flush()
    return 0
