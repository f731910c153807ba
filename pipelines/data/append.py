"""Incremental ingestion: append one validated batch to data/, idempotently and atomically.

``ingest`` (pipelines/data/ingest.py) replaces data/ with one batch; a stream needs
append. A batch folder (the table adapter's files, see ``table_source``)
goes through the same door: the table adapter, privacy, the same Great
Expectations suite, plus the cross-batch rules:

- its events' users and items resolve against what data/ already holds, or
  arrive with their own rows in the batch (a batch row for an id data/ already
  holds replaces that row: the newest catalogue and profile win);
- no event is already present in data/ (same user, item and timestamp).

A batch with any rejected row leaves data/ byte-identical and goes to
``quarantine/<batch>/`` with the report (``quarantine.write_quarantine``). So does a
batch that passes every row check but whose new profiles look like a shilling attack
(``ingest.shilling``, ``shilling.detect``): the flagged users' rows are the rejected ones,
and the detector's evidence (target item, users, scores) is in the report.

**Idempotent.** ``data/ledger.json`` records the SHA-256 of every appended
batch; the same batch again (under any name) adds nothing. A batch already in
quarantine is not judged again.

**Atomic.** The new tables *and* the ledger are written into a staging folder
that replaces data/ whole (``snapshot.write_snapshot``), so a crash at any point
leaves data/ as it was, ledger included; a lock file beside data/ keeps two
appends from interleaving. ``track_with_dvc`` then runs ``dvc add`` so data.dvc
names the new snapshot.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.core import schema
from pipelines.core.config import IngestParams, TableSource
from pipelines.core.io import tracked_md5
from pipelines.core.paths import PROJECT
from pipelines.data.privacy import (
    apply_privacy,
    key_fingerprint,
    read_fingerprint,
    withhold_contact_data,
    write_fingerprint,
)
from pipelines.data.quarantine import check_batch_name, write_quarantine
from pipelines.data.shilling import DetectorSettings, Verdict, detect
from pipelines.data.snapshot import (
    checked_key,
    data_version,
    fingerprint_path,
    read_ledger,
    read_snapshot,
    write_snapshot,
)
from pipelines.data.sources import read_table_source
from pipelines.data.validate import (
    INTERACTIONS,
    ITEMS,
    TABLES,
    USERS,
    Finding,
    ValidationReport,
    validate_tables,
)

log = logging.getLogger(__name__)

CHECKSUM_FILE = "batch.sha256"  # written into a quarantine folder: the batch it holds
LOCK = ".append.lock"
# a landed batch folder: the table adapter's files, canonical column names
BATCH_FILES = {"interactions": "interactions.csv", "items": "items.csv", "users": "users.csv"}
GENRE_SEPARATOR = "|"
EVENT_KEY = [schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP]
KEYS = {INTERACTIONS: None, ITEMS: schema.ITEM_ID, USERS: schema.USER_ID}
ALREADY_PRESENT = "repeat an event data/ already holds (same user, item and timestamp)"
ALREADY_PRESENT_WHY = "a batch delivered twice, or overlapping exports, would count events twice"
SHILLING = "come from a profile that looks like a shilling attack"
SHILLING_WHY = "fake profiles pushing one item would be trained on and put it in real users' lists"


@dataclass(frozen=True)
class AppendResult:
    """What one append did. ``status``: accepted, quarantined or duplicate (nothing done)."""

    batch: str
    status: str
    checksum: str
    counts: dict[str, dict[str, int]]
    added: dict[str, int]
    data_version: str
    quarantine: Path | None = None
    seconds: float = 0.0
    messages: tuple[str, ...] = field(default=())

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"

    def to_dict(self) -> dict:
        return {
            "batch": self.batch,
            "status": self.status,
            "checksum": self.checksum,
            "counts": self.counts,
            "added": self.added,
            "data_version": self.data_version,
            "quarantine": None if self.quarantine is None else str(self.quarantine),
            "seconds": round(self.seconds, 3),
            "messages": list(self.messages),
        }


# ---- a batch folder ---------------------------------------------------------------------


def table_source(batch_dir: Path) -> TableSource:
    """How the table adapter reads a batch folder (every column has its canonical name).

    ``items.csv`` and ``users.csv`` are left out of a batch that brings no new rows.
    """
    batch_dir = Path(batch_dir)

    def present(table: str) -> Path | None:
        path = batch_dir / BATCH_FILES[table]
        return path if path.exists() else None

    return TableSource(
        interactions=batch_dir / BATCH_FILES["interactions"],
        items=present("items"),
        users=present("users"),
        columns={},
        genre_separator=GENRE_SEPARATOR,
    )


# ---- the ledger ----------------------------------------------------------------------------


def batch_checksum(batch_dir: Path) -> str:
    """SHA-256 over the batch's file names and bytes (sorted), so a renamed copy matches."""
    digest = hashlib.sha256()
    for path in sorted(
        p for p in Path(batch_dir).iterdir() if p.is_file() and not p.name.startswith(".")
    ):
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


@contextmanager
def append_lock(data_dir: Path) -> Iterator[None]:
    """One append at a time per data folder (the lock file lives beside it, not in it)."""
    path = Path(data_dir).parent / f".{Path(data_dir).name}{LOCK}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---- reading what data/ holds ------------------------------------------------------------


# ---- cross-batch validation ----------------------------------------------------------------


def _with_known(batch: pd.DataFrame, held: pd.DataFrame, key: str) -> pd.DataFrame:
    """Batch rows first (positions 0..n-1 stay the batch's), then held rows it does not replace."""
    rest = held[~held[key].isin(batch[key])]
    if rest.empty:
        return batch.reset_index(drop=True)
    rest = rest.copy()
    if schema.GENRES in rest.columns:
        rest[schema.GENRES] = rest[schema.GENRES].map(list)
    return pd.concat([batch, rest[batch.columns]], ignore_index=True)


def validate_batch(
    tables: dict[str, pd.DataFrame],
    held: dict[str, pd.DataFrame],
    cfg: IngestParams,
    *,
    now: datetime,
    ratings_required: bool,
    problems: dict,
) -> ValidationReport:
    """The ingestion suite on the batch, with references resolved against data/ too, plus the
    "not already present" rule; row numbers are positions in the batch's own tables."""
    n = {t: len(tables[t]) for t in TABLES}
    items = _with_known(tables[ITEMS], held[ITEMS], schema.ITEM_ID)
    users = _with_known(tables[USERS], held[USERS], schema.USER_ID)
    report = validate_tables(
        tables[INTERACTIONS],
        items,
        users,
        rating_range=cfg.rating_range,
        bands=cfg.age_bands,
        region_digits=cfg.region_digits,
        now=now,
        ratings_required=ratings_required,
        problems=problems,
    )
    rejected = {
        t: {row: list(why) for row, why in report._rejected.get(t, {}).items() if row < n[t]}
        for t in TABLES
    }
    findings = []
    for finding in report.findings:
        rows = tuple(r for r in finding.rows if r < n[finding.table])
        if finding.rows and not rows:
            continue  # only rows data/ already held: they were accepted by an earlier batch
        findings.append(
            Finding(
                finding.table,
                finding.expectation,
                finding.column,
                finding.message,
                finding.row_reason,
                finding.reason,
                rows,
            )
        )
    # cross-batch: an event data/ already holds
    events = tables[INTERACTIONS].reset_index(drop=True)
    seen = held[INTERACTIONS][EVENT_KEY].drop_duplicates()
    present = np.zeros(len(events), dtype=bool)
    if len(seen) and len(events):
        merged = events[EVENT_KEY].reset_index().merge(seen, on=EVENT_KEY, how="inner")
        present[merged["index"].to_numpy()] = True
    rows = tuple(int(i) for i in np.flatnonzero(present))
    if rows:
        for row in rows:
            rejected[INTERACTIONS].setdefault(row, []).append(ALREADY_PRESENT)
        findings.append(
            Finding(
                INTERACTIONS,
                "ExpectEventsNotAlreadyPresent",
                None,
                f"{len(rows)} interaction(s) {ALREADY_PRESENT}",
                ALREADY_PRESENT,
                ALREADY_PRESENT_WHY,
                rows,
            )
        )
    check = {
        "table": INTERACTIONS,
        "expectation": "ExpectEventsNotAlreadyPresent",
        "column": None,
        "success": not rows,
        "reason": ALREADY_PRESENT_WHY,
    }
    return ValidationReport(
        row_counts=n,
        checks=(*report.checks, check),
        findings=tuple(findings),
        seconds=report.seconds,
        _rejected=rejected,
    )


# ---- the shilling check -----------------------------------------------------------------


def detector_settings(cfg: IngestParams) -> DetectorSettings:
    """``ingest.shilling`` for the detector; the top of the rating scale is the push rating."""
    return DetectorSettings(**cfg.shilling.model_dump(), max_rating=cfg.rating_range[1])


def with_shilling(
    report: ValidationReport, tables: dict[str, pd.DataFrame], verdict: Verdict
) -> ValidationReport:
    """The report plus the shilling check: a suspect batch rejects its flagged users' rows
    (events and profile rows), as a failed expectation would."""
    rejected = {t: {r: list(w) for r, w in report._rejected.get(t, {}).items()} for t in TABLES}
    findings = list(report.findings)
    if verdict.suspect:
        flagged = set(verdict.flagged)
        for table in (INTERACTIONS, USERS):
            rows = np.flatnonzero(tables[table][schema.USER_ID].isin(flagged).to_numpy())
            for row in rows:
                rejected[table].setdefault(int(row), []).append(SHILLING)
            if len(rows):
                findings.append(
                    Finding(
                        table,
                        "ExpectNoShillingAttack",
                        schema.USER_ID,
                        f"{len(rows)} {table} row(s) {SHILLING}: {verdict.message()}",
                        SHILLING,
                        SHILLING_WHY,
                        tuple(int(r) for r in rows),
                    )
                )
    check = {
        "table": INTERACTIONS,
        "expectation": "ExpectNoShillingAttack",
        "column": schema.USER_ID,
        "success": not verdict.suspect,
        "reason": SHILLING_WHY,
    }
    return ValidationReport(
        row_counts=report.row_counts,
        checks=(*report.checks, check),
        findings=tuple(findings),
        seconds=report.seconds,
        _rejected=rejected,
    )


# ---- publishing ----------------------------------------------------------------------------


def merged_tables(
    held: dict[str, pd.DataFrame], batch: dict[str, pd.DataFrame]
) -> dict[str, pd.DataFrame]:
    """data/ plus the batch: events appended in order; item and user rows upserted."""
    out = {INTERACTIONS: pd.concat([held[INTERACTIONS], batch[INTERACTIONS]], ignore_index=True)}
    for table in (ITEMS, USERS):
        key = KEYS[table]
        kept = held[table][~held[table][key].isin(batch[table][key])]
        out[table] = (
            pd.concat([kept, batch[table]], ignore_index=True) if len(kept) else batch[table]
        )
    return out


def track_with_dvc(data_dir: Path = PROJECT.data, root: Path = PROJECT.root) -> str | None:
    """``dvc add data`` so data.dvc names the new snapshot; returns the md5 DVC recorded."""
    done = subprocess.run(
        ["dvc", "add", str(Path(data_dir).relative_to(root))],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"dvc add {data_dir} failed: {tail[0]}")
    return tracked_md5(Path(str(data_dir) + ".dvc"))


def append_batch(
    cfg: IngestParams,
    batch_dir: Path,
    *,
    data_dir: Path | None = None,
    quarantine_dir: Path | None = None,
    key: bytes | None = None,
    key_path: Path | None = None,
    now: datetime | None = None,
) -> AppendResult:
    """Validate the batch in ``batch_dir`` against data/ and append it, or quarantine it.

    Raises SourceError, PseudonymKeyError or BatchNameError when the batch cannot be used.
    """
    started = time.perf_counter()
    batch_dir = Path(batch_dir)
    data_dir = Path(data_dir or PROJECT.data)
    quarantine_dir = Path(quarantine_dir or PROJECT.quarantine)
    batch = check_batch_name(batch_dir.name)
    checksum = batch_checksum(batch_dir)
    now = now or datetime.now(UTC)

    with append_lock(data_dir):
        ledger = read_ledger(data_dir)
        version = data_version(ledger)

        def duplicate(message: str, quarantine: Path | None = None) -> AppendResult:
            log.info("batch %s: %s; nothing to do", batch, message)
            no_rows = {t: 0 for t in TABLES}
            seconds = time.perf_counter() - started
            return AppendResult(
                batch,
                "duplicate",
                checksum,
                {},
                no_rows,
                version,
                quarantine=quarantine,
                seconds=seconds,
                messages=(message,),
            )

        done = next((e for e in ledger if e["sha256"] == checksum), None)
        if done is not None:
            return duplicate(f"already appended as {done['batch']}")
        held_in = quarantine_dir / batch
        held_sum = held_in / CHECKSUM_FILE
        if held_sum.exists() and held_sum.read_text().strip() == checksum:
            return duplicate(f"already quarantined in {held_in}", quarantine=held_in)

        key = checked_key(key, key_path or PROJECT.pseudonym_key, data_dir, False)
        source = table_source(batch_dir)
        raw = read_table_source(
            source,
            batch_dir,
            feedback=cfg.feedback,
            missing_values=cfg.missing_values,
            zip_width=cfg.zip_width,
        )
        held = read_snapshot(data_dir)
        # a file left out means "no new rows", not "derive defaults from the events"
        raw_users = raw.users if source.users is not None else raw.users.iloc[:0]
        raw_items = raw.items if source.items is not None else held[ITEMS].iloc[:0].copy()
        screened, withheld = withhold_contact_data(raw_users)
        users, interactions = apply_privacy(
            screened, raw.interactions, key, cfg.age_bands, cfg.region_digits
        )
        problems = {table: dict(columns) for table, columns in raw.problems.items()}
        if withheld:
            problems.setdefault(USERS, {}).update(withheld)
        tables = {
            INTERACTIONS: interactions.reset_index(drop=True),
            ITEMS: raw_items.reset_index(drop=True),
            USERS: users.reset_index(drop=True),
        }
        report = validate_batch(
            tables, held, cfg, now=now, ratings_required=raw.ratings_required, problems=problems
        )
        evidence = None
        if report.success and cfg.shilling.check:
            # only a batch whose rows all pass is judged: its events are what would be trained on
            verdict = detect(tables[INTERACTIONS], held[INTERACTIONS], detector_settings(cfg))
            report = with_shilling(report, tables, verdict)
            evidence = verdict.to_dict() if verdict.suspect else None
        counts = report.counts()
        if not report.success:
            quarantine, _ = write_quarantine(
                tables,
                report,
                batch,
                raw.origin,
                quarantine_dir,
                notes=raw.notes,
                retry=False,
                evidence=evidence,
            )
            (quarantine / CHECKSUM_FILE).write_text(checksum + "\n")
            log.warning(
                "batch %s: %d check(s) failed; %s unchanged, quarantined to %s",
                batch,
                len(report.findings),
                data_dir,
                quarantine,
            )
            return AppendResult(
                batch,
                "quarantined",
                checksum,
                counts,
                {t: 0 for t in TABLES},
                version,
                quarantine=quarantine,
                seconds=time.perf_counter() - started,
                messages=tuple(report.messages()),
            )

        new_ledger = [
            *ledger,
            {
                "batch": batch,
                "sha256": checksum,
                "rows": {t: counts[t]["accepted"] for t in TABLES},
                "appended_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        ]
        write_snapshot(merged_tables(held, tables), data_dir, new_ledger)
        if read_fingerprint(fingerprint_path(data_dir)) != key_fingerprint(key):
            write_fingerprint(fingerprint_path(data_dir), key)
        version = data_version(new_ledger)
        log.info(
            "batch %s: appended %s to %s (data version %s)",
            batch,
            {t: len(tables[t]) for t in TABLES},
            data_dir,
            version,
        )
        return AppendResult(
            batch,
            "accepted",
            checksum,
            counts,
            {t: len(tables[t]) for t in TABLES},
            version,
            seconds=time.perf_counter() - started,
        )
