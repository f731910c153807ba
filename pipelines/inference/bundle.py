"""What a served model is: the model, its item catalogue, the known users, and its card.

A *bundle* is one folder that the ``package`` stage writes from the pipeline's
artifacts and saves into the BentoML model store; the service loads it with
``load_bundle`` and never reads ``artifacts/`` itself. Layout::

    model/              model.json + state.pt (``Recommender.save``)
    items.parquet       item_idx, item_id, title, year, genres (the split catalogue)
    item_vectors.npy    [n_items, 384] float32 MiniLM vectors of the item texts
    users.parquet       user_idx, user_id (pseudonyms, never raw ids)
    sequences.parquet   every stored event per user (features stage), protocol order
    profiles.parquet    profile codes per user_idx (features stage)
    profile_vocab.json  the profile vocabulary (code = position + 1, 0 = unknown)
    card.json           the model card: name, version, metrics, data hash, commit, blessing

Everything a request needs is built here once, at load time: histories as
python lists, the popularity order for the unknown-user fallback, the id maps.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.io import write_json, write_npy, write_parquet
from pipelines.core.paths import PROJECT
from pipelines.core.schema import (
    GENRES,
    ITEM_ID,
    ITEM_IDX,
    PROFILE_COLUMNS,
    SEQ_ITEMS,
    SEQ_TIMESTAMPS,
    TITLE,
    USER_ID,
    USER_IDX,
    YEAR,
)
from pipelines.features.profiles import profile_codes
from pipelines.features.text import item_text
from pipelines.models import Recommender, load_model

MODEL = "model"
ITEMS = "items.parquet"
ITEM_VECTORS = "item_vectors.npy"
USERS = "users.parquet"
SEQUENCES = PROJECT.sequences.name
PROFILES = PROJECT.profiles.name
PROFILE_VOCAB = PROJECT.profile_vocab.name
CARD = "card.json"


class Catalogue:
    """Every servable item by index: ids, titles, texts, unit MiniLM vectors, popularity.

    Items added at serving time are appended (``add``) in amortised O(1): the vector and
    popularity arrays keep spare rows (doubled when full), so an add never copies the
    catalogue. Indices never move, so a model that knows ``n`` items still scores items
    ``0..n-1`` correctly.
    """

    def __init__(
        self,
        item_ids: list[str],
        titles: list[str],
        texts: list[str],
        vectors: np.ndarray,  # [n_items, D] float32; rows are L2-normalised here
        popularity: np.ndarray,  # [n_items] distinct users per item (0 for added items)
    ) -> None:
        n = len(item_ids)
        if not (len(titles) == len(texts) == len(vectors) == len(popularity) == n):
            raise ValueError(f"catalogue columns disagree on the number of items ({n})")
        self.item_ids, self.titles, self.texts = list(item_ids), list(titles), list(texts)
        self._vectors = _unit_rows(np.asarray(vectors, dtype=np.float32))
        self._popularity = np.asarray(popularity, dtype=np.float32).copy()
        self._n = n
        self.index = {item: position for position, item in enumerate(self.item_ids)}
        if len(self.index) != n:
            raise ValueError("catalogue item ids must be unique")

    def __len__(self) -> int:
        return self._n

    @property
    def vectors(self) -> np.ndarray:  # [n_items, D], a view: never written through
        return self._vectors[: self._n]

    @property
    def popularity(self) -> np.ndarray:  # [n_items]
        return self._popularity[: self._n]

    def add(self, item_id: str, title: str, text: str, vector: np.ndarray) -> int:
        """Append one item; returns its index. The id must be new."""
        if item_id in self.index:
            raise KeyError("item already in the catalogue")
        row = _unit_rows(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        if self._n == len(self._vectors):
            capacity = max(16, 2 * self._n)
            vectors = np.empty((capacity, self._vectors.shape[1]), dtype=np.float32)
            vectors[: self._n] = self._vectors[: self._n]
            popularity = np.zeros(capacity, dtype=np.float32)
            popularity[: self._n] = self._popularity[: self._n]
            self._vectors, self._popularity = vectors, popularity
        self._vectors[self._n] = row[0]
        self._popularity[self._n] = 0.0
        self.item_ids.append(item_id)
        self.titles.append(title)
        self.texts.append(text)
        self.index[item_id] = self._n
        self._n += 1
        return self._n - 1


@dataclass(frozen=True)
class KnownUsers:
    """The stored history and profile codes of every user the model was built with."""

    index: dict[str, int]  # pseudonymised user id -> user_idx
    items: list[list[int]]  # per user_idx, item indices, oldest first
    timestamps: list[list[int]]  # per user_idx, Unix seconds
    profiles: np.ndarray  # [n_users, 4] codes, 0 = unknown


@dataclass
class Bundle:
    model: Recommender
    catalogue: Catalogue
    users: KnownUsers
    profile_vocab: dict[str, list[str]]
    card: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.card.get("version", "unversioned"))

    def profile_code(self, values: dict[str, str | None]) -> list[int]:
        """Profile codes of raw field values (age band, gender, occupation, region); 0 = unknown."""
        codes = []
        for column in PROFILE_COLUMNS:
            known = self.profile_vocab.get(column, [])
            value = values.get(column)
            codes.append(known.index(value) + 1 if value in known else 0)
        return codes


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _texts(items: pd.DataFrame) -> list[str]:
    return [
        item_text(title, year, genres)
        for title, year, genres in zip(items[TITLE], items[YEAR], items[GENRES], strict=True)
    ]


def write_bundle(
    directory: Path,
    model_dir: Path,
    features_dir: Path,
    split_dir: Path,
    embeddings_path: Path,
    card: dict[str, Any],
) -> None:
    """Fill ``directory`` with a servable bundle from the pipeline's artifacts."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model_dir, directory / MODEL)
    items = pd.read_parquet(split_dir / PROJECT.split_items.name).sort_values(ITEM_IDX)
    write_parquet(items[[ITEM_IDX, ITEM_ID, TITLE, YEAR, GENRES]], directory / ITEMS)
    write_npy(np.load(embeddings_path).astype(np.float32), directory / ITEM_VECTORS)
    users = pd.read_parquet(split_dir / PROJECT.split_users.name).sort_values(USER_IDX)
    write_parquet(users[[USER_IDX, USER_ID]], directory / USERS)
    for name in (SEQUENCES, PROFILES, PROFILE_VOCAB):
        shutil.copy2(features_dir / name, directory / name)
    write_json(card, directory / CARD)


def load_bundle(directory: Path) -> Bundle:
    """The servable bundle in ``directory``, checked for consistency."""
    directory = Path(directory)
    model = load_model(directory / MODEL)
    items = pd.read_parquet(directory / ITEMS).sort_values(ITEM_IDX).reset_index(drop=True)
    if not np.array_equal(items[ITEM_IDX].to_numpy(), np.arange(len(items))):
        raise ValueError(f"{directory / ITEMS} must hold item_idx 0..{len(items) - 1}")
    vectors = np.load(directory / ITEM_VECTORS)
    if len(vectors) != len(items) or model.n_items != len(items):
        raise ValueError(
            f"bundle mismatch: {len(items)} items, {len(vectors)} vectors, "
            f"a model of {model.n_items} items"
        )
    sequences = pd.read_parquet(directory / SEQUENCES).sort_values(USER_IDX)
    users = pd.read_parquet(directory / USERS).sort_values(USER_IDX)
    profiles = pd.read_parquet(directory / PROFILES).sort_values(USER_IDX)
    if not (len(sequences) == len(users) == len(profiles)):
        raise ValueError("bundle mismatch: users, sequences and profiles differ in length")
    history_items = [[int(i) for i in seq] for seq in sequences[SEQ_ITEMS]]
    popularity = np.zeros(len(items), dtype=np.float32)
    for seq in history_items:
        popularity[list(set(seq))] += 1.0  # distinct users per item
    catalogue = Catalogue(
        item_ids=[str(i) for i in items[ITEM_ID]],
        titles=["" if t is None else str(t) for t in items[TITLE]],
        texts=_texts(items),
        vectors=vectors,
        popularity=popularity,
    )
    known = KnownUsers(
        index={str(u): int(i) for u, i in zip(users[USER_ID], users[USER_IDX], strict=True)},
        items=history_items,
        timestamps=[[int(t) for t in seq] for seq in sequences[SEQ_TIMESTAMPS]],
        profiles=profile_codes(profiles),
    )
    vocab = json.loads((directory / PROFILE_VOCAB).read_text())
    card = json.loads((directory / CARD).read_text())
    return Bundle(model, catalogue, known, vocab, card)
