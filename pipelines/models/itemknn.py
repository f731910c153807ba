"""ItemKNN with cosine similarity (Sarwar et al., WWW 2001; Deshpande & Karypis, TOIS 2004).

score(u, j) = Σ_{i in history(u)} sim(i, j), with sim the cosine between item
columns of the training matrix, shrunk by ``shrink`` (Koren's damping of
similarities resting on few co-occurrences) and pruned to each item's top
``neighbours``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipelines.models.base import Histories, Recommender, TrainData


def cosine_similarity(matrix, shrink: float) -> np.ndarray:
    """Item × item cosine of the columns of a sparse user × item matrix, diagonal 0."""
    co_counts = (matrix.T @ matrix).toarray().astype(np.float64)  # [n_items, n_items]
    norms = np.sqrt(np.diag(co_counts))
    similarity = co_counts / (np.outer(norms, norms) + shrink + 1e-12)
    np.fill_diagonal(similarity, 0.0)
    return similarity


def keep_top_neighbours(similarity: np.ndarray, neighbours: int) -> np.ndarray:
    """Zero all but the ``neighbours`` largest similarities of each row."""
    if neighbours >= similarity.shape[1]:
        return similarity
    cut = np.argpartition(-similarity, neighbours - 1, axis=1)[:, :neighbours]
    pruned = np.zeros_like(similarity)
    rows = np.arange(similarity.shape[0])[:, None]
    pruned[rows, cut] = similarity[rows, cut]
    return pruned


@dataclass(frozen=True)
class ItemKNNConfig:
    neighbours: int = 100  # top-k similar items kept per item (RecBole's ItemKNN default k)
    shrink: float = 10.0  # damps similarities of rarely co-rated pairs (Koren 2008)

    def __post_init__(self) -> None:
        if self.neighbours < 1 or self.shrink < 0:
            raise ValueError("neighbours must be at least 1 and shrink not negative")


class ItemKNN(Recommender):
    name = "itemknn"
    config_class = ItemKNNConfig

    def __init__(self, n_items: int, config: ItemKNNConfig | dict | None = None) -> None:
        super().__init__(n_items, config)
        self.neighbours = int(self.cfg.neighbours)
        self.shrink = float(self.cfg.shrink)
        self.register_buffer("similarity", torch.zeros(n_items, n_items))  # [from, to]

    def fit(self, train: TrainData) -> None:
        similarity = keep_top_neighbours(
            cosine_similarity(train.matrix, self.shrink), self.neighbours
        )
        self.similarity = torch.as_tensor(similarity, dtype=torch.float32)

    def score_all(self, histories: Histories) -> torch.Tensor:
        return histories.to_matrix(self.n_items) @ self.similarity  # [B, n_items]
