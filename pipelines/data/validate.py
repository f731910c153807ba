"""Runs the data contract (`pipelines.data.contract`) through Great Expectations 1.x.

The contract declares every check and its reason; here each `Rule` becomes an
expectation that carries that reason in its `meta` and `notes`, the suite runs
on each table, and failures become plain words in a `ValidationReport`. Great
Expectations stays behind `run_rules`; everything else works on plain
DataFrames and dataclasses. Messages name tables, columns and row numbers, never
a value from a row.

Verdicts are per row: a bad row is rejected with its reasons, its neighbours are
not. Cells the source could not read (`ValueRule`s, found before validation)
reject their rows the same way. Items and users are checked first, then
interactions against the items and users that passed, so the rows that pass
always form a consistent snapshot.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core import schema
from pipelines.data.contract import (
    EARLIEST_TIMESTAMP,
    INTERACTIONS,
    ITEMS,
    TABLES,
    USERS,
    Rule,
    ValueRule,
    interaction_rules,
    item_rules,
    user_rules,
    value_rules,
)

__all__ = [
    "EARLIEST_TIMESTAMP",
    "INTERACTIONS",
    "ITEMS",
    "TABLES",
    "USERS",
    "Finding",
    "ValidationReport",
    "expectation_for",
    "run_rules",
    "validate_tables",
]

log = logging.getLogger(__name__)

NOUNS = {
    INTERACTIONS: ("interaction", "interactions"),
    ITEMS: ("item", "items"),
    USERS: ("user", "users"),
}
RESULT_FORMAT = {"result_format": "COMPLETE"}
SAMPLE_ROWS = 20

_SINGULAR = {"have": "has", "are": "is", "repeat": "repeats", "refer": "refers"}

# table -> column -> row positions of cells the source could not read
Problems = Mapping[str, Mapping[str, Sequence[int]]]


@dataclass(frozen=True)
class Finding:
    """A failed expectation: how many rows, which rows, and why it matters."""

    table: str
    expectation: str
    column: str | None
    message: str
    row_reason: str
    reason: str
    rows: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "expectation": self.expectation,
            "column": self.column,
            "message": self.message,
            "reason": self.reason,
            "rejected_rows": len(self.rows),
            "sample_rows": list(self.rows[:SAMPLE_ROWS]),
        }


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of a validation: row counts, every check run, and the failures.

    Row numbers are positions (0-based) in the frames given to `validate_tables`.
    """

    row_counts: dict[str, int]
    checks: tuple[dict[str, Any], ...]
    findings: tuple[Finding, ...]
    seconds: float
    _rejected: dict[str, dict[int, list[str]]] = field(repr=False, default_factory=dict)

    @property
    def success(self) -> bool:
        return not self.findings

    def messages(self) -> list[str]:
        return [f.message for f in self.findings]

    def rejected_rows(self, table: str) -> np.ndarray:
        return np.array(sorted(self._rejected.get(table, {})), dtype=np.int64)

    def row_reasons(self, table: str) -> pd.Series:
        """Per-row verdict: "; "-joined reasons for rejected rows, "" for accepted ones."""
        reasons = pd.Series("", index=pd.RangeIndex(self.row_counts[table]), dtype=object)
        for row, why in self._rejected.get(table, {}).items():
            reasons[row] = "; ".join(why)
        return reasons

    def counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for table, total in self.row_counts.items():
            rejected = len(self._rejected.get(table, {}))
            out[table] = {"input": total, "accepted": total - rejected, "rejected": rejected}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "seconds": round(self.seconds, 3),
            "counts": self.counts(),
            "failures": [f.to_dict() for f in self.findings],
            "checks": list(self.checks),
        }


# ---- the suite -------------------------------------------------------------------


def _gx():
    """great_expectations, imported late (it takes seconds) and told to keep quiet:
    no analytics calls, and its import-time INFO chatter would bury the stage log."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx

    return gx


def expectation_for(rule: Rule) -> Any:
    """The rule as a GX expectation carrying its own explanation in `meta` and `notes`."""
    cls = getattr(_gx().expectations, rule.kind)
    meta = {
        "check": rule.check,
        "table": rule.table,
        "problem": rule.problem,
        "reason": rule.reason,
    }
    return cls(**rule.kwargs, meta=meta, notes=rule.reason)


# ---- running it --------------------------------------------------------------------


def _context():
    """A throwaway in-memory context: no files, no analytics, no progress bars."""
    gx = _gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        store_backend_defaults=InMemoryStoreBackendDefaults(),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def run_rules(context: Any, table: str, frame: pd.DataFrame, rules: Sequence[Rule]) -> list[Any]:
    """Results of one suite on one frame, in rule order (one GX validation run per table)."""
    gx = _gx()
    if not rules:
        return []
    expectations = [expectation_for(rule) for rule in rules]
    source = context.data_sources.add_pandas(f"recops_{table}")
    batch_definition = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe(
        "whole"
    )
    suite = gx.ExpectationSuite(name=f"recops_{table}")
    for expectation in expectations:
        suite.add_expectation(expectation)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    outcome = batch.validate(suite, result_format=RESULT_FORMAT)
    by_check = {r.expectation_config.meta["check"]: r for r in outcome.results}
    return [by_check[rule.check] for rule in rules]


def _singular(problem: str) -> str:
    verb, _, rest = problem.partition(" ")
    return f"{_SINGULAR.get(verb, verb)} {rest}"


def _exception_message(result: Any) -> str | None:
    """The kind of error a check raised; its message is left out, since it may quote cells."""
    info = result.exception_info or {}
    candidates = [info] if "raised_exception" in info else list(info.values())
    for entry in candidates:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            trace = str(entry.get("exception_traceback") or "").strip().splitlines()
            kind = re.match(r"^([A-Za-z_][\w.]*)(?::|$)", trace[-1]) if trace else None
            return f"the check raised {kind.group(1) if kind else 'an error'}"
    return None


def _finding(rule: Rule, result: Any, frame: pd.DataFrame) -> Finding | None:
    """Plain-words finding for a failed result; None when the expectation held."""
    if result.success:
        return None
    n_rows = len(frame)
    singular, plural = NOUNS[rule.table]
    kind = rule.kind
    error = _exception_message(result)
    indices = (result.result or {}).get("unexpected_index_list")
    if error is not None:
        rows = tuple(range(n_rows))
        message = f"could not check whether {plural} {rule.problem}: {error}"
        row_reason = f"its table could not be checked ({error})"
    elif rule.scope == "table" or indices is None:
        rows = tuple(range(n_rows))
        subject = f"the {plural} table" if rule.scope == "table" else f"all {n_rows} {plural}"
        table_wide = rule.scope == "table"
        problem = rule.problem if table_wide or n_rows != 1 else _singular(rule.problem)
        message = f"{subject} {problem} ({rule.reason})"
        what = f"its table {rule.problem}" if table_wide else _singular(rule.problem)
        row_reason = f"{what} ({rule.reason})"
    else:
        positions = sorted(int(i) for i in indices)
        if rule.keep_first:
            repeats = np.flatnonzero(frame.duplicated(subset=list(rule.keep_first), keep="first"))
            positions = sorted(set(positions) & set(repeats.tolist()))
        rows = tuple(positions)
        count = len(rows)
        one = count == 1
        noun, problem = (singular, _singular(rule.problem)) if one else (plural, rule.problem)
        message = f"{count} {noun} {problem} ({rule.reason})"
        row_reason = f"{_singular(rule.problem)} ({rule.reason})"
    return Finding(rule.table, kind, rule.column, message, row_reason, rule.reason, rows)


def _check_record(rule: Rule | ValueRule, success: bool) -> dict[str, Any]:
    return {
        "table": rule.table,
        "expectation": rule.kind,
        "column": rule.column,
        "success": bool(success),
        "reason": rule.reason,
    }


def _value_finding(rule: ValueRule, rows: Sequence[int]) -> Finding:
    singular, plural = NOUNS[rule.table]
    rows = tuple(sorted(int(r) for r in rows))
    one = len(rows) == 1
    noun, problem = (singular, _singular(rule.problem)) if one else (plural, rule.problem)
    message = f"{len(rows)} {noun} {problem} ({rule.reason})"
    row_reason = f"{_singular(rule.problem)} ({rule.reason})"
    return Finding(rule.table, rule.kind, rule.column, message, row_reason, rule.reason, rows)


def _evaluate_values(
    table: str, problems: Problems, rejected: dict[str, dict[int, list[str]]]
) -> tuple[list[dict], list[Finding]]:
    """Checks and findings for the cells the source could not read, one per ValueRule."""
    checks, findings = [], []
    found = problems.get(table, {})
    known = {rule.column for rule in value_rules(table)}
    unexpected = sorted(set(found) - known)
    if unexpected:
        raise ValueError(f"no value rule for {table}.{unexpected[0]} in the contract")
    for rule in value_rules(table):
        rows = found.get(rule.column, ())
        checks.append(_check_record(rule, not rows))
        if rows:
            finding = _value_finding(rule, rows)
            findings.append(finding)
            for row in finding.rows:
                rejected[table].setdefault(row, []).append(finding.row_reason)
    return checks, findings


def _evaluate(
    context: Any,
    table: str,
    frame: pd.DataFrame,
    rules: Sequence[Rule],
    rejected: dict[str, dict[int, list[str]]],
) -> tuple[list[dict], list[Finding]]:
    checks, findings = [], []
    for rule, result in zip(rules, run_rules(context, table, frame, rules), strict=True):
        checks.append(_check_record(rule, result.success))
        found = _finding(rule, result, frame)
        if found is None:
            continue
        findings.append(found)
        for row in found.rows:
            rejected[table].setdefault(row, []).append(found.row_reason)
    return checks, findings


def _accepted_ids(frame: pd.DataFrame, column: str, rejected: dict[int, list[str]]) -> list[str]:
    keep = np.ones(len(frame), dtype=bool)
    keep[list(rejected)] = False
    ids = frame.loc[keep, column] if column in frame.columns else pd.Series(dtype=object)
    return sorted({str(v) for v in ids.dropna()})


def validate_tables(
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    *,
    rating_range: tuple[float, float] = (1.0, 5.0),
    bands: Sequence[int] = (18, 25, 35, 45, 50, 56),
    region_digits: int = 3,
    now: datetime | None = None,
    ratings_required: bool = False,
    problems: Problems | None = None,
) -> ValidationReport:
    """Validate the three tables (users already through privacy) and give a per-row verdict.

    Items and users go first; interactions are then checked against the ids that
    passed, so accepting the good rows never leaves an event pointing nowhere.
    `ratings_required` (explicit feedback) rejects events without a rating;
    `problems` are the cells the source or privacy could not accept, by table and
    column, whose rows are rejected with their contract reasons.
    """
    problems = problems or {}
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    frames = {
        INTERACTIONS: interactions.reset_index(drop=True),
        ITEMS: items.reset_index(drop=True),
        USERS: users.reset_index(drop=True),
    }
    rejected: dict[str, dict[int, list[str]]] = {t: {} for t in TABLES}
    context = _context()
    checks: list[dict] = []
    findings: list[Finding] = []
    for table in TABLES:
        c, f = _evaluate_values(table, problems, rejected)
        checks += c
        findings += f
    for table, rules in ((ITEMS, item_rules(now)), (USERS, user_rules(bands, region_digits))):
        c, f = _evaluate(context, table, frames[table], rules, rejected)
        checks += c
        findings += f
    rules = interaction_rules(
        rating_range,
        now,
        _accepted_ids(frames[ITEMS], schema.ITEM_ID, rejected[ITEMS]),
        _accepted_ids(frames[USERS], schema.USER_ID, rejected[USERS]),
        ratings_required=ratings_required,
    )
    c, f = _evaluate(context, INTERACTIONS, frames[INTERACTIONS], rules, rejected)
    checks += c
    findings += f
    report = ValidationReport(
        row_counts={t: len(frames[t]) for t in TABLES},
        checks=tuple(checks),
        findings=tuple(sorted(findings, key=lambda x: TABLES.index(x.table))),
        seconds=time.perf_counter() - started,
        _rejected=rejected,
    )
    log.info(
        "validated %s with %d expectations in %.1fs: %d failed",
        report.row_counts,
        len(checks),
        report.seconds,
        len(findings),
    )
    return report
