"""Export a trained checkpoint to one ONNX graph (encoder + masked mean pooling + head) and int8-quantize it.

Checkpoint dir (written by train.py or fit_v0.py): config.json, pytorch_model.bin (SentimentModel state:
``bert.*`` + ``classifier.*``), tokenizer.json.
Outputs in --out: model.fp32.onnx, model.int8.onnx (onnxruntime dynamic quantization, **per-channel**
int8 weights for MatMul and the embedding Gather), tokenizer.json (copied).

Graph: inputs input_ids int64 [batch, seq], attention_mask int64 [batch, seq] (dynamic axes);
output logits float32 [batch, classes] ordered as the checkpoint's labels (negative, neutral, positive for a
three-class model, negative, positive for a two-class one).

Usage: python model/export.py --ckpt build/sentiment/train/final --out build/sentiment/export/final
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def load_checkpoint(ckpt: Path):
    import torch
    from bert import BertEncoder, SentimentModel

    cfg = json.loads((ckpt / "config.json").read_text())
    sd = torch.load(ckpt / "pytorch_model.bin", map_location="cpu", weights_only=True)
    cfg["vocab_size"] = sd["bert.embeddings.word_embeddings.weight"].shape[0]
    cfg["num_hidden_layers"] = len({k.split(".")[3] for k in sd if k.startswith("bert.encoder.layer.")})
    model = SentimentModel(BertEncoder(cfg), n_labels=sd["classifier.weight"].shape[0])
    model.load_state_dict(sd, strict=True)
    return model.eval()


def export_onnx(model, path: Path, opset: int = 17) -> None:
    import torch

    model.bert.sdpa = False
    ids = torch.tensor([[0, 35378, 12, 6, 2], [0, 35378, 12, 2, 1]], dtype=torch.long)
    mask = (ids != 1).long()
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(
            model, (ids, mask), str(tmp), input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                          "logits": {0: "batch"}},
            opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    import onnx

    m = onnx.load(str(tmp))
    onnx.checker.check_model(m)
    tmp.replace(path)


def quantize(fp32: Path, int8: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = fp32.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        src = pre
    except Exception as e:  # pragma: no cover - pre-processing is an optimisation only
        print("quant_pre_process failed, quantizing the raw graph:", e, file=sys.stderr)
        src = fp32
    tmp = int8.with_suffix(".tmp.onnx")
    quantize_dynamic(str(src), str(tmp), per_channel=True, weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Gather"], extra_options={"EnableSubgraph": False})
    tmp.replace(int8)
    if pre.exists():
        pre.unlink()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    model = load_checkpoint(a.ckpt)
    export_onnx(model, a.out / "model.fp32.onnx")
    quantize(a.out / "model.fp32.onnx", a.out / "model.int8.onnx")
    shutil.copyfile(a.ckpt / "tokenizer.json", a.out / "tokenizer.json")
    for f in ("train.json", "config.json"):
        if (a.ckpt / f).exists():
            shutil.copyfile(a.ckpt / f, a.out / f)
    # quick parity check torch vs onnx fp32
    import numpy as np
    from common import ort_session

    ids = np.array([[0, 35378, 12, 6, 2, 1, 1], [0, 35378, 12, 20, 30, 40, 2]], dtype=np.int64)
    ids = np.minimum(ids, model.bert.embeddings.word_embeddings.weight.shape[0] - 1)
    mask = (ids != 1).astype(np.int64)
    with torch.no_grad():
        ref = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    got = ort_session(a.out / "model.fp32.onnx").run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
    q = ort_session(a.out / "model.int8.onnx").run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
    print("torch vs onnx fp32 max abs diff", float(np.abs(ref - got).max()), "int8", q.tolist(), "fp32", got.tolist())
    for f in ("model.fp32.onnx", "model.int8.onnx"):
        print(f, (a.out / f).stat().st_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
