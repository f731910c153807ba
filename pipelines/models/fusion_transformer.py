"""FusionTransformer: the LLM-enhanced sequential transformer (the flagship model).

A causal transformer over the user's history that predicts the next item with a
full softmax over the catalogue (SASRec trained with cross-entropy), where

- an item is its **text** (MiniLM sentence vector of title, year and genres)
  through a learned adaptor, plus an **id embedding** when the item had
  training events; an item without events is scored from its text alone;
- **time** enters as the gap since the previous event, the hour of day and the
  day of week of each event, and a per-head attention bias on the time between
  any two events;
- the user's **profile** (age band, gender, occupation, region) is a context
  token in front of the history, so an empty history still gets a prediction.

Papers
------
- Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018
  (SASRec). NOTE: trained with full-softmax cross-entropy over all items at
  every position instead of one sampled negative with binary cross-entropy
  (as Klenitskiy & Vasilev, "Turning Dross Into Gold Loss: is BERT4Rec really
  better than SASRec?", RecSys 2023); pre-LayerNorm blocks (as nanoGPT); input
  and output item representations tied.
- Hou et al., "Towards Universal Sequence Representation Learning for
  Recommender Systems", KDD 2022 (UniSRec): text vectors through parametric
  whitening (learnable bias, then linear) and a mixture of such experts with
  a softmax gate. NOTE: trained directly on the target data, no pre-training
  across domains; the id embedding is summed (UniSRec's inductive+transductive
  setting) and randomly dropped per item during training ("id dropout") so the
  text path alone stays a good item representation: that is what makes cold
  items work.
- Li, Wang & McAuley, "Time Interval Aware Self-Attention for Sequential
  Recommendation", WSDM 2020 (TiSASRec). NOTE: instead of interval embeddings
  inside keys and values, each layer learns one scalar bias per head and per
  bucket of log2 |t_i - t_j| that is added to the attention logits (a relative
  bias as in T5); the gap since the previous event is also embedded and added
  to the input, and hour of day / day of week embeddings add periodic time.
- Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022:
  the optional ``text_encoder: lora`` mode fine-tunes MiniLM itself through
  LoRA adapters on the query and value projections (peft) and re-encodes every
  item text at each training step (a GPU path; it runs on CPU for tests).

The profile context token is our own (in the spirit of a [CLS] token carrying
side information); there is no per-user id embedding anywhere, so a user
unseen in training is served from history and profile alone.

Layout of one history row in the transformer (``T = L + 1`` tokens)::

    items      [PAD, PAD, a,   b,   c]          left-padded, newest last
    tokens     [PAD, PAD, CTX, a,   b,   c]     CTX sits right before the first event
    output at  CTX predicts a, a predicts b, ..., c predicts the next item
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from pipelines.models.base import PAD, Histories, Recommender, TrainData

SECONDS_PER_HOUR = 3_600
SECONDS_PER_DAY = 86_400
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; Monday = 0 as in pandas


# -- configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class FusionConfig:
    # transformer
    hidden: int = 64  # SASRec's size for ML-1M; ML-100K has ~1k items, more overfits
    n_layers: int = 2  # SASRec: 2 blocks suffice on MovieLens
    n_heads: int = 2  # head size 32
    dropout: float = 0.2  # on inputs, attention and residuals; SASRec uses 0.2 on ML-1M
    # newest events kept. ML-100K's median history is 64; 50 is the value measured on it
    # (4× cheaper than 200 on CPU: attention is quadratic); 200 (SASRec on ML-1M) untested
    max_len: int = 50
    # ablation switches: each part's worth is measured by turning it off
    use_text: bool = True  # MiniLM text path for item representations
    use_id: bool = True  # item-id embeddings for items with training events
    use_time: bool = True  # interval + periodic embeddings and the time attention bias
    use_profile: bool = True  # profile fields in the context token
    # item text adaptor (UniSRec)
    text_dim: int = 384  # all-MiniLM-L6-v2 vector size; data_config sets the real one
    n_experts: int = 4  # whitening experts mixed by a softmax gate (UniSRec: 8)
    adaptor_dropout: float = 0.2  # on the text vectors before whitening (UniSRec: 0.2)
    # chance an item's id embedding is zeroed in a training step; on ML-100K 0.1 gave
    # test NDCG@10 0.089 and 0.3 gave 0.073 (1 seed each): more hurts warm items
    id_dropout: float = 0.1
    # time
    n_time_buckets: int = 32  # log2 buckets of seconds: 2^31 s ≈ 68 years covers all gaps
    # profile: codes per field (age band, gender, occupation, region), unknown (0) included
    profile_sizes: tuple[int, ...] = ()  # data_config copies TrainData.profile_sizes here
    # text encoder: "frozen" uses the cached MiniLM vectors; "lora" fine-tunes MiniLM
    text_encoder: Literal["frozen", "lora"] = "frozen"
    lora_r: int = 8  # rank of the LoRA update; 8 is the LoRA paper's usual choice
    lora_alpha: int = 16  # scaling alpha / r = 2
    lora_dropout: float = 0.1
    lora_target_modules: tuple[str, ...] = ("query", "value")  # as in the LoRA paper
    text_max_length: int = 32  # tokens per item text; ML titles+genres are ~10-30
    text_batch_size: int = 512  # item texts encoded at once in lora mode

    def __post_init__(self) -> None:
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden {self.hidden} must be a multiple of n_heads {self.n_heads}")
        if self.text_encoder not in ("frozen", "lora"):
            raise ValueError(f"text_encoder must be 'frozen' or 'lora', got {self.text_encoder!r}")
        if not (self.use_text or self.use_id):
            raise ValueError("an item needs a representation: use_text or use_id must be true")
        if self.max_len < 1:
            raise ValueError("max_len must be at least 1")


# -- pure helpers: history layout and time features -------------------------------------


def keep_newest(histories: Histories, max_len: int) -> Histories:
    """The last ``max_len`` slots of each (left-padded) history."""
    if histories.items.shape[1] <= max_len:
        return histories
    return Histories(
        histories.items[:, -max_len:], histories.timestamps[:, -max_len:], histories.profiles
    )


def context_layout(items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token layout with the context token before the first event.

    items [B, L] left-padded -> (token_items [B, T], is_context [B, T]), T = L + 1;
    token t holds items[t - 1]; the context token takes the last padding slot.
    """
    batch, _ = items.shape
    real = items != PAD  # [B, L]
    if bool((real[:, 1:] < real[:, :-1]).any()):
        raise ValueError("histories must be left-padded: PAD slots before the first event")
    token_items = torch.cat([items.new_full((batch, 1), PAD), items], dim=1)  # [B, T]
    n_pad = (~real).sum(dim=1)  # [B]
    positions = torch.arange(token_items.shape[1], device=items.device)  # [T]
    is_context = positions[None, :] == n_pad[:, None]  # [B, T]
    return token_items, is_context


def log_buckets(seconds: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """floor(log2(1 + seconds)) clipped to 0..n_buckets-1: 0 s → 0, 1 s → 1, 1 h → 11."""
    seconds = seconds.clamp(min=0).to(torch.float32)
    return torch.log2(1.0 + seconds).floor().long().clamp(max=n_buckets - 1)


def gap_buckets(token_items: torch.Tensor, stamps: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """Bucket of the gap to the previous event, [B, T]; ``n_buckets`` = no previous event."""
    gaps = stamps - torch.cat([stamps[:, :1], stamps[:, :-1]], dim=1)  # [B, T]
    real = token_items != PAD
    has_previous = real & torch.cat([torch.zeros_like(real[:, :1]), real[:, :-1]], dim=1)
    return torch.where(has_previous, log_buckets(gaps, n_buckets), n_buckets)


def pair_buckets(token_items: torch.Tensor, stamps: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """Bucket of |t_i - t_j| for every pair of events, [B, T, T]; ``n_buckets`` where
    either token is not an event (the context token, padding)."""
    real = token_items != PAD  # [B, T]
    gaps = (stamps[:, :, None] - stamps[:, None, :]).abs()  # [B, T, T]
    both = real[:, :, None] & real[:, None, :]
    return torch.where(both, log_buckets(gaps, n_buckets), n_buckets)


def hour_of_day(stamps: torch.Tensor) -> torch.Tensor:
    """UTC hour 0..23 of Unix-second timestamps."""
    return torch.div(stamps, SECONDS_PER_HOUR, rounding_mode="floor") % 24


def day_of_week(stamps: torch.Tensor) -> torch.Tensor:
    """UTC weekday 0..6 of Unix-second timestamps, Monday = 0."""
    return (torch.div(stamps, SECONDS_PER_DAY, rounding_mode="floor") + EPOCH_WEEKDAY) % 7


# -- item text encoders: forward() -> [n_items, text_dim] --------------------------------


class FrozenText(nn.Module):
    """The cached MiniLM vectors of the embed stage, as a buffer."""

    def __init__(self, n_items: int, cfg: FusionConfig) -> None:
        super().__init__()
        self.register_buffer("vectors", torch.zeros(n_items, cfg.text_dim))  # [n_items, 384]

    def set_vectors(self, vectors: torch.Tensor) -> None:
        if vectors.shape != self.vectors.shape:
            raise ValueError(
                f"item embeddings {tuple(vectors.shape)} do not match "
                f"[n_items, text_dim] = {tuple(self.vectors.shape)}; set text_dim in the config"
            )
        self.vectors = vectors.to(self.vectors)

    def forward(self) -> torch.Tensor:
        return self.vectors  # [n_items, 384]


class LoraText(nn.Module):
    """MiniLM with LoRA adapters, re-encoding every item text (mean pooling, L2 norm).

    The tokenised texts are buffers, so they travel in the state dict with the
    weights; base MiniLM weights are frozen by peft and only the adapters learn.
    """

    def __init__(self, n_items: int, cfg: FusionConfig) -> None:
        super().__init__()
        from peft import LoraConfig, get_peft_model  # heavy imports, only in this mode
        from transformers import AutoModel

        from pipelines.features.text import minilm_path

        base = AutoModel.from_pretrained(minilm_path(), local_files_only=True)
        if base.config.hidden_size != cfg.text_dim:
            raise ValueError(
                f"MiniLM gives {base.config.hidden_size}-d vectors, text_dim is {cfg.text_dim}"
            )
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_target_modules),
        )
        self.encoder = get_peft_model(base, lora)
        self.batch_size = cfg.text_batch_size
        shape = (n_items, cfg.text_max_length)
        self.register_buffer("token_ids", torch.zeros(shape, dtype=torch.long))  # [n_items, Lt]
        self.register_buffer("token_mask", torch.zeros(shape, dtype=torch.long))  # [n_items, Lt]

    def set_texts(self, texts: tuple[str, ...] | list[str]) -> None:
        from transformers import AutoTokenizer

        from pipelines.features.text import minilm_path

        n_items, max_length = self.token_ids.shape
        if len(texts) != n_items:
            raise ValueError(f"{len(texts)} item texts for {n_items} items")
        tokenizer = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
        encoded = tokenizer(
            list(texts),
            truncation=True,
            max_length=max_length,
            padding="max_length",
            return_tensors="pt",
            return_token_type_ids=False,
        )
        self.token_ids = encoded["input_ids"].to(self.token_ids)
        self.token_mask = encoded["attention_mask"].to(self.token_mask)

    def forward(self) -> torch.Tensor:
        from pipelines.features.text import mean_pool

        width = max(int(self.token_mask.sum(dim=1).max()), 1)  # drop all-padding columns
        vectors = []
        for start in range(0, self.token_ids.shape[0], self.batch_size):
            ids = self.token_ids[start : start + self.batch_size, :width]  # [b, Lt]
            mask = self.token_mask[start : start + self.batch_size, :width]
            hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            vectors.append(F.normalize(mean_pool(hidden, mask), dim=1))  # [b, 384]
        return torch.cat(vectors)  # [n_items, 384]


# -- item representation: text adaptor + id embedding -----------------------------------


class WhiteningMoE(nn.Module):
    """UniSRec's adaptor: experts (x - b_k) W_k mixed by softmax(x W_g). [N, Dt] -> [N, D]."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.dropout = nn.Dropout(cfg.adaptor_dropout)
        self.bias = nn.Parameter(torch.zeros(cfg.n_experts, cfg.text_dim))  # [K, Dt]
        self.experts = nn.Parameter(torch.empty(cfg.n_experts, cfg.text_dim, cfg.hidden))
        nn.init.normal_(self.experts, std=1.0 / math.sqrt(cfg.text_dim))  # [K, Dt, D]
        self.gate = nn.Linear(cfg.text_dim, cfg.n_experts, bias=False)
        nn.init.zeros_(self.gate.weight)  # start from an even mixture

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        text = self.dropout(text)  # [N, Dt]
        whitened = torch.einsum("nkd,kdh->nkh", text[:, None, :] - self.bias, self.experts)
        weights = torch.softmax(self.gate(text), dim=-1)  # [N, K]
        return (weights[..., None] * whitened).sum(dim=1)  # [N, D]


class ItemTower(nn.Module):
    """Every item's representation, [n_items, D]: adaptor(text) + id embedding if seen."""

    def __init__(self, n_items: int, cfg: FusionConfig) -> None:
        super().__init__()
        self.text: nn.Module | None = None
        self.adaptor: WhiteningMoE | None = None
        if cfg.use_text:
            self.text = (
                LoraText(n_items, cfg) if cfg.text_encoder == "lora" else FrozenText(n_items, cfg)
            )
            self.adaptor = WhiteningMoE(cfg)
        self.ids: nn.Embedding | None = None
        if cfg.use_id:
            self.ids = nn.Embedding(n_items, cfg.hidden)
            nn.init.normal_(self.ids.weight, std=0.02)
        # id dropout only makes sense when the text path can stand in for a dropped id
        self.id_dropout = cfg.id_dropout if cfg.use_text else 0.0
        self.register_buffer("has_id", torch.ones(n_items, dtype=torch.bool))  # [n_items]

    def forward(self) -> torch.Tensor:
        parts = []
        if self.text is not None and self.adaptor is not None:
            parts.append(self.adaptor(self.text()))  # [n_items, D]
        if self.ids is not None:
            keep = self.has_id
            if self.training and self.id_dropout > 0:
                keep = keep & (torch.rand_like(keep, dtype=torch.float) >= self.id_dropout)
            parts.append(self.ids.weight * keep[:, None])  # [n_items, D]; cold items: zero
        return torch.stack(parts).sum(dim=0)  # [n_items, D]


# -- sequence encoder: causal self-attention with a time bias ---------------------------


class TimeBiasedAttention(nn.Module):
    """Causal multi-head self-attention; ``bias`` holds the mask (-inf) plus time bias."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.hidden)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        q, k, v = self.qkv(x).split(hidden, dim=2)  # 3 × [B, T, D]
        heads = (batch, length, self.n_heads, hidden // self.n_heads)
        q, k, v = (t.view(heads).transpose(1, 2) for t in (q, k, v))  # [B, H, T, Dh]
        bias = bias.to(q.dtype)  # [B, H or 1, T, T]; under autocast q is bf16
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
        y = y.transpose(1, 2).reshape(batch, length, hidden)  # [B, T, D]
        return self.out(y)


class Block(nn.Module):
    """Pre-LayerNorm transformer block (nanoGPT)."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden)
        self.attention = TimeBiasedAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.hidden)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.hidden, 4 * cfg.hidden),
            nn.GELU(),
            nn.Linear(4 * cfg.hidden, cfg.hidden),
        )
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.norm1(x), bias))
        return x + self.dropout(self.mlp(self.norm2(x)))  # [B, T, D]


# -- the whole ---------------------------------------------------------------------------


class FusionTransformer(Recommender):
    name = "fusion_transformer"
    config_class = FusionConfig
    trainable = True
    scores_unseen_items_from_text = True  # when use_text is on (the default)

    def __init__(self, n_items: int, config: FusionConfig | dict[str, Any] | None = None) -> None:
        super().__init__(n_items, config)
        cfg = self.cfg
        self.items = ItemTower(n_items, cfg)
        self.context = nn.Parameter(torch.zeros(cfg.hidden))  # the context token itself
        self.profile = nn.ModuleList(
            nn.Embedding(size, cfg.hidden)
            for size in (cfg.profile_sizes if cfg.use_profile else ())
        )
        self.position = nn.Embedding(cfg.max_len + 1, cfg.hidden)  # 0 = newest token
        if cfg.use_time:
            self.gap = nn.Embedding(cfg.n_time_buckets + 1, cfg.hidden)  # + "no previous"
            self.hour = nn.Embedding(24, cfg.hidden)
            self.weekday = nn.Embedding(7, cfg.hidden)
            # TiSASRec-style attention bias: one scalar per (time bucket, layer, head),
            # looked up once for all layers; the extra bucket: context token or padding
            self.time_bias = nn.Embedding(cfg.n_time_buckets + 1, cfg.n_layers * cfg.n_heads)
            nn.init.zeros_(self.time_bias.weight)  # start as plain SASRec attention
        self.input_norm = nn.LayerNorm(cfg.hidden)
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.output_norm = nn.LayerNorm(cfg.hidden)
        time_tables = (self.gap, self.hour, self.weekday) if cfg.use_time else ()
        for table in (*self.profile, self.position, *time_tables):
            nn.init.normal_(table.weight, std=0.02)  # GPT-2 / RecBole init of embeddings
        self._cached_items: torch.Tensor | None = None  # item representations in eval mode

    @classmethod
    def data_config(cls, train: TrainData) -> dict[str, Any]:
        sizes: dict[str, Any] = {"profile_sizes": tuple(train.profile_sizes or ())}
        if train.item_embeddings is not None:
            sizes["text_dim"] = int(train.item_embeddings.shape[1])
        return sizes

    @property
    def context_length(self) -> int:
        return self.cfg.max_len

    # -- preparation (no training here: the shared trainer calls ``loss``) ----------------
    def fit(self, train: TrainData) -> None:
        """Fill the buffers training needs: text vectors or tokens, and which items have ids."""
        if train.n_items != self.n_items:
            raise ValueError(f"train data has {train.n_items} items, the model {self.n_items}")
        sizes = train.profile_sizes
        if self.cfg.use_profile and sizes is not None and tuple(sizes) != self.cfg.profile_sizes:
            raise ValueError(
                f"train data has profile sizes {tuple(sizes)}, the config "
                f"{self.cfg.profile_sizes}: put TrainData.profile_sizes into the config"
            )
        counts = torch.as_tensor(train.matrix.getnnz(axis=0))  # [n_items] events per item
        self.items.has_id = (counts > 0).to(self.items.has_id.device)
        text = self.items.text
        if isinstance(text, FrozenText):
            if train.item_embeddings is None:
                raise ValueError("fusion_transformer needs the item embeddings of the embed stage")
            text.set_vectors(torch.as_tensor(train.item_embeddings, dtype=torch.float32))
        elif isinstance(text, LoraText):
            if train.item_texts is None:
                raise ValueError("text_encoder 'lora' needs TrainData.item_texts")
            text.set_texts(train.item_texts)
        self._cached_items = None

    # -- item representations, cached while nothing can change them ---------------------
    def item_representations(self) -> torch.Tensor:
        """[n_items, D]; recomputed in training, cached in eval mode without autograd."""
        if self.training or torch.is_grad_enabled():
            return self.items()
        if self._cached_items is None:
            self._cached_items = self.items()
        return self._cached_items

    def train(self, mode: bool = True) -> FusionTransformer:
        self._cached_items = None  # parameters may change (or have changed) in between
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):  # nn.Module's own signature
        self._cached_items = None  # .to(device) / .half() invalidate the cache
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        self._cached_items = None
        return super().load_state_dict(*args, **kwargs)

    # -- the sequence encoder ------------------------------------------------------------
    def context_vectors(self, profiles: torch.Tensor | None, batch: int) -> torch.Tensor:
        """The context token of each user: learned start vector + profile embeddings, [B, D]."""
        context = self.context.expand(batch, -1)
        if profiles is None:  # no profile at all reads as every field unknown
            profiles = torch.zeros(batch, len(self.profile), dtype=torch.long)
        profiles = profiles.to(self.context.device)
        for field, table in enumerate(self.profile):
            codes = profiles[:, field]  # [B]; a code outside the vocabulary reads as unknown
            codes = torch.where((codes >= 0) & (codes < table.num_embeddings), codes, 0)
            context = context + table(codes)
        return context  # [B, D]

    def encode(self, histories: Histories, item_vectors: torch.Tensor) -> torch.Tensor:
        """Hidden state after every token, [B, T, D]; token t predicts the event after it."""
        device = self.context.device
        items = histories.items.to(device)  # [B, L]
        token_items, is_context = context_layout(items)  # [B, T]
        stamps = torch.cat([items.new_zeros(items.shape[0], 1), histories.timestamps.to(device)], 1)
        real = token_items != PAD  # [B, T]
        batch, length = token_items.shape

        x = item_vectors[token_items.clamp(min=0)] * real[..., None]  # [B, T, D]
        x = x + self.context_vectors(histories.profiles, batch)[:, None, :] * is_context[..., None]
        reverse = torch.arange(length - 1, -1, -1, device=device)  # [T], newest = 0
        x = x + self.position(reverse)[None]
        if self.cfg.use_time:
            gaps = gap_buckets(token_items, stamps, self.cfg.n_time_buckets)  # [B, T]
            periodic = self.hour(hour_of_day(stamps)) + self.weekday(day_of_week(stamps))
            x = x + (self.gap(gaps) + periodic) * real[..., None]
        x = self.input_dropout(self.input_norm(x))

        # token i sees tokens j <= i that are events or the context token, and always itself
        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()  # [T, T]
        allowed = causal & (real | is_context)[:, None, :]  # [B, T, T]
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=device)
        mask = torch.zeros(allowed.shape, device=device).masked_fill(~allowed, float("-inf"))
        biases = [mask[:, None]] * len(self.blocks)  # [B, 1, T, T] per layer
        if self.cfg.use_time:
            pairs = pair_buckets(token_items, stamps, self.cfg.n_time_buckets)  # [B, T, T]
            time_bias = self.time_bias(pairs).permute(0, 3, 1, 2)  # [B, layers × H, T, T]
            biases = (mask[:, None] + time_bias).split(self.cfg.n_heads, dim=1)  # [B, H, T, T]
        for block, bias in zip(self.blocks, biases, strict=True):
            x = block(x, bias)
        return self.output_norm(x)  # [B, T, D]

    # -- the contract ----------------------------------------------------------------------
    def loss(self, batch: Histories) -> torch.Tensor:
        """Mean next-item cross-entropy over every event of the training sequences."""
        batch = keep_newest(batch, self.cfg.max_len + 1)
        targets = batch.items.to(self.context.device)  # [B, L]
        inputs = Histories(batch.items[:, :-1], batch.timestamps[:, :-1], batch.profiles)
        item_vectors = self.item_representations()  # [n_items, D]
        hidden = self.encode(inputs, item_vectors)  # [B, L, D]: token t predicts targets[:, t]
        valid = targets != PAD
        logits = hidden[valid] @ item_vectors.T  # [N, n_items], N = events in the batch
        return F.cross_entropy(logits.float(), targets[valid])

    def score_all(self, histories: Histories) -> torch.Tensor:
        histories = keep_newest(histories, self.cfg.max_len)
        item_vectors = self.item_representations()
        hidden = self.encode(histories, item_vectors)[:, -1]  # [B, D]: after the newest event
        return hidden @ item_vectors.T  # [B, n_items]
