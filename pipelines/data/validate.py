"""Data contract of the canonical tables, as a Great Expectations 1.x suite defined in code.

Every expectation carries the reason it exists (in its `meta` and `notes`), so a
failed batch explains itself in plain words instead of in expectation names.
Great Expectations stays behind `run_rules`; everything else here and in the
callers works on plain DataFrames and the `ValidationReport` dataclass.

Verdicts are per row: a bad row is rejected with its reasons, its neighbours are
not. Items and users are checked first, then interactions against the items and
users that passed, so the rows that pass always form a consistent snapshot.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

from pipelines import schema
from pipelines.data.privacy import PSEUDONYM_PATTERN, UNKNOWN, band_labels

log = logging.getLogger(__name__)

INTERACTIONS, ITEMS, USERS = "interactions", "items", "users"
TABLES = (INTERACTIONS, ITEMS, USERS)
NOUNS = {
    INTERACTIONS: ("interaction", "interactions"),
    ITEMS: ("item", "items"),
    USERS: ("user", "users"),
}

EARLIEST_TIMESTAMP = 631_152_000  # 1990-01-01T00:00:00Z
EARLIEST_YEAR = 1800
ITEM_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
INT_TYPES = ["int64", "Int64Dtype"]
FLOAT_TYPES = ["float64", "float32"]
RESULT_FORMAT = {"result_format": "COMPLETE"}
SAMPLE_ROWS = 20

_SINGULAR = {"have": "has", "are": "is", "repeat": "repeats", "refer": "refers"}

Scope = Literal["rows", "table"]


@dataclass(frozen=True)
class Rule:
    """One expectation plus what a failure means in plain words.

    `problem` is a plural verb phrase about rows ("have a rating outside 1–5") for
    row rules, or a clause about the table ("has no rows") for table rules.
    `keep_first` names the key of a uniqueness rule: the first copy is the real
    record, only the repeats are rejected.
    """

    table: str
    expectation: Any
    problem: str
    reason: str
    scope: Scope = "rows"
    keep_first: tuple[str, ...] = ()

    @property
    def column(self) -> str | None:
        return getattr(self.expectation, "column", None)


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


def _rule(
    table: str,
    kind: str,
    problem: str,
    reason: str,
    *,
    scope: Scope = "rows",
    keep_first: tuple[str, ...] = (),
    **kwargs: Any,
) -> Rule:
    """A Rule whose expectation carries its own explanation in `meta` and `notes`."""
    cls = getattr(_gx().expectations, kind)
    check = f"{table}/{kind}/{kwargs.get('column', '')}/{problem}"
    meta = {"check": check, "table": table, "problem": problem, "reason": reason}
    return Rule(table, cls(**kwargs, meta=meta, notes=reason), problem, reason, scope, keep_first)


def _range_text(low: float, high: float) -> str:
    return f"{low:g}–{high:g}"


def item_rules(now: datetime) -> list[Rule]:
    """The items table: one row per item, with a usable id, title and plausible year."""
    t = ITEMS
    last_year = now.year + 1
    return [
        # an empty catalogue means the export broke upstream
        _rule(
            t,
            "ExpectTableRowCountToBeBetween",
            "has no rows",
            "an empty catalogue means the export broke upstream",
            scope="table",
            min_value=1,
        ),
        # later stages read these columns by name
        _rule(
            t,
            "ExpectTableColumnsToMatchSet",
            f"does not have exactly the columns {', '.join(schema.ITEM_COLUMNS)}",
            "later stages read these columns by name",
            scope="table",
            column_set=list(schema.ITEM_COLUMNS),
            exact_match=True,
        ),
        # every item must be addressable
        _rule(
            t,
            "ExpectColumnValuesToNotBeNull",
            "have no item id",
            "an item without an id cannot be recommended",
            column=schema.ITEM_ID,
        ),
        # ids are opaque strings everywhere downstream
        _rule(
            t,
            "ExpectColumnValuesToBeOfType",
            "have an item id that is not text",
            "ids are opaque strings everywhere downstream",
            column=schema.ITEM_ID,
            type_="str",
        ),
        # ids travel in URLs, logs and file names
        _rule(
            t,
            "ExpectColumnValuesToMatchRegex",
            "have an item id that is not 1–64 of A-Z a-z 0-9 _ . : -",
            "ids travel in URLs, logs and file names",
            column=schema.ITEM_ID,
            regex=ITEM_ID_PATTERN,
        ),
        # one id must mean one item
        _rule(
            t,
            "ExpectColumnValuesToBeUnique",
            "repeat an item id listed earlier",
            "one id must mean one item",
            column=schema.ITEM_ID,
            keep_first=(schema.ITEM_ID,),
        ),
        # titles are shown to people and embedded by the text encoder
        _rule(
            t,
            "ExpectColumnValuesToNotBeNull",
            "have no title",
            "titles are shown to people and embedded by the text encoder",
            column=schema.TITLE,
        ),
        _rule(
            t,
            "ExpectColumnValuesToBeOfType",
            "have a title that is not text",
            "titles are shown to people and embedded by the text encoder",
            column=schema.TITLE,
            type_="str",
        ),
        # years feed features and item text; nulls are allowed, nonsense is not
        _rule(
            t,
            "ExpectColumnValuesToBeInTypeList",
            "has a year column that is not integer",
            "years feed features and item text as whole numbers",
            scope="table",
            column=schema.YEAR,
            type_list=INT_TYPES,
        ),
        _rule(
            t,
            "ExpectColumnValuesToBeBetween",
            f"have a year before {EARLIEST_YEAR} or after {last_year}",
            "such a year is a typo, not a release date",
            column=schema.YEAR,
            min_value=EARLIEST_YEAR,
            max_value=last_year,
        ),
        # genres are a list of labels, split at ingestion once
        _rule(
            t,
            "ExpectColumnValuesToBeOfType",
            "have genres that are not a list",
            "genres are split into labels once, at ingestion",
            column=schema.GENRES,
            type_="list",
        ),
    ]


def user_rules(bands: Sequence[int], region_digits: int) -> list[Rule]:
    """The users table after privacy: pseudonyms, bands and regions only."""
    t = USERS
    labels = [*band_labels(bands), UNKNOWN]
    region_pattern = rf"^(?:[A-Z0-9]{{1,{region_digits}}}|{UNKNOWN})$"
    rules = [
        # an empty user table means the export broke upstream
        _rule(
            t,
            "ExpectTableRowCountToBeBetween",
            "has no rows",
            "an empty user table means the export broke upstream",
            scope="table",
            min_value=1,
        ),
        # raw age and zip columns must never reach data/
        _rule(
            t,
            "ExpectTableColumnsToMatchSet",
            f"does not have exactly the columns {', '.join(schema.USER_COLUMNS)}",
            "raw age and zip must never reach data/, and later stages read these names",
            scope="table",
            column_set=list(schema.USER_COLUMNS),
            exact_match=True,
        ),
        # an unknown user cannot own events
        _rule(
            t,
            "ExpectColumnValuesToNotBeNull",
            "have no user id",
            "a user without an id cannot own events",
            column=schema.USER_ID,
        ),
        # raw ids must never leave ingestion
        _rule(
            t,
            "ExpectColumnValuesToMatchRegex",
            "have a user id that is not a pseudonym",
            "raw user ids must never reach data/: privacy at the door",
            column=schema.USER_ID,
            regex=PSEUDONYM_PATTERN,
        ),
        # one id must mean one person
        _rule(
            t,
            "ExpectColumnValuesToBeUnique",
            "repeat a user id listed earlier",
            "one id must mean one person",
            column=schema.USER_ID,
            keep_first=(schema.USER_ID,),
        ),
        # ages are kept only as bands
        _rule(
            t,
            "ExpectColumnValuesToBeInSet",
            f"have an age band outside {', '.join(labels)}",
            "ages are kept only as bands: privacy at the door",
            column=schema.AGE_BAND,
            value_set=labels,
        ),
        # a longer zip prefix can single out a person
        _rule(
            t,
            "ExpectColumnValuesToMatchRegex",
            f"have a region that is not a zip prefix of at most {region_digits} characters",
            "a full zip code can single out a person: privacy at the door",
            column=schema.REGION,
            regex=region_pattern,
        ),
    ]
    for column in schema.PROFILE_COLUMNS:
        # profiles feed the cold-start model; "unknown" is the honest blank
        rules.append(
            _rule(
                t,
                "ExpectColumnValuesToNotBeNull",
                f"have no {column}",
                'profiles feed cold-start models; a blank must say "unknown"',
                column=column,
            )
        )
    for column in schema.USER_COLUMNS:
        # profile fields are categorical labels
        rules.append(
            _rule(
                t,
                "ExpectColumnValuesToBeOfType",
                f"have a {column} that is not text",
                "profile fields are categorical labels",
                column=column,
                type_="str",
            )
        )
    return rules


def interaction_rules(
    rating_range: tuple[float, float],
    now: datetime,
    item_ids: Sequence[str],
    user_ids: Sequence[str],
) -> list[Rule]:
    """The event log: attributable, ordered, in range, unique, and pointing at known rows."""
    t = INTERACTIONS
    low, high = rating_range
    scale = _range_text(low, high)
    return [
        # an empty batch means the export broke upstream
        _rule(
            t,
            "ExpectTableRowCountToBeBetween",
            "has no rows",
            "an empty batch means the export broke upstream",
            scope="table",
            min_value=1,
        ),
        # later stages read these columns by name
        _rule(
            t,
            "ExpectTableColumnsToMatchSet",
            f"does not have exactly the columns {', '.join(schema.INTERACTION_COLUMNS)}",
            "later stages read these columns by name",
            scope="table",
            column_set=list(schema.INTERACTION_COLUMNS),
            exact_match=True,
        ),
        # an event without a user cannot be attributed
        _rule(
            t,
            "ExpectColumnValuesToNotBeNull",
            "have no user id",
            "an event without a user cannot be attributed",
            column=schema.USER_ID,
        ),
        # an event without an item says nothing
        _rule(
            t,
            "ExpectColumnValuesToNotBeNull",
            "have no item id",
            "an event without an item says nothing",
            column=schema.ITEM_ID,
        ),
        # sequence models and the leave-one-out split need event order
        _rule(
            t,
            "ExpectColumnValuesToNotBeNull",
            "have no timestamp",
            "sequence models and the leave-one-out split need event order",
            column=schema.TIMESTAMP,
        ),
        # ids are opaque strings everywhere downstream
        _rule(
            t,
            "ExpectColumnValuesToBeOfType",
            "have a user id that is not text",
            "ids are opaque strings everywhere downstream",
            column=schema.USER_ID,
            type_="str",
        ),
        _rule(
            t,
            "ExpectColumnValuesToBeOfType",
            "have an item id that is not text",
            "ids are opaque strings everywhere downstream",
            column=schema.ITEM_ID,
            type_="str",
        ),
        # ratings are numbers, timestamps whole Unix seconds
        _rule(
            t,
            "ExpectColumnValuesToBeInTypeList",
            "has a rating column that is not numeric",
            "ratings are numbers, or empty for implicit feedback",
            scope="table",
            column=schema.RATING,
            type_list=FLOAT_TYPES,
        ),
        _rule(
            t,
            "ExpectColumnValuesToBeInTypeList",
            "has a timestamp column that is not integer",
            "timestamps are whole Unix seconds",
            scope="table",
            column=schema.TIMESTAMP,
            type_list=INT_TYPES,
        ),
        # raw ids must never leave ingestion
        _rule(
            t,
            "ExpectColumnValuesToMatchRegex",
            "have a user id that is not a pseudonym",
            "raw user ids must never reach data/: privacy at the door",
            column=schema.USER_ID,
            regex=PSEUDONYM_PATTERN,
        ),
        # ids travel in URLs, logs and file names
        _rule(
            t,
            "ExpectColumnValuesToMatchRegex",
            "have an item id that is not 1–64 of A-Z a-z 0-9 _ . : -",
            "ids travel in URLs, logs and file names",
            column=schema.ITEM_ID,
            regex=ITEM_ID_PATTERN,
        ),
        # ratings are stars on a fixed scale; empty means implicit feedback
        _rule(
            t,
            "ExpectColumnValuesToBeBetween",
            f"have a rating outside {scale}",
            f"ratings are stars on a {scale} scale",
            column=schema.RATING,
            min_value=low,
            max_value=high,
        ),
        # earlier values are unit or parsing errors
        _rule(
            t,
            "ExpectColumnValuesToBeBetween",
            "have a timestamp before 1990-01-01",
            "recommender logs do not predate the web; earlier values are unit or parsing errors",
            column=schema.TIMESTAMP,
            min_value=EARLIEST_TIMESTAMP,
        ),
        # an event cannot happen after it was ingested
        _rule(
            t,
            "ExpectColumnValuesToBeBetween",
            "have a timestamp in the future",
            "an event cannot happen after it was ingested; huge values are often milliseconds",
            column=schema.TIMESTAMP,
            max_value=int(now.timestamp()),
        ),
        # a double-logged event would count twice in training and evaluation
        _rule(
            t,
            "ExpectCompoundColumnsToBeUnique",
            "repeat an earlier event with the same user, item and timestamp",
            "a double-logged event would count twice in training and evaluation",
            column_list=[schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP],
            keep_first=(schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP),
        ),
        # every event must point at a known item
        _rule(
            t,
            "ExpectColumnValuesToBeInSet",
            "refer to an item that is missing from the items table or was rejected there",
            "an event must point at a known item to be shown, embedded or evaluated",
            column=schema.ITEM_ID,
            value_set=list(item_ids),
        ),
        # every event must point at a known user
        _rule(
            t,
            "ExpectColumnValuesToBeInSet",
            "refer to a user that is missing from the users table or was rejected there",
            "an event must belong to a known user to join profiles",
            column=schema.USER_ID,
            value_set=list(user_ids),
        ),
    ]


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
    source = context.data_sources.add_pandas(f"recops_{table}")
    batch_definition = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe(
        "whole"
    )
    suite = gx.ExpectationSuite(name=f"recops_{table}")
    for rule in rules:
        suite.add_expectation(rule.expectation)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    outcome = batch.validate(suite, result_format=RESULT_FORMAT)
    by_check = {r.expectation_config.meta["check"]: r for r in outcome.results}
    return [by_check[rule.expectation.meta["check"]] for rule in rules]


def _singular(problem: str) -> str:
    verb, _, rest = problem.partition(" ")
    return f"{_SINGULAR.get(verb, verb)} {rest}"


def _exception_message(result: Any) -> str | None:
    info = result.exception_info or {}
    candidates = [info] if "raised_exception" in info else list(info.values())
    for entry in candidates:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return str(entry.get("exception_message") or "unknown error").splitlines()[0]
    return None


def _finding(rule: Rule, result: Any, frame: pd.DataFrame) -> Finding | None:
    """Plain-words finding for a failed result; None when the expectation held."""
    if result.success:
        return None
    n_rows = len(frame)
    singular, plural = NOUNS[rule.table]
    kind = rule.expectation.expectation_type
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


def _check_record(rule: Rule, result: Any) -> dict[str, Any]:
    return {
        "table": rule.table,
        "expectation": rule.expectation.expectation_type,
        "column": rule.column,
        "success": bool(result.success),
        "reason": rule.reason,
    }


def _evaluate(
    context: Any,
    table: str,
    frame: pd.DataFrame,
    rules: Sequence[Rule],
    rejected: dict[str, dict[int, list[str]]],
) -> tuple[list[dict], list[Finding]]:
    checks, findings = [], []
    for rule, result in zip(rules, run_rules(context, table, frame, rules), strict=True):
        checks.append(_check_record(rule, result))
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
) -> ValidationReport:
    """Validate the three tables (users already through privacy) and give a per-row verdict.

    Items and users go first; interactions are then checked against the ids that
    passed, so accepting the good rows never leaves an event pointing nowhere.
    """
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
    for table, rules in ((ITEMS, item_rules(now)), (USERS, user_rules(bands, region_digits))):
        c, f = _evaluate(context, table, frames[table], rules, rejected)
        checks += c
        findings += f
    rules = interaction_rules(
        rating_range,
        now,
        _accepted_ids(frames[ITEMS], schema.ITEM_ID, rejected[ITEMS]),
        _accepted_ids(frames[USERS], schema.USER_ID, rejected[USERS]),
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
