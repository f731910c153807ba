"""Your own data at the door (issue 20): missing-value tokens, integer zip codes, and a
quarantine's accepted rows ingested again. Tiny files with known answers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from pipelines.core import schema
from pipelines.core.config import MISSING_VALUES, IngestParams, TableSource
from pipelines.data.ingest import ingest, summary
from pipelines.data.privacy import pseudonymise, pseudonymise_id
from pipelines.data.sources import read_table_source

KEY = bytes.fromhex("5e" * 32)
TOKENS = ["NULL", "null", "None", "N/A", "NA", "NaN", "-", ""]


def digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def shop_events(tokens: list[str]) -> str:
    """customer_id,sku,purchased_at: a good row per customer, then one row per token."""
    rows = [f"C{u},SKU-{u},2024-01-0{u}T10:00:00Z" for u in range(1, 4)]
    rows += [f"{t},SKU-1,2024-01-05T10:0{i}:00Z" for i, t in enumerate(tokens)]
    return "customer_id,sku,purchased_at\n" + "\n".join(rows) + "\n"


def shop_params(events: Path, **ingest: object) -> IngestParams:
    columns = {"user_id": "customer_id", "item_id": "sku", "timestamp": "purchased_at"}
    table = TableSource(interactions=events, columns=columns)
    return IngestParams(source="table", table=table, **ingest)


# ---- missing-value tokens ----------------------------------------------------------------


def test_the_usual_missing_value_spellings_are_the_default_setting() -> None:
    assert set(TOKENS) <= set(IngestParams().missing_values) == set(MISSING_VALUES)


def test_a_missing_value_token_in_an_id_column_is_no_id(tmp_path) -> None:
    events = tmp_path / "orders.csv"
    events.write_text(shop_events(TOKENS))
    raw = read_table_source(shop_params(events).table)
    users = raw.interactions[schema.USER_ID].tolist()
    assert users[:3] == ["C1", "C2", "C3"]
    assert users[3:] == [None] * len(TOKENS), "a token is no user, not a user called NULL"
    assert raw.users[schema.USER_ID].tolist() == ["C1", "C2", "C3"]
    assert any("interactions.user_id: 7 cells hold a missing-value token" in n for n in raw.notes)


def test_the_token_list_is_one_setting(tmp_path) -> None:
    events = tmp_path / "orders.csv"
    events.write_text(shop_events(["NULL", "-"]))
    raw = read_table_source(shop_params(events).table, missing_values=("-",))
    assert raw.interactions[schema.USER_ID].tolist()[3:] == ["NULL", None]


def test_tokens_match_exactly_and_elsewhere_mean_empty(tmp_path) -> None:
    # MovieLens's occupation "none" is an answer; "None" is the token. A title that is a token
    # falls back to the id, a profile field that is one is unknown
    (tmp_path / "e.csv").write_text("user_id,item_id,timestamp\n1,A,1600000000\n2,B,1600000001\n")
    (tmp_path / "i.csv").write_text("item_id,title\nA,NULL\nB,Beta\n")
    (tmp_path / "u.csv").write_text("user_id,gender,occupation\n1,N/A,none\n2,F,None\n")
    raw = read_table_source(
        TableSource(interactions=Path("e.csv"), items=Path("i.csv"), users=Path("u.csv")),
        base_dir=tmp_path,
    )
    assert raw.items[schema.TITLE].tolist() == ["A", "Beta"]
    assert raw.users[schema.GENDER].tolist() == ["unknown", "F"]
    assert raw.users[schema.OCCUPATION].tolist() == ["none", "unknown"]


def test_parquet_tokens_are_caught_too_but_never_numbers(tmp_path) -> None:
    pd.DataFrame(
        {"user_id": ["1", "NULL", "None"], "item_id": [7, 8, 9], "timestamp": [1.6e9] * 3}
    ).to_parquet(tmp_path / "e.parquet")
    raw = read_table_source(TableSource(interactions=tmp_path / "e.parquet"))
    assert raw.interactions[schema.USER_ID].tolist() == ["1", None, None]
    assert raw.interactions[schema.ITEM_ID].tolist() == ["7", "8", "9"]


def test_a_batch_with_token_ids_is_refused_whole_quoting_nothing(tmp_path, capsys) -> None:
    data, quarantine = tmp_path / "data", tmp_path / "quarantine"
    good = tmp_path / "good.csv"
    good.write_text(shop_events([]))
    assert ingest(shop_params(good), "good", data_dir=data, key=KEY).accepted
    before = digests(data)
    bad = tmp_path / "bad.csv"
    bad.write_text(shop_events(["NULL", "N/A", "None"]))
    result = ingest(shop_params(bad), "bad", data_dir=data, quarantine_dir=quarantine, key=KEY)
    assert not result.accepted
    assert digests(data) == before, "data/ byte-identical after the refused batch"
    assert result.counts["interactions"] == {"input": 6, "accepted": 3, "rejected": 3}
    text = summary(result)
    assert "3 interactions have no user id" in text
    assert "missing-value token (ingest.missing_values): rows are rejected" in text
    assert not {"NULL", "N/A", "None"} & set(text.replace("(", " ").split()), "quotes no data"
    users = pd.read_parquet(quarantine / "bad" / "users.accepted.parquet")
    assert len(users) == 3, "no user was made of a token"


# ---- zip codes read as numbers ---------------------------------------------------------------


def _users(tmp_path: Path, zips: pd.Series, suffix: str = ".parquet") -> Path:
    (tmp_path / "e.csv").write_text(
        "user_id,item_id,timestamp\n"
        + "\n".join(f"{u},A,{1600000000 + u}" for u in range(1, len(zips) + 1))
        + "\n"
    )
    frame = pd.DataFrame({"user_id": range(1, len(zips) + 1), "zip": zips})
    path = tmp_path / f"u{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("zips", "expected"),
    [
        (pd.Series([2139, 85711, 501]), ["02139", "85711", "00501"]),  # Parquet ints
        (pd.Series([2139.0, None]), ["02139", None]),  # a Parquet int column with nulls
    ],
)
def test_integer_zip_codes_are_read_zero_padded(tmp_path, zips, expected) -> None:
    users = _users(tmp_path, zips)
    raw = read_table_source(TableSource(interactions=tmp_path / "e.csv", users=users))
    assert raw.users["zip"].tolist() == expected
    padded = sum(1 for z in expected if z and z.startswith("0"))
    assert any(f"users.zip: {padded} codes read as numbers" in n for n in raw.notes)


def test_a_csv_of_digits_is_read_as_numbers_but_a_mixed_column_is_text(tmp_path) -> None:
    (tmp_path / "digits").mkdir()
    digits = _users(tmp_path / "digits", pd.Series(["2139", "94043"]), ".csv")
    raw = read_table_source(TableSource(interactions=tmp_path / "digits" / "e.csv", users=digits))
    assert raw.users["zip"].tolist() == ["02139", "94043"]
    (tmp_path / "mixed").mkdir()
    mixed = _users(tmp_path / "mixed", pd.Series(["2139", "T8H1N"]), ".csv")
    raw = read_table_source(TableSource(interactions=tmp_path / "mixed" / "e.csv", users=mixed))
    assert raw.users["zip"].tolist() == ["2139", "T8H1N"], "letters: written as it is"
    assert not any("zip" in n for n in raw.notes)


def test_zip_width_is_a_setting(tmp_path) -> None:
    users = _users(tmp_path, pd.Series([2139, 800]))
    source = TableSource(interactions=tmp_path / "e.csv", users=users)
    assert read_table_source(source, zip_width=4).users["zip"].tolist() == ["2139", "0800"]
    assert read_table_source(source, zip_width=0).users["zip"].tolist() == ["2139", "800"]


def test_an_integer_zip_becomes_its_real_region_and_the_summary_says_so(tmp_path) -> None:
    users = _users(tmp_path, pd.Series([2139, 85711]))
    params = IngestParams(
        source="table", table=TableSource(interactions=tmp_path / "e.csv", users=users)
    )
    result = ingest(params, "zips", data_dir=tmp_path / "data", key=KEY)
    assert result.accepted
    regions = pd.read_parquet(tmp_path / "data" / "users.parquet")[schema.REGION]
    assert sorted(regions) == ["021", "857"], "US zip 02139 is region 021, not 213"
    assert "1 codes read as numbers had fewer than 5 digits" in summary(result)


# ---- a quarantine's accepted rows, ingested again ----------------------------------------------


def test_a_pseudonym_is_never_hashed_again() -> None:
    once = pseudonymise_id("C1", KEY)
    assert pseudonymise(pd.Series(["C1", once, None]), KEY).tolist() == [once, once, None]


def test_reingesting_a_quarantines_accepted_rows_keeps_every_pseudonym(tmp_path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(shop_events(["NULL"]))
    quarantine = tmp_path / "quarantine"
    data = tmp_path / "data"
    first = ingest(shop_params(bad), "first", data_dir=data, quarantine_dir=quarantine, key=KEY)
    assert not first.accepted
    accepted = quarantine / "first" / "interactions.accepted.parquet"
    pseudonyms = set(pd.read_parquet(accepted)[schema.USER_ID])
    # its rating column is empty (the shop has no ratings): implicit feedback, as declared
    table = TableSource(interactions=accepted)
    again = IngestParams(source="table", table=table, feedback="implicit")
    second = ingest(again, "again", data_dir=data, quarantine_dir=quarantine, key=KEY)
    assert second.accepted
    written = pd.read_parquet(tmp_path / "data" / "interactions.parquet")[schema.USER_ID]
    assert set(written) == pseudonyms == {pseudonymise_id(f"C{u}", KEY) for u in (1, 2, 3)}
    assert any("already pseudonyms" in note for note in second.notes)


# ---- appending a batch by hand ----------------------------------------------------------------


def test_append_adds_a_batch_all_or_nothing_and_only_once(
    tmp_path, key_env, run_ingest, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the batch folder named relative to where you are
    (tmp_path / "orders.csv").write_text(shop_events([]))
    columns = {"user_id": "customer_id", "item_id": "sku", "timestamp": "purchased_at"}
    params = {"source": "table", "table": {"interactions": "orders.csv", "columns": columns}}
    assert run_ingest(params)[0] == 0
    week = tmp_path / "week-2"
    week.mkdir()
    (week / "interactions.csv").write_text(
        "user_id,item_id,timestamp\nC1,SKU-2,2024-02-01T10:00:00Z\nC2,SKU-1,2024-02-01T11:00:00Z\n"
    )
    code, out, _ = run_ingest(None, "--append", "week-2")
    assert code == 0 and "week-2: accepted" in out and "added 2 interactions" in out
    events = pd.read_parquet(tmp_path / "data" / "interactions.parquet")
    assert len(events) == 5
    code, out, _ = run_ingest(None, "--append", str(week))
    assert code == 0 and "duplicate" in out and "already appended" in out
    before = digests(tmp_path / "data")
    bad = tmp_path / "week-3"
    bad.mkdir()
    (bad / "interactions.csv").write_text(
        "user_id,item_id,timestamp\nC1,SKU-3,2024-03-01T10:00:00Z\nNULL,SKU-1,2024-03-01T11:00:00Z\n"
    )
    code, out, _ = run_ingest(None, "--append", str(bad))
    assert code == 1 and "quarantined" in out and "1 interaction has no user id" in out
    assert digests(tmp_path / "data") == before, "data/ byte-identical after a refused batch"
    assert (tmp_path / "quarantine" / "week-3" / "report.md").is_file()
