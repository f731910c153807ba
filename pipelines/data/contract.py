"""The data contract of the canonical tables: which checks exist on which table, and why.

Every check is declared once, here, with the reason it exists; `validate.py` runs
the expectation checks through Great Expectations and turns failures into plain
words, and nothing else restates a reason. Two kinds of check:

- `Rule`: a Great Expectations expectation (named by its class, with its keyword
  arguments) on a table as it reaches validation;
- `ValueRule`: a problem with single cells found while the source is read or made
  private (a number that is not a finite number, contact data in a profile field).
  Such a cell never reaches the tables as it was: it becomes a missing value (or
  "unknown") and its row is rejected with the rule's reason.

Nothing in this module imports Great Expectations or reads data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pipelines.core import schema
from pipelines.data.privacy import (
    ID_PATTERN,
    PSEUDONYM_PATTERN,
    SHORT_LABEL_MAX,
    SHORT_LABEL_PATTERN,
    UNKNOWN,
    band_labels,
)

INTERACTIONS, ITEMS, USERS = "interactions", "items", "users"
TABLES = (INTERACTIONS, ITEMS, USERS)

EARLIEST_TIMESTAMP = 631_152_000  # 1990-01-01T00:00:00Z
EARLIEST_YEAR = 1800
MAX_AGE = 130
INT_TYPES = ["int64", "Int64Dtype"]
FLOAT_TYPES = ["float64", "float32"]

Scope = Literal["rows", "table"]
Feedback = Literal["auto", "explicit", "implicit"]
FEEDBACK_MODES: tuple[str, ...] = ("auto", "explicit", "implicit")


@dataclass(frozen=True)
class Rule:
    """One expectation plus what a failure means in plain words.

    `kind` is the Great Expectations class name and `kwargs` its arguments.
    `problem` is a plural verb phrase about rows ("have a rating outside 1–5") for
    row rules, or a clause about the table ("has no rows") for table rules.
    `keep_first` names the key of a uniqueness rule: the first copy is the real
    record, only the repeats are rejected.
    """

    table: str
    kind: str
    problem: str
    reason: str
    scope: Scope = "rows"
    keep_first: tuple[str, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def column(self) -> str | None:
        return self.kwargs.get("column")

    @property
    def check(self) -> str:
        """A key that tells this rule apart from every other in one validation run."""
        return f"{self.table}/{self.kind}/{self.column or ''}/{self.problem}"


@dataclass(frozen=True)
class ValueRule:
    """A per-cell problem found while reading or pseudonymising (see the module doc)."""

    table: str
    column: str
    kind: str
    problem: str
    reason: str

    @property
    def check(self) -> str:
        return f"{self.table}/{self.kind}/{self.column}/{self.problem}"


def _rule(table: str, kind: str, problem: str, reason: str, **kwargs: Any) -> Rule:
    scope = kwargs.pop("scope", "rows")
    keep_first = kwargs.pop("keep_first", ())
    return Rule(table, kind, problem, reason, scope, keep_first, kwargs)


def _range_text(low: float, high: float) -> str:
    return f"{low:g}–{high:g}"


# ---- cell problems found before validation -------------------------------------------

NOT_A_NUMBER = "ValuesAreFiniteNumbers"
CONTACT_DATA = "ValuesAreNotContactData"

VALUE_RULES: dict[tuple[str, str], ValueRule] = {
    (r.table, r.column): r
    for r in (
        ValueRule(
            INTERACTIONS,
            schema.RATING,
            NOT_A_NUMBER,
            "have a rating that is not a finite number",
            "ratings are compared and averaged as numbers",
        ),
        ValueRule(
            INTERACTIONS,
            schema.TIMESTAMP,
            NOT_A_NUMBER,
            "have a timestamp that is neither Unix seconds nor an ISO date-time in range",
            "sequence models and the leave-one-out split need a real point in time",
        ),
        ValueRule(
            ITEMS,
            schema.YEAR,
            NOT_A_NUMBER,
            "have a year that is not a finite number",
            "a year that overflows or is infinite is a broken export, not a release date",
        ),
        ValueRule(
            USERS,
            "age",
            NOT_A_NUMBER,
            f"have an age that is not a number of years from 0 to {MAX_AGE}",
            "ages are kept only as bands, and an unreadable age cannot be banded honestly",
        ),
        *(
            ValueRule(
                USERS,
                column,
                CONTACT_DATA,
                f"have a {column} that looks like an e-mail address, a phone number or an "
                "identifier (withheld)",
                "contact data and identifiers must never reach data/: privacy at the door",
            )
            for column in (schema.GENDER, schema.OCCUPATION)
        ),
    )
}


def value_rule(table: str, column: str) -> ValueRule:
    return VALUE_RULES[(table, column)]


def value_rules(table: str) -> list[ValueRule]:
    return [r for r in VALUE_RULES.values() if r.table == table]


# ---- expectations on the tables ------------------------------------------------------


def item_rules(now: datetime) -> list[Rule]:
    """The items table: one row per item, with a usable id, title and plausible year."""
    t = ITEMS
    last_year = now.year + 1
    title_reason = "titles are shown to people and embedded by the text encoder"
    return [
        _rule(
            t,
            "ExpectTableRowCountToBeBetween",
            "has no rows",
            "an empty catalogue means the export broke upstream",
            scope="table",
            min_value=1,
        ),
        _rule(
            t,
            "ExpectTableColumnsToMatchSet",
            f"does not have exactly the columns {', '.join(schema.ITEM_COLUMNS)}",
            "later stages read these columns by name",
            scope="table",
            column_set=list(schema.ITEM_COLUMNS),
            exact_match=True,
        ),
        _rule(
            t,
            "ExpectColumnValuesToNotBeNull",
            "have no item id",
            "an item without an id cannot be recommended",
            column=schema.ITEM_ID,
        ),
        _rule(
            t,
            "ExpectColumnValuesToBeOfType",
            "have an item id that is not text",
            "ids are opaque strings everywhere downstream",
            column=schema.ITEM_ID,
            type_="str",
        ),
        _rule(
            t,
            "ExpectColumnValuesToMatchRegex",
            "have an item id that is not 1–64 of A-Z a-z 0-9 _ . : -",
            "ids travel in URLs, logs and file names",
            column=schema.ITEM_ID,
            regex=ID_PATTERN,
        ),
        _rule(
            t,
            "ExpectColumnValuesToBeUnique",
            "repeat an item id listed earlier",
            "one id must mean one item",
            column=schema.ITEM_ID,
            keep_first=(schema.ITEM_ID,),
        ),
        _rule(
            t, "ExpectColumnValuesToNotBeNull", "have no title", title_reason, column=schema.TITLE
        ),
        _rule(
            t,
            "ExpectColumnValuesToBeOfType",
            "have a title that is not text",
            title_reason,
            column=schema.TITLE,
            type_="str",
        ),
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
    """The users table after privacy: pseudonyms, bands, regions and short labels only."""
    t = USERS
    labels = [*band_labels(bands), UNKNOWN]
    region_pattern = rf"^(?:[A-Z0-9]{{1,{region_digits}}}|{UNKNOWN})$"
    rules = [
        _rule(
            t,
            "ExpectTableRowCountToBeBetween",
            "has no rows",
            "an empty user table means the export broke upstream",
            scope="table",
            min_value=1,
        ),
        _rule(
            t,
            "ExpectTableColumnsToMatchSet",
            f"does not have exactly the columns {', '.join(schema.USER_COLUMNS)}",
            "raw age and zip must never reach data/, and later stages read these names",
            scope="table",
            column_set=list(schema.USER_COLUMNS),
            exact_match=True,
        ),
        _rule(
            t,
            "ExpectColumnValuesToNotBeNull",
            "have no user id",
            "a user without an id cannot own events",
            column=schema.USER_ID,
        ),
        _rule(
            t,
            "ExpectColumnValuesToMatchRegex",
            "have a user id that is not a pseudonym",
            "raw user ids must never reach data/: privacy at the door",
            column=schema.USER_ID,
            regex=PSEUDONYM_PATTERN,
        ),
        _rule(
            t,
            "ExpectColumnValuesToBeUnique",
            "repeat a user id listed earlier",
            "one id must mean one person",
            column=schema.USER_ID,
            keep_first=(schema.USER_ID,),
        ),
        _rule(
            t,
            "ExpectColumnValuesToBeInSet",
            f"have an age band outside {', '.join(labels)}",
            "ages are kept only as bands: privacy at the door",
            column=schema.AGE_BAND,
            value_set=labels,
        ),
        _rule(
            t,
            "ExpectColumnValuesToMatchRegex",
            f"have a region that is not a zip prefix of at most {region_digits} characters",
            "a full zip code can single out a person: privacy at the door",
            column=schema.REGION,
            regex=region_pattern,
        ),
    ]
    rules += [
        _rule(
            t,
            "ExpectColumnValuesToNotBeNull",
            f"have no {column}",
            f'profiles feed cold-start models; a blank must say "{UNKNOWN}"',
            column=column,
        )
        for column in schema.PROFILE_COLUMNS
    ]
    rules += [
        _rule(
            t,
            "ExpectColumnValuesToBeOfType",
            f"have a {column} that is not text",
            "profile fields are categorical labels",
            column=column,
            type_="str",
        )
        for column in schema.USER_COLUMNS
    ]
    rules += [
        _rule(
            t,
            "ExpectColumnValuesToMatchRegex",
            f"have a {column} that is not a short label (1–{SHORT_LABEL_MAX} characters: "
            "a letter, then letters, digits, spaces or _ . & ' / + -, at most 4 digits in a row)",
            "profile fields are categories shared by many people; free text can carry "
            "identity into data/",
            column=column,
            regex=SHORT_LABEL_PATTERN,
        )
        for column in (schema.GENDER, schema.OCCUPATION)
    ]
    return rules


def interaction_rules(
    rating_range: tuple[float, float],
    now: datetime,
    item_ids: Sequence[str],
    user_ids: Sequence[str],
    *,
    ratings_required: bool = False,
) -> list[Rule]:
    """The event log: attributable, ordered, in range, unique, and pointing at known rows.

    `ratings_required` (explicit feedback) rejects an event without a rating.
    """
    t = INTERACTIONS
    low, high = rating_range
    scale = _range_text(low, high)
    ids_are_text = "ids are opaque strings everywhere downstream"
    rules = [
        _rule(
            t,
            "ExpectTableRowCountToBeBetween",
            "has no rows",
            "an empty batch means the export broke upstream",
            scope="table",
            min_value=1,
        ),
        _rule(
            t,
            "ExpectTableColumnsToMatchSet",
            f"does not have exactly the columns {', '.join(schema.INTERACTION_COLUMNS)}",
            "later stages read these columns by name",
            scope="table",
            column_set=list(schema.INTERACTION_COLUMNS),
            exact_match=True,
        ),
        _rule(
            t,
            "ExpectColumnValuesToNotBeNull",
            "have no user id",
            "an event without a user cannot be attributed",
            column=schema.USER_ID,
        ),
        _rule(
            t,
            "ExpectColumnValuesToNotBeNull",
            "have no item id",
            "an event without an item says nothing",
            column=schema.ITEM_ID,
        ),
        _rule(
            t,
            "ExpectColumnValuesToNotBeNull",
            "have no timestamp",
            "sequence models and the leave-one-out split need event order",
            column=schema.TIMESTAMP,
        ),
    ]
    if ratings_required:
        rules.append(
            _rule(
                t,
                "ExpectColumnValuesToNotBeNull",
                "have no rating in a file of explicit ratings",
                "a blank would be read as a missing opinion; declare ingest.feedback: "
                "implicit if blanks are meant",
                column=schema.RATING,
            )
        )
    rules += [
        _rule(
            t,
            "ExpectColumnValuesToBeOfType",
            "have a user id that is not text",
            ids_are_text,
            column=schema.USER_ID,
            type_="str",
        ),
        _rule(
            t,
            "ExpectColumnValuesToBeOfType",
            "have an item id that is not text",
            ids_are_text,
            column=schema.ITEM_ID,
            type_="str",
        ),
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
        _rule(
            t,
            "ExpectColumnValuesToMatchRegex",
            "have a user id that is not a pseudonym",
            "raw user ids must never reach data/: privacy at the door",
            column=schema.USER_ID,
            regex=PSEUDONYM_PATTERN,
        ),
        _rule(
            t,
            "ExpectColumnValuesToMatchRegex",
            "have an item id that is not 1–64 of A-Z a-z 0-9 _ . : -",
            "ids travel in URLs, logs and file names",
            column=schema.ITEM_ID,
            regex=ID_PATTERN,
        ),
        _rule(
            t,
            "ExpectColumnValuesToBeBetween",
            f"have a rating outside {scale}",
            f"ratings are stars on a {scale} scale",
            column=schema.RATING,
            min_value=low,
            max_value=high,
        ),
        _rule(
            t,
            "ExpectColumnValuesToBeBetween",
            "have a timestamp before 1990-01-01",
            "recommender logs do not predate the web; earlier values are unit or parsing errors",
            column=schema.TIMESTAMP,
            min_value=EARLIEST_TIMESTAMP,
        ),
        _rule(
            t,
            "ExpectColumnValuesToBeBetween",
            "have a timestamp in the future",
            "an event cannot happen after it was ingested; huge values are often milliseconds",
            column=schema.TIMESTAMP,
            max_value=int(now.timestamp()),
        ),
        _rule(
            t,
            "ExpectCompoundColumnsToBeUnique",
            "repeat an earlier event with the same user, item and timestamp",
            "a double-logged event would count twice in training and evaluation",
            column_list=[schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP],
            keep_first=(schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP),
        ),
        _rule(
            t,
            "ExpectColumnValuesToBeInSet",
            "refer to an item that is missing from the items table or was rejected there",
            "an event must point at a known item to be shown, embedded or evaluated",
            column=schema.ITEM_ID,
            value_set=list(item_ids),
        ),
        _rule(
            t,
            "ExpectColumnValuesToBeInSet",
            "refer to a user that is missing from the users table or was rejected there",
            "an event must belong to a known user to join profiles",
            column=schema.USER_ID,
            value_set=list(user_ids),
        ),
    ]
    return rules
