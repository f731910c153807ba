"""Cut the protocol's histories and targets out of the feature sequences.

Every consumer (train, evaluate, the service) goes through these functions,
so the history a model sees at serving time is built exactly as in evaluation.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from pipelines.models.base import Histories
from pipelines.schema import PROFILE_COLUMNS

Split = Literal["train", "valid", "test"]

# events held out at the end of each sequence for that split's target
_HELD_OUT: dict[str, int] = {"valid": 2, "test": 1}


def history_slices(sequences: pd.DataFrame, split: Split) -> list[slice]:
    """The slice of each user's sequence that the model may see for ``split``."""
    if split == "train":
        return [slice(0, int(n)) for n in sequences["n_train"]]
    held_out = _HELD_OUT[split]
    return [slice(0, len(items) - held_out) for items in sequences["items"]]


def histories_for(
    sequences: pd.DataFrame,
    split: Split,
    profiles: np.ndarray | None = None,
    max_len: int | None = None,
) -> Histories:
    """Histories of every user for ``split``; ``profiles`` is ``[n_users, 4]`` codes."""
    cuts = history_slices(sequences, split)
    items = [list(seq[cut]) for seq, cut in zip(sequences["items"], cuts, strict=True)]
    stamps = [list(seq[cut]) for seq, cut in zip(sequences["timestamps"], cuts, strict=True)]
    profile_rows = None if profiles is None else profiles.tolist()
    return Histories.from_lists(items, stamps, profile_rows, max_len=max_len)


def targets_for(sequences: pd.DataFrame, split: Literal["valid", "test"]) -> torch.Tensor:
    """The held-out item of each user for ``split``, ``[n_users]``."""
    position = -_HELD_OUT[split]
    return torch.as_tensor([int(items[position]) for items in sequences["items"]])


def train_matrix(sequences: pd.DataFrame, n_items: int) -> sp.csr_matrix:
    """Binary user × item matrix of the training events only."""
    rows, cols = [], []
    for user, (items, n_train) in enumerate(
        zip(sequences["items"], sequences["n_train"], strict=True)
    ):
        cols.extend(items[: int(n_train)])
        rows.extend([user] * int(n_train))
    data = np.ones(len(rows), dtype=np.float32)
    matrix = sp.csr_matrix((data, (rows, cols)), shape=(len(sequences), n_items))
    matrix.data[:] = 1.0  # repeated events count once
    return matrix


def profile_codes(profiles: pd.DataFrame) -> np.ndarray:
    """``[n_users, 4]`` integer codes (age band, gender, occupation, region), 0 = unknown."""
    return profiles[[f"{column}_code" for column in PROFILE_COLUMNS]].to_numpy(np.int64)
