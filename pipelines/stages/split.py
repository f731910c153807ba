"""Stage `split`: the benchmark protocol's filtered, ordered, leave-one-out split of data/."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines import paths
from pipelines.config import Params
from pipelines.data.split import catalogue, split_interactions, split_stats, user_table
from pipelines.io import replaced_dir, write_json, write_parquet
from pipelines.stages import cli

log = logging.getLogger(__name__)

READS = {"data": paths.DATA}
WRITES = {"out": paths.SPLIT_DIR}


def run(params: Params, data: Path, out: Path) -> dict[str, Any]:
    interactions = pd.read_parquet(data / paths.INTERACTIONS.name)
    items = pd.read_parquet(data / paths.ITEMS.name)
    users = pd.read_parquet(data / paths.USERS.name)
    log.info(
        "read %d interactions, %d items, %d users from %s",
        len(interactions),
        len(items),
        len(users),
        data,
    )
    split = split_interactions(interactions, params.split.min_count, params.split.tie_break)
    stats = split_stats(split, len(interactions))
    with replaced_dir(out) as staging:
        write_parquet(split, staging / paths.SPLIT_INTERACTIONS.name)
        write_parquet(catalogue(split, items), staging / paths.SPLIT_ITEMS.name)
        write_parquet(user_table(split, users), staging / paths.SPLIT_USERS.name)
        write_json(stats, staging / paths.SPLIT_STATS.name)
    return stats


def main(argv: list[str] | None = None) -> int:
    return cli.main("split", __doc__, run, READS, WRITES, argv)


if __name__ == "__main__":
    sys.exit(main())
