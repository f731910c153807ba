"""Stage `features`: per-user event sequences (items and timestamps), and encoded profiles."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.core.config import Params
from pipelines.core.io import replaced_dir, write_json, write_parquet
from pipelines.core.paths import PROJECT
from pipelines.core.schema import SEQ_ITEMS
from pipelines.features.profiles import encode_profiles, profile_vocabulary
from pipelines.features.sequences import build_sequences
from pipelines.stages import cli

READS = {"split": PROJECT.split_dir}
WRITES = {"out": PROJECT.features_dir}


def run(params: Params, split: Path, out: Path) -> dict[str, Any]:
    events = pd.read_parquet(split / PROJECT.split_interactions.name)
    users = pd.read_parquet(split / PROJECT.split_users.name)
    sequences = build_sequences(events)
    vocabulary = profile_vocabulary(users)
    with replaced_dir(out) as staging:
        write_parquet(sequences, staging / PROJECT.sequences.name)
        write_parquet(encode_profiles(users, vocabulary), staging / PROJECT.profiles.name)
        write_json(vocabulary, staging / PROJECT.profile_vocab.name)
    return {"users": len(sequences), "events": int(sequences[SEQ_ITEMS].map(len).sum())}


def main(argv: list[str] | None = None) -> int:
    return cli.main("features", __doc__, run, READS, WRITES, argv)


if __name__ == "__main__":
    sys.exit(main())
