"""Source adapters: MovieLens atomic files (synthetic, offline) and generic CSV/Parquet tables."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.core import schema
from pipelines.core.config import IngestParams, TableSource
from pipelines.data import sources
from pipelines.data.sources import (
    SourceError,
    parse_atomic_file,
    read_movielens,
    read_source,
    read_table_source,
    recbole_wheel,
)

INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"
)
ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "242\tKolya\t1996\tComedy\n"
    "302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery Thriller\n"
    "377\tHeavyweights\t\tChildren's Comedy Sci-Fi\n"
    "267\tunkonwn\tunkonwn\tunknown\n"
)
USER = (
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    "196\t49\tM\twriter\t55105\n186\t39\tF\texecutive\t00000\n22\t25\tM\twriter\tT8H1N\n"
)
FILES = {"inter": INTER, "item": ITEM, "user": USER}


def _fake_wheel(downloads: Path, version: str = "1.2.1") -> Path:
    downloads.mkdir(parents=True, exist_ok=True)
    wheel = downloads / f"recbole-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for kind, text in FILES.items():
            archive.writestr(sources.RECBOLE_MEMBER.format(kind=kind), text)
    return wheel


@pytest.fixture
def fake_checksums(monkeypatch) -> None:
    sums = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in FILES.items()}
    monkeypatch.setattr(sources, "MOVIELENS_SHA256", sums)


def test_atomic_item_file_keeps_multiword_genre_tokens_and_quotes() -> None:
    items = sources.canonical_items(parse_atomic_file(ITEM.encode(), "item"), " ")
    assert items[schema.GENRES].tolist() == [
        ["Comedy"],
        ["Crime", "Film-Noir", "Mystery", "Thriller"],
        ["Children's", "Comedy", "Sci-Fi"],
        ["unknown"],
    ]
    assert items[schema.YEAR].isna().tolist() == [False, False, True, True]
    assert items[schema.TITLE][1] == "L.A. Confidential"


def test_movielens_from_a_wheel_is_read_into_canonical_tables(tmp_path, fake_checksums) -> None:
    _fake_wheel(tmp_path)
    tables = read_movielens("1.2.1", tmp_path)
    assert tables.counts() == {"interactions": 3, "items": 4, "users": 3}
    events = tables.interactions
    assert tuple(events.columns) == schema.INTERACTION_COLUMNS
    assert events[schema.USER_ID].tolist() == ["196", "186", "22"]
    assert events[schema.TIMESTAMP].tolist() == [881250949, 891717742, 878887116]
    assert events[schema.RATING].dtype == "float64"
    assert tables.users["zip"].tolist() == ["55105", "00000", "T8H1N"], "zips stay text"
    assert tables.users["age"].tolist() == [49, 39, 25]


def test_checksum_mismatch_is_a_clear_error(tmp_path) -> None:
    _fake_wheel(tmp_path)
    with pytest.raises(SourceError, match="SHA-256"):
        read_movielens("1.2.1", tmp_path)


def test_wheel_already_downloaded_is_not_fetched_again(tmp_path, monkeypatch) -> None:
    wheel = _fake_wheel(tmp_path)

    def no_network(*args, **kwargs):
        raise AssertionError("pip must not run when the wheel is cached")

    monkeypatch.setattr(sources.subprocess, "run", no_network)
    assert recbole_wheel("1.2.1", tmp_path) == wheel


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch) -> None:
    class Done:
        returncode, stdout, stderr = 1, "", "ERROR: No matching distribution found"

    monkeypatch.setattr(sources.subprocess, "run", lambda *a, **k: Done())
    with pytest.raises(SourceError, match="No matching distribution"):
        recbole_wheel("0.0.0", tmp_path)


# ---- generic tables ------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_source_with_a_column_mapping(tmp_path) -> None:
    _write(
        tmp_path / "events.csv",
        "uid,sku,stars,when\n1,A-1,4,2020-01-02T00:00:00Z\n2,B.2,,1600000000\n",
    )
    _write(tmp_path / "products.csv", "sku,name,released,tags\nA-1,Alpha,2001,x|y\nB.2,Beta,,\n")
    _write(tmp_path / "people.csv", "uid,years,sex,job,postcode\n1,30,F,dev,02139\n2,,M,,\n")
    source = TableSource(
        interactions=Path("events.csv"),
        items=Path("products.csv"),
        users=Path("people.csv"),
        columns={
            "user_id": "uid",
            "item_id": "sku",
            "rating": "stars",
            "timestamp": "when",
            "title": "name",
            "year": "released",
            "genres": "tags",
            "age": "years",
            "gender": "sex",
            "occupation": "job",
            "zip": "postcode",
        },
    )
    tables = read_table_source(source, base_dir=tmp_path)
    events = tables.interactions
    assert events[schema.TIMESTAMP].tolist() == [1577923200, 1600000000]
    assert events[schema.RATING].isna().tolist() == [False, True]
    assert tables.items[schema.GENRES].tolist() == [["x", "y"], []]
    assert tables.items[schema.YEAR].isna().tolist() == [False, True]
    assert tables.users["zip"].tolist() == ["02139", None]
    assert tables.users[schema.OCCUPATION].tolist() == ["dev", "unknown"]
    assert tables.notes == ()


def test_missing_optional_columns_become_defaults_and_tables_are_derived(tmp_path) -> None:
    _write(tmp_path / "e.csv", "user_id,item_id,timestamp\n1,10,900000000\n2,10,900000001\n")
    tables = read_table_source(TableSource(interactions=tmp_path / "e.csv"))
    assert tables.interactions[schema.RATING].isna().all()
    assert tables.items[schema.ITEM_ID].tolist() == ["10"]
    assert tables.items[schema.TITLE].tolist() == ["10"]
    assert tables.items[schema.GENRES].tolist() == [[]]
    assert tables.users[schema.USER_ID].tolist() == ["1", "2"]
    assert set(tables.users[schema.GENDER]) == {"unknown"}
    assert tables.users["age"].isna().all()


def test_parquet_source_with_integer_ids(tmp_path) -> None:
    pd.DataFrame(
        {
            "user_id": [1, 2],
            "item_id": [7, 8],
            "timestamp": [900000000, 900000001],
            "rating": [1.5, 2.0],
        }
    ).to_parquet(tmp_path / "e.parquet")
    tables = read_table_source(TableSource(interactions=tmp_path / "e.parquet"))
    assert tables.interactions[schema.USER_ID].tolist() == ["1", "2"]
    assert tables.interactions[schema.ITEM_ID].tolist() == ["7", "8"]


def test_missing_required_column_names_it(tmp_path) -> None:
    _write(tmp_path / "e.csv", "user_id,item_id,rating\n1,10,4\n")
    with pytest.raises(SourceError, match="'timestamp'"):
        read_table_source(TableSource(interactions=tmp_path / "e.csv"))


def test_missing_required_item_column(tmp_path) -> None:
    _write(tmp_path / "e.csv", "user_id,item_id,timestamp\n1,10,900000000\n")
    _write(tmp_path / "i.csv", "title\nAlpha\n")
    with pytest.raises(SourceError, match="item_id"):
        read_table_source(TableSource(interactions=tmp_path / "e.csv", items=tmp_path / "i.csv"))


def test_unparseable_numbers_reject_their_rows_not_the_batch(tmp_path) -> None:
    """Row, not batch: a bad cell becomes missing and its row is recorded as a problem."""
    _write(
        tmp_path / "e.csv",
        "user_id,item_id,rating,timestamp\n1,10,great,900000000\n1,11,4,yesterday\n"
        "1,12,inf,1e20\n1,13,4,900000003\n",
    )
    tables = read_table_source(TableSource(interactions=tmp_path / "e.csv"))
    assert tables.problems["interactions"] == {"rating": [0, 2], "timestamp": [1, 2]}
    events = tables.interactions
    assert events[schema.RATING].isna().tolist() == [True, False, True, False]
    assert events[schema.TIMESTAMP].isna().tolist() == [False, True, True, False]
    assert tables.ratings_required, "a rating column makes the file explicit"


def test_parquet_native_types_read_like_their_csv_spellings(tmp_path) -> None:
    stamps = pd.to_datetime(["2020-01-02T00:00:00Z", "2020-09-13T12:26:40Z"], utc=True)
    pd.DataFrame(
        {
            "user_id": pd.array([1, None], dtype="Int64"),
            "item_id": pd.Series(["7", "8"], dtype="category"),
            "rating": [4.0, np.inf],
            "timestamp": stamps,
        }
    ).to_parquet(tmp_path / "e.parquet")
    pd.DataFrame(
        {
            "item_id": [7.0, 8.0],
            "year": [1995.0, 1e30],
            "genres": [["a", "b"], []],
            "title": [b"Alpha", "Beta"],
        }
    ).to_parquet(tmp_path / "i.parquet")
    pd.DataFrame(
        {"user_id": [1, 2], "age": [30.0, np.inf], "gender": ["F", None], "zip": [2139, None]}
    ).to_parquet(tmp_path / "u.parquet")
    csv = read_table_source(
        TableSource(
            interactions=_write(
                tmp_path / "e.csv",
                "user_id,item_id,rating,timestamp\n1,7,4,2020-01-02T00:00:00Z\n,8,inf,1600000000\n",
            )
        )
    )
    tables = read_table_source(
        TableSource(
            interactions=tmp_path / "e.parquet",
            items=tmp_path / "i.parquet",
            users=tmp_path / "u.parquet",
        )
    )
    pd.testing.assert_frame_equal(tables.interactions, csv.interactions)
    assert tables.problems["interactions"] == csv.problems["interactions"] == {"rating": [1]}
    assert tables.items[schema.ITEM_ID].tolist() == ["7", "8"]
    assert tables.items[schema.TITLE].tolist() == ["Alpha", "Beta"]
    assert tables.problems["items"] == {"year": [1]}
    assert tables.problems["users"] == {"age": [1]}
    assert tables.users["zip"].tolist() == ["02139", None], "an integer zip lost its zero"
    assert tables.users[schema.GENDER].tolist() == ["F", "unknown"]


def test_non_finite_float_ids_are_missing_not_a_crash(tmp_path) -> None:
    pd.DataFrame(
        {"user_id": [1.0, np.inf, 1e20], "item_id": [7.0, np.nan, 2.5], "timestamp": [9e8] * 3}
    ).to_parquet(tmp_path / "e.parquet")
    events = read_table_source(TableSource(interactions=tmp_path / "e.parquet")).interactions
    assert events[schema.USER_ID].tolist() == ["1", None, "100000000000000000000"]
    assert events[schema.ITEM_ID].tolist() == ["7", None, "2.5"]


@pytest.mark.parametrize(
    ("columns", "match"),
    [
        ({"rating": "stars"}, r"'stars' \(for rating, from ingest.table.columns\)"),
        ({"timestamp": "when"}, r"'when' \(for timestamp"),
        ({"title": "item_id"}, "both be read from column 'item_id'"),
        ({"age": "years"}, "ingest.table.users names no file"),
    ],
)
def test_every_mapping_must_resolve(tmp_path, columns, match) -> None:
    _write(tmp_path / "e.csv", "user_id,item_id,timestamp\n1,10,900000000\n")
    _write(tmp_path / "i.csv", "item_id,title\n10,Alpha\n")
    source = TableSource(interactions=Path("e.csv"), items=Path("i.csv"), columns=columns)
    with pytest.raises(SourceError, match=match):
        read_table_source(source, base_dir=tmp_path)


def test_identity_mappings_are_defaults_and_absent_columns_are_noted(tmp_path) -> None:
    _write(tmp_path / "e.csv", "user_id,item_id,timestamp\n1,10,900000000\n")
    columns = {"rating": "rating", "title": "title", "zip": "zip"}  # as params.yaml ships
    tables = read_table_source(TableSource(interactions=tmp_path / "e.csv", columns=columns))
    assert "interactions.rating not in the source (no ratings: implicit feedback)" in tables.notes
    assert not tables.ratings_required


def test_feedback_modes(tmp_path) -> None:
    _write(tmp_path / "e.csv", "user_id,item_id,rating,timestamp\n1,10,,900000000\n")
    _write(tmp_path / "n.csv", "user_id,item_id,timestamp\n1,10,900000000\n")
    explicit = read_table_source(TableSource(interactions=tmp_path / "e.csv"))
    assert explicit.ratings_required and "interactions" not in explicit.problems
    implicit = read_table_source(TableSource(interactions=tmp_path / "e.csv"), feedback="implicit")
    assert not implicit.ratings_required
    with pytest.raises(SourceError, match=r"ingest\.feedback is explicit"):
        read_table_source(TableSource(interactions=tmp_path / "n.csv"), feedback="explicit")


def test_a_headerless_file_is_refused_without_quoting_it(tmp_path) -> None:
    _write(tmp_path / "e.csv", "1,10,4,900000000\n")
    _write(tmp_path / "u.csv", "alice-7731,24,M,technician,85711\n")
    _write(tmp_path / "ok.csv", "user_id,item_id,timestamp\n1,10,900000000\n")
    for source in (
        TableSource(interactions=tmp_path / "e.csv"),
        TableSource(interactions=tmp_path / "ok.csv", users=tmp_path / "u.csv"),
    ):
        with pytest.raises(SourceError, match="header row missing") as caught:
            read_table_source(source)
        message = str(caught.value)
        assert not any(v in message for v in ("alice-7731", "85711", "900000000", "technician"))


def test_broken_files_are_described_without_their_content(tmp_path) -> None:
    _write(tmp_path / "e.csv", "user_id,item_id,timestamp\n1,10,900000000,secret-value\n")
    (tmp_path / "b.csv").write_bytes(b"user_id,item_id,timestamp\n\xff\xfe,1,2\n")
    _write(tmp_path / "p.parquet", "secret-value")
    for name, match in (("e.csv", "well-formed"), ("b.csv", "UTF-8"), ("p.parquet", "Parquet")):
        with pytest.raises(SourceError, match=match) as caught:
            read_table_source(TableSource(interactions=tmp_path / name))
        assert "secret-value" not in str(caught.value)


def test_a_directory_is_named_as_such(tmp_path) -> None:
    (tmp_path / "events").mkdir()
    with pytest.raises(SourceError, match="is a directory"):
        read_table_source(TableSource(interactions=Path("events")), base_dir=tmp_path)


def test_one_unknown_placeholder(tmp_path) -> None:
    _write(tmp_path / "u.csv", "user_id,gender,occupation\n1,Unknown,\n2,F,UNKNOWN\n")
    users = sources.canonical_users(pd.read_csv(tmp_path / "u.csv", dtype=str))
    assert users[schema.GENDER].tolist() == ["unknown", "F"]
    assert users[schema.OCCUPATION].tolist() == ["unknown", "unknown"]
    assert users["zip"].isna().all(), "an absent zip is missing, made 'unknown' by privacy"


@pytest.mark.parametrize(
    ("source", "match"),
    [
        (TableSource(), "must name a file"),
        (TableSource(interactions=Path("nowhere.csv")), "does not exist"),
        (TableSource(interactions=Path("x.csv"), columns={"colour": "c"}), "unknown canonical"),
        (TableSource(interactions=Path("x.json")), "does not exist"),
    ],
)
def test_bad_table_params(tmp_path, source: TableSource, match: str) -> None:
    with pytest.raises(SourceError, match=match):
        read_table_source(source, base_dir=tmp_path)


def test_unsupported_file_type(tmp_path) -> None:
    _write(tmp_path / "e.json", "{}")
    with pytest.raises(SourceError, match="unsupported"):
        read_table_source(TableSource(interactions=tmp_path / "e.json"))


def test_read_source_dispatches_on_params(tmp_path) -> None:
    _write(tmp_path / "e.csv", "user_id,item_id,timestamp\n1,10,900000000\n")
    params = IngestParams(source="table", table=TableSource(interactions=Path("e.csv")))
    assert read_source(params, base_dir=tmp_path).counts()["interactions"] == 1
