"""SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018).

A causal Transformer over a user's item sequence: the hidden state at each
position predicts the next item, and the score of an item is the dot product
of the last hidden state with that item's embedding (the input table, tied).

NOTE: deviations from the paper, each on purpose:

- Loss: full-softmax cross-entropy over *all* items at every position instead
  of binary cross-entropy against one sampled negative. Klenitskiy & Vasilev
  ("Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?",
  RecSys 2023) show it beats the original loss by a wide margin; on a catalogue
  of ~1.3k items the full softmax is cheap.
- Blocks are pre-LayerNorm (LN → attention → residual, LN → FFN → residual,
  one LN at the end), as in the authors' released code and nanoGPT; the paper's
  equations put LN after the residual.
- The FFN is GELU with an inner width of its own (``ff_dim``), not ReLU at
  width ``hidden``.
- Positions count back from the newest event (0 = the newest), so a history
  shorter than ``max_len`` uses the same position embeddings for its recent
  events as a long one; the paper's fixed-width left-padded arrays do the same.

Item index ``i`` (0..n_items-1) is embedding row ``i + 1``; row 0 is padding
(``PAD = -1`` maps to it) and is never attended to, predicted or scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipelines.models.base import PAD, Histories, Recommender


@dataclass(frozen=True)
class SASRecConfig:
    hidden: int = 64  # embedding and model width; 64 is ample for ~1.3k items
    heads: int = 2  # attention heads; hidden must divide by it
    layers: int = 2  # Transformer blocks; the paper finds 2 best on dense data like ML
    ff_dim: int = 256  # FFN inner width (4 × hidden, as in nanoGPT / RecBole)
    dropout: float = 0.2  # embeddings, attention, residuals; 0.5 did no better on ML-100K
    # events attended to: 50 covers the whole training history of 42% of ML-100K users;
    # 200 (85%) reached 0.096 test NDCG in one run but trains ~4x slower on CPU
    max_len: int = 50
    layer_norm_eps: float = 1e-8  # the authors' code uses 1e-8
    init_std: float = 0.02  # normal init of linear and embedding weights (GPT-2 / RecBole)

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.max_len < 1:
            raise ValueError("max_len must be at least 1")


# -- parts ---------------------------------------------------------------------
class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape  # [B, L, D]
        q, k, v = self.qkv(x).split(width, dim=2)  # 3 × [B, L, D]
        # [B, L, D] -> [B, heads, L, D / heads]
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )  # [B, heads, L, D / heads]
        y = y.transpose(1, 2).reshape(batch, length, width)  # [B, L, D]
        return self.resid_dropout(self.proj(y))


class FeedForward(nn.Module):
    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(cfg.hidden, cfg.ff_dim),
            nn.GELU(),
            nn.Linear(cfg.ff_dim, cfg.hidden),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.attn = CausalSelfAttention(cfg)
        self.ln_ff = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.ff = FeedForward(cfg)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x), allowed)  # [B, L, D]
        return x + self.ff(self.ln_ff(x))  # [B, L, D]


def attention_mask(valid: torch.Tensor) -> torch.Tensor:
    """Which keys each query may attend to, ``[B, 1, L, L]`` bool.

    A real event attends to itself and to real events before it (causal and
    key-padding masks). A padding slot attends only to itself, so its softmax
    row is never empty (no NaN); its output is zeroed and never used.
    """
    length = valid.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()  # [L, L]
    itself = torch.eye(length, dtype=torch.bool, device=valid.device)  # [L, L]
    allowed = causal[None] & valid[:, None, :]  # [B, L, L], query × key
    return (allowed | itself[None])[:, None]  # [B, 1, L, L]


# -- the model -----------------------------------------------------------------
class SASRec(Recommender):
    name = "sasrec"
    config_class = SASRecConfig
    trainable = True

    def __init__(self, n_items: int, config: SASRecConfig | dict[str, Any] | None = None) -> None:
        super().__init__(n_items, config)
        cfg = self.cfg
        self.item_emb = nn.Embedding(n_items + 1, cfg.hidden, padding_idx=0)  # row 0 = padding
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)  # 0 = newest event
        self.emb_dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_out = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.apply(self._init_weights)

    @property
    def context_length(self) -> int:
        return self.cfg.max_len

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """Hidden state after each event, ``[B, L, D]``; zeros at padding slots.

        ``items`` is ``[B, L]`` item indices, left-padded with ``PAD``, ``L <= max_len``.
        """
        length = items.shape[1]
        if length > self.cfg.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.cfg.max_len}")
        valid = items != PAD  # [B, L]
        positions = torch.arange(length - 1, -1, -1, device=items.device)  # [L], newest = 0
        x = self.item_emb(items + 1) + self.pos_emb(positions)[None]  # [B, L, D]
        x = self.emb_dropout(x) * valid[..., None]
        allowed = attention_mask(valid)  # [B, 1, L, L]
        for block in self.blocks:
            x = block(x, allowed) * valid[..., None]  # [B, L, D]
        return self.ln_out(x) * valid[..., None]  # [B, L, D]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every real item for hidden states ``[..., D]`` -> ``[..., n_items]``."""
        return hidden @ self.item_emb.weight[1:].T  # tied output, padding row excluded

    def loss(self, batch: Histories) -> torch.Tensor:
        """Mean next-item cross-entropy over every real position of the sequences."""
        items = batch.items[:, -(self.cfg.max_len + 1) :]  # [B, L + 1]
        inputs, targets = items[:, :-1], items[:, 1:]  # [B, L] each
        hidden = self(inputs)  # [B, L, D]
        # left padding: a real input always has a real target, and the first event is
        # never a target (nothing precedes it)
        keep = inputs != PAD  # [B, L]
        logits = self.logits(hidden[keep])  # [N, n_items]
        return F.cross_entropy(logits.float(), targets[keep])

    def score_all(self, histories: Histories) -> torch.Tensor:
        items = histories.items[:, -self.cfg.max_len :]  # [B, L]
        if items.shape[1] == 0:
            return torch.zeros(items.shape[0], self.n_items, device=items.device)
        last = self(items)[:, -1, :]  # [B, D], newest event (left padding)
        return self.logits(last)  # [B, n_items]
