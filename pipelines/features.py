"""DVC stage `features`: per-user event sequences with time features, and profiles.

Sequences hold every kept event in protocol order (train events, then the
validation event, then the test event), so each consumer cuts exactly the
history the protocol allows: ``[:-2]`` to predict valid, ``[:-1]`` for test.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import paths
from pipelines.config import load_params
from pipelines.io import write_json, write_parquet
from pipelines.schema import ITEM_IDX, PROFILE_COLUMNS, SPLIT, TIMESTAMP, USER_IDX

log = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400
UNKNOWN = "unknown"  # profile code 0: a value never seen when the vocabulary was built

SEQUENCE_COLUMNS = ("items", "timestamps", "gaps", "hours", "weekdays", "n_train")


def time_features(timestamps: np.ndarray, max_gap_days: int) -> dict[str, np.ndarray]:
    """Gap since the previous event (s, clipped; 0 for the first), UTC hour and weekday."""
    gaps = np.diff(timestamps, prepend=timestamps[:1])
    gaps = np.clip(gaps, 0, max_gap_days * SECONDS_PER_DAY)
    moments = pd.to_datetime(timestamps, unit="s", utc=True)
    return {
        "gaps": gaps.astype(np.int64),
        "hours": moments.hour.to_numpy(np.int64),
        "weekdays": moments.dayofweek.to_numpy(np.int64),  # Monday = 0
    }


def build_sequences(split: pd.DataFrame, max_gap_days: int) -> pd.DataFrame:
    """One row per user in user_idx order; ``split`` is already in protocol order."""
    rows = []
    for user_idx, events in split.groupby(USER_IDX, sort=True):
        stamps = events[TIMESTAMP].to_numpy(np.int64)
        rows.append(
            {
                USER_IDX: int(user_idx),
                "items": events[ITEM_IDX].to_numpy(np.int64),
                "timestamps": stamps,
                **time_features(stamps, max_gap_days),
                "n_train": int((events[SPLIT] == "train").sum()),
            }
        )
    return pd.DataFrame(rows, columns=[USER_IDX, *SEQUENCE_COLUMNS])


def profile_vocabulary(users: pd.DataFrame) -> dict[str, list[str]]:
    """Per profile field, the known values; position + 1 is the code, 0 is unknown."""
    return {
        column: sorted(v for v in users[column].dropna().astype(str).unique() if v != UNKNOWN)
        for column in PROFILE_COLUMNS
    }


def encode_profiles(users: pd.DataFrame, vocabulary: dict[str, list[str]]) -> pd.DataFrame:
    """Profile fields as they are plus integer codes ``<field>_code`` for models."""
    encoded = users[[USER_IDX, *PROFILE_COLUMNS]].copy()
    for column in PROFILE_COLUMNS:
        codes = {value: position + 1 for position, value in enumerate(vocabulary[column])}
        encoded[f"{column}_code"] = (
            users[column].astype("string").map(codes).fillna(0).astype(np.int64)
        )
    return encoded


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", type=Path, default=paths.SPLIT_DIR)
    parser.add_argument("--out", type=Path, default=paths.FEATURES_DIR)
    parser.add_argument("--params", type=Path, default=paths.PARAMS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params(args.params).features
    started = time.perf_counter()

    split = pd.read_parquet(args.split / paths.SPLIT_INTERACTIONS.name)
    users = pd.read_parquet(args.split / paths.SPLIT_USERS.name)
    sequences = build_sequences(split, params.max_gap_days)
    vocabulary = profile_vocabulary(users)
    write_parquet(sequences, args.out / paths.SEQUENCES.name)
    write_parquet(encode_profiles(users, vocabulary), args.out / paths.PROFILES.name)
    write_json(vocabulary, args.out / paths.PROFILE_VOCAB.name)
    log.info(
        "wrote %d sequences and profiles to %s in %.1fs",
        len(sequences),
        args.out,
        time.perf_counter() - started,
    )


if __name__ == "__main__":
    main()
