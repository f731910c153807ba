"""The data contract: each kind of bad row is caught, counted and explained in plain words."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.core import schema
from pipelines.data import contract
from pipelines.data.contract import (
    EARLIEST_TIMESTAMP,
    VALUE_RULES,
    interaction_rules,
    item_rules,
    user_rules,
)
from pipelines.data.privacy import pseudonymise_id
from pipelines.data.validate import Finding, ValidationReport, expectation_for, validate_tables

KEY = b"k" * 32
NOW = datetime(2026, 1, 1, tzinfo=UTC)
BANDS = (18, 25, 35, 45, 50, 56)


def uid(raw: str) -> str:
    return pseudonymise_id(raw, KEY)


def clean_tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Post-privacy tables shaped like MovieLens: 3 users, 4 items, 8 events."""
    users = pd.DataFrame(
        {
            schema.USER_ID: [uid("1"), uid("2"), uid("3")],
            schema.AGE_BAND: ["18-24", "56+", "unknown"],
            schema.GENDER: ["M", "F", "M"],
            schema.OCCUPATION: ["writer", "other", "unknown"],
            schema.REGION: ["857", "T8H", "unknown"],
        }
    )
    items = pd.DataFrame(
        {
            schema.ITEM_ID: ["1", "2", "3", "4"],
            schema.TITLE: ["Toy Story", "GoldenEye", "Four Rooms", "Heat"],
            schema.YEAR: pd.array([1995, 1995, None, 1995], dtype="Int64"),
            schema.GENRES: [["Animation", "Children's"], ["Action"], [], ["Film-Noir", "Sci-Fi"]],
        }
    )
    events = [
        ("1", "1", 5.0, 881250949),
        ("1", "2", 3.0, 881250950),
        ("1", "3", np.nan, 881250951),
        ("2", "1", 4.0, 891717742),
        ("2", "4", 1.0, 891717742),
        ("3", "2", 2.0, 878887116),
        ("3", "3", 3.0, 878887117),
        ("3", "4", 5.0, 878887118),
    ]
    interactions = pd.DataFrame(events, columns=list(schema.INTERACTION_COLUMNS))
    interactions[schema.USER_ID] = interactions[schema.USER_ID].map(uid)
    interactions[schema.TIMESTAMP] = interactions[schema.TIMESTAMP].astype("Int64")
    return interactions, items, users


def check(interactions, items, users):
    return validate_tables(
        interactions, items, users, rating_range=(1.0, 5.0), bands=BANDS, region_digits=3, now=NOW
    )


def failure(report, table: str, column: str | None, fragment: str):
    hits = [
        f
        for f in report.findings
        if f.table == table and f.column == column and fragment in f.message
    ]
    assert len(hits) == 1, report.messages()
    return hits[0]


def test_clean_tables_pass() -> None:
    report = check(*clean_tables())
    assert report.success, report.messages()
    assert report.counts()["interactions"] == {"input": 8, "accepted": 8, "rejected": 0}
    assert (report.row_reasons("items") == "").all()
    assert len(report.checks) > 30


def all_rules():
    return (
        item_rules(NOW)
        + user_rules(BANDS, 3)
        + interaction_rules((1.0, 5.0), NOW, ["1"], [uid("1")], ratings_required=True)
    )


def test_every_expectation_carries_its_reason() -> None:
    rules = all_rules()
    for rule in rules:
        expectation = expectation_for(rule)
        assert expectation.meta["reason"] == rule.reason != ""
        assert expectation.notes == rule.reason
        assert expectation.meta["check"] == rule.check
        assert (expectation.meta["table"], expectation.meta["problem"]) == (
            rule.table,
            rule.problem,
        )
    checks = [r.check for r in rules] + [r.check for r in VALUE_RULES.values()]
    assert len(set(checks)) == len(checks), "checks must be told apart in results"


def test_the_contract_declares_each_reason_once_and_imports_no_gx() -> None:
    source = Path(contract.__file__).read_text()
    assert "great_expectations" not in source.split('"""', 2)[2]
    for rule in [*all_rules(), *VALUE_RULES.values()]:
        assert rule.reason and rule.problem
        # a reason is written once: not repeated as a comment next to its rule
        assert f"# {rule.reason}" not in source
    validate_source = Path(validate_tables.__code__.co_filename).read_text()
    assert "ExpectColumnValuesTo" not in validate_source, "rules live in the contract"


def test_cells_the_source_could_not_read_reject_their_rows() -> None:
    interactions, items, users = clean_tables()
    interactions.loc[1, schema.TIMESTAMP] = pd.NA
    report = validate_tables(
        interactions,
        items,
        users,
        now=NOW,
        problems={"interactions": {"timestamp": [1]}, "users": {"occupation": [2]}},
    )
    found = failure(report, "interactions", schema.TIMESTAMP, "neither Unix seconds")
    assert found.rows == (1,)
    assert failure(report, "users", schema.OCCUPATION, "looks like an e-mail").rows == (2,)
    # events of the rejected user go too, so the accepted rows stay consistent
    assert report.rejected_rows("interactions").tolist() == [1, 5, 6, 7]
    assert any(c["expectation"] == "ValuesAreFiniteNumbers" for c in report.checks)


def test_explicit_feedback_rejects_blank_ratings() -> None:
    interactions, items, users = clean_tables()
    report = validate_tables(interactions, items, users, now=NOW, ratings_required=True)
    found = failure(report, "interactions", schema.RATING, "no rating")
    assert found.rows == (2,)
    assert "ingest.feedback: implicit" in found.reason


def test_profile_fields_must_be_short_labels() -> None:
    interactions, items, users = clean_tables()
    users.loc[0, schema.OCCUPATION] = "a much longer description of what this person does all day"
    users.loc[1, schema.GENDER] = "12345678"
    report = check(interactions, items, users)
    assert failure(report, "users", schema.OCCUPATION, "short label").rows == (0,)
    assert failure(report, "users", schema.GENDER, "short label").rows == (1,)


def test_bad_ratings_are_counted_and_explained() -> None:
    interactions, items, users = clean_tables()
    interactions.loc[[0, 4], schema.RATING] = [0.0, 6.5]
    report = check(interactions, items, users)
    found = failure(report, "interactions", schema.RATING, "rating outside")
    assert found.rows == (0, 4)
    assert found.message == (
        "2 interactions have a rating outside 1–5 (ratings are stars on a 1–5 scale)"
    )
    assert report.counts()["interactions"] == {"input": 8, "accepted": 6, "rejected": 2}
    assert "rating outside 1–5" in report.row_reasons("interactions")[4]
    assert report.row_reasons("interactions")[2] == "", "a missing rating is implicit feedback"


def test_null_ids_are_rejected() -> None:
    interactions, items, users = clean_tables()
    interactions.loc[1, schema.USER_ID] = None
    interactions.loc[[2, 3], schema.ITEM_ID] = None
    interactions.loc[5, schema.TIMESTAMP] = pd.NA
    report = check(interactions, items, users)
    found = failure(report, "interactions", schema.USER_ID, "has no user id")
    assert found.rows == (1,)
    assert found.message == (
        "1 interaction has no user id (an event without a user cannot be attributed)"
    )
    assert failure(report, "interactions", schema.ITEM_ID, "have no item id").rows == (2, 3)
    assert failure(report, "interactions", schema.TIMESTAMP, "has no timestamp").rows == (5,)
    assert report.rejected_rows("interactions").tolist() == [1, 2, 3, 5]


def test_duplicate_events_keep_the_first_copy() -> None:
    interactions, items, users = clean_tables()
    copies = interactions.iloc[[3, 3]]
    interactions = pd.concat([interactions, copies], ignore_index=True)
    report = check(interactions, items, users)
    found = failure(report, "interactions", None, "repeat an earlier event")
    assert found.rows == (8, 9)
    assert found.message.startswith("2 interactions repeat an earlier event")
    assert report.counts()["interactions"]["accepted"] == 8


def test_unknown_item_and_unknown_user() -> None:
    interactions, items, users = clean_tables()
    interactions.loc[0, schema.ITEM_ID] = "999"
    interactions.loc[[6, 7], schema.USER_ID] = uid("42")
    report = check(interactions, items, users)
    assert failure(report, "interactions", schema.ITEM_ID, "refers to an item").rows == (0,)
    assert failure(report, "interactions", schema.USER_ID, "refer to a user").rows == (6, 7)


def test_rejected_item_cascades_to_its_interactions() -> None:
    interactions, items, users = clean_tables()
    items.loc[3, schema.YEAR] = 3000
    report = check(interactions, items, users)
    assert failure(report, "items", schema.YEAR, "has a year").rows == (3,)
    assert failure(report, "interactions", schema.ITEM_ID, "refer to an item").rows == (4, 7)


def test_timestamps_before_1990_and_in_the_future() -> None:
    interactions, items, users = clean_tables()
    interactions.loc[0, schema.TIMESTAMP] = EARLIEST_TIMESTAMP - 1
    interactions.loc[[1, 2], schema.TIMESTAMP] = int(NOW.timestamp()) + 86_400
    report = check(interactions, items, users)
    assert failure(report, "interactions", schema.TIMESTAMP, "before 1990").rows == (0,)
    assert failure(report, "interactions", schema.TIMESTAMP, "in the future").rows == (1, 2)


def test_empty_batch_fails_as_a_whole() -> None:
    interactions, items, users = clean_tables()
    report = check(interactions.iloc[:0], items, users)
    found = failure(report, "interactions", None, "has no rows")
    assert found.message.startswith("the interactions table has no rows")
    assert not report.success
    assert report.counts()["interactions"] == {"input": 0, "accepted": 0, "rejected": 0}


def test_raw_user_ids_are_not_pseudonyms() -> None:
    interactions, items, users = clean_tables()
    users.loc[0, schema.USER_ID] = "1"
    interactions.loc[0, schema.USER_ID] = "1"
    report = check(interactions, items, users)
    assert failure(report, "users", schema.USER_ID, "not a pseudonym").rows == (0,)
    assert failure(report, "interactions", schema.USER_ID, "not a pseudonym").rows == (0,)


def test_raw_profile_columns_reject_the_whole_users_table() -> None:
    interactions, items, users = clean_tables()
    users["zip"] = ["85711", "T8H1N", "02139"]
    report = check(interactions, items, users)
    found = failure(report, "users", None, "exactly the columns")
    assert found.rows == (0, 1, 2)
    assert report.counts()["interactions"]["accepted"] == 0, "events of rejected users go too"


def test_full_zip_and_bad_band_in_profiles() -> None:
    interactions, items, users = clean_tables()
    users.loc[0, schema.REGION] = "85711"
    users.loc[1, schema.AGE_BAND] = "61"
    report = check(interactions, items, users)
    assert failure(report, "users", schema.REGION, "region").rows == (0,)
    assert failure(report, "users", schema.AGE_BAND, "age band").rows == (1,)


def test_duplicate_item_ids_and_bad_item_ids() -> None:
    interactions, items, users = clean_tables()
    items = pd.concat([items, items.iloc[[0]]], ignore_index=True)
    items.loc[2, schema.ITEM_ID] = "three rooms"
    report = check(interactions, items, users)
    assert failure(report, "items", schema.ITEM_ID, "repeats an item id").rows == (4,)
    assert failure(report, "items", schema.ITEM_ID, "1–64").rows == (2,)


def test_validating_100k_rows_takes_seconds() -> None:
    _, items, users = clean_tables()
    n = 100_000
    rng = np.random.default_rng(0)
    big = pd.DataFrame(
        {
            schema.USER_ID: rng.choice(users[schema.USER_ID].to_numpy(), n),
            schema.ITEM_ID: rng.choice(items[schema.ITEM_ID].to_numpy(), n),
            schema.RATING: rng.integers(1, 6, n).astype("float64"),
            schema.TIMESTAMP: 880_000_000 + np.arange(n, dtype="int64"),
        }
    )
    report = check(big, items, users)
    assert report.success, report.messages()
    assert report.seconds < 30


def test_year_and_item_id_limits_are_exact() -> None:
    # years from 1800 to next year pass, one beyond either end does not; an item id of
    # 64 characters passes, 65 (or none at all) does not
    interactions, items, users = clean_tables()
    extra = pd.DataFrame(
        {
            schema.ITEM_ID: ["a" * 64, "b" * 65, "", "old", "older", "soon", "later"],
            schema.TITLE: ["Edge"] * 7,
            schema.YEAR: pd.array(
                [1995, 1995, 1995, 1800, 1799, NOW.year + 1, NOW.year + 2], dtype="Int64"
            ),
            schema.GENRES: [[]] * 7,
        }
    )
    report = check(interactions, pd.concat([items, extra], ignore_index=True), users)
    assert failure(report, "items", schema.ITEM_ID, "1–64").rows == (5, 6)
    found = failure(report, "items", schema.YEAR, "year before 1800 or after 2027")
    assert found.rows == (8, 10)
    assert report.rejected_rows("items").tolist() == [5, 6, 8, 10]


def test_one_unreadable_cell_is_reported_in_the_singular() -> None:
    interactions, items, users = clean_tables()
    interactions.loc[1, schema.TIMESTAMP] = pd.NA
    report = check_with(interactions, items, users, {"interactions": {"timestamp": [1]}})
    (found,) = [f for f in report.findings if f.expectation == "ValuesAreFiniteNumbers"]
    assert found.message == (
        "1 interaction has a timestamp that is neither Unix seconds nor an ISO date-time in "
        "range (sequence models and the leave-one-out split need a real point in time)"
    )
    assert found.row_reason == (
        "has a timestamp that is neither Unix seconds nor an ISO date-time in range "
        "(sequence models and the leave-one-out split need a real point in time)"
    )


def check_with(interactions, items, users, problems):
    return validate_tables(interactions, items, users, now=NOW, problems=problems)


def test_the_report_as_json() -> None:
    interactions, items, users = clean_tables()
    interactions.loc[[0, 4], schema.RATING] = [0.0, 6.5]
    report = check(interactions, items, users)
    as_json = dataclasses.replace(report, seconds=1.23456).to_dict()
    assert as_json["success"] is False and as_json["seconds"] == 1.235
    assert as_json["counts"]["interactions"] == {"input": 8, "accepted": 6, "rejected": 2}
    assert as_json["failures"] == [
        {
            "table": "interactions",
            "expectation": "ExpectColumnValuesToBeBetween",
            "column": "rating",
            "message": "2 interactions have a rating outside 1–5 (ratings are stars on a 1–5 "
            "scale)",
            "reason": "ratings are stars on a 1–5 scale",
            "rejected_rows": 2,
            "sample_rows": [0, 4],
        }
    ]
    assert as_json["checks"] == list(report.checks) and len(as_json["checks"]) > 30
    rating = [c for c in as_json["checks"] if c["column"] == "rating" and not c["success"]]
    assert rating == [
        {
            "table": "interactions",
            "expectation": "ExpectColumnValuesToBeBetween",
            "column": "rating",
            "success": False,
            "reason": "ratings are stars on a 1–5 scale",
        }
    ]


def test_a_finding_lists_at_most_twenty_sample_rows() -> None:
    finding = Finding("items", "Kind", "year", "message", "row", "reason", tuple(range(25)))
    assert finding.to_dict()["rejected_rows"] == 25
    assert finding.to_dict()["sample_rows"] == list(range(20))


def test_an_empty_report_rejects_nothing() -> None:
    report = ValidationReport(row_counts={"items": 2}, checks=(), findings=(), seconds=0.0)
    assert report.success and report.messages() == []
    assert (
        report.rejected_rows("items").dtype == np.int64 and report.rejected_rows("items").size == 0
    )
    assert report.row_reasons("items").tolist() == ["", ""]
    assert report.counts() == {"items": {"input": 2, "accepted": 2, "rejected": 0}}
    clean = check(*clean_tables())
    assert clean.rejected_rows("users").dtype == np.int64


def test_a_check_that_cannot_run_names_the_error_kind_not_the_cells() -> None:
    interactions, items, users = clean_tables()
    items[schema.YEAR] = ["1995", "secret-7731", None, "1995"]  # text: the range check breaks
    report = check(interactions, items, users)
    found = failure(report, "items", schema.YEAR, "could not check")
    error = "great_expectations.exceptions.exceptions.MetricResolutionError"
    assert found.message == (
        f"could not check whether items have a year before 1800 or after 2027: "
        f"the check raised {error}"
    )
    assert found.row_reason == f"its table could not be checked (the check raised {error})"
    assert found.rows == (0, 1, 2, 3)
    assert "secret-7731" not in " ".join(report.messages())
    typed = failure(report, "items", schema.YEAR, "not integer")
    assert typed.message == (
        "the items table has a year column that is not integer "
        "(years feed features and item text as whole numbers)"
    )
    assert typed.row_reason == (
        "its table has a year column that is not integer "
        "(years feed features and item text as whole numbers)"
    )


def test_the_context_is_quiet_and_keeps_nothing() -> None:
    from pipelines.data.validate import _context

    context = _context()
    assert type(context).__name__ == "EphemeralDataContext"
    assert context.variables.analytics_enabled is False
    assert context.variables.progress_bars.globally is False


def test_singular_forms_of_the_problems() -> None:
    from pipelines.data.validate import _singular

    assert _singular("have no title") == "has no title"
    assert _singular("repeat an earlier event") == "repeats an earlier event"
    assert _singular("refer to a user") == "refers to a user"
    assert _singular("are late") == "is late"
    assert _singular("does not match") == "does not match"  # a verb it does not know: kept


def test_the_error_kind_is_read_from_the_last_traceback_line() -> None:
    from types import SimpleNamespace

    from pipelines.data.validate import _exception_message

    def result(info):
        return SimpleNamespace(exception_info=info)

    trace = "Traceback (most recent call last):\n  ...\nValueError: cell 'secret' is bad"
    flat = {"raised_exception": True, "exception_traceback": trace}
    assert _exception_message(result(flat)) == "the check raised ValueError"
    nested = {"metric": {"raised_exception": False}, "other": flat}  # GX: one per metric
    assert _exception_message(result(nested)) == "the check raised ValueError"
    for unreadable in ("", "  \n  ", "Traceback:\n  weird line (no kind)"):
        entry = {"raised_exception": True, "exception_traceback": unreadable}
        assert _exception_message(result(entry)) == "the check raised an error"
    assert _exception_message(result({"raised_exception": False})) is None
    assert _exception_message(result(None)) is None
    assert _exception_message(result({"m": {"raised_exception": False}})) is None


def test_a_row_with_several_problems_lists_every_reason() -> None:
    interactions, items, users = clean_tables()
    interactions.loc[0, schema.RATING] = 0.0
    interactions.loc[0, schema.TIMESTAMP] = EARLIEST_TIMESTAMP - 1
    report = check_with(interactions, items, users, {"interactions": {"timestamp": [3, 5]}})
    assert report.row_reasons("interactions")[0] == (
        "has a rating outside 1–5 (ratings are stars on a 1–5 scale); "
        "has a timestamp before 1990-01-01 (recommender logs do not predate the web; "
        "earlier values are unit or parsing errors)"
    )
    (cells,) = [f for f in report.findings if f.expectation == "ValuesAreFiniteNumbers"]
    assert cells.message.startswith("2 interactions have a timestamp that is neither")
    assert cells.reason == "sequence models and the leave-one-out split need a real point in time"
    assert cells.rows == (3, 5)
    assert report.row_reasons("interactions")[3] == f"has {cells.message.split(' have ', 1)[1]}"


def test_a_row_rule_without_row_numbers_rejects_every_row() -> None:
    # GX reports no row numbers for a column of the wrong type: every row goes
    interactions, items, users = clean_tables()
    items[schema.TITLE] = [5, 6, 7, 8]
    found = failure(check(interactions, items, users), "items", schema.TITLE, "not text")
    reason = "(titles are shown to people and embedded by the text encoder)"
    assert found.message == f"all 4 items have a title that is not text {reason}"
    assert found.row_reason == f"has a title that is not text {reason}"
    assert found.rows == (0, 1, 2, 3)
    one = items.iloc[:1]
    alone = failure(check(interactions.iloc[:1], one, users), "items", schema.TITLE, "not text")
    assert alone.message.endswith(f" has a title that is not text {reason}")  # one row: singular


def test_a_cell_problem_without_a_rule_is_a_programming_error() -> None:
    interactions, items, users = clean_tables()
    with pytest.raises(ValueError, match=r"^no value rule for users\.zip in the contract$"):
        check_with(interactions, items, users, {"users": {"zip": [0]}})


def test_the_report_keeps_every_check_and_its_timing(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="pipelines.data.validate"):
        report = check(*clean_tables())
    kinds = [c["expectation"] for c in report.checks]
    # the cell checks of all three tables come first, then every expectation
    assert (
        kinds.count("ValuesAreFiniteNumbers") == 4 and kinds.count("ValuesAreNotContactData") == 2
    )
    assert {c["table"] for c in report.checks[:6]} == {"interactions", "items", "users"}
    assert 0 < report.seconds < 120
    (record,) = [r for r in caplog.records if r.name == "pipelines.data.validate"]
    assert re.fullmatch(
        r"validated \{'interactions': 8, 'items': 4, 'users': 3\} with "
        rf"{len(report.checks)} expectations in \d+\.\ds: 0 failed",
        record.getMessage(),
    )


def test_defaults_are_three_character_regions_and_today() -> None:
    interactions, items, users = clean_tables()
    users.loc[0, schema.REGION] = "8571"
    report = validate_tables(interactions, items, users)  # region_digits and now: defaults
    assert failure(report, "users", schema.REGION, "region").rows == (0,)


def test_an_items_table_without_ids_rejects_every_event() -> None:
    interactions, items, users = clean_tables()
    report = check(interactions, items.drop(columns=[schema.ITEM_ID]), users)
    assert report.counts()["items"]["accepted"] == 0
    assert report.counts()["interactions"]["accepted"] == 0
    assert failure(report, "interactions", schema.ITEM_ID, "refer to an item").rows == tuple(
        range(8)
    )


def test_great_expectations_is_told_to_keep_quiet(monkeypatch) -> None:
    from pipelines.data.validate import _gx

    monkeypatch.delenv("GX_ANALYTICS_ENABLED", raising=False)
    gx_log, root = logging.getLogger("great_expectations"), logging.getLogger()
    monkeypatch.setattr(gx_log, "level", logging.NOTSET)
    monkeypatch.setattr(root, "level", logging.INFO)
    _gx()
    assert os.environ["GX_ANALYTICS_ENABLED"] == "false"  # no analytics calls
    assert gx_log.level == logging.WARNING  # its import chatter is not logged
    assert root.level == logging.INFO  # and nothing else is silenced


def test_next_year_is_counted_in_utc(monkeypatch) -> None:
    # 23:00 UTC on New Year's Eve is already next year east of UTC: the default "now"
    # must be UTC, so a release year two years ahead is still refused
    from pipelines.data import validate

    instant = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            if tz is None:  # a naive local clock fourteen hours ahead of UTC
                return (instant + timedelta(hours=14)).replace(tzinfo=None)
            return instant.astimezone(tz)

    monkeypatch.setattr(validate, "datetime", Frozen)
    interactions, items, users = clean_tables()
    items[schema.YEAR] = pd.array([1995, 2027, 2028, 1995], dtype="Int64")
    report = validate_tables(interactions, items, users)
    assert failure(report, "items", schema.YEAR, "after 2027").rows == (2,)
