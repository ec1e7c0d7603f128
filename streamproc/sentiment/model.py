"""Where the model lives and what ``model.json`` says about it; every problem is a ConfigError whose
message names the directory, what is wrong, and the fix."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .text import is_probability

__all__ = ["DEFAULT_MODEL_DIR", "ModelInfo", "ModelNotFound", "load_model_info", "resolve_model_dir", "REQUIRED_FILES"]

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "model"
"""The model shipped in the package."""
REQUIRED_FILES = ("model.onnx", "tokenizer.json", "model.json")
_FIX = "set STREAMPROC_MODEL_DIR to a directory with model.onnx, tokenizer.json and model.json (or unset it for the packaged model)"


class ModelNotFound(ConfigError):
    """The sentiment model directory is missing, incomplete or invalid."""


@dataclass(frozen=True)
class ModelInfo:
    """``model.json``: how to feed the model and read its output."""

    model_version: str
    labels: tuple[str, ...]
    """Class names in the order of the logits, e.g. ``("negative", "positive")``."""
    prefix: str = ""
    """Prepended to every text (e5 models expect ``"query: "``)."""
    max_length: int = 128
    """Longest input in tokens, special tokens included."""
    head_tokens: int = 95
    """A longer text keeps its first special token, its first ``head_tokens`` tokens ..."""
    tail_tokens: int = 31
    """... its last ``tail_tokens`` tokens and its closing special token."""
    temperature: float = 1.0
    """Logits are divided by this before the softmax (calibration)."""
    negative_threshold: float = 0.5
    positive_threshold: float = 0.5
    pad_token_id: int | None = None
    """Padding id (default: the tokenizer's ``<pad>``/``[PAD]``)."""

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> ModelInfo:
        def bad(msg: str) -> ModelNotFound:
            return ModelNotFound(f"sentiment model {where}: model.json {msg}; {_FIX}")

        labels = d.get("labels")
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise bad("needs \"labels\", a list of class names")
        if "negative" not in labels or "positive" not in labels:
            raise bad(f"labels {labels} must include \"negative\" and \"positive\"")
        version = d.get("model_version")
        if not isinstance(version, str) or not version:
            raise bad("needs \"model_version\"")
        max_length = d.get("max_length", 128)
        head = d.get("head_tokens", max_length - 2)
        tail = d.get("tail_tokens", 0)
        for name, v in (("max_length", max_length), ("head_tokens", head), ("tail_tokens", tail)):
            if type(v) is not int or v < 0:
                raise bad(f"\"{name}\" must be a non-negative integer, got {v!r}")
        if head < 1 or head + tail + 2 > max_length:
            raise bad(f"needs 1 <= head_tokens and head_tokens + tail_tokens + 2 <= max_length, got {head}+{tail}, "
                      f"{max_length}")
        pad = d.get("pad_token_id")
        if pad is not None and (type(pad) is not int or pad < 0):
            raise bad(f"\"pad_token_id\" must be a non-negative integer, got {pad!r}")
        temperature = d.get("temperature", 1.0)
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            raise bad(f"\"temperature\" must be > 0, got {temperature!r}")
        thresholds = {k: d.get(k, 0.5) for k in ("negative_threshold", "positive_threshold")}
        for k, v in thresholds.items():
            if not is_probability(v):
                raise bad(f"\"{k}\" must be a probability, got {v!r}")
        prefix = d.get("prefix", "") or ""
        if not isinstance(prefix, str):
            raise bad("\"prefix\" must be a string")
        return cls(model_version=version, labels=tuple(labels), prefix=prefix, max_length=max_length,
                   head_tokens=head, tail_tokens=tail, temperature=float(temperature),
                   negative_threshold=float(thresholds["negative_threshold"]),
                   positive_threshold=float(thresholds["positive_threshold"]), pad_token_id=pad)


def resolve_model_dir(model_dir: str | Path | None) -> Path:
    """The directory to load: ``model_dir`` (STREAMPROC_MODEL_DIR) or the packaged model; ModelNotFound
    when a required file is missing."""
    path = Path(model_dir) if model_dir else DEFAULT_MODEL_DIR
    where = f"{str(path)!r}" + ("" if model_dir else " (packaged)")
    fix = _FIX if model_dir else ("reinstall streamproc (in a checkout: make model), or set STREAMPROC_MODEL_DIR "
                                  "to a directory with model.onnx, tokenizer.json and model.json")
    if not path.is_dir():
        raise ModelNotFound(f"sentiment model {where}: no such directory; {fix}")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise ModelNotFound(f"sentiment model {where}: missing {', '.join(missing)}; {fix}")
    return path


def load_model_info(path: Path) -> ModelInfo:
    """``model.json`` of a resolved model directory."""
    try:
        d = json.loads((path / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"sentiment model {str(path)!r}: model.json is not readable JSON ({exc}); {_FIX}") from None
    if not isinstance(d, dict):
        raise ModelNotFound(f"sentiment model {str(path)!r}: model.json must be a JSON object; {_FIX}")
    return ModelInfo.from_dict(d, repr(str(path)))
