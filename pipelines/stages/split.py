"""Stage `split`: the benchmark protocol's filtered, ordered, leave-one-out split of data/.

Refuses (exit 2, nothing written) when the k-core filter leaves fewer users, items or
events than `split.min_users`, `min_items`, `min_events`; reports how many test targets
repeat an item of the user's history (`test_repeat_share`): certain misses under
`evaluate.mask_history: true`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.core.config import Params
from pipelines.core.io import replaced_dir, write_json, write_parquet
from pipelines.core.paths import PROJECT
from pipelines.data.split import catalogue, split_interactions, split_stats, user_table
from pipelines.stages import cli

log = logging.getLogger(__name__)

READS = {"data": PROJECT.data}
WRITES = {"out": PROJECT.split_dir}


def run(params: Params, data: Path, out: Path) -> dict[str, Any]:
    interactions = pd.read_parquet(data / PROJECT.interactions.name)
    items = pd.read_parquet(data / PROJECT.items.name)
    users = pd.read_parquet(data / PROJECT.users.name)
    log.info(
        "read %d interactions, %d items, %d users from %s",
        len(interactions),
        len(items),
        len(users),
        data,
    )
    settings = params.split
    split = split_interactions(
        interactions,
        settings.min_count,
        settings.tie_break,
        min_users=settings.min_users,
        min_items=settings.min_items,
        min_events=settings.min_events,
    )
    stats = split_stats(split, len(interactions))
    if stats["test_repeats"]:
        # a message only (no output depends on it): evaluate.mask_history is not a dep here
        masked = params.evaluate.mask_history
        log.log(
            logging.WARNING if masked else logging.INFO,
            "%.1f%% of test targets (%d of %d) are items the user had before: %s",
            100 * stats["test_repeat_share"],
            stats["test_repeats"],
            stats["test"],
            f"certain misses while evaluate.mask_history is true (HR@k at most "
            f"{1 - stats['test_repeat_share']:.2f}); set it to false when people buy the same "
            "things again"
            if masked
            else "candidates, as evaluate.mask_history is false",
        )
    with replaced_dir(out) as staging:
        write_parquet(split, staging / PROJECT.split_interactions.name)
        write_parquet(catalogue(split, items), staging / PROJECT.split_items.name)
        write_parquet(user_table(split, users), staging / PROJECT.split_users.name)
        write_json(stats, staging / PROJECT.split_stats.name)
    return stats


def main(argv: list[str] | None = None) -> int:
    return cli.main("split", __doc__, run, READS, WRITES, argv)


if __name__ == "__main__":
    sys.exit(main())
