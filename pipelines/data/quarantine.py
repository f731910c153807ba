"""Quarantine: a rejected batch, kept whole, with its reasons; never overwritten.

A batch with any rejected row goes to a new ``quarantine/<batch>/`` folder holding the
rejected rows with their reasons, the rows that passed (nothing is lost), report.json
and report.md. Both doors into data/ (``ingest`` and ``append``) write through here.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.data.snapshot import write_table
from pipelines.data.validate import TABLES, ValidationReport

BATCH_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
REASONS = "reasons"
SOURCE_ROW = "source_row"


class BatchNameError(ValueError):
    """The batch name would not make a safe folder name, or is taken by a quarantine folder."""


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
    evidence: dict | None = None,
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
    if evidence:
        lines += [
            "",
            "## Shilling evidence",
            "",
            f"Target item `{evidence['target']}`: {len(evidence['flagged_users'])} flagged "
            f"profile(s) of {evidence['profiles_scored']} scored; push group score "
            f"{evidence['score']} against threshold {evidence['threshold']} (report.json "
            "`shilling` holds the users, their suspicion and features).",
            "",
            "| item | profiles giving it the top rating | group score | at threshold | "
            "ratings in data/ |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {g['item']} | {g['pushers']} | {g['score']:.2f} | {g['flagged']} | "
            f"{g['held_ratings']} |"
            for g in evidence["push_groups"]
        ]
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
    evidence: dict | None = None,
) -> tuple[Path, list[Path]]:
    """A new quarantine/<batch>/: rejected and accepted rows per table, report.json, report.md.

    ``evidence`` (the shilling detector's, when it flagged the batch) goes into both
    reports. The folder is claimed first (it must not exist; with `retry` a taken name gets a
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
        if evidence is not None:
            payload["shilling"] = evidence
        (staging / "report.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        (staging / "report.md").write_text(
            _markdown(name, source, report, written, notes, evidence)
        )
        os.replace(staging, target)  # onto the empty folder claimed above
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        raise
    return target, [target / n for n in [*written, "report.json", "report.md"]]
