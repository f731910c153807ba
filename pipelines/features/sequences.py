"""Per-user event sequences, and the protocol's histories and targets cut out of them.

Sequences hold every kept event in protocol order (train events, then the
validation event, then the test event), so each consumer cuts exactly the
history the protocol allows: ``[:-2]`` to predict valid, ``[:-1]`` for test.
Every consumer (train, evaluate, the service) goes through these functions,
so the history a model sees at serving time is built exactly as in evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from pipelines.core.schema import (
    ITEM_IDX,
    SEQ_ITEMS,
    SEQ_N_TRAIN,
    SEQ_TIMESTAMPS,
    SEQUENCE_COLUMNS,
    SPLIT,
    TEST,
    TIMESTAMP,
    TRAIN,
    USER_IDX,
    VALID,
)
from pipelines.features.batch import Histories

Split = Literal["train", "valid", "test"]

# events held out at the end of each sequence for that split's target
_HELD_OUT: dict[str, int] = {VALID: 2, TEST: 1}


def build_sequences(split: pd.DataFrame) -> pd.DataFrame:
    """One row per user in user_idx order; ``split`` is already in protocol order.

    Items and timestamps only: the time models derive gaps, hours and weekdays from the
    timestamps themselves (the flagship in torch), so nothing here can drift from them.
    """
    rows = []
    for user_idx, events in split.groupby(USER_IDX, sort=True):
        rows.append(
            {
                USER_IDX: int(user_idx),
                SEQ_ITEMS: events[ITEM_IDX].to_numpy(np.int64),
                SEQ_TIMESTAMPS: events[TIMESTAMP].to_numpy(np.int64),
                SEQ_N_TRAIN: int((events[SPLIT] == TRAIN).sum()),
            }
        )
    return pd.DataFrame(rows, columns=[USER_IDX, *SEQUENCE_COLUMNS])


def history_slices(sequences: pd.DataFrame, split: Split) -> list[slice]:
    """The slice of each user's sequence that the model may see for ``split``."""
    if split == TRAIN:
        return [slice(0, int(n)) for n in sequences[SEQ_N_TRAIN]]
    held_out = _HELD_OUT[split]
    return [slice(0, len(items) - held_out) for items in sequences[SEQ_ITEMS]]


def histories_for(
    sequences: pd.DataFrame,
    split: Split,
    profiles: np.ndarray | None = None,
    max_len: int | None = None,
) -> Histories:
    """Histories of every user for ``split``; ``profiles`` is ``[n_users, 4]`` codes."""
    cuts = history_slices(sequences, split)
    items = [list(seq[cut]) for seq, cut in zip(sequences[SEQ_ITEMS], cuts, strict=True)]
    stamps = [list(seq[cut]) for seq, cut in zip(sequences[SEQ_TIMESTAMPS], cuts, strict=True)]
    profile_rows = None if profiles is None else profiles.tolist()
    return Histories.from_lists(items, stamps, profile_rows, max_len=max_len)


def targets_for(sequences: pd.DataFrame, split: Literal["valid", "test"]) -> torch.Tensor:
    """The held-out item of each user for ``split``, ``[n_users]``."""
    position = -_HELD_OUT[split]
    return torch.as_tensor([int(items[position]) for items in sequences[SEQ_ITEMS]])


def train_matrix(sequences: pd.DataFrame, n_items: int) -> sp.csr_matrix:
    """Binary user × item matrix of the training events only."""
    rows, cols = [], []
    for user, (items, n_train) in enumerate(
        zip(sequences[SEQ_ITEMS], sequences[SEQ_N_TRAIN], strict=True)
    ):
        cols.extend(items[: int(n_train)])
        rows.extend([user] * int(n_train))
    data = np.ones(len(rows), dtype=np.float32)
    matrix = sp.csr_matrix((data, (rows, cols)), shape=(len(sequences), n_items))
    matrix.data[:] = 1.0  # repeated events count once
    return matrix


def remove_items(sequences: pd.DataFrame, items: np.ndarray | Sequence[int]) -> pd.DataFrame:
    """Every event on ``items`` dropped from every sequence; all users kept, in order.

    ``n_train`` becomes the number of kept events among the original training
    events, so the kept training part is still ``items[:n_train]``; the kept
    validation/test events follow it.
    """
    drop = np.asarray(items, dtype=np.int64)
    kept_items, kept_stamps, n_train = [], [], []
    for seq, stamps, n in zip(
        sequences[SEQ_ITEMS], sequences[SEQ_TIMESTAMPS], sequences[SEQ_N_TRAIN], strict=True
    ):
        keep = ~np.isin(np.asarray(seq, dtype=np.int64), drop)
        kept_items.append(np.asarray(seq, dtype=np.int64)[keep])
        kept_stamps.append(np.asarray(stamps, dtype=np.int64)[keep])
        n_train.append(int(keep[: int(n)].sum()))
    out = pd.DataFrame(
        index=sequences.index,
        data={
            USER_IDX: sequences[USER_IDX].to_numpy(),
            SEQ_ITEMS: kept_items,
            SEQ_TIMESTAMPS: kept_stamps,
            SEQ_N_TRAIN: np.asarray(n_train, dtype=np.int64),
        },
    )
    return out[list(sequences.columns)]
