"""A minimal BERT encoder in PyTorch with Hugging Face parameter names (training side only).

The state dict is interchangeable with ``transformers.BertModel`` (same names and shapes), so the
converted weights load in either. Used by convert/train/export; never imported at run time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class Embeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, max_pos: int, type_vocab: int, eps: float, dropout: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(max_pos, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        pos = self.position_embeddings.weight[:seq].unsqueeze(0)
        x = self.word_embeddings(input_ids) + pos + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)


class AttnOutput(nn.Module):
    def __init__(self, hidden: int, eps: float, dropout: float):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, eps: float, dropout: float, attn_dropout: float):
        super().__init__()
        self.self = SelfAttention(hidden, heads)
        self.output = AttnOutput(hidden, eps, dropout)
        self.attn_dropout = attn_dropout

    def forward(self, x: torch.Tensor, bias: torch.Tensor, sdpa: bool) -> torch.Tensor:
        b, s, h = x.shape
        nh = self.self.heads
        hd = h // nh

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, nh, hd).transpose(1, 2)

        q, k, v = split(self.self.query(x)), split(self.self.key(x)), split(self.self.value(x))
        if sdpa:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                                 dropout_p=self.attn_dropout if self.training else 0.0)
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(hd)) + bias
            ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        ctx = ctx.transpose(1, 2).reshape(b, s, h)
        o = self.output
        return o.LayerNorm(x + o.dropout(o.dense(ctx)))


class Intermediate(nn.Module):
    def __init__(self, hidden: int, ffn: int):
        super().__init__()
        self.dense = nn.Linear(hidden, ffn)


class Output(nn.Module):
    def __init__(self, hidden: int, ffn: int, eps: float, dropout: float):
        super().__init__()
        self.dense = nn.Linear(ffn, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)


class Layer(nn.Module):
    def __init__(self, hidden, heads, ffn, eps, dropout, attn_dropout):
        super().__init__()
        self.attention = Attention(hidden, heads, eps, dropout, attn_dropout)
        self.intermediate = Intermediate(hidden, ffn)
        self.output = Output(hidden, ffn, eps, dropout)

    def forward(self, x, bias, sdpa):
        x = self.attention(x, bias, sdpa)
        m = F.gelu(self.intermediate.dense(x))
        o = self.output
        return o.LayerNorm(x + o.dropout(o.dense(m)))


class Encoder(nn.Module):
    def __init__(self, n, *args):
        super().__init__()
        self.layer = nn.ModuleList([Layer(*args) for _ in range(n)])


class BertEncoder(nn.Module):
    """BertModel without pooler: (input_ids, attention_mask) -> last hidden states [b, s, h]."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = dict(cfg)
        h, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        dp, adp = cfg.get("hidden_dropout_prob", 0.1), cfg.get("attention_probs_dropout_prob", 0.1)
        self.embeddings = Embeddings(cfg["vocab_size"], h, cfg["max_position_embeddings"], cfg["type_vocab_size"], eps, dp)
        self.encoder = Encoder(cfg["num_hidden_layers"], h, cfg["num_attention_heads"], cfg["intermediate_size"], eps, dp, adp)
        self.sdpa = True  # turned off for ONNX export (plain MatMul/Softmax graph)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids)
        m = attention_mask.to(x.dtype)
        bias = ((1.0 - m) * -1e4)[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, bias, self.sdpa)
        return x


def mean_pool(h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    m = attention_mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


class SentimentModel(nn.Module):
    """Encoder + masked mean pooling + linear head -> logits (negative, positive)."""

    def __init__(self, encoder: BertEncoder, n_labels: int = 2, dropout: float = 0.1):
        super().__init__()
        self.bert = encoder
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.cfg["hidden_size"], n_labels)

    def pooled(self, input_ids, attention_mask):
        return mean_pool(self.bert(input_ids, attention_mask), attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pooled(input_ids, attention_mask)))


def load_encoder(d: str | Path, layers: int | None = None) -> BertEncoder:
    d = Path(d)
    cfg = json.loads((d / "config.json").read_text())
    sd = torch.load(d / "pytorch_model.bin", map_location="cpu", weights_only=True)
    sd = {k: v for k, v in sd.items() if k.startswith(("embeddings.", "encoder."))}
    if layers is not None and layers < cfg["num_hidden_layers"]:
        cfg["num_hidden_layers"] = layers
        sd = {k: v for k, v in sd.items() if not k.startswith("encoder.layer.") or int(k.split(".")[2]) < layers}
    cfg["vocab_size"] = sd["embeddings.word_embeddings.weight"].shape[0]
    enc = BertEncoder(cfg)
    enc.load_state_dict(sd, strict=True)
    return enc


def save_encoder(enc: BertEncoder, d: str | Path, extra: dict | None = None) -> None:
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    cfg = dict(enc.cfg)
    cfg["num_hidden_layers"] = len(enc.encoder.layer)
    cfg["vocab_size"] = enc.embeddings.word_embeddings.weight.shape[0]
    if extra:
        cfg.update(extra)
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    torch.save({k: v.contiguous() for k, v in enc.state_dict().items()}, d / "pytorch_model.bin")
