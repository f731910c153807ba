"""Popularity: every user gets the most-interacted items of the training data.

The floor any personalised model must clear; also the fallback for unknown
users in the service.
"""

from __future__ import annotations

import numpy as np
import torch

from pipelines.models.base import Histories, Recommender, TrainData


class Popularity(Recommender):
    name = "popularity"

    def __init__(self, n_items: int, config: object = None) -> None:
        super().__init__(n_items, config)
        self.register_buffer("counts", torch.zeros(n_items))  # [n_items]

    def fit(self, train: TrainData) -> None:
        counts = np.asarray(train.matrix.sum(axis=0)).ravel()
        self.counts = torch.as_tensor(counts, dtype=torch.float32)

    def score_all(self, histories: Histories) -> torch.Tensor:
        batch = histories.items.shape[0]
        return self.counts[None, :].expand(batch, -1)  # [B, n_items]
