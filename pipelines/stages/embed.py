"""Stage `embed`: one MiniLM sentence vector per catalogue item (content-hash cached)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pipelines.core.config import Params
from pipelines.core.io import replaced_dir
from pipelines.core.paths import PROJECT
from pipelines.features.embedding import embed_catalogue
from pipelines.stages import cli

READS = {"items": PROJECT.split_items, "cache": PROJECT.embed_cache}
WRITES = {"out": PROJECT.embeddings_dir}


def run(params: Params, items: Path, cache: Path, out: Path) -> dict[str, Any]:
    with replaced_dir(out) as staging:
        return embed_catalogue(
            params.embed,
            items_path=items,
            embeddings_path=staging / PROJECT.item_embeddings.name,
            meta_path=staging / PROJECT.embeddings_meta.name,
            cache_dir=cache,
        )


def main(argv: list[str] | None = None) -> int:
    return cli.main("embed", __doc__, run, READS, WRITES, argv)


if __name__ == "__main__":
    sys.exit(main())
