"""Stage `features`: per-user event sequences with time features, and encoded profiles."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines import paths
from pipelines.config import Params
from pipelines.features.profiles import encode_profiles, profile_vocabulary
from pipelines.features.sequences import build_sequences
from pipelines.io import replaced_dir, write_json, write_parquet
from pipelines.schema import SEQ_ITEMS
from pipelines.stages import cli

READS = {"split": paths.SPLIT_DIR}
WRITES = {"out": paths.FEATURES_DIR}


def run(params: Params, split: Path, out: Path) -> dict[str, Any]:
    events = pd.read_parquet(split / paths.SPLIT_INTERACTIONS.name)
    users = pd.read_parquet(split / paths.SPLIT_USERS.name)
    sequences = build_sequences(events, params.features.max_gap_days)
    vocabulary = profile_vocabulary(users)
    with replaced_dir(out) as staging:
        write_parquet(sequences, staging / paths.SEQUENCES.name)
        write_parquet(encode_profiles(users, vocabulary), staging / paths.PROFILES.name)
        write_json(vocabulary, staging / paths.PROFILE_VOCAB.name)
    return {"users": len(sequences), "events": int(sequences[SEQ_ITEMS].map(len).sum())}


def main(argv: list[str] | None = None) -> int:
    return cli.main("features", __doc__, run, READS, WRITES, argv)


if __name__ == "__main__":
    sys.exit(main())
