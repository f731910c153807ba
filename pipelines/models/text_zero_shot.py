"""Zero-shot text recommender: no training on interactions at all.

The user is the mean of the MiniLM embeddings of the items in their history;
items are ranked by cosine similarity to it. It can score an item it never saw
in training from its text alone, which makes it the cold-start reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pipelines.models.base import Histories, Recommender, TrainData


@dataclass(frozen=True)
class TextZeroShotConfig:
    dim: int = 384  # text vector width (all-MiniLM-L6-v2); data_config sets the real one


class TextZeroShot(Recommender):
    name = "text_zero_shot"
    config_class = TextZeroShotConfig
    scores_unseen_items_from_text = True

    def __init__(self, n_items: int, config: TextZeroShotConfig | dict | None = None) -> None:
        super().__init__(n_items, config)
        dim = int(self.cfg.dim)
        self.register_buffer("item_vectors", torch.zeros(n_items, dim))  # [n_items, D]

    @classmethod
    def data_config(cls, train: TrainData) -> dict[str, Any]:
        if train.item_embeddings is None:
            return {}
        return {"dim": int(train.item_embeddings.shape[1])}

    def fit(self, train: TrainData) -> None:
        if train.item_embeddings is None:
            raise ValueError("text_zero_shot needs the item embeddings of the embed stage")
        self.item_vectors = F.normalize(
            torch.as_tensor(train.item_embeddings, dtype=torch.float32), dim=1
        )

    def user_vectors(self, histories: Histories) -> torch.Tensor:
        # a [B, n_items] @ [n_items, D] product, far cheaper than gathering [B, L, D]
        summed = histories.to_matrix(self.n_items) @ self.item_vectors  # [B, D]
        return F.normalize(summed, dim=1)  # a zero history stays a zero vector

    def score_all(self, histories: Histories) -> torch.Tensor:
        return self.user_vectors(histories) @ self.item_vectors.T  # [B, n_items]
