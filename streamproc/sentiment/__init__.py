"""Review sentiment: an ONNX text classifier behind a small :class:`Scorer` Protocol.

    scorer = load_scorer(settings.model_dir)          # the packaged model unless a directory is given
    [s.label for s in scorer.score(["质量很差，退货了", "Works great, fast shipping"])]
    # ['negative', 'positive']

The model directory (``model/`` in this package by default) holds ``model.onnx`` (inputs ``input_ids``
and ``attention_mask``, int64 ``[batch, seq]``; output ``logits`` float32 ``[batch, classes]``),
``tokenizer.json`` (Hugging Face ``tokenizers`` format), ``model.json`` (version, labels, prefix, lengths,
temperature, thresholds) and ``MODEL_CARD.md``. Only onnxruntime and ``tokenizers`` are used at run time,
and only once a scorer is loaded (importing this package imports neither).

Pure parts (truncation, length buckets, softmax, labels) are in :mod:`.text`; the session in :mod:`.onnx`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .model import DEFAULT_MODEL_DIR, ModelInfo, ModelNotFound, load_model_info, resolve_model_dir
from .text import Sentiment

if TYPE_CHECKING:
    from .onnx import OnnxScorer

__all__ = ["Scorer", "Sentiment", "ModelInfo", "ModelNotFound", "load_scorer", "load_model_info",
           "resolve_model_dir", "DEFAULT_MODEL_DIR"]


class Scorer(Protocol):
    """Anything that turns texts into sentiments, in input order."""

    model_version: str

    def score(self, texts: list[str]) -> list[Sentiment]:
        """One :class:`Sentiment` per text, in the order given."""
        ...


def load_scorer(model_dir: str | None = None, *, threads: int | None = None, batch_size: int = 32) -> OnnxScorer:
    """The ONNX scorer of ``model_dir`` (default: the packaged model). Raises ModelNotFound (a ConfigError:
    the CLI exits 2) with the fix when it is missing or invalid."""
    from .onnx import OnnxScorer

    return OnnxScorer.load(model_dir, threads=threads, batch_size=batch_size)
