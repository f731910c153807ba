"""Stage `embed`: one MiniLM sentence vector per catalogue item (content-hash cached)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pipelines import paths
from pipelines.config import Params
from pipelines.features.embedding import embed_catalogue
from pipelines.io import replaced_dir
from pipelines.stages import cli

READS = {"items": paths.SPLIT_ITEMS, "cache": paths.EMBED_CACHE}
WRITES = {"out": paths.EMBEDDINGS_DIR}


def run(params: Params, items: Path, cache: Path, out: Path) -> dict[str, Any]:
    with replaced_dir(out) as staging:
        return embed_catalogue(
            params.embed,
            items_path=items,
            embeddings_path=staging / paths.ITEM_EMBEDDINGS.name,
            meta_path=staging / paths.EMBEDDINGS_META.name,
            cache_dir=cache,
        )


def main(argv: list[str] | None = None) -> int:
    return cli.main("embed", __doc__, run, READS, WRITES, argv)


if __name__ == "__main__":
    sys.exit(main())
