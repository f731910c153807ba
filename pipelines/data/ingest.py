"""Ingestion: source → privacy → validation → data/ (all rows good) or quarantine/ (any bad).

`python -m pipelines.data.ingest [--batch NAME] [--params params.yaml]`; the Airflow DAG
calls `ingest(params, batch_name)` instead. data/ changes only when every row of
every table passes, and then all three files change together; otherwise data/
stays byte-identical and quarantine/<batch>/ receives the rejected rows with their
reasons, the rows that passed (nothing is lost), report.json and report.md.

Exit codes: 0 accepted, 1 rows rejected, 2 the batch could not be read at all.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import paths, schema
from pipelines.data.ids import id_sort_key
from pipelines.io import replaced_dir
from pipelines.config import IngestParams, Params, ParamsError, load_params
from pipelines.data.privacy import PseudonymKeyError, apply_privacy, load_or_create_key
from pipelines.data.sources import RawTables, SourceError, read_source
from pipelines.data.validate import (
    INTERACTIONS,
    ITEMS,
    TABLES,
    USERS,
    ValidationReport,
    validate_tables,
)

log = logging.getLogger("pipelines.data.ingest")

BATCH_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
REASONS = "reasons"
SOURCE_ROW = "source_row"
OUTPUT_NAMES = {
    INTERACTIONS: paths.INTERACTIONS.name,
    ITEMS: paths.ITEMS.name,
    USERS: paths.USERS.name,
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


class BatchNameError(ValueError):
    """The batch name would not make a safe folder name."""


@dataclass(frozen=True)
class IngestResult:
    """What one ingestion did: accepted or not, row counts per table, and where files went."""

    batch: str
    accepted: bool
    source: str
    counts: dict[str, dict[str, int]]
    report: ValidationReport
    written: tuple[Path, ...]
    quarantine: Path | None
    seconds: float


def default_batch_name(now: datetime | None = None) -> str:
    """UTC timestamp like 20261124T061500Z: sortable and unique enough for daily batches."""
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def check_batch_name(name: str) -> str:
    if not BATCH_PATTERN.match(name):
        raise BatchNameError(
            f"batch name {name!r} must be 1-64 of letters, digits, '_', '.', '-' "
            "and start with a letter or digit"
        )
    return name


# ---- canonical output --------------------------------------------------------------


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


def _readable(frame: pd.DataFrame) -> pd.DataFrame:
    """Rejected rows may hold anything; mixed-type columns become text so they can be written."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype != object:
            continue
        try:
            pa.array(out[column], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            out[column] = out[column].map(lambda v: None if v is None else str(v))
    return out


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


def write_snapshot(tables: dict[str, pd.DataFrame], data_dir: Path) -> list[Path]:
    """The three canonical files, all replaced together."""

    def fill(folder: Path) -> list[Path]:
        written = []
        for table in TABLES:
            path = folder / OUTPUT_NAMES[table]
            write_table(FINALISERS[table](tables[table]), path, ARROW_SCHEMAS[table])
            written.append(path)
        return written

    return publish_dir(data_dir, fill, keep_others=True)


# ---- quarantine ----------------------------------------------------------------------


def split_rows(frame: pd.DataFrame, reasons: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(accepted, rejected); rejected rows keep their source row number and their reasons."""
    bad = reasons.to_numpy() != ""
    rows = frame.reset_index(drop=True)
    rejected = rows[bad].copy()
    rejected.insert(0, SOURCE_ROW, np.flatnonzero(bad))
    rejected[REASONS] = reasons[bad].to_numpy()
    return rows[~bad].reset_index(drop=True), rejected.reset_index(drop=True)


def _markdown(batch: str, source: str, report: ValidationReport, files: list[str]) -> str:
    lines = [
        f"# Ingestion batch {batch}: rejected",
        "",
        f"Source: `{source}`. Checked with {len(report.checks)} expectations in "
        f"{report.seconds:.1f}s. **data/ was left unchanged.**",
        "",
        "| table | input rows | accepted | rejected |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {t} | {c['input']} | {c['accepted']} | {c['rejected']} |"
        for t, c in report.counts().items()
    ]
    lines += ["", "## What failed", ""]
    for finding in report.findings:
        sample = ", ".join(str(r) for r in finding.rows[:10])
        more = "" if len(finding.rows) <= 10 else f", … ({len(finding.rows)} in all)"
        where = f" Rows: {sample}{more}." if finding.rows else ""
        lines.append(f"- {finding.message}.{where}")
    lines += [
        "",
        "Row numbers count from 0 in the source table as read (`source_row` in the files).",
        "",
        "## Files",
        "",
    ]
    lines += [f"- `{name}`" for name in files]
    lines += [
        "",
        "`*.rejected.parquet` holds the rejected rows with a `reasons` column; "
        "`*.accepted.parquet` the rows that passed, so nothing is lost.",
        "",
        "## Every check",
        "",
        "| table | expectation | column | passed | why it exists |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {c['table']} | {c['expectation']} | {c['column'] or ''} | "
        f"{'yes' if c['success'] else '**no**'} | {c['reason']} |"
        for c in report.checks
    ]
    return "\n".join(lines) + "\n"


def write_quarantine(
    tables: dict[str, pd.DataFrame],
    report: ValidationReport,
    batch: str,
    source: str,
    quarantine_root: Path,
) -> list[Path]:
    """quarantine/<batch>/: rejected and accepted rows per table, report.json, report.md."""
    pieces = {t: split_rows(tables[t], report.row_reasons(t)) for t in TABLES}
    for table, (accepted, rejected) in pieces.items():
        assert len(accepted) + len(rejected) == len(tables[table]), f"{table} rows lost"

    def fill(folder: Path) -> list[Path]:
        written = []
        for table, (accepted, rejected) in pieces.items():
            for kind, frame in (("rejected", rejected), ("accepted", accepted)):
                path = folder / f"{table}.{kind}.parquet"
                write_table(_readable(frame), path)
                written.append(path)
        names = [p.name for p in written]
        payload = {
            "batch": batch,
            "source": source,
            "accepted": False,
            **report.to_dict(),
            "files": names,
        }
        (folder / "report.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        (folder / "report.md").write_text(_markdown(batch, source, report, names))
        return [*written, folder / "report.json", folder / "report.md"]

    return publish_dir(quarantine_root / batch, fill, keep_others=False)


# ---- the step --------------------------------------------------------------------------


def _ingest_params(params: Params | IngestParams) -> IngestParams:
    return params.ingest if isinstance(params, Params) else params


def ingest(
    params: Params | IngestParams,
    batch_name: str | None = None,
    *,
    data_dir: Path | None = None,
    quarantine_dir: Path | None = None,
    key: bytes | None = None,
    key_path: Path | None = None,
    downloads: Path | None = None,
    base_dir: Path | None = None,
    now: datetime | None = None,
) -> IngestResult:
    """Read the configured source, apply privacy, validate, then publish or quarantine.

    Output folders default to pipelines.paths (read at call time); tests pass their own.
    Raises SourceError, PseudonymKeyError or BatchNameError when the batch cannot be
    read at all; bad rows are not an exception, they are a rejected result.
    """
    started = time.perf_counter()
    cfg = _ingest_params(params)
    now = now or datetime.now(UTC)
    batch = check_batch_name(batch_name or default_batch_name(now))
    data_dir = data_dir or paths.DATA
    quarantine_dir = quarantine_dir or paths.QUARANTINE

    t0 = time.perf_counter()
    raw: RawTables = read_source(cfg, downloads or paths.DOWNLOADS, base_dir or paths.ROOT)
    log.info(
        "batch %s: read %s from %s in %.1fs",
        batch,
        raw.counts(),
        raw.origin,
        time.perf_counter() - t0,
    )

    key = key if key is not None else load_or_create_key(key_path or paths.PSEUDONYM_KEY)
    users, interactions = apply_privacy(
        raw.users, raw.interactions, key, cfg.age_bands, cfg.region_digits
    )
    tables = {INTERACTIONS: interactions, ITEMS: raw.items, USERS: users}

    report = validate_tables(
        interactions,
        raw.items,
        users,
        rating_range=cfg.rating_range,
        bands=cfg.age_bands,
        region_digits=cfg.region_digits,
        now=now,
    )
    counts = report.counts()
    for table in TABLES:
        c = counts[table]
        assert c["accepted"] + c["rejected"] == c["input"] == len(tables[table]), table

    t0 = time.perf_counter()
    if report.success:
        written = write_snapshot(tables, data_dir)
        quarantine = None
        log.info(
            "batch %s: wrote %s in %.1fs",
            batch,
            ", ".join(str(p) for p in written),
            time.perf_counter() - t0,
        )
    else:
        written = write_quarantine(tables, report, batch, raw.origin, quarantine_dir)
        quarantine = quarantine_dir / batch
        log.warning(
            "batch %s: %d expectation(s) failed; %s left unchanged, quarantined to %s in %.1fs",
            batch,
            len(report.findings),
            data_dir,
            quarantine,
            time.perf_counter() - t0,
        )
    seconds = time.perf_counter() - started
    log.info("batch %s: done in %.1fs", batch, seconds)
    return IngestResult(
        batch, report.success, raw.origin, counts, report, tuple(written), quarantine, seconds
    )


def summary(result: IngestResult) -> str:
    """What a person at the terminal needs: verdict, counts, failures in plain words."""
    verdict = "accepted" if result.accepted else "REJECTED"
    lines = [f"batch {result.batch}: {verdict} ({result.source}, {result.seconds:.1f}s)"]
    for table, c in result.counts.items():
        lines.append(
            f"  {table}: {c['input']} read, {c['accepted']} accepted, {c['rejected']} rejected"
        )
    if result.accepted:
        lines += [f"  wrote {p}" for p in result.written]
    else:
        lines.append("failed expectations:")
        lines += [f"  - {m}" for m in result.report.messages()]
        lines.append(f"data/ left unchanged; see {result.quarantine / 'report.md'}")
    return "\n".join(lines)
