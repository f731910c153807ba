"""Ingestion: source → privacy → validation → data/ (all rows good) or quarantine/ (any bad).

`python -m pipelines.stages.ingest` is the command; the Airflow DAG calls
`ingest(params.ingest, batch_name)`. An accepted batch replaces all of data/ (its three
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

import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from pipelines.core import schema
from pipelines.core.config import IngestParams
from pipelines.core.paths import PROJECT
from pipelines.data.privacy import (
    KEY_ENV,
    PUBLIC_DEMO_KEY,
    apply_privacy,
    is_pseudonym,
    key_fingerprint,
    read_fingerprint,
    withhold_contact_data,
    write_fingerprint,
)
from pipelines.data.quarantine import (
    BatchNameError,
    check_batch_name,
    default_batch_name,
    write_quarantine,
)
from pipelines.data.snapshot import checked_key, fingerprint_path, write_snapshot
from pipelines.data.sources import RawTables, read_source
from pipelines.data.validate import (
    INTERACTIONS,
    ITEMS,
    TABLES,
    USERS,
    ValidationReport,
    validate_tables,
)

log = logging.getLogger("pipelines.data.ingest")


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


def ingest(
    cfg: IngestParams,
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

    Output folders default to pipelines.core.paths (read at call time); tests pass their own.
    Raises SourceError, PseudonymKeyError or BatchNameError when the batch cannot be
    used at all; bad rows (including cells that cannot be read as their type) are not
    an exception, they are a rejected result.
    """
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    data_dir = data_dir or PROJECT.data
    quarantine_dir = quarantine_dir or PROJECT.quarantine
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
    raw: RawTables = read_source(cfg, downloads or PROJECT.downloads, base_dir or PROJECT.root)
    log.info(
        "batch %s: read %s from %s in %.1fs",
        batch,
        raw.counts(),
        raw.origin,
        time.perf_counter() - t0,
    )
    notes = list(raw.notes)
    already = sum(is_pseudonym(v) for v in pd.unique(raw.interactions[schema.USER_ID].dropna()))
    if already:
        notes.append(
            f"interactions.user_id: {already} ids are already pseudonyms (u_ and 16 hex "
            "digits, e.g. a quarantine's accepted rows): kept as they are, never hashed again"
        )
    for note in notes:
        log.info("batch %s: %s", batch, note)
    key = checked_key(key, key_path or PROJECT.pseudonym_key, data_dir, new_key)

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
            notes=tuple(notes),
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
        tuple(notes),
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
