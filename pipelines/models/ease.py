"""EASE^R (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019).

A linear item-to-item model with a zero diagonal, solved in closed form:
P = (XᵀX + λI)⁻¹, B = -P / diag(P), diag(B) = 0; score = x_history · B.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipelines.models.base import Histories, Recommender, TrainData


def ease_weights(matrix, l2: float) -> np.ndarray:
    """Item × item weights B of EASE^R for a binary user × item matrix."""
    gram = (matrix.T @ matrix).toarray().astype(np.float64)  # [n_items, n_items]
    gram[np.diag_indices_from(gram)] += l2
    precision = np.linalg.inv(gram)
    weights = precision / -np.diag(precision)
    np.fill_diagonal(weights, 0.0)
    return weights


@dataclass(frozen=True)
class EASEConfig:
    l2: float = 250.0  # λ; 250 is the usual optimum on ML-100K (RecBole's EASE default)

    def __post_init__(self) -> None:
        if self.l2 <= 0:
            raise ValueError(f"l2 must be positive, got {self.l2}")


class EASE(Recommender):
    name = "ease"
    config_class = EASEConfig

    def __init__(self, n_items: int, config: EASEConfig | dict | None = None) -> None:
        super().__init__(n_items, config)
        self.l2 = float(self.cfg.l2)
        self.register_buffer("weights", torch.zeros(n_items, n_items))  # [from, to]

    def fit(self, train: TrainData) -> None:
        self.weights = torch.as_tensor(ease_weights(train.matrix, self.l2), dtype=torch.float32)

    def score_all(self, histories: Histories) -> torch.Tensor:
        return histories.to_matrix(self.n_items) @ self.weights  # [B, n_items]
