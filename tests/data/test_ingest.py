"""Ingestion end to end on synthetic MovieLens-shaped CSVs: publish, quarantine, exit codes."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipelines import paths, schema
from pipelines.config import IngestParams, Params, TableSource
from pipelines.data import ingest as ingest_module
from pipelines.data.ingest import ingest
from pipelines.stages.ingest import main
from pipelines.data.privacy import KEY_ENV, PSEUDONYM_PATTERN

KEY_HEX = "5e" * 32
KEY = bytes.fromhex(KEY_HEX)
NAMES = ("interactions.parquet", "items.parquet", "users.parquet")

USERS_CSV = """user_id,age,gender,occupation,zip
1,24,M,technician,85711
2,53,F,other,94043
3,23,M,writer,T8H1N
4,15,F,student,02139
"""
ITEMS_CSV = """item_id,title,year,genres
1,Toy Story,1995,Animation|Children's|Comedy
2,GoldenEye,1995,Action|Adventure|Thriller
3,Four Rooms,,Thriller
4,Heat,1995,Film-Noir|Sci-Fi
"""
EVENTS = [
    "1,1,5,881250949",
    "1,2,3,881250950",
    "1,3,,881250951",
    "2,1,4,891717742",
    "2,4,1,891717742",
    "3,2,2,878887116",
    "3,3,3,878887117",
    "4,4,5,878887118",
    "4,1,4,878887119",
    "2,2,3,891717743",
]
HEADER = "user_id,item_id,rating,timestamp\n"
BAD_EVENTS = [
    "1,4,7,881250960",  # rating outside 1-5
    ",2,3,881250961",  # no user id
    "3,3,3,878887117",  # repeats an earlier event
    "2,999,4,891717750",  # unknown item
    "4,2,4,500000000",  # before 1990
    "4,3,4,4102444800",  # year 2100
]
RAW_ZIPS = {"85711", "94043", "T8H1N", "02139"}


def write_source(folder: Path, events: list[str]) -> Params:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "users.csv").write_text(USERS_CSV)
    (folder / "items.csv").write_text(ITEMS_CSV)
    (folder / "events.csv").write_text(HEADER + "\n".join(events) + "\n")
    table = TableSource(
        interactions=folder / "events.csv", items=folder / "items.csv", users=folder / "users.csv"
    )
    return Params(ingest=IngestParams(source="table", table=table))


def digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def string_cells(path: Path) -> set[str]:
    frame = pd.read_parquet(path)
    cells: set[str] = set()
    for column in frame.columns:
        for value in frame[column]:
            if isinstance(value, str):
                cells.add(value)
            elif hasattr(value, "__iter__") and not isinstance(value, bytes):
                cells.update(str(v) for v in value)
    return cells | {str(c) for c in frame.columns}


@pytest.fixture
def clean(tmp_path) -> Params:
    return write_source(tmp_path / "source", EVENTS)


@pytest.fixture
def corrupt(tmp_path) -> Params:
    return write_source(tmp_path / "corrupt", EVENTS + BAD_EVENTS)


def test_clean_source_is_published(tmp_path, clean) -> None:
    data = tmp_path / "data"
    result = ingest(clean, "b1", data_dir=data, quarantine_dir=tmp_path / "q", key=KEY)
    assert result.accepted and result.quarantine is None
    assert sorted(p.name for p in data.iterdir()) == sorted(NAMES)
    assert not (tmp_path / "q").exists()
    assert [p.parent for p in result.written] == [data] * 3
    events = pd.read_parquet(data / "interactions.parquet")
    items = pd.read_parquet(data / "items.parquet")
    users = pd.read_parquet(data / "users.parquet")
    assert (len(events), len(items), len(users)) == (10, 4, 4)
    assert tuple(events.columns) == schema.INTERACTION_COLUMNS
    assert tuple(items.columns) == schema.ITEM_COLUMNS
    assert tuple(users.columns) == schema.USER_COLUMNS
    assert events[schema.TIMESTAMP].dtype == "int64"
    assert events[schema.RATING].isna().sum() == 1
    assert events[schema.ITEM_ID].tolist() == [e.split(",")[1] for e in EVENTS], "source order"
    assert items[schema.ITEM_ID].tolist() == ["1", "2", "3", "4"]
    assert list(items[schema.GENRES][0]) == ["Animation", "Children's", "Comedy"]
    assert items[schema.YEAR].isna().tolist() == [False, False, True, False]
    assert users[schema.USER_ID].str.fullmatch(PSEUDONYM_PATTERN).all()
    assert sorted(users[schema.REGION]) == ["021", "857", "940", "T8H"]
    assert set(events[schema.USER_ID]) == set(users[schema.USER_ID])
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), "no staging left"


def test_written_parquet_holds_no_raw_zip_age_or_user_id(tmp_path, clean) -> None:
    data = tmp_path / "data"
    ingest(clean, "b1", data_dir=data, key=KEY)
    for name in NAMES:
        cells = string_cells(data / name)
        assert not cells & RAW_ZIPS, name
        assert not any(re.fullmatch(r"\d{5}", c) for c in cells), name
        assert not {"age", "zip"} & set(pd.read_parquet(data / name).columns)
    users = pd.read_parquet(data / "users.parquet")
    events = pd.read_parquet(data / "interactions.parquet")
    raw_ids = {"1", "2", "3", "4"}
    assert not raw_ids & set(users[schema.USER_ID]) and not raw_ids & set(events[schema.USER_ID])


def test_reingesting_the_same_source_gives_identical_bytes(tmp_path, clean) -> None:
    ingest(clean, "b1", data_dir=tmp_path / "d1", key=KEY)
    ingest(clean, "b2", data_dir=tmp_path / "d2", key=KEY)
    assert digests(tmp_path / "d1") == digests(tmp_path / "d2")
    ingest(clean, "b3", data_dir=tmp_path / "d1", key=KEY)
    assert digests(tmp_path / "d1") == digests(tmp_path / "d2")


def test_other_files_in_data_survive_a_publish(tmp_path, clean) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "README").write_text("kept")
    ingest(clean, "b1", data_dir=data, key=KEY)
    assert (data / "README").read_text() == "kept"


def test_corrupt_batch_is_quarantined_and_data_untouched(tmp_path, clean, corrupt) -> None:
    data, quarantine = tmp_path / "data", tmp_path / "quarantine"
    ingest(clean, "good", data_dir=data, key=KEY)
    before = digests(data)
    result = ingest(corrupt, "bad", data_dir=data, quarantine_dir=quarantine, key=KEY)
    assert not result.accepted
    assert digests(data) == before
    folder = quarantine / "bad"
    assert result.quarantine == folder
    assert {p.name for p in folder.iterdir()} == {
        "report.json",
        "report.md",
        *(
            f"{t}.{k}.parquet"
            for t in ("interactions", "items", "users")
            for k in ("accepted", "rejected")
        ),
    }
    report = json.loads((folder / "report.json").read_text())
    assert report["counts"]["interactions"] == {"input": 16, "accepted": 10, "rejected": 6}
    for table, counts in report["counts"].items():
        accepted = pd.read_parquet(folder / f"{table}.accepted.parquet")
        rejected = pd.read_parquet(folder / f"{table}.rejected.parquet")
        assert len(accepted) + len(rejected) == counts["input"]
        assert (len(accepted), len(rejected)) == (counts["accepted"], counts["rejected"])
    rejected = pd.read_parquet(folder / "interactions.rejected.parquet")
    assert rejected["source_row"].tolist() == list(range(10, 16))
    assert rejected["reasons"].str.len().gt(0).all()
    assert "rating outside 1–5" in rejected["reasons"][0]
    markdown = (folder / "report.md").read_text()
    assert "data/ was left unchanged" in markdown
    assert "1 interaction has a rating outside 1–5 (ratings are stars on a 1–5 scale)" in markdown
    for name in folder.glob("*.parquet"):
        assert not string_cells(name) & RAW_ZIPS


def test_main_exits_1_and_prints_plain_words(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv(KEY_ENV, KEY_HEX)
    write_source(tmp_path, EVENTS + BAD_EVENTS)
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "ingest": {
                    "source": "table",
                    "table": {
                        "interactions": "events.csv",
                        "items": "items.csv",
                        "users": "users.csv",
                    },
                }
            }
        )
    )
    code = main(
        [
            "--params",
            str(params),
            "--batch",
            "cli",
            "--data-dir",
            str(tmp_path / "data"),
            "--quarantine-dir",
            str(tmp_path / "q"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "1 interaction has a rating outside 1–5 (ratings are stars on a 1–5 scale)" in out
    assert "1 interaction repeats an earlier event" in out
    assert "1 interaction has a timestamp before 1990-01-01" in out
    assert "1 interaction has a timestamp in the future" in out
    assert "refers to an item that is missing" in out
    assert not (tmp_path / "data").exists()
    assert (tmp_path / "q" / "cli" / "report.md").is_file()


def test_main_exits_0_on_a_clean_source(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv(KEY_ENV, KEY_HEX)
    (tmp_path / "events.csv").write_text(HEADER + "\n".join(EVENTS) + "\n")
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump({"ingest": {"source": "table", "table": {"interactions": "events.csv"}}})
    )
    code = main(["--params", str(params), "--data-dir", str(tmp_path / "data")])
    assert code == 0, capsys.readouterr()
    assert re.search(r"batch \d{8}T\d{6}Z: accepted", capsys.readouterr().out)
    assert len(pd.read_parquet(tmp_path / "data" / "users.parquet")) == 4


@pytest.mark.parametrize(
    ("params_text", "extra", "message"),
    [
        ("ingest: {source: kafka}\n", [], "ingest.source"),
        ("ingest: {source: table, table: {interactions: missing.csv}}\n", [], "does not exist"),
        ("ingest: {source: table}\n", [], "must name a file"),
        ("ingest: {region_digits: 5}\n", [], "region_digits"),
        ("ingest: {source: table, table: {interactions: e.csv}}\n", ["--batch", "../x"], "batch"),
        (None, [], "not found"),
    ],
)
def test_bad_params_exit_2_with_one_line(
    tmp_path, monkeypatch, capsys, params_text, extra, message
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY_HEX)
    (tmp_path / "e.csv").write_text(HEADER + EVENTS[0] + "\n")
    params = tmp_path / "params.yaml"
    if params_text is not None:
        params.write_text(params_text)
    code = main(["--params", str(params), "--data-dir", str(tmp_path / "data"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    assert not (tmp_path / "data").exists()


def test_failed_write_leaves_data_byte_identical(tmp_path, clean, monkeypatch) -> None:
    data = tmp_path / "data"
    ingest(clean, "good", data_dir=data, key=KEY)
    before = digests(data)
    calls = []
    original = ingest_module.write_table

    def flaky(frame, path, table_schema=None):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        original(frame, path, table_schema)

    monkeypatch.setattr(ingest_module, "write_table", flaky)
    with pytest.raises(OSError, match="disk full"):
        ingest(clean, "again", data_dir=data, key=KEY)
    assert digests(data) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_default_output_paths_follow_pipelines_paths(tmp_path, clean, monkeypatch) -> None:
    monkeypatch.setattr(paths, "DATA", tmp_path / "d")
    monkeypatch.setattr(paths, "QUARANTINE", tmp_path / "q")
    result = ingest(clean, key=KEY)
    assert result.accepted and (tmp_path / "d" / "items.parquet").is_file()
    assert re.fullmatch(r"\d{8}T\d{6}Z", result.batch)


@pytest.mark.integration
def test_movielens_100k_end_to_end(tmp_path) -> None:
    """Downloads the recbole wheel (about 2 MB) unless .cache/downloads already has it."""
    from pipelines.data.sources import read_movielens

    data = tmp_path / "data"
    result = ingest(Params(), "ml100k", data_dir=data, quarantine_dir=tmp_path / "q", key=KEY)
    assert result.accepted, result.report.messages()
    assert {t: c["accepted"] for t, c in result.counts.items()} == {
        "interactions": 100_000,
        "items": 1_682,
        "users": 943,
    }
    raw = read_movielens()
    raw_ids = set(raw.users[schema.USER_ID])
    raw_zips = set(raw.users["zip"])
    users = pd.read_parquet(data / "users.parquet")
    events = pd.read_parquet(data / "interactions.parquet")
    assert users[schema.USER_ID].str.fullmatch(PSEUDONYM_PATTERN).all()
    assert not raw_ids & set(users[schema.USER_ID]) and not raw_ids & set(events[schema.USER_ID])
    assert users[schema.REGION].str.len().le(3).all()
    for name in NAMES:
        cells = string_cells(data / name)
        assert not cells & raw_zips, name
        assert not any(re.fullmatch(r"\d{5}", c) for c in cells), name
