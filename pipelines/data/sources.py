"""Source adapters: whatever the source, out come the canonical tables (design.md §2).

Bad rows are rejected, not batches. Adapters only reshape and type the data; they
never drop or repair rows. A cell that cannot be read as its column's type (a
rating of "great", a timestamp of 1e20 or "yesterday", an age of inf, a year of
1e30) becomes a missing value and its row is recorded in `RawTables.problems`, so
validation rejects that row, with the reason the contract gives, and quarantines
it; the other rows are judged on their own. Only a source that cannot be used at
all is a `SourceError` and refuses the whole batch: a missing file, a directory
named as a file, a file that is not the declared format, a required column that
is missing, a column mapping that does not resolve.

Messages here name files, columns and row counts, never values from data rows.

Tables leave here *before* privacy: users still carry raw `age` and `zip`, which
`pipelines.data.privacy.apply_privacy` removes before anything is written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.core import schema
from pipelines.core.config import MISSING_VALUES, ZIP_WIDTH, IngestParams, TableSource
from pipelines.core.paths import PROJECT
from pipelines.data.contract import FEEDBACK_MODES, INTERACTIONS, ITEMS, MAX_AGE, USERS
from pipelines.data.privacy import RAW_AGE, RAW_ZIP, UNKNOWN

log = logging.getLogger(__name__)

RAW_USER_COLUMNS = (schema.USER_ID, RAW_AGE, schema.GENDER, schema.OCCUPATION, RAW_ZIP)
MAPPABLE_COLUMNS = frozenset(schema.INTERACTION_COLUMNS + schema.ITEM_COLUMNS + RAW_USER_COLUMNS)
# largest magnitude kept for whole-number columns: anything beyond cannot be an int64
_INT_LIMIT = 2.0**62

RECBOLE_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.{kind}"
MOVIELENS_SHA256 = {
    "inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}
MOVIELENS_COLUMNS = {
    "inter": {
        "user_id": schema.USER_ID,
        "item_id": schema.ITEM_ID,
        "rating": schema.RATING,
        "timestamp": schema.TIMESTAMP,
    },
    "item": {
        "item_id": schema.ITEM_ID,
        "movie_title": schema.TITLE,
        "release_year": schema.YEAR,
        "class": schema.GENRES,
    },
    "user": {
        "user_id": schema.USER_ID,
        "age": RAW_AGE,
        "gender": schema.GENDER,
        "occupation": schema.OCCUPATION,
        "zip_code": RAW_ZIP,
    },
}
MOVIELENS_GENRE_SEPARATOR = " "

# table -> column -> row positions whose cell could not be read as its type
Problems = dict[str, dict[str, list[int]]]


class SourceError(RuntimeError):
    """The source cannot be used: missing file, wrong checksum, missing or unmapped column."""


@dataclass(frozen=True)
class RawTables:
    """The three canonical tables as read, before privacy and validation.

    `problems` lists the cells that could not be read (their rows are rejected);
    `notes` says what the source did not provide and what was used instead;
    `ratings_required` is True for explicit feedback (a blank rating is rejected).
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    origin: str
    problems: Problems = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    ratings_required: bool = True

    def counts(self) -> dict[str, int]:
        return {
            "interactions": len(self.interactions),
            "items": len(self.items),
            "users": len(self.users),
        }


def read_source(
    params: IngestParams, downloads: Path = PROJECT.downloads, base_dir: Path = PROJECT.root
) -> RawTables:
    """The adapter named by `ingest.source`; relative table paths resolve against base_dir."""
    if params.source == "movielens":
        return read_movielens(params.movielens.recbole_version, downloads)
    return read_table_source(
        params.table,
        base_dir,
        feedback=feedback_mode(params),
        missing_values=params.missing_values,
        zip_width=params.zip_width,
    )


def feedback_mode(params: IngestParams) -> str:
    """`ingest.feedback`: auto (explicit when there is a rating column), explicit or implicit."""
    mode = getattr(params, "feedback", "auto")
    if mode not in FEEDBACK_MODES:
        raise SourceError(f"ingest.feedback must be one of {', '.join(FEEDBACK_MODES)}")
    return mode


# ---- column coercion shared by every adapter ------------------------------------


def _cell_text(value: object) -> str | None:
    """One id or label as text; missing, blank or non-finite cells are None.

    Integral floats (a Parquet int column with nulls) lose their ".0"; bytes are
    decoded as UTF-8.
    """
    if isinstance(value, str):
        return value.strip() or None
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip() or None
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if not np.isfinite(number):
            return None
        return str(int(number)) if number == int(number) else repr(number)
    try:
        if bool(pd.isna(value)):
            return None
    except (TypeError, ValueError):
        pass
    return str(value).strip() or None


def _as_id(values: pd.Series) -> pd.Series:
    """Ids as str (or None), whatever type the file gave them."""
    return pd.Series(
        [_cell_text(v) for v in values.astype(object)], index=values.index, dtype=object
    )


def _as_text(values: pd.Series, default: str | None = None) -> pd.Series:
    text = _as_id(values)
    return text if default is None else text.where(text.notna(), default).astype(object)


def _as_label(values: pd.Series) -> pd.Series:
    """Profile labels: blank, missing or any spelling of "unknown" is the one placeholder."""
    text = _as_text(values, UNKNOWN)
    return text.map(lambda t: UNKNOWN if t.lower() == UNKNOWN else t).astype(object)


def _blank(values: pd.Series) -> np.ndarray:
    """Cells that hold nothing: null, NaN, empty or whitespace-only text."""
    return np.array([_cell_text(v) is None and not _is_nonfinite(v) for v in values], dtype=bool)


def _is_nonfinite(value: object) -> bool:
    return isinstance(value, float | np.floating) and np.isinf(value)


def _to_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return np.nan


def _numbers(values: pd.Series) -> pd.Series:
    """Cells as float64; anything that is not a number is NaN (told apart from blanks later)."""
    values = values.astype(object) if isinstance(values.dtype, pd.CategoricalDtype) else values
    if pd.api.types.is_bool_dtype(values):
        values = values.astype("float64")
    try:
        parsed = pd.to_numeric(values, errors="coerce")
        return pd.Series(np.asarray(parsed, dtype="float64"), index=values.index)
    except (TypeError, ValueError, OverflowError):
        return pd.Series([_to_float(v) for v in values], index=values.index, dtype="float64")


def _says_unknown(values: pd.Series) -> np.ndarray:
    return np.array([isinstance(v, str) and v.strip().lower() == UNKNOWN for v in values])


def _record(problems: Problems, table: str, column: str, bad: np.ndarray) -> None:
    rows = [int(i) for i in np.flatnonzero(bad)]
    if rows:
        problems.setdefault(table, {})[column] = rows
        log.info(
            "%s.%s: %d cells are not readable numbers; their rows are rejected",
            table,
            column,
            len(rows),
        )


def _whole(parsed: pd.Series, bad: np.ndarray) -> pd.Series:
    """Floored nullable ints; bad cells and values no int64 can hold become missing."""
    keep = parsed.notna().to_numpy() & ~bad
    out = pd.Series(pd.NA, index=parsed.index, dtype="Int64")
    out[keep] = np.floor(parsed[keep].to_numpy()).astype("int64")
    return out


def _as_float(values: pd.Series, problems: Problems, table: str, column: str) -> pd.Series:
    """Floats; a cell that is not a finite number is missing and its row recorded."""
    parsed = _numbers(values)
    bad = ~_blank(values) & ~np.isfinite(parsed.to_numpy())
    _record(problems, table, column, bad)
    return parsed.where(~bad, np.nan)


def _as_year(values: pd.Series, problems: Problems) -> pd.Series:
    """Years as nullable ints. A date (Parquet date/timestamp or ISO text) gives its year;
    other text such as "unknown" means no year, since year is only a description
    (MovieLens itself has "unkonwn" and "V" in this column). A number that is not
    finite or overflows (1e30) is a bad cell: its row is rejected."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.year.astype("Int64")
    parsed = _numbers(values)
    text = ~_blank(values) & parsed.isna().to_numpy()
    if text.any():
        dates = pd.to_datetime(
            values[text].astype(object), errors="coerce", utc=True, format="ISO8601"
        )
        parsed[text] = dates.dt.year.astype("float64")
        unreadable = int(parsed[text].isna().sum())
        if unreadable:
            log.info("items.year: %d non-numeric values read as missing", unreadable)
    finite = np.isfinite(parsed.to_numpy())
    bad = parsed.notna().to_numpy() & (
        ~finite | (np.abs(parsed.fillna(0).to_numpy()) >= _INT_LIMIT)
    )
    _record(problems, ITEMS, schema.YEAR, bad)
    return _whole(parsed, bad)


def _as_age(values: pd.Series, problems: Problems) -> pd.Series:
    """Ages as nullable ints; blank (or "unknown") is the unknown band later. An age that
    is not a number of years from 0 to MAX_AGE is a bad cell: its row is rejected."""
    parsed = _numbers(values)
    present = ~_blank(values) & ~_says_unknown(values)
    number = parsed.to_numpy()
    with np.errstate(invalid="ignore"):
        in_range = np.isfinite(number) & (number >= 0) & (number <= MAX_AGE)
    bad = present & ~in_range
    _record(problems, USERS, RAW_AGE, bad)
    return _whole(parsed, bad | ~present)


def _as_unix_seconds(values: pd.Series, problems: Problems) -> pd.Series:
    """Unix seconds, or date-times (ISO text, Parquet timestamps or dates) converted to them.

    The column stays nullable (Int64): a missing timestamp is a rejected row, and so
    is one that is neither (1e20, inf, "yesterday")."""
    epoch = pd.Timestamp(0, tz="UTC")
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = values if values.dt.tz is not None else values.dt.tz_localize("UTC")
        seconds = (stamps - epoch).dt.total_seconds().astype("float64")
        return _whole(seconds, np.zeros(len(values), dtype=bool))
    seconds = _numbers(values)
    blank = _blank(values)
    textual = ~blank & seconds.isna().to_numpy()
    if textual.any():
        stamps = pd.to_datetime(
            values[textual].astype(object), errors="coerce", utc=True, format="ISO8601"
        )
        seconds[textual] = (stamps - epoch).dt.total_seconds().astype("float64")
    number = seconds.fillna(np.nan).to_numpy()
    with np.errstate(invalid="ignore"):
        readable = np.isfinite(number) & (np.abs(number) < _INT_LIMIT)
    bad = ~blank & ~readable
    _record(problems, INTERACTIONS, schema.TIMESTAMP, bad)
    return _whole(seconds, bad)


def _as_genres(values: pd.Series, separator: str) -> pd.Series:
    """Genres as list[str]; a string is split on the separator, a list (Parquet) kept."""

    def parse(value: object) -> list[str]:
        if isinstance(value, str):
            parts = value.split(separator) if separator != " " else value.split()
            return [p.strip() for p in parts if p.strip()]
        if isinstance(value, list | tuple | np.ndarray):
            return [t for t in (_cell_text(v) for v in value) if t is not None]
        text = _cell_text(value)
        return [] if text is None else [text]

    return values.astype(object).map(parse).astype(object)


def _column(df: pd.DataFrame, name: str) -> pd.Series | None:
    return df[name] if name in df.columns else None


def canonical_interactions(df: pd.DataFrame, problems: Problems | None = None) -> pd.DataFrame:
    """Interactions with the canonical columns and dtypes; rating may be absent (implicit)."""
    problems = {} if problems is None else problems
    df = df.reset_index(drop=True)
    _require(df, "interactions", (schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP))
    rating = _column(df, schema.RATING)
    return pd.DataFrame(
        {
            schema.USER_ID: _as_id(df[schema.USER_ID]),
            schema.ITEM_ID: _as_id(df[schema.ITEM_ID]),
            schema.RATING: (
                _as_float(rating, problems, INTERACTIONS, schema.RATING)
                if rating is not None
                else pd.Series(np.nan, index=df.index, dtype="float64")
            ),
            schema.TIMESTAMP: _as_unix_seconds(df[schema.TIMESTAMP], problems),
        }
    )


def canonical_items(
    df: pd.DataFrame, genre_separator: str, problems: Problems | None = None
) -> pd.DataFrame:
    """Items with canonical dtypes; a missing title falls back to the id, which is honest text."""
    problems = {} if problems is None else problems
    df = df.reset_index(drop=True)
    _require(df, "items", (schema.ITEM_ID,))
    ids = _as_id(df[schema.ITEM_ID])
    title = _column(df, schema.TITLE)
    title = ids if title is None else _as_text(title).where(lambda t: t.notna(), ids)
    year = _column(df, schema.YEAR)
    genres = _column(df, schema.GENRES)
    return pd.DataFrame(
        {
            schema.ITEM_ID: ids,
            schema.TITLE: title.astype(object),
            schema.YEAR: (
                _as_year(year, problems)
                if year is not None
                else pd.Series(pd.NA, index=df.index, dtype="Int64")
            ),
            schema.GENRES: (
                _as_genres(genres, genre_separator)
                if genres is not None
                else pd.Series([[] for _ in range(len(df))], index=df.index, dtype=object)
            ),
        }
    )


def _read_as_numbers(values: pd.Series) -> bool:
    """A column that holds numbers: a numeric dtype (Parquet ints, or floats when the
    column has nulls), or text cells that are all digits (a CSV a spreadsheet rewrote)."""
    if pd.api.types.is_bool_dtype(values):
        return False
    if pd.api.types.is_numeric_dtype(values):
        return True
    present = [v for v in values if _cell_text(v) is not None]
    return bool(present) and all(
        isinstance(v, int | np.integer) or (isinstance(v, str) and v.strip().isdigit())
        for v in present
    )


def _as_zip(values: pd.Series, width: int) -> tuple[pd.Series, int]:
    """Zip codes as text, and how many were zero-padded.

    A column read as numbers lost its leading zeros (the integer 2139 is US zip 02139):
    codes shorter than ``width`` digits get them back. A column with any letters
    (Canadian codes, MovieLens's own mix) is kept exactly as written.
    """
    text = _as_text(values)
    if width < 1 or not _read_as_numbers(values):
        return text, 0
    short = np.array(
        [isinstance(t, str) and t.isdigit() and len(t) < width for t in text], dtype=bool
    )
    padded = [t.zfill(width) if pad else t for t, pad in zip(text, short, strict=True)]
    return pd.Series(padded, index=text.index, dtype=object), int(short.sum())


def canonical_users(
    df: pd.DataFrame,
    problems: Problems | None = None,
    *,
    zip_width: int = 0,
    notes: list[str] | None = None,
) -> pd.DataFrame:
    """Raw users with canonical dtypes; unknown profile fields say "unknown", never a guess.

    ``zip_width`` > 0 zero-pads zip codes read as numbers (``_as_zip``); how many were
    padded goes to ``notes``.
    """
    problems = {} if problems is None else problems
    df = df.reset_index(drop=True)
    _require(df, "users", (schema.USER_ID,))
    unknown = pd.Series(UNKNOWN, index=df.index, dtype=object)
    age = _column(df, RAW_AGE)
    zip_code = _column(df, RAW_ZIP)

    def label(name: str) -> pd.Series:
        col = _column(df, name)
        return unknown if col is None else _as_label(col)

    zips, padded = (None, 0) if zip_code is None else _as_zip(zip_code, zip_width)
    if padded and notes is not None:
        notes.append(
            f"users.zip: {padded} codes read as numbers had fewer than {zip_width} digits and "
            "were zero-padded (ingest.zip_width)"
        )
    return pd.DataFrame(
        {
            schema.USER_ID: _as_id(df[schema.USER_ID]),
            RAW_AGE: (
                _as_age(age, problems)
                if age is not None
                else pd.Series(pd.NA, index=df.index, dtype="Int64")
            ),
            schema.GENDER: label(schema.GENDER),
            schema.OCCUPATION: label(schema.OCCUPATION),
            # no zip is None here; privacy turns it into the one "unknown" region
            RAW_ZIP: pd.Series(None, index=df.index, dtype=object) if zips is None else zips,
        }
    )


def items_from_interactions(interactions: pd.DataFrame) -> pd.DataFrame:
    """A minimal catalogue when the source has none: each id is its own title."""
    ids = sorted(interactions[schema.ITEM_ID].dropna().unique())
    return canonical_items(pd.DataFrame({schema.ITEM_ID: pd.Series(ids, dtype=object)}), "|")


def users_from_interactions(interactions: pd.DataFrame) -> pd.DataFrame:
    """Minimal profiles when the source has none: every field "unknown"."""
    ids = sorted(interactions[schema.USER_ID].dropna().unique())
    return canonical_users(pd.DataFrame({schema.USER_ID: pd.Series(ids, dtype=object)}))


def _require(df: pd.DataFrame, table: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SourceError(
            f"{table} table lacks required column(s) {missing}; it has {len(df.columns)} "
            "columns, none with that name"
        )


# ---- generic CSV / Parquet tables ------------------------------------------------


def _read_error(path: Path, err: Exception) -> SourceError:
    """What went wrong, without quoting the file: parser messages can carry cell values."""
    if isinstance(err, UnicodeDecodeError):
        what = f"is not UTF-8 text (a bad byte at offset {err.start})"
    elif isinstance(err, pd.errors.EmptyDataError):
        what = "is empty"
    elif isinstance(err, pd.errors.ParserError):
        line = next((w for w in str(err).split() if w.rstrip(",").isdigit()), None)
        where = f" (near line {line.rstrip(',')})" if line else ""
        what = f"is not well-formed CSV: rows have different numbers of fields{where}"
    elif path.suffix.lower() in {".parquet", ".pq"}:
        what = f"is not a readable Parquet file ({type(err).__name__})"
    else:
        what = f"cannot be read ({type(err).__name__})"
    return SourceError(f"{path} {what}")


def read_frame(path: Path) -> pd.DataFrame:
    """A CSV/TSV or Parquet file as read; CSV cells stay text so ids keep leading zeros."""
    if path.is_dir():
        raise SourceError(f"{path} is a directory, not a file: name a .csv, .tsv or .parquet file")
    if not path.exists():
        raise SourceError(f"{path} does not exist")
    if not path.is_file():
        raise SourceError(f"{path} is not a regular file")
    suffix = path.suffix.lower()
    if suffix not in {".parquet", ".pq", ".csv", ".tsv"}:
        raise SourceError(f"{path}: unsupported file type {suffix!r} (use .csv, .tsv or .parquet)")
    try:
        if suffix in {".parquet", ".pq"}:
            frame = pd.read_parquet(path)
            for column in frame.columns:
                if isinstance(frame[column].dtype, pd.CategoricalDtype):
                    frame[column] = frame[column].astype(object)
            return frame
        with warnings.catch_warnings():
            # more fields than header names would otherwise shift every value silently
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(
                path,
                sep="\t" if suffix == ".tsv" else ",",
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                encoding="utf-8-sig",
                index_col=False,
            )
    except pd.errors.ParserWarning as err:
        raise _read_error(path, pd.errors.ParserError(str(err))) from err
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise _read_error(path, err) from err
    except Exception as err:  # pyarrow raises its own types for a broken file
        if type(err).__module__.startswith("pyarrow"):
            raise _read_error(path, err) from err
        raise


def _resolve(path: Path, base_dir: Path) -> Path:
    return path if path.is_absolute() else base_dir / path


def _explicit(mapping: dict[str, str], column: str) -> bool:
    """A mapping to another name is the user's own; `rating: rating` is only the default."""
    return mapping.get(column, column) != column


def _select(
    raw: pd.DataFrame,
    full: Path,
    table: str,
    mapping: dict[str, str],
    wanted: tuple[str, ...],
    required: tuple[str, ...],
) -> tuple[pd.DataFrame, list[str]]:
    """The wanted columns renamed to canonical names, and the optional ones not there.

    Refuses, naming them, a required column that is missing, a mapped column that
    is missing, and two canonical columns read from one source column.
    """
    names = {c: mapping.get(c, c) for c in wanted}
    readers: dict[str, list[str]] = {}
    for canonical, name in names.items():
        readers.setdefault(name, []).append(canonical)
    shared = {name: cs for name, cs in readers.items() if len(cs) > 1 and name in raw.columns}
    if shared:
        name, cs = next(iter(shared.items()))
        raise SourceError(
            f"ingest.table.columns: {' and '.join(cs)} would both be read from column {name!r} "
            f"of {full}; map each to its own column"
        )
    missing = [
        c
        for c in wanted
        if names[c] not in raw.columns and (c in required or _explicit(mapping, c))
    ]
    if missing:
        mapped = ", from ingest.table.columns"
        named = ", ".join(
            f"{names[c]!r} (for {c}{mapped if _explicit(mapping, c) else ''})" for c in missing
        )
        hint = (
            "; none of the expected names is there: is the header row missing?"
            if not any(n in raw.columns for n in names.values())
            else "; check the header row and ingest.table.columns"
        )
        raise SourceError(
            f"{full}: the {table} file has no column {named} "
            f"(it has {len(raw.columns)} columns){hint}"
        )
    absent = [c for c in wanted if names[c] not in raw.columns]
    present = {names[c]: c for c in wanted if names[c] in raw.columns}
    return raw[list(present)].rename(columns=present), absent


ID_COLUMNS = frozenset({schema.USER_ID, schema.ITEM_ID})

ABSENT_MEANS = {
    schema.RATING: "no ratings: implicit feedback",
    schema.TITLE: "each title is the item id",
    schema.YEAR: "no years",
    schema.GENRES: "no genres",
    RAW_AGE: f"age band {UNKNOWN}",
    schema.GENDER: f"gender {UNKNOWN}",
    schema.OCCUPATION: f"occupation {UNKNOWN}",
    RAW_ZIP: f"region {UNKNOWN}",
}


def blank_missing_values(
    frame: pd.DataFrame, tokens: tuple[str, ...] | list[str]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """``frame`` with every text cell that is a missing-value token (``ingest.missing_values``,
    compared after trimming spaces) made None, and how many per column were.

    Only text cells are compared: a Parquet number or list is never a token.
    """
    wanted = {t.strip() for t in tokens}
    if not wanted:
        return frame, {}
    out = frame.copy()
    blanked: dict[str, int] = {}
    for column in out.columns:
        values = out[column]
        if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
            continue
        hits = np.array(
            [isinstance(v, str) and v.strip() in wanted and v.strip() != "" for v in values],
            dtype=bool,
        )
        if hits.any():
            out[column] = values.astype(object).where(~hits, None)
            blanked[str(column)] = int(hits.sum())
    return out, blanked


def read_table_source(
    source: TableSource,
    base_dir: Path = PROJECT.root,
    *,
    feedback: str = "auto",
    missing_values: tuple[str, ...] | list[str] = MISSING_VALUES,
    zip_width: int = ZIP_WIDTH,
) -> RawTables:
    """Your own logs: files named in `ingest.table`, columns renamed by `ingest.table.columns`.

    Every column mapped to another name must exist in its file; optional columns
    that are neither mapped nor present are filled with their defaults and listed
    in `RawTables.notes`. A cell holding one of ``missing_values`` is empty: an id
    that is empty rejects its row in validation. ``zip_width`` > 0 zero-pads zip
    codes read as numbers.
    """
    unknown = sorted(set(source.columns) - MAPPABLE_COLUMNS)
    if unknown:
        raise SourceError(
            f"ingest.table.columns has unknown canonical name(s) {unknown}; "
            f"allowed: {sorted(MAPPABLE_COLUMNS)}"
        )
    if source.interactions is None:
        raise SourceError(
            "ingest.table.interactions must name a file when ingest.source is 'table'"
        )
    mapping = dict(source.columns)
    for columns, file, key in (
        (schema.ITEM_COLUMNS, source.items, "items"),
        (RAW_USER_COLUMNS, source.users, "users"),
    ):
        orphans = [
            c for c in columns if c not in schema.INTERACTION_COLUMNS and _explicit(mapping, c)
        ]
        if file is None and orphans:
            raise SourceError(
                f"ingest.table.columns maps {', '.join(orphans)}, but ingest.table.{key} "
                "names no file to read them from"
            )
    problems: Problems = {}
    notes: list[str] = []

    def load(
        path: Path,
        table: str,
        wanted: tuple[str, ...],
        required: tuple[str, ...],
        canon: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> tuple[pd.DataFrame, list[str]]:
        full = _resolve(path, base_dir)
        frame, absent = _select(read_frame(full), full, table, mapping, wanted, required)
        frame, blanked = blank_missing_values(frame, missing_values)
        for column, count in blanked.items():
            what = "rows are rejected" if column in ID_COLUMNS else "read as empty"
            notes.append(
                f"{table}.{column}: {count} cells hold a missing-value token "
                f"(ingest.missing_values): {what}"
            )
        frame = canon(frame)
        notes.extend(f"{table}.{c} not in the source ({ABSENT_MEANS[c]})" for c in absent)
        log.info("read %d %s rows from %s", len(frame), table, full)
        return frame, absent

    interactions, absent = load(
        source.interactions,
        INTERACTIONS,
        schema.INTERACTION_COLUMNS,
        (schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP),
        lambda df: canonical_interactions(df, problems),
    )
    has_ratings = schema.RATING not in absent
    if feedback == "explicit" and not has_ratings:
        raise SourceError(
            f"ingest.feedback is explicit, but {_resolve(source.interactions, base_dir)} "
            f"has no rating column ({mapping.get(schema.RATING, schema.RATING)!r})"
        )
    ratings_required = feedback == "explicit" or (feedback == "auto" and has_ratings)
    if has_ratings and not ratings_required:
        notes.append("interactions.rating: implicit feedback declared, blank ratings allowed")
    if source.items is not None:
        items, _ = load(
            source.items,
            ITEMS,
            schema.ITEM_COLUMNS,
            (schema.ITEM_ID,),
            lambda df: canonical_items(df, source.genre_separator, problems),
        )
    else:
        items = items_from_interactions(interactions)
        notes.append("no items file: each title is the item id, no years or genres")
    if source.users is not None:
        users, _ = load(
            source.users,
            USERS,
            RAW_USER_COLUMNS,
            (schema.USER_ID,),
            lambda df: canonical_users(df, problems, zip_width=zip_width, notes=notes),
        )
    else:
        users = users_from_interactions(interactions)
        notes.append(f"no users file: every profile field is {UNKNOWN}")
    return RawTables(
        interactions,
        items,
        users,
        origin=f"table:{source.interactions}",
        problems=problems,
        notes=tuple(notes),
        ratings_required=ratings_required,
    )


# ---- MovieLens-100K from the recbole wheel ---------------------------------------


def recbole_wheel(version: str, downloads: Path = PROJECT.downloads) -> Path:
    """The recbole wheel carrying ML-100K, downloaded once with pip (registries are reachable
    where the GroupLens archive is not; the licence forbids committing a copy)."""
    name = f"recbole-{version}-py3-none-any.whl"
    wheel = downloads / name
    if wheel.is_file():
        return wheel
    downloads.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        f"recbole=={version}",
        "-d",
        str(downloads),
    ]
    log.info("downloading recbole==%s (carries MovieLens-100K) into %s", version, downloads)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not wheel.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SourceError(f"could not download recbole=={version} with pip: {tail[0]}")
    return wheel


def _verified_member(archive: zipfile.ZipFile, kind: str, wheel: Path) -> bytes:
    member = RECBOLE_MEMBER.format(kind=kind)
    try:
        payload = archive.read(member)
    except KeyError as err:
        raise SourceError(f"{wheel.name} has no {member}") from err
    digest = hashlib.sha256(payload).hexdigest()
    if digest != MOVIELENS_SHA256[kind]:
        raise SourceError(
            f"{member} in {wheel} has SHA-256 {digest}, expected {MOVIELENS_SHA256[kind]}: "
            "this is not the MovieLens-100K copy the pipeline was checked against "
            "(delete the wheel to re-download, or pin recbole_version back to 1.2.1)"
        )
    return payload


def parse_atomic_file(payload: bytes, kind: str) -> pd.DataFrame:
    """A RecBole atomic file (tab-separated, `name:type` headers) with canonical names.

    Quoting is off because titles contain bare quotes; every cell stays text.
    """
    frame = pd.read_csv(
        io.BytesIO(payload),
        sep="\t",
        dtype=str,
        keep_default_na=False,
        na_values=[""],
        quoting=csv.QUOTE_NONE,
        encoding="utf-8",
    )
    frame.columns = [c.split(":", 1)[0] for c in frame.columns]
    return frame.rename(columns=MOVIELENS_COLUMNS[kind])


def read_movielens(version: str = "1.2.1", downloads: Path = PROJECT.downloads) -> RawTables:
    """MovieLens-100K (943 users, 1,682 items, 100,000 ratings), checksum-verified."""
    wheel = recbole_wheel(version, downloads)
    try:
        with zipfile.ZipFile(wheel) as archive:
            payloads = {kind: _verified_member(archive, kind, wheel) for kind in MOVIELENS_SHA256}
    except zipfile.BadZipFile as err:
        raise SourceError(
            f"{wheel} is not a valid wheel ({err}); delete it to re-download"
        ) from err
    frames = {kind: parse_atomic_file(payload, kind) for kind, payload in payloads.items()}
    problems: Problems = {}
    tables = RawTables(
        interactions=canonical_interactions(frames["inter"], problems),
        items=canonical_items(frames["item"], MOVIELENS_GENRE_SEPARATOR, problems),
        users=canonical_users(frames["user"], problems),
        origin=f"movielens-100k:{wheel.name}",
        problems=problems,
        ratings_required=True,
    )
    log.info("read MovieLens-100K from %s: %s", wheel, tables.counts())
    return tables
