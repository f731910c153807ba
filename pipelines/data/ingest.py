"""Ingestion: source → privacy → validation → data/ (all rows good) or quarantine/ (any bad).

`python -m pipelines.stages.ingest` is the command; the Airflow DAG calls
`ingest(params, batch_name)`. An accepted batch replaces all of data/ (its three
files change together; other files there are kept); a batch with any rejected
row leaves data/ byte-identical and goes to a new quarantine/<batch>/ folder
with the rejected rows and their reasons, the rows that passed (nothing is
lost), report.json and report.md. A quarantine folder is never overwritten.

The pseudonymisation key is guarded: a fingerprint of the key that wrote data/
is kept in .secrets/<data folder>.key-fingerprint beside data/ and checked on
every run, and a missing key is not silently replaced while data/ depends on it
(`new_key=True` starts over with a new key, every user getting a new pseudonym).

Errors that make the batch unusable (`SourceError`, `PseudonymKeyError`,
`BatchNameError`) carry one-line messages that quote no value from a data row.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import tempfile
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
from pipelines.config import IngestParams, Params
from pipelines.data.ids import id_sort_key
from pipelines.data.privacy import (
    KEY_ENV,
    PUBLIC_DEMO_KEY,
    PseudonymKeyError,
    apply_privacy,
    key_exists,
    key_fingerprint,
    key_source,
    load_or_create_key,
    read_fingerprint,
    withhold_contact_data,
    write_fingerprint,
)
from pipelines.data.sources import RawTables, read_source
from pipelines.data.validate import (
    INTERACTIONS,
    ITEMS,
    TABLES,
    USERS,
    ValidationReport,
    validate_tables,
)
from pipelines.io import replaced_dir

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
    """The batch name would not make a safe folder name, or is taken by a quarantine folder."""


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
    notes: tuple[str, ...] = ()


def default_batch_name(now: datetime | None = None) -> str:
    """UTC timestamp plus a random tag, like 20261124T061500Z-3f9a: sortable, and two runs
    in the same second get different names (a clash left over is retried with a new tag)."""
    return f"{(now or datetime.now(UTC)).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(2)}"


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


def _markdown(
    batch: str,
    source: str,
    report: ValidationReport,
    files: list[str],
    notes: tuple[str, ...] = (),
) -> str:
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
    if notes:
        lines += ["", "## What the source did not provide", ""]
        lines += [f"- {note}" for note in notes]
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


def _claim(root: Path, batch: str, retry: bool) -> str:
    """Create quarantine/<batch>/ empty, atomically: a folder that exists is never reused.

    With `retry` (a default name) a clash takes a new random tag; otherwise it is refused.
    """
    root.mkdir(parents=True, exist_ok=True)
    name = batch
    for _ in range(100):
        try:
            (root / name).mkdir()
            return name
        except FileExistsError:
            if not retry:
                raise BatchNameError(
                    f"{root / name} already exists and is never overwritten; "
                    "choose another --batch name"
                ) from None
            name = f"{batch.rsplit('-', 1)[0]}-{secrets.token_hex(2)}"
    raise BatchNameError(f"could not find a free quarantine folder name in {root}")


def write_quarantine(
    tables: dict[str, pd.DataFrame],
    report: ValidationReport,
    batch: str,
    source: str,
    quarantine_root: Path,
    *,
    notes: tuple[str, ...] = (),
    retry: bool = False,
) -> tuple[Path, list[Path]]:
    """A new quarantine/<batch>/: rejected and accepted rows per table, report.json, report.md.

    The folder is claimed first (it must not exist; with `retry` a taken name gets a
    new tag), filled beside it and moved in whole, so it is never half-written and an
    earlier quarantine is never replaced. Returns the folder and its files.
    """
    pieces = {t: split_rows(tables[t], report.row_reasons(t)) for t in TABLES}
    for table, (accepted, rejected) in pieces.items():
        assert len(accepted) + len(rejected) == len(tables[table]), f"{table} rows lost"
    name = _claim(quarantine_root, batch, retry)
    target = quarantine_root / name
    staging = Path(tempfile.mkdtemp(dir=quarantine_root, prefix=f".staging-{name}."))
    try:
        written = []
        for table, (accepted, rejected) in pieces.items():
            for kind, frame in (("rejected", rejected), ("accepted", accepted)):
                path = staging / f"{table}.{kind}.parquet"
                write_table(_readable(frame), path)
                written.append(path.name)
        payload = {
            "batch": name,
            "source": source,
            "accepted": False,
            **report.to_dict(),
            "notes": list(notes),
            "files": written,
        }
        (staging / "report.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        (staging / "report.md").write_text(_markdown(name, source, report, written, notes))
        os.replace(staging, target)  # onto the empty folder claimed above
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        raise
    return target, [target / n for n in [*written, "report.json", "report.md"]]


# ---- the pseudonymisation key ----------------------------------------------------------


def fingerprint_path(data_dir: Path) -> Path:
    """Beside data/, not in it (data/ is tracked by DVC): .secrets/<name>.key-fingerprint."""
    return data_dir.parent / ".secrets" / f"{data_dir.name}.key-fingerprint"


def snapshot_present(data_dir: Path) -> bool:
    return any((data_dir / name).exists() for name in OUTPUT_NAMES.values())


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
    new_key: bool = False,
) -> IngestResult:
    """Read the configured source, apply privacy, validate, then publish or quarantine.

    Output folders default to pipelines.paths (read at call time); tests pass their own.
    Raises SourceError, PseudonymKeyError or BatchNameError when the batch cannot be
    used at all; bad rows (including cells that cannot be read as their type) are not
    an exception, they are a rejected result.
    """
    started = time.perf_counter()
    cfg = _ingest_params(params)
    now = now or datetime.now(UTC)
    data_dir = data_dir or paths.DATA
    quarantine_dir = quarantine_dir or paths.QUARANTINE
    batch = check_batch_name(batch_name or default_batch_name(now))
    if batch_name is not None and (quarantine_dir / batch).exists():
        raise BatchNameError(
            f"{quarantine_dir / batch} already exists and is never overwritten; "
            "choose another --batch name"
        )
    if key is None and cfg.source == "movielens" and not os.environ.get(KEY_ENV):
        key = PUBLIC_DEMO_KEY  # public data, public key: reproducible on every machine
        log.info("batch %s: MovieLens demo, pseudonymised with the public demo key", batch)
    t0 = time.perf_counter()
    # read (or refuse) the source before the key: a refused batch must not leave a new key
    raw: RawTables = read_source(cfg, downloads or paths.DOWNLOADS, base_dir or paths.ROOT)
    log.info(
        "batch %s: read %s from %s in %.1fs",
        batch,
        raw.counts(),
        raw.origin,
        time.perf_counter() - t0,
    )
    for note in raw.notes:
        log.info("batch %s: %s", batch, note)
    key = checked_key(key, key_path or paths.PSEUDONYM_KEY, data_dir, new_key)

    screened, withheld = withhold_contact_data(raw.users)
    users, interactions = apply_privacy(
        screened, raw.interactions, key, cfg.age_bands, cfg.region_digits
    )
    problems = {table: dict(columns) for table, columns in raw.problems.items()}
    if withheld:
        problems.setdefault(USERS, {}).update(withheld)
    tables = {INTERACTIONS: interactions, ITEMS: raw.items, USERS: users}

    report = validate_tables(
        interactions,
        raw.items,
        users,
        rating_range=cfg.rating_range,
        bands=cfg.age_bands,
        region_digits=cfg.region_digits,
        now=now,
        ratings_required=raw.ratings_required,
        problems=problems,
    )
    counts = report.counts()
    for table in TABLES:
        c = counts[table]
        assert c["accepted"] + c["rejected"] == c["input"] == len(tables[table]), table

    t0 = time.perf_counter()
    if report.success:
        written = write_snapshot(tables, data_dir)
        if read_fingerprint(fingerprint_path(data_dir)) != key_fingerprint(key):
            write_fingerprint(fingerprint_path(data_dir), key)
        quarantine = None
        log.info(
            "batch %s: replaced %s with %s in %.1fs",
            batch,
            data_dir,
            ", ".join(p.name for p in written),
            time.perf_counter() - t0,
        )
    else:
        quarantine, written = write_quarantine(
            tables,
            report,
            batch,
            raw.origin,
            quarantine_dir,
            notes=raw.notes,
            retry=batch_name is None,
        )
        batch = quarantine.name
        log.warning(
            "batch %s: %d check(s) failed; %s left unchanged, quarantined to %s in %.1fs",
            batch,
            len(report.findings),
            data_dir,
            quarantine,
            time.perf_counter() - t0,
        )
    seconds = time.perf_counter() - started
    log.info("batch %s: done in %.1fs", batch, seconds)
    return IngestResult(
        batch,
        report.success,
        raw.origin,
        counts,
        report,
        tuple(written),
        quarantine,
        seconds,
        raw.notes,
    )


def summary(result: IngestResult) -> str:
    """What a person at the terminal needs: verdict, counts, failures in plain words."""
    verdict = "accepted" if result.accepted else "REJECTED"
    lines = [f"batch {result.batch}: {verdict} ({result.source}, {result.seconds:.1f}s)"]
    for table, c in result.counts.items():
        lines.append(
            f"  {table}: {c['input']} read, {c['accepted']} accepted, {c['rejected']} rejected"
        )
    lines += [f"  note: {note}" for note in result.notes]
    if result.accepted:
        folder = result.written[0].parent if result.written else "data/"
        lines.append(f"{folder} replaced whole by this batch:")
        lines += [f"  wrote {p}" for p in result.written]
    else:
        lines.append("failed expectations:")
        lines += [f"  - {m}" for m in result.report.messages()]
        lines.append(f"data/ left unchanged; see {result.quarantine / 'report.md'}")
    return "\n".join(lines)
