"""A tiny but real artifacts tree for serving tests: the pipeline's own code builds it.

12 films in four genres, 8 pseudonymised users who watch within one genre, real
MiniLM vectors of the item texts, and a FusionTransformer (hidden 16) trained
for a few epochs by the shared training loop. Layout as under ``artifacts/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipelines.core.io import write_json, write_npy, write_parquet
from pipelines.core.paths import PROJECT
from pipelines.core.schema import (
    ITEM_ID,
    ITEM_IDX,
    SPLIT,
    TEST,
    TIMESTAMP,
    TRAIN,
    USER_ID,
    USER_IDX,
    VALID,
)
from pipelines.features.dataset import load_dataset, train_data, validation
from pipelines.features.profiles import encode_profiles, profile_vocabulary
from pipelines.features.sequences import build_sequences
from pipelines.features.text import item_text
from pipelines.models import build_model
from pipelines.training.loop import TrainerConfig, fit_gradient

FILMS = [
    ("1", "Toy Story", 1995, ["Animation", "Children's", "Comedy"]),
    ("2", "Aladdin", 1992, ["Animation", "Children's", "Musical"]),
    ("3", "The Lion King", 1994, ["Animation", "Children's", "Musical"]),
    ("4", "Heat", 1995, ["Action", "Crime", "Thriller"]),
    ("5", "Die Hard", 1988, ["Action", "Thriller"]),
    ("6", "Speed", 1994, ["Action", "Romance", "Thriller"]),
    ("7", "Alien", 1979, ["Action", "Horror", "Sci-Fi"]),
    ("8", "Star Wars", 1977, ["Action", "Adventure", "Sci-Fi"]),
    ("9", "Blade Runner", 1982, ["Film-Noir", "Sci-Fi"]),
    ("10", "Sense and Sensibility", 1995, ["Drama", "Romance"]),
    ("11", "Emma", 1996, ["Comedy", "Drama", "Romance"]),
    ("12", "Persuasion", 1995, ["Romance"]),
]
GROUPS = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
USERS = [f"u_{i:016x}" for i in range(1, 9)]
SMALL = {"hidden": 16, "n_layers": 1, "n_heads": 2, "max_len": 20, "n_experts": 2, "dropout": 0.0}


def items_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            ITEM_IDX: np.arange(len(FILMS), dtype=np.int64),
            ITEM_ID: [f[0] for f in FILMS],
            "title": [f[1] for f in FILMS],
            "year": pd.array([f[2] for f in FILMS], dtype="Int64"),
            "genres": [f[3] for f in FILMS],
        }
    )


def events_frame() -> pd.DataFrame:
    """Each user watches their genre group twice over (so 6 events), an hour apart."""
    rows = []
    for user, uid in enumerate(USERS):
        group = GROUPS[user % len(GROUPS)]
        other = GROUPS[(user + 1) % len(GROUPS)]
        order = [*group, other[user % 3], *group[::-1]]
        sequence = list(dict.fromkeys(order))  # distinct items, order kept
        for position, item in enumerate(sequence):
            split = TRAIN if position < len(sequence) - 2 else VALID
            split = TEST if position == len(sequence) - 1 else split
            rows.append((user, item, uid, FILMS[item][0], 1_000_000 + 3_600 * position, split))
    columns = [USER_IDX, ITEM_IDX, USER_ID, ITEM_ID, TIMESTAMP, SPLIT]
    return pd.DataFrame(rows, columns=columns)


def users_frame() -> pd.DataFrame:
    bands = ["18-24", "25-34"]
    return pd.DataFrame(
        {
            USER_IDX: np.arange(len(USERS), dtype=np.int64),
            USER_ID: USERS,
            "age_band": [bands[i % 2] for i in range(len(USERS))],
            "gender": ["F" if i % 2 else "M" for i in range(len(USERS))],
            "occupation": ["student"] * len(USERS),
            "region": ["940"] * len(USERS),
        }
    )


def item_vectors(encoder) -> np.ndarray:
    texts = [item_text(title, year, genres) for _, title, year, genres in FILMS]
    return encoder.encode(texts)


def build_artifacts(
    root: Path, vectors: np.ndarray, models: tuple[str, ...] = ("fusion_transformer",)
) -> Path:
    """Write split/, features/, embeddings/, models/, eval/, coldstart/, selection/ under root."""
    artifacts = root / "artifacts"
    split_dir = artifacts / "split"
    write_parquet(items_frame(), split_dir / PROJECT.split_items.name)
    users = users_frame()
    write_parquet(users, split_dir / PROJECT.split_users.name)
    features = artifacts / "features"
    write_parquet(build_sequences(events_frame()), features / PROJECT.sequences.name)
    vocabulary = profile_vocabulary(users)
    write_parquet(encode_profiles(users, vocabulary), features / PROJECT.profiles.name)
    write_json(vocabulary, features / PROJECT.profile_vocab.name)
    embeddings = artifacts / "embeddings" / PROJECT.item_embeddings.name
    write_npy(np.asarray(vectors, dtype=np.float32), embeddings)

    dataset = load_dataset(features, split_dir / PROJECT.split_items.name, embeddings)
    train = train_data(dataset.sequences, dataset.side)
    valid = validation(dataset.sequences, dataset.side)
    metrics = {}
    for name in models:
        torch.manual_seed(0)
        config = (
            {**SMALL, "profile_sizes": train.profile_sizes} if name == "fusion_transformer" else {}
        )
        model = build_model(name, train.n_items, config)
        model.fit(train)
        if model.trainable:
            fit_gradient(
                model,
                train,
                valid,
                TrainerConfig(epochs=8, batch_size=4, device="cpu", lr=1e-2, patience=8),
            )
        model.eval().save(artifacts / "models" / name)
        metrics[name] = {
            "valid": {"ndcg@10": 0.2, "hr@10": 0.4, "mrr@10": 0.1},
            "test": {"ndcg@10": 0.18, "hr@10": 0.35, "mrr@10": 0.09},
        }
    write_json(metrics, artifacts / "eval" / "metrics.json")
    winner = models[0]
    write_json(
        {"winner": winner, "chosen_by": "valid ndcg@10", **metrics[winner], "ranking": []},
        artifacts / "selection" / "selection.json",
    )
    coldstart = {
        "models": {
            name: {
                "new_items": {"model": {"recall@20": 0.3, "ndcg@20": 0.2}},
                "new_users": {"shots": {"0": {"ndcg@10": 0.3}}},
            }
            for name in models
        }
    }
    write_json(coldstart, artifacts / "coldstart" / "metrics.json")
    (root / "data.dvc").write_text(json.dumps({"outs": [{"md5": "0123456789abcdef.dir"}]}))
    return artifacts
