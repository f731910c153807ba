"""Ingestion end to end on synthetic MovieLens-shaped files: publish, quarantine, exit codes,
and one test per class of bad input (issue 8)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import stat
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.core import schema
from pipelines.core.config import IngestParams, Params, TableSource
from pipelines.core.paths import PROJECT, Layout
from pipelines.data import ingest as ingest_module
from pipelines.data import quarantine as quarantine_module
from pipelines.data import snapshot as snapshot_module
from pipelines.data.ingest import ingest
from pipelines.data.privacy import KEY_ENV, PSEUDONYM_PATTERN, PseudonymKeyError
from pipelines.data.quarantine import BatchNameError
from pipelines.data.snapshot import fingerprint_path
from pipelines.data.sources import SourceError
from pipelines.stages import ingest as stage

KEY_HEX = "5e" * 32
KEY = bytes.fromhex(KEY_HEX)
OTHER_KEY = b"\x17" * 32
NAMES = ("interactions.parquet", "items.parquet", "users.parquet")
NOW = datetime(2026, 1, 1, tzinfo=UTC)

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
    "1,3,4,881250951",
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


def write_source(folder: Path, events: list[str], users: str = USERS_CSV) -> Params:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "users.csv").write_text(users)
    (folder / "items.csv").write_text(ITEMS_CSV)
    (folder / "events.csv").write_text(HEADER + "\n".join(events) + "\n")
    table = TableSource(
        interactions=folder / "events.csv", items=folder / "items.csv", users=folder / "users.csv"
    )
    return Params(ingest=IngestParams(source="table", table=table))


def table_params(columns: dict | None = None, **files: str | Path) -> dict:
    table: dict = {k: str(v) for k, v in files.items()}
    if columns:
        table["columns"] = columns
    return {"source": "table", "table": table}


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


def quarantine_counts(folder: Path) -> dict[str, tuple[int, int]]:
    """(accepted, rejected) per table, checked against report.json's input counts."""
    report = json.loads((folder / "report.json").read_text())
    out = {}
    for table, counts in report["counts"].items():
        accepted = pd.read_parquet(folder / f"{table}.accepted.parquet")
        rejected = pd.read_parquet(folder / f"{table}.rejected.parquet")
        assert len(accepted) + len(rejected) == counts["input"], table
        out[table] = (len(accepted), len(rejected))
    return out


@pytest.fixture
def clean(tmp_path) -> Params:
    return write_source(tmp_path / "source", EVENTS)


@pytest.fixture
def corrupt(tmp_path) -> Params:
    return write_source(tmp_path / "corrupt", EVENTS + BAD_EVENTS)


@pytest.fixture
def published(tmp_path, clean) -> dict[str, str]:
    """data/ holding an accepted snapshot (written with KEY); returns its digests."""
    ingest(clean.ingest, "good", data_dir=tmp_path / "data", key=KEY)
    return digests(tmp_path / "data")


# ---- the basics ------------------------------------------------------------------------


def test_clean_source_is_published(tmp_path, clean) -> None:
    data = tmp_path / "data"
    result = ingest(clean.ingest, "b1", data_dir=data, quarantine_dir=tmp_path / "q", key=KEY)
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
    assert events[schema.RATING].notna().all()
    assert events[schema.ITEM_ID].tolist() == [e.split(",")[1] for e in EVENTS], "source order"
    assert items[schema.ITEM_ID].tolist() == ["1", "2", "3", "4"]
    assert list(items[schema.GENRES][0]) == ["Animation", "Children's", "Comedy"]
    assert items[schema.YEAR].isna().tolist() == [False, False, True, False]
    assert users[schema.USER_ID].str.fullmatch(PSEUDONYM_PATTERN).all()
    assert sorted(users[schema.REGION]) == ["021", "857", "940", "T8H"]
    assert set(events[schema.USER_ID]) == set(users[schema.USER_ID])
    staging = [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.name != ".secrets"]
    assert not staging, "no staging left"


def test_written_parquet_holds_no_raw_zip_age_or_user_id(tmp_path, clean) -> None:
    data = tmp_path / "data"
    ingest(clean.ingest, "b1", data_dir=data, key=KEY)
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
    ingest(clean.ingest, "b1", data_dir=tmp_path / "d1", key=KEY)
    ingest(clean.ingest, "b2", data_dir=tmp_path / "d2", key=KEY)
    assert digests(tmp_path / "d1") == digests(tmp_path / "d2")
    ingest(clean.ingest, "b3", data_dir=tmp_path / "d1", key=KEY)
    assert digests(tmp_path / "d1") == digests(tmp_path / "d2")


def test_other_files_in_data_survive_a_publish(tmp_path, clean) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "README").write_text("kept")
    ingest(clean.ingest, "b1", data_dir=data, key=KEY)
    assert (data / "README").read_text() == "kept"


def test_corrupt_batch_is_quarantined_and_data_untouched(tmp_path, corrupt, published) -> None:
    data, quarantine = tmp_path / "data", tmp_path / "quarantine"
    result = ingest(corrupt.ingest, "bad", data_dir=data, quarantine_dir=quarantine, key=KEY)
    assert not result.accepted
    assert digests(data) == published
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
    assert quarantine_counts(folder)["interactions"] == (10, 6)
    rejected = pd.read_parquet(folder / "interactions.rejected.parquet")
    assert rejected["source_row"].tolist() == list(range(10, 16))
    assert rejected["reasons"].str.len().gt(0).all()
    assert "rating outside 1–5" in rejected["reasons"][0]
    markdown = (folder / "report.md").read_text()
    assert "data/ was left unchanged" in markdown
    assert "1 interaction has a rating outside 1–5 (ratings are stars on a 1–5 scale)" in markdown
    for name in folder.glob("*.parquet"):
        assert not string_cells(name) & RAW_ZIPS


def test_failed_write_leaves_data_byte_identical(tmp_path, clean, published, monkeypatch) -> None:
    data = tmp_path / "data"
    calls = []
    original = snapshot_module.write_table

    def flaky(frame, path, table_schema=None):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        original(frame, path, table_schema)

    monkeypatch.setattr(snapshot_module, "write_table", flaky)
    with pytest.raises(OSError, match="disk full"):
        ingest(clean.ingest, "again", data_dir=data, key=KEY)
    assert digests(data) == published
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".staging")] == []


def test_default_output_paths_follow_the_project_layout(tmp_path, clean, monkeypatch) -> None:
    monkeypatch.setattr(ingest_module, "PROJECT", Layout(tmp_path))
    result = ingest(clean.ingest, key=KEY)
    assert result.accepted and (tmp_path / "data" / "items.parquet").is_file()
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{4}", result.batch)


# ---- exit codes and --help -----------------------------------------------------------


def test_main_exits_1_and_prints_plain_words(tmp_path, key_env, run_ingest) -> None:
    write_source(tmp_path, EVENTS + BAD_EVENTS)
    params = table_params(interactions="events.csv", items="items.csv", users="users.csv")
    code, out, _ = run_ingest(params, "--batch", "cli")
    assert code == 1
    assert "1 interaction has a rating outside 1–5 (ratings are stars on a 1–5 scale)" in out
    assert "1 interaction repeats an earlier event" in out
    assert "1 interaction has a timestamp before 1990-01-01" in out
    assert "1 interaction has a timestamp in the future" in out
    assert "refers to an item that is missing" in out
    assert not (tmp_path / "data").exists()
    assert (tmp_path / "quarantine" / "cli" / "report.md").is_file()


def test_main_exits_0_on_a_clean_source(tmp_path, key_env, run_ingest) -> None:
    (tmp_path / "events.csv").write_text(HEADER + "\n".join(EVENTS) + "\n")
    code, out, err = run_ingest(table_params(interactions="events.csv"))
    assert code == 0, err
    assert re.search(r"batch \d{8}T\d{6}Z-[0-9a-f]{4}: accepted", out)
    assert "replaced whole by this batch" in out
    assert len(pd.read_parquet(tmp_path / "data" / "users.parquet")) == 4


@pytest.mark.parametrize(
    ("params_text", "extra", "message"),
    [
        ("ingest: {source: kafka}\n", [], "ingest.source"),
        ("ingest: {source: table, table: {interactions: missing.csv}}\n", [], "does not exist"),
        ("ingest: {source: table, table: {interactions: sub}}\n", [], "is a directory"),
        ("ingest: {source: table}\n", [], "must name a file"),
        ("ingest: {region_digits: 5}\n", [], "region_digits"),
        ("ingest: {source: table, table: {interactions: e.csv}}\n", ["--batch", "../x"], "batch"),
        (None, [], "not found"),
    ],
)
def test_unusable_batch_or_params_exit_2_with_one_line(
    tmp_path, key_env, run_ingest, params_text, extra, message
) -> None:
    (tmp_path / "e.csv").write_text(HEADER + EVENTS[0] + "\n")
    (tmp_path / "sub").mkdir()
    if params_text is not None:
        (tmp_path / "params.yaml").write_text(params_text)
    code, _, err = run_ingest(None, *extra)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:")
    assert not (tmp_path / "data").exists()


def test_unexpected_error_exits_3_with_one_line_and_no_data(
    tmp_path, key_env, run_ingest, monkeypatch
) -> None:
    (tmp_path / "e.csv").write_text(HEADER + EVENTS[0] + "\n")

    def broken(*args, **kwargs):
        raise ValueError("cannot convert '85711'")  # a message quoting a cell

    monkeypatch.setattr(ingest_module, "validate_tables", broken)
    code, out, err = run_ingest(table_params(interactions="e.csv"))
    assert code == 3
    assert len(err.strip().splitlines()) == 1
    assert "ValueError" in err and "--debug" in err
    assert "85711" not in err + out and "Traceback" not in err
    with pytest.raises(ValueError):
        run_ingest(table_params(interactions="e.csv"), "--debug")


def test_exit_codes_are_distinct_and_help_says_what_is_read_and_written(capsys) -> None:
    codes = [stage.EXIT_ACCEPTED, stage.EXIT_REJECTED, stage.EXIT_UNUSABLE, stage.EXIT_UNEXPECTED]
    assert codes == [0, 1, 2, 3]
    parser = stage.parser()
    for action in parser._actions:
        assert action.help and action.help != "==SUPPRESS==", action.dest
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = capsys.readouterr().out
    for fragment in ("reads:", "writes:", "params.yaml", "data/", "quarantine/", "--new-key"):
        assert fragment in text
    for code in "0123":
        assert re.search(rf"^\s+{code}\s+\w", text, re.M), code


def test_the_own_data_doc_tells_replacement_bad_input_and_the_exit_codes_of_help(capsys) -> None:
    # docs/own-data.md is the reference a user reads; --help is what the stage says
    doc = (PROJECT.root / "docs" / "own-data.md").read_text(encoding="utf-8")
    assert "replaces all of `data/`" in doc
    assert "| bad input | what it gets |" in doc
    documented = dict(re.findall(r"^\| (\d) \| ([^|]+) \|$", doc, re.M))
    with pytest.raises(SystemExit):
        stage.parser().parse_args(["--help"])
    codes = capsys.readouterr().out.split("exit codes:", 1)[1]
    helped = dict(re.findall(r"^\s+(\d)\s+(.+)$", codes, re.M))
    assert documented.keys() == helped.keys() == set("0123")
    for code, meaning in helped.items():
        verdict = re.split(r"[:(]", meaning)[0].strip()  # "rows rejected", "unexpected error"
        assert documented[code].replace("`", "").startswith(verdict), (code, verdict)


# ---- 1. a column mapping must resolve; absent optional columns are reported -------------


@pytest.mark.parametrize(
    ("mapping", "named"),
    [
        ({"rating": "stars"}, "'stars' (for rating"),
        ({"title": "name"}, "'name' (for title"),
        ({"zip": "postcode"}, "'postcode' (for zip"),
        ({"year": "released", "genres": "tags"}, "'released' (for year"),
    ],
)
def test_a_mapped_column_missing_from_its_file_fails_naming_it(
    tmp_path, key_env, run_ingest, published, mapping, named
) -> None:
    write_source(tmp_path, EVENTS)
    params = table_params(mapping, interactions="events.csv", items="items.csv", users="users.csv")
    code, _, err = run_ingest(params)
    assert code == 2, err
    assert named in err and "ingest.table.columns" in err
    assert digests(tmp_path / "data") == published


def test_a_mapping_for_a_file_not_given_fails(tmp_path, key_env, run_ingest) -> None:
    (tmp_path / "e.csv").write_text(HEADER + "\n".join(EVENTS) + "\n")
    code, _, err = run_ingest(table_params({"title": "name"}, interactions="e.csv"))
    assert code == 2 and "ingest.table.items" in err


def test_absent_optional_columns_not_mapped_are_reported(tmp_path, key_env, run_ingest) -> None:
    (tmp_path / "e.csv").write_text("user_id,item_id,timestamp\n1,1,900000000\n2,1,900000001\n")
    (tmp_path / "i.csv").write_text("item_id,title\n1,Alpha\n")
    code, out, err = run_ingest(table_params(interactions="e.csv", items="i.csv"))
    assert code == 0, err
    assert "interactions.rating not in the source (no ratings: implicit feedback)" in out
    assert "items.year not in the source" in out and "items.genres not in the source" in out
    assert "no users file" in out


# ---- 2. the pseudonymisation key is never silently replaced -----------------------------


def test_a_lost_key_is_refused_while_data_depends_on_it(tmp_path, clean, no_key_env) -> None:
    data, key_path = tmp_path / "data", tmp_path / "keys" / "pseudonym.key"
    ingest(clean.ingest, "first", data_dir=data, key_path=key_path)
    before = digests(data)
    first_users = set(pd.read_parquet(data / "users.parquet")[schema.USER_ID])
    assert fingerprint_path(data).is_file() and fingerprint_path(data).parent != data
    assert not any(p.suffix != ".parquet" for p in data.iterdir()), "nothing else in data/"
    key_path.unlink()
    with pytest.raises(PseudonymKeyError, match=r"refusing to create a new key.*--new-key"):
        ingest(clean.ingest, "second", data_dir=data, key_path=key_path)
    assert not key_path.exists() and digests(data) == before
    result = ingest(clean.ingest, "third", data_dir=data, key_path=key_path, new_key=True)
    assert result.accepted and key_path.is_file()
    assert not first_users & set(pd.read_parquet(data / "users.parquet")[schema.USER_ID])
    ingest(clean.ingest, "fourth", data_dir=data, key_path=key_path)  # the new key is the key now


def test_a_refused_source_creates_no_key(tmp_path, no_key_env) -> None:
    key_path = tmp_path / "keys" / "pseudonym.key"
    write_source(tmp_path, EVENTS)
    params = Params.model_validate(
        {"ingest": table_params({"rating": "stars"}, interactions=tmp_path / "events.csv")}
    )
    with pytest.raises(SourceError, match="'stars'"):
        ingest(params.ingest, "first", data_dir=tmp_path / "data", key_path=key_path)
    assert not key_path.exists(), "a refused batch must leave nothing behind, not even a key"


def test_a_different_key_is_refused_by_the_fingerprint(tmp_path, clean, published) -> None:
    data = tmp_path / "data"
    with pytest.raises(PseudonymKeyError, match="fingerprint"):
        ingest(clean.ingest, "other", data_dir=data, key=OTHER_KEY)
    assert digests(data) == published
    assert ingest(clean.ingest, "other", data_dir=data, key=OTHER_KEY, new_key=True).accepted


def test_a_different_key_exits_2(tmp_path, run_ingest, monkeypatch) -> None:
    write_source(tmp_path, EVENTS)
    params = table_params(interactions="events.csv")
    monkeypatch.setenv(KEY_ENV, KEY_HEX)
    assert run_ingest(params)[0] == 0
    monkeypatch.setenv(KEY_ENV, OTHER_KEY.hex())
    code, _, err = run_ingest(params)
    assert code == 2 and "--new-key" in err and OTHER_KEY.hex() not in err
    assert run_ingest(params, "--new-key")[0] == 0


def test_a_key_file_readable_by_others_gets_a_warning(tmp_path, clean, no_key_env, caplog):
    key_path = tmp_path / "pseudonym.key"
    key_path.write_text(KEY_HEX + "\n")
    key_path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        ingest(clean.ingest, "b", data_dir=tmp_path / "data", key_path=key_path)
    assert any("chmod 600" in r.getMessage() for r in caplog.records)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o644, "the warning changes nothing"


# ---- 3. a quarantine folder is never overwritten ------------------------------------------


def test_two_runs_in_the_same_second_keep_both_quarantines(tmp_path, corrupt) -> None:
    q, d = tmp_path / "q", tmp_path / "d"
    first = ingest(corrupt.ingest, None, data_dir=d, quarantine_dir=q, key=KEY, now=NOW)
    kept = digests(first.quarantine)
    second = ingest(corrupt.ingest, None, data_dir=d, quarantine_dir=q, key=KEY, now=NOW)
    assert first.quarantine != second.quarantine
    assert digests(first.quarantine) == kept
    assert json.loads((second.quarantine / "report.json").read_text())["batch"] == second.batch


def test_a_taken_batch_name_is_refused_and_the_old_quarantine_kept(
    tmp_path, corrupt, key_env, run_ingest, monkeypatch
) -> None:
    q = tmp_path / "quarantine"
    ingest(corrupt.ingest, "same", data_dir=tmp_path / "data", quarantine_dir=q, key=KEY)
    kept = digests(q / "same")
    with pytest.raises(BatchNameError, match="never overwritten"):
        ingest(corrupt.ingest, "same", data_dir=tmp_path / "data", quarantine_dir=q, key=KEY)
    with pytest.raises(BatchNameError, match="never overwritten"):  # a lost race: claim fails
        quarantine_module._claim(q, "same", retry=False)
    assert quarantine_module._claim(q, "same", retry=True) != "same"  # default names take a new tag
    assert digests(q / "same") == kept
    params = table_params(interactions=corrupt.ingest.table.interactions)
    code, _, err = run_ingest(params, "--batch", "same")
    assert code == 2 and "never overwritten" in err
    assert digests(q / "same") == kept


# ---- 4 and 9. unreadable numbers reject their rows, never the batch, never a traceback ----


def _bad_cell_sources(folder: Path) -> dict[str, tuple[dict, str]]:
    """CSV and Parquet sources, each with one cell that is not a usable number."""
    folder.mkdir(parents=True, exist_ok=True)
    ok_events = HEADER + "\n".join(EVENTS) + "\n"
    cases: dict[str, tuple[dict, str]] = {}

    def csv_case(name: str, events: str, users: str = USERS_CSV, items: str = ITEMS_CSV) -> None:
        d = folder / name
        d.mkdir()
        (d / "e.csv").write_text(events)
        (d / "u.csv").write_text(users)
        (d / "i.csv").write_text(items)
        cases[name] = (
            table_params(interactions=d / "e.csv", users=d / "u.csv", items=d / "i.csv"),
            "",
        )

    csv_case("timestamp_1e20", ok_events + "4,2,4,1e20\n")
    csv_case("timestamp_inf", ok_events + "4,2,4,inf\n")
    csv_case("timestamp_text", ok_events + "4,2,4,yesterday\n")
    csv_case("rating_inf", ok_events + "4,2,inf,878887120\n")
    csv_case("rating_text", ok_events + "4,2,great,878887120\n")
    csv_case("year_1e30", ok_events, items=ITEMS_CSV + "5,Odd,1e30,Drama\n")
    csv_case("age_inf", ok_events, users=USERS_CSV + "5,inf,F,writer,10001\n")
    csv_case("age_text", ok_events, users=USERS_CSV + "5,old,F,writer,10001\n")

    def parquet_case(name: str, table: str, frame: pd.DataFrame) -> None:
        d = folder / name
        d.mkdir()
        base = {
            "interactions": pd.read_csv(io_text(ok_events), dtype=str),
            "users": pd.read_csv(io_text(USERS_CSV), dtype=str),
            "items": pd.read_csv(io_text(ITEMS_CSV), dtype=str),
        }
        base[table] = frame
        for t, f in base.items():
            f.to_parquet(d / f"{t}.parquet")
        params = table_params(
            interactions=d / "interactions.parquet",
            users=d / "users.parquet",
            items=d / "items.parquet",
        )
        cases[name] = (params, "")

    n = len(EVENTS) + 1
    events = pd.DataFrame(
        {
            "user_id": np.array([int(e.split(",")[0]) for e in EVENTS] + [4], dtype="int64"),
            "item_id": np.array([int(e.split(",")[1]) for e in EVENTS] + [2], dtype="int64"),
            "rating": np.array([float(e.split(",")[2]) for e in EVENTS] + [4.0]),
            "timestamp": np.array([float(e.split(",")[3]) for e in EVENTS] + [1e20]),
        }
    )
    assert len(events) == n
    parquet_case("parquet_timestamp_1e20", "interactions", events)
    inf_rating = events.assign(timestamp=events["timestamp"].where(events.index < n - 1, 9e8))
    inf_rating.loc[n - 1, "rating"] = np.inf
    parquet_case("parquet_rating_inf", "interactions", inf_rating)
    items = pd.DataFrame(
        {
            "item_id": [1, 2, 3, 4, 5],
            "title": ["A", "B", "C", "D", "E"],
            "year": [1995.0, 1995.0, np.nan, 1995.0, 1e30],
            "genres": [["x"], ["y"], [], ["z"], ["w"]],
        }
    )
    parquet_case("parquet_year_1e30", "items", items)
    users = pd.DataFrame(
        {
            "user_id": [1, 2, 3, 4, 5],
            "age": [24.0, 53.0, 23.0, 15.0, np.inf],
            "gender": ["M", "F", "M", "F", "F"],
            "occupation": ["a", "b", "c", "d", "e"],
            "zip": ["85711", "94043", "T8H1N", "02139", "10001"],
        }
    )
    parquet_case("parquet_age_inf", "users", users)
    return cases


def io_text(text: str):
    import io

    return io.StringIO(text)


BAD_CELL_CASES = [
    "timestamp_1e20",
    "timestamp_inf",
    "timestamp_text",
    "rating_inf",
    "rating_text",
    "year_1e30",
    "age_inf",
    "age_text",
    "parquet_timestamp_1e20",
    "parquet_rating_inf",
    "parquet_year_1e30",
    "parquet_age_inf",
]


@pytest.mark.parametrize("case", BAD_CELL_CASES)
def test_an_unreadable_number_rejects_its_row_not_the_batch(
    tmp_path, key_env, run_ingest, published, case
) -> None:
    params, _ = _bad_cell_sources(tmp_path / "sources")[case]
    code, out, err = run_ingest(params, "--batch", case)
    assert code == 1, err
    assert "Traceback" not in err
    assert digests(tmp_path / "data") == published
    counts = quarantine_counts(tmp_path / "quarantine" / case)
    table = {"year": "items", "age": "users"}.get(case.split("_")[-2], "interactions")
    if "year" in case:
        table = "items"
    elif "age" in case:
        table = "users"
    assert counts[table][1] == 1, counts  # exactly the one row with the bad cell
    rejected = pd.read_parquet(tmp_path / "quarantine" / case / f"{table}.rejected.parquet")
    reasons = rejected["reasons"][0]
    assert re.search(r"not a (finite )?number|neither Unix seconds", reasons), reasons
    if table == "interactions":
        assert counts["interactions"][0] == len(EVENTS), "the other rows are judged on their own"
    for text in ("1e20", "1e30", "inf", "yesterday", "great", "old"):
        assert f"'{text}'" not in out + err


# ---- 5. no message, log line or report prints values from data rows ----------------------


def test_a_headerless_users_file_is_refused_without_echoing_its_first_row(
    tmp_path, key_env, run_ingest, caplog
) -> None:
    (tmp_path / "e.csv").write_text(HEADER + "\n".join(EVENTS) + "\n")
    (tmp_path / "u.csv").write_text("alice-7731,24,M,technician,85711\n2,53,F,other,94043\n")
    with caplog.at_level(logging.DEBUG):
        code, out, err = run_ingest(table_params(interactions="e.csv", users="u.csv"))
    assert code == 2
    assert "'user_id' (for user_id)" in err and "header row" in err
    everything = out + err + caplog.text
    assert "alice-7731" not in everything and "85711" not in everything


def test_no_output_of_a_rejected_batch_quotes_a_row(tmp_path, key_env, run_ingest, caplog):
    users = USERS_CSV.replace("1,24,M,technician,85711", "alice-7731,24,M,technician,85711")
    events = [e.replace("1,", "alice-7731,", 1) if e.startswith("1,") else e for e in EVENTS]
    assert "alice-7731" in users and sum("alice-7731" in e for e in events) > 1, "edits missed"
    bad = ["alice-7731,4,great,881250960", "2,2,4,1e20", "3,Zebra Crossing,4,881250962"]
    write_source(tmp_path, events + bad, users=users)
    params = table_params(interactions="events.csv", items="items.csv", users="users.csv")
    with caplog.at_level(logging.DEBUG):
        code, out, err = run_ingest(params, "--batch", "leak")
    assert code == 1
    folder = tmp_path / "quarantine" / "leak"
    texts = out + err + caplog.text + (folder / "report.md").read_text()
    texts += (folder / "report.json").read_text()
    for value in ("alice-7731", "85711", "great", "1e20", "Zebra"):
        assert value not in texts, value


# ---- 6. free-text profile fields: short labels only; contact data is withheld -------------


def test_contact_data_and_free_text_in_profiles_are_rejected(tmp_path, key_env, run_ingest):
    users = USERS_CSV + (
        "5,30,F,jane.doe@example.com,10001\n"
        "6,30,4155550123,writer,10001\n"
        "7,30,M,call +1 (415) 555-0123,10001\n"
        "8,30,F,I am a senior software engineer at a big company,10001\n"
        "9,30,F,ID 123456789,10001\n"
    )
    write_source(tmp_path, EVENTS, users=users)
    params = table_params(interactions="events.csv", items="items.csv", users="users.csv")
    code, out, _ = run_ingest(params, "--batch", "pii")
    assert code == 1
    folder = tmp_path / "quarantine" / "pii"
    rejected = pd.read_parquet(folder / "users.rejected.parquet")
    assert rejected["source_row"].tolist() == [4, 5, 6, 7, 8]
    assert rejected["reasons"].str.contains("looks like an e-mail address").sum() == 4
    assert "not a short label" in rejected["reasons"][3]
    cells = set().union(*(string_cells(p) for p in folder.glob("*.parquet")))
    for value in ("jane.doe@example.com", "4155550123", "call +1 (415) 555-0123", "ID 123456789"):
        assert value not in cells, "contact data is withheld, even in quarantine"
    assert "example.com" not in out
    assert quarantine_counts(folder)["users"] == (4, 5)


# ---- 7. one placeholder for "unknown" ----------------------------------------------------


def test_one_unknown_placeholder_for_absent_and_blank_values(tmp_path, key_env, run_ingest):
    (tmp_path / "e.csv").write_text(HEADER + "\n".join(EVENTS) + "\n")
    (tmp_path / "no_zip.csv").write_text("user_id,gender\n1,M\n2,F\n3,Unknown\n4,\n")
    (tmp_path / "blank_zip.csv").write_text(
        "user_id,age,gender,occupation,zip\n1,,UNKNOWN,,\n2,30,F,other,unknown\n"
        "3,31,M,writer, \n4,40,F,other,02139\n"
    )
    for users in ("no_zip.csv", "blank_zip.csv"):
        code, _, err = run_ingest(table_params(interactions="e.csv", users=users))
        assert code == 0, err
        frame = pd.read_parquet(tmp_path / "data" / "users.parquet")
        values = set(frame[list(schema.PROFILE_COLUMNS)].to_numpy().ravel())
        assert schema.UNKNOWN in values
        assert not {"UNK", "Unknown", "UNKNOWN", "", None} & values, values


# ---- 8. explicit ratings must not have blanks, unless feedback is declared implicit -------


def test_a_blank_rating_in_an_explicit_file_is_rejected(tmp_path, key_env, run_ingest) -> None:
    write_source(tmp_path, [*EVENTS, "1,4,,881250952"])
    params = table_params(interactions="events.csv", items="items.csv", users="users.csv")
    code, out, _ = run_ingest(params, "--batch", "blank")
    assert code == 1
    assert "1 interaction has no rating in a file of explicit ratings" in out
    assert quarantine_counts(tmp_path / "quarantine" / "blank")["interactions"] == (10, 1)


def test_declared_implicit_feedback_accepts_blank_ratings(tmp_path) -> None:
    params = write_source(tmp_path / "s", [*EVENTS, "1,4,,881250952"])
    implicit = params.ingest.model_copy(update={"feedback": "implicit"})
    result = ingest(implicit, "imp", data_dir=tmp_path / "data", key=KEY)
    assert result.accepted, result.report.messages()
    events = pd.read_parquet(tmp_path / "data" / "interactions.parquet")
    assert events[schema.RATING].isna().sum() == 1
    assert any("implicit feedback declared" in n for n in result.notes)


# ---- the real data ---------------------------------------------------------------------


@pytest.mark.integration
def test_movielens_100k_end_to_end(tmp_path) -> None:
    """Downloads the recbole wheel (about 2 MB) unless .cache/downloads already has it."""
    from pipelines.data.sources import read_movielens

    data = tmp_path / "data"
    result = ingest(IngestParams(), "ml100k", data_dir=data, quarantine_dir=tmp_path / "q", key=KEY)
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
