"""What data/ holds: the canonical tables as deterministic Parquet, swapped in whole.

Both doors into data/ use this module: ``ingest`` (a batch replaces the snapshot) and
``append`` (a batch is added to it). A snapshot is the three canonical tables
(design.md §2), the ledger of the batches appended to it, and, beside data/ (not in it,
since DVC tracks data/), the fingerprint of the pseudonymisation key it was written with.
A write fills a fresh folder and swaps it in, so data/ is never half-written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core import schema
from pipelines.core.io import replaced_dir
from pipelines.core.paths import PROJECT
from pipelines.data.ids import id_sort_key
from pipelines.data.privacy import (
    KEY_ENV,
    PseudonymKeyError,
    key_exists,
    key_fingerprint,
    key_source,
    load_or_create_key,
    read_fingerprint,
)
from pipelines.data.validate import INTERACTIONS, ITEMS, TABLES, USERS

log = logging.getLogger(__name__)


OUTPUT_NAMES = {
    INTERACTIONS: PROJECT.interactions.name,
    ITEMS: PROJECT.items.name,
    USERS: PROJECT.users.name,
}
ARROW_SCHEMAS = {
    INTERACTIONS: pa.schema(
        [
            (schema.USER_ID, pa.string()),
            (schema.ITEM_ID, pa.string()),
            (schema.RATING, pa.float64()),
            (schema.TIMESTAMP, pa.int64()),
        ]
    ),
    ITEMS: pa.schema(
        [
            (schema.ITEM_ID, pa.string()),
            (schema.TITLE, pa.string()),
            (schema.YEAR, pa.int64()),
            (schema.GENRES, pa.list_(pa.string())),
        ]
    ),
    USERS: pa.schema([(c, pa.string()) for c in schema.USER_COLUMNS]),
}
PARQUET_OPTIONS = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "version": "2.6",
}
LEDGER = "ledger.json"  # inside data/: swapped in together with the tables it describes


# ---- canonical tables ------------------------------------------------------------


def final_interactions(frame: pd.DataFrame) -> pd.DataFrame:
    """Interactions as written: source order kept, because split's `source_order`
    tie-break reads same-second events in the order the source logged them."""
    out = frame[list(schema.INTERACTION_COLUMNS)].copy()
    out[schema.RATING] = out[schema.RATING].astype("float64")
    out[schema.TIMESTAMP] = out[schema.TIMESTAMP].astype("int64")
    return out.reset_index(drop=True)


def final_items(frame: pd.DataFrame) -> pd.DataFrame:
    """Items sorted by id, so the file depends only on the catalogue's content."""
    out = frame[list(schema.ITEM_COLUMNS)].copy()
    out[schema.YEAR] = out[schema.YEAR].astype("Int64")
    out[schema.GENRES] = out[schema.GENRES].map(list)
    return out.sort_values(schema.ITEM_ID, key=id_sort_key, kind="stable").reset_index(drop=True)


def final_users(frame: pd.DataFrame) -> pd.DataFrame:
    """Users sorted by pseudonym, which also hides the order of the raw ids."""
    out = frame[list(schema.USER_COLUMNS)].copy()
    return out.sort_values(schema.USER_ID, kind="stable").reset_index(drop=True)


FINALISERS: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    INTERACTIONS: final_interactions,
    ITEMS: final_items,
    USERS: final_users,
}


def write_table(frame: pd.DataFrame, path: Path, table_schema: pa.Schema | None = None) -> None:
    """Deterministic Parquet: fixed schema and writer settings, no index, no timestamps,
    so the same rows always give the same bytes (DVC then sees no change)."""
    table = pa.Table.from_pandas(frame, schema=table_schema, preserve_index=False)
    pq.write_table(table, path, **PARQUET_OPTIONS)


# ---- atomic publishing ---------------------------------------------------------------


def publish_dir(target: Path, fill: Callable[[Path], list[Path]], keep_others: bool) -> list[Path]:
    """Fill a fresh folder beside target, then swap it in: target is never half-written.

    With keep_others, files already in target that fill() does not write are carried over.
    """
    with replaced_dir(target) as staging:
        names = [p.name for p in fill(staging)]
        if keep_others and target.is_dir():
            for entry in target.iterdir():
                if entry.name in names:
                    continue
                copy = shutil.copytree if entry.is_dir() else shutil.copy2
                copy(entry, staging / entry.name)
    return [target / n for n in names]


def write_snapshot(
    tables: dict[str, pd.DataFrame], data_dir: Path, ledger: list[dict] | None = None
) -> list[Path]:
    """The three canonical files (and the ledger, when given), all replaced together; other
    files already in data/ are kept."""

    def fill(folder: Path) -> list[Path]:
        written = []
        for table in TABLES:
            path = folder / OUTPUT_NAMES[table]
            write_table(FINALISERS[table](tables[table]), path, ARROW_SCHEMAS[table])
            written.append(path)
        if ledger is not None:
            path = folder / LEDGER
            path.write_text(json.dumps({"batches": ledger}, indent=2, sort_keys=True) + "\n")
            written.append(path)
        return written

    return publish_dir(Path(data_dir), fill, keep_others=True)


# ---- reading what data/ holds ------------------------------------------------------------


def snapshot_present(data_dir: Path) -> bool:
    return any((data_dir / name).exists() for name in OUTPUT_NAMES.values())


def read_snapshot(data_dir: Path) -> dict[str, pd.DataFrame]:
    """The three tables of data/ (empty frames with the right columns before the first batch)."""
    out = {}
    for table in TABLES:
        path = Path(data_dir) / OUTPUT_NAMES[table]
        if path.exists():
            out[table] = pq.read_table(path).to_pandas()
        else:
            out[table] = ARROW_SCHEMAS[table].empty_table().to_pandas()
    return out


def read_ledger(data_dir: Path) -> list[dict]:
    path = Path(data_dir) / LEDGER
    return json.loads(path.read_text())["batches"] if path.exists() else []


def data_version(ledger: list[dict]) -> str:
    """A short content version of data/: the hash of the ordered batch checksums ("empty" first)."""
    if not ledger:
        return "empty"
    digest = hashlib.sha256("\n".join(entry["sha256"] for entry in ledger).encode())
    return digest.hexdigest()[:16]


def current_version(data_dir: Path) -> str:
    return data_version(read_ledger(data_dir))


# ---- the pseudonymisation key ----------------------------------------------------------


def fingerprint_path(data_dir: Path) -> Path:
    """Beside data/, not in it (data/ is tracked by DVC): .secrets/<name>.key-fingerprint."""
    return data_dir.parent / ".secrets" / f"{data_dir.name}.key-fingerprint"


def checked_key(key: bytes | None, key_path: Path, data_dir: Path, new_key: bool) -> bytes:
    """The key to pseudonymise with, refused when it cannot be the one data/ was written with.

    A missing key is created only when nothing depends on the old one (no snapshot in
    data_dir, no recorded fingerprint) or `new_key` says to start over; a key whose
    fingerprint differs from the recorded one is refused unless `new_key`.
    """
    recorded_at = fingerprint_path(data_dir)
    recorded = read_fingerprint(recorded_at)
    has_data = snapshot_present(data_dir)
    start_over = "pass --new-key to start over with a new key (every user gets a new pseudonym)"
    if key is None:
        if not key_exists(key_path) and (has_data or recorded) and not new_key:
            raise PseudonymKeyError(
                f"the pseudonymisation key {key_path} is missing, but {data_dir} holds data "
                "pseudonymised with it; refusing to create a new key. Restore the key "
                f"(or set ${KEY_ENV}), or {start_over}"
            )
        key = load_or_create_key(key_path)
    if recorded is not None and recorded != key_fingerprint(key) and not new_key:
        raise PseudonymKeyError(
            f"the key from {key_source(key_path)} is not the one {data_dir} was written with "
            f"(its fingerprint differs from {recorded_at}); restore that key, or {start_over}"
        )
    if recorded is None and has_data:
        log.warning(
            "no key fingerprint recorded for %s; this key's is recorded when a batch is accepted",
            data_dir,
        )
    return key
