"""The ONNX scorer: ``tokenizers`` for text -> ids, onnxruntime for ids -> logits. No torch.

Texts are tokenized in one call, truncated head+tail, grouped by length so each batch is padded only
to its own longest text, run, and put back in input order. ``InferenceSession.run`` releases the GIL:
model calls run on ``threads`` threads at once (each single-threaded inside onnxruntime, which measured
faster than one call on two intra-op threads for review-length inputs), and the worker's event loop
keeps going meanwhile.

**Batch invariance.** A dynamically quantized (int8) model computes its activation scales over the
whole input tensor, so a text's probabilities depend on the other texts of its batch and on their
padding (by up to 0.13 for the v0 model). The stream promises the same features and alerts whatever
the batching, so at load the scorer checks whether the model gives exactly the same logits for two
texts run together and apart; if not, every text gets a call of its own (still in parallel, still
one tokenizer call per batch). An fp32 or statically quantized model passes and is run in batches.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .model import ModelInfo, ModelNotFound, load_model_info, resolve_model_dir
from .text import Sentiment, clip_text, head_tail, length_buckets, pad_batch, sentiments, softmax

__all__ = ["OnnxScorer", "default_threads", "session_options"]

MAX_CHARS = 4096
"""Characters of a text that are tokenized at most (head and tail); far more than max_length tokens need."""


def default_threads() -> int:
    """min(2, CPUs this process may use): more intra-op threads than cores only adds contention."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(2, cpus))


def session_options(threads: int = 1) -> Any:
    """Session options for a small encoder on a few shared cores: every graph optimisation, ``threads``
    intra-op threads, one inter-op thread (the graph is a chain), and no spinning between runs — a
    spinning pool would take the cores the worker's event loop needs while it waits for the next batch."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


class OnnxScorer:
    """:class:`~streamproc.sentiment.Scorer` over an ONNX classifier and its ``tokenizers`` tokenizer."""

    def __init__(self, session: Any, tokenizer: Any, info: ModelInfo, *, batch_size: int = 32, threads: int = 1,
                 batched: bool | None = None, path: Path | None = None) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.info = info
        self.model_version = info.model_version
        self.batch_size = max(1, batch_size)
        self.threads = max(1, threads)
        self.path = path
        self._inputs = {i.name for i in session.get_inputs()}
        self._pad_id = info.pad_token_id if info.pad_token_id is not None else _pad_id(tokenizer)
        self._lock = threading.Lock()  # the tokenizer is not documented thread-safe
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="onnx") if self.threads > 1 else None
        self.batched = self.batch_invariant() if batched is None else batched
        """Whether texts share model calls (see the module docstring); else one call per text."""

    @classmethod
    def load(cls, model_dir: str | Path | None = None, *, threads: int | None = None, batch_size: int = 32) -> OnnxScorer:
        """Load ``model_dir`` (default: the packaged model). ModelNotFound (a ConfigError: exit 2) says
        what is wrong and how to fix it."""
        path = resolve_model_dir(model_dir)
        info = load_model_info(path)
        import onnxruntime as ort
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception on bad files
            raise ModelNotFound(f"sentiment model {str(path)!r}: tokenizer.json cannot be loaded ({exc}); "
                                "rebuild the model (make model) or point STREAMPROC_MODEL_DIR elsewhere") from None
        tok.no_truncation()
        tok.no_padding()
        try:
            sess = ort.InferenceSession(str(path / "model.onnx"), sess_options=session_options(1),
                                        providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph types
            raise ModelNotFound(f"sentiment model {str(path)!r}: model.onnx cannot be loaded ({str(exc)[:200]}); "
                                "rebuild the model (make model) or point STREAMPROC_MODEL_DIR elsewhere") from None
        names = {i.name for i in sess.get_inputs()}
        outputs = [o.name for o in sess.get_outputs()]
        if not {"input_ids", "attention_mask"} <= names or "logits" not in outputs:
            raise ModelNotFound(f"sentiment model {str(path)!r}: model.onnx needs inputs input_ids and attention_mask "
                                f"and output logits (has {sorted(names)} -> {outputs}); rebuild the model (make model)")
        return cls(sess, tok, info, batch_size=batch_size, threads=threads or default_threads(), path=path)

    def batch_invariant(self) -> bool:
        """Whether two texts of different lengths get exactly the same logits together as apart."""
        seqs = self.encode(["Great product, works exactly as described.", "质量很差，用了两天就坏了"])
        together = self._run(seqs)
        apart = np.concatenate([self._run([s]) for s in seqs])
        return bool(np.array_equal(together, apart))

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (prefix added, special tokens included), truncated head+tail: a text
        longer than ``max_length`` keeps its opening special token and ``head_tokens`` tokens, and its last
        ``tail_tokens`` tokens and closing special token."""
        info = self.info
        with self._lock:
            encs = self.tokenizer.encode_batch([info.prefix + clip_text(t, MAX_CHARS) for t in texts])
        return [head_tail(e.ids, info.head_tokens + 1, info.tail_tokens + 1) for e in encs]

    def _run(self, seqs: list[list[int]]) -> np.ndarray:
        """One model call: the texts padded to the longest of them."""
        ids, mask = pad_batch(seqs, self._pad_id)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        out: np.ndarray = self.session.run(["logits"], feed)[0]
        return out

    def logits(self, seqs: list[list[int]]) -> np.ndarray:
        """Raw logits of already-encoded texts, in input order: length-bucketed batches (or one call per
        text for a model that is not batch-invariant), ``threads`` calls at a time."""
        out = np.zeros((len(seqs), len(self.info.labels)), dtype=np.float32)
        groups = length_buckets([len(s) for s in seqs], self.batch_size if self.batched else 1)
        calls = [[seqs[i] for i in g] for g in groups]
        results = self._pool.map(self._run, calls) if self._pool is not None and len(calls) > 1 else map(self._run, calls)
        for idx, logits in zip(groups, results, strict=True):
            out[idx] = logits
        return out

    def score(self, texts: list[str]) -> list[Sentiment]:
        """Label and calibrated probabilities of each text, in input order."""
        if not texts:
            return []
        info = self.info
        probs = softmax(self.logits(self.encode(texts)), info.temperature)
        return sentiments(probs, info.labels, info.negative_threshold, info.positive_threshold)


def _pad_id(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "padding", None)
    if isinstance(pad, dict) and isinstance(pad.get("pad_id"), int):
        return int(pad["pad_id"])
    for token in ("<pad>", "[PAD]"):
        tid = tokenizer.token_to_id(token)
        if tid is not None:
            return int(tid)
    return 0
