"""What models consume: padded batches of histories, and the training and validation data.

Defined below the models so that features build them and models read them
without features ever importing a model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

PAD = -1  # item index of an empty history slot; item indices are 0..n_items-1


@dataclass(frozen=True)
class Histories:
    """A batch of user histories, left-padded so the newest event is last."""

    items: torch.Tensor  # [B, L] long, item_idx or PAD
    timestamps: torch.Tensor  # [B, L] long, Unix seconds, 0 where PAD
    profiles: torch.Tensor | None = None  # [B, 4] long codes: age band, gender, occupation, region
    # [B] long, Unix seconds of the moment each ranking is for (a request, or a replayed
    # event); None = right after the newest event. What happened since the last event
    # (the gap, what is popular now) is read against it.
    now: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.items.shape != self.timestamps.shape:
            raise ValueError(
                f"items {tuple(self.items.shape)} and timestamps "
                f"{tuple(self.timestamps.shape)} must have the same shape"
            )
        if self.now is not None and self.now.shape != self.items.shape[:1]:
            raise ValueError(f"now {tuple(self.now.shape)} must hold one time per history")

    @property
    def mask(self) -> torch.Tensor:
        return self.items != PAD  # [B, L] bool

    def to(self, device: torch.device | str) -> Histories:
        profiles = None if self.profiles is None else self.profiles.to(device)
        now = None if self.now is None else self.now.to(device)
        return Histories(self.items.to(device), self.timestamps.to(device), profiles, now)

    def __len__(self) -> int:
        return self.items.shape[0]

    def rows(self, index: slice | torch.Tensor) -> Histories:
        """The histories of the chosen users (a slice or an index tensor)."""
        profiles = None if self.profiles is None else self.profiles[index]
        now = None if self.now is None else self.now[index]
        return Histories(self.items[index], self.timestamps[index], profiles, now)

    def batches(self, batch_size: int) -> Iterator[tuple[slice, Histories]]:
        """Consecutive batches of at most ``batch_size`` users, with their row slice."""
        for start in range(0, len(self), batch_size):
            rows = slice(start, start + batch_size)
            yield rows, self.rows(rows)

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
        now: list[int] | None = None,
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
        now_tensor = None if now is None else torch.as_tensor(now, dtype=torch.long)
        return cls(
            torch.from_numpy(item_rows), torch.from_numpy(time_rows), profile_tensor, now_tensor
        )


@dataclass(frozen=True)
class TrainData:
    """What a model may learn from: training interactions only."""

    matrix: sp.csr_matrix  # [n_users, n_items] binary, training events
    histories: Histories  # the same events as time-ordered sequences
    n_items: int
    item_embeddings: np.ndarray | None = None  # [n_items, D] MiniLM vectors of the item texts
    item_texts: tuple[str, ...] | None = None  # the texts behind them, for fine-tuning the encoder
    profile_sizes: tuple[int, ...] | None = None  # codes per profile field, unknown (0) included


@dataclass(frozen=True)
class Validation:
    """The held-out events early stopping and tuning look at (never the test events)."""

    histories: Histories  # each user's history before the validation target
    targets: torch.Tensor  # [U] long, the validation item of each user
