"""The feature artifacts a model is trained and evaluated on, loaded in one place.

``load_dataset`` reads the sequences, the profile codes, the item texts and
their MiniLM vectors, checking that rows are in user_idx / item_idx order;
``train_data`` and ``validation`` cut what a model may learn from and what
early stopping looks at. The train, tune, evaluate and cold-start stages and
the benchmarks all load through here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.core.io import verify_checksum
from pipelines.core.paths import PROJECT
from pipelines.core.schema import GENRES, ITEM_IDX, SEQ_N_TRAIN, TITLE, USER_IDX, VALID, YEAR
from pipelines.features.batch import TrainData, Validation
from pipelines.features.profiles import profile_codes, profile_sizes
from pipelines.features.sequences import histories_for, targets_for, train_matrix
from pipelines.features.text import item_text


@dataclass(frozen=True)
class SideInfo:
    """What a model may use besides interactions, by user_idx and item_idx."""

    n_items: int
    item_embeddings: np.ndarray | None = None  # [n_items, D], cold items too: text is known
    item_texts: tuple[str, ...] | None = None  # the texts behind the embeddings
    profiles: np.ndarray | None = None  # [n_users, 4] codes, row = user_idx
    profile_sizes: tuple[int, ...] | None = None  # codes per profile field, unknown (0) included

    def profiles_of(self, user_idx: np.ndarray) -> np.ndarray | None:
        return None if self.profiles is None else self.profiles[np.asarray(user_idx, dtype=int)]


@dataclass(frozen=True)
class Dataset:
    sequences: pd.DataFrame  # one row per user, user_idx order (features stage)
    side: SideInfo


def _in_index_order(frame: pd.DataFrame, column: str, what: Path) -> pd.DataFrame:
    frame = frame.sort_values(column).reset_index(drop=True)
    if not np.array_equal(frame[column].to_numpy(), np.arange(len(frame))):
        raise ValueError(f"{what} must hold {column} 0..{len(frame) - 1} exactly once each")
    return frame


def load_dataset(
    features_dir: Path = PROJECT.features_dir,
    items_path: Path = PROJECT.split_items,
    embeddings_path: Path = PROJECT.item_embeddings,
) -> Dataset:
    """The feature sequences and everything else a model may use."""
    sequences_path = features_dir / PROJECT.sequences.name
    profiles_path = features_dir / PROJECT.profiles.name
    sequences = _in_index_order(pd.read_parquet(sequences_path), USER_IDX, sequences_path)
    profiles = _in_index_order(pd.read_parquet(profiles_path), USER_IDX, profiles_path)
    items = _in_index_order(pd.read_parquet(items_path), ITEM_IDX, items_path)
    vocabulary = json.loads((features_dir / PROJECT.profile_vocab.name).read_text())
    embeddings = None
    if embeddings_path.exists():
        verify_checksum(embeddings_path)
        embeddings = np.load(embeddings_path)
    if embeddings is not None and len(embeddings) != len(items):
        raise ValueError(
            f"{embeddings_path} has {len(embeddings)} vectors for {len(items)} items: "
            "re-run the embed stage"
        )
    texts = tuple(
        item_text(title, year, genres)
        for title, year, genres in zip(items[TITLE], items[YEAR], items[GENRES], strict=True)
    )
    side = SideInfo(
        n_items=len(items),
        item_embeddings=embeddings,
        item_texts=texts,
        profiles=profile_codes(profiles),
        profile_sizes=profile_sizes(vocabulary),
    )
    return Dataset(sequences, side)


def train_data(sequences: pd.DataFrame, side: SideInfo) -> TrainData:
    """TrainData of the training events of ``sequences`` (users with none are left out)."""
    kept = sequences[sequences[SEQ_N_TRAIN] > 0].reset_index(drop=True)
    return TrainData(
        matrix=train_matrix(kept, side.n_items),
        histories=histories_for(kept, "train", side.profiles_of(kept[USER_IDX].to_numpy())),
        n_items=side.n_items,
        item_embeddings=side.item_embeddings,
        item_texts=side.item_texts,
        profile_sizes=side.profile_sizes,
    )


def validation(sequences: pd.DataFrame, side: SideInfo) -> Validation:
    """The protocol's validation split: each user's events before the second-to-last,
    and the second-to-last as target."""
    profiles = side.profiles_of(sequences[USER_IDX].to_numpy())
    return Validation(histories_for(sequences, VALID, profiles), targets_for(sequences, VALID))
