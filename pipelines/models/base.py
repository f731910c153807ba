"""The one contract every recommender keeps (design.md §7).

Trainer, evaluator and service call only these verbs, so they never ask which
model they hold:

- ``fit(train)``            closed-form models learn here; gradient models
                            train through ``loss`` and leave ``fit`` alone.
- ``loss(batch)``           a scalar training loss (gradient models only); the
                            batch is a ``Histories`` of training sequences and
                            the model predicts each next item within them.
- ``score(histories, items)``  scores of chosen candidates, ``[B, C]``.
- ``score_all(histories)``     scores of every catalogue item, ``[B, n_items]``.

Models score *histories*, never user ids, so a user unseen in training is
served from what they did (and their profile), not from a lookup table.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

PAD = -1  # item index of an empty history slot; item indices are 0..n_items-1


@dataclass(frozen=True)
class Histories:
    """A batch of user histories, left-padded so the newest event is last."""

    items: torch.Tensor  # [B, L] long, item_idx or PAD
    timestamps: torch.Tensor  # [B, L] long, Unix seconds, 0 where PAD
    profiles: torch.Tensor | None = None  # [B, 4] long codes: age band, gender, occupation, region

    def __post_init__(self) -> None:
        if self.items.shape != self.timestamps.shape:
            raise ValueError(
                f"items {tuple(self.items.shape)} and timestamps "
                f"{tuple(self.timestamps.shape)} must have the same shape"
            )

    @property
    def mask(self) -> torch.Tensor:
        return self.items != PAD  # [B, L] bool

    def to(self, device: torch.device | str) -> Histories:
        profiles = None if self.profiles is None else self.profiles.to(device)
        return Histories(self.items.to(device), self.timestamps.to(device), profiles)

    def to_matrix(self, n_items: int) -> torch.Tensor:
        """Binary user × item matrix of the histories, ``[B, n_items]`` float."""
        batch = self.items.shape[0]
        matrix = torch.zeros(batch, n_items + 1, device=self.items.device)
        # PAD goes to the extra last column, then is dropped
        index = torch.where(self.mask, self.items, torch.full_like(self.items, n_items))
        matrix.scatter_(1, index, 1.0)
        return matrix[:, :n_items]

    @classmethod
    def from_lists(
        cls,
        items: list[list[int]],
        timestamps: list[list[int]],
        profiles: list[list[int]] | None = None,
        max_len: int | None = None,
    ) -> Histories:
        """Pad python lists (oldest first); keep only the last ``max_len`` events."""
        if len(items) != len(timestamps):
            raise ValueError("items and timestamps must hold one list per user")
        if max_len is not None:
            items = [seq[-max_len:] for seq in items]
            timestamps = [seq[-max_len:] for seq in timestamps]
        width = max((len(seq) for seq in items), default=0) or 1
        item_rows = np.full((len(items), width), PAD, dtype=np.int64)
        time_rows = np.zeros((len(items), width), dtype=np.int64)
        for row, (seq, times) in enumerate(zip(items, timestamps, strict=True)):
            if len(seq) != len(times):
                raise ValueError(f"history {row} has {len(seq)} items but {len(times)} timestamps")
            if seq:
                item_rows[row, width - len(seq) :] = seq
                time_rows[row, width - len(seq) :] = times
        profile_tensor = None if profiles is None else torch.as_tensor(profiles, dtype=torch.long)
        return cls(torch.from_numpy(item_rows), torch.from_numpy(time_rows), profile_tensor)


@dataclass(frozen=True)
class TrainData:
    """What a model may learn from: training interactions only."""

    matrix: sp.csr_matrix  # [n_users, n_items] binary, training events
    histories: Histories  # the same events as time-ordered sequences
    n_items: int
    item_embeddings: np.ndarray | None = None  # [n_items, D] MiniLM vectors of the item texts
    item_texts: tuple[str, ...] | None = None  # the texts behind them, for fine-tuning the encoder
    profile_sizes: tuple[int, ...] | None = None  # codes per profile field, unknown (0) included


class Recommender(nn.Module, ABC):
    """Base of every model. Subclasses set ``name`` and implement ``score_all``."""

    name: ClassVar[str]
    # True when the model can score an item it never saw in training from its text alone
    scores_unseen_items_from_text: ClassVar[bool] = False
    # False for closed-form models that learn in ``fit`` and have no loss
    trainable: ClassVar[bool] = False

    def __init__(self, n_items: int, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.n_items = n_items
        self.config = dict(config or {})

    def fit(self, train: TrainData) -> None:
        """Closed-form learning; gradient models train through ``loss`` instead."""

    def loss(self, batch: Any) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} is fitted in closed form and has no loss")

    @abstractmethod
    def score_all(self, histories: Histories) -> torch.Tensor:
        """Scores of every item for each history, ``[B, n_items]``; higher is better."""

    def score(self, histories: Histories, items: torch.Tensor) -> torch.Tensor:
        """Scores of candidate items ``[B, C]`` for each history."""
        return self.score_all(histories).gather(1, items)

    # -- persistence: a JSON config next to a state dict, never a pickle --------
    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"name": self.name, "n_items": self.n_items, "config": self.config}
        (directory / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        torch.save(self.state_dict(), directory / "state.pt")

    def load_state(self, directory: Path) -> None:
        state = torch.load(directory / "state.pt", map_location="cpu", weights_only=True)
        self.load_state_dict(state)
