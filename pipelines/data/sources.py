"""Source adapters: whatever the source, out come the canonical tables (design.md §2).

Adapters only reshape and type the data; they never drop or repair rows, so every
bad row reaches validation and is quarantined with a reason instead of vanishing.
A file that cannot be read as the declared format at all is a `SourceError`.

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
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import paths, schema
from pipelines.config import IngestParams, TableSource
from pipelines.data.privacy import RAW_AGE, RAW_ZIP, UNKNOWN

log = logging.getLogger(__name__)

RAW_USER_COLUMNS = (schema.USER_ID, RAW_AGE, schema.GENDER, schema.OCCUPATION, RAW_ZIP)
MAPPABLE_COLUMNS = frozenset(schema.INTERACTION_COLUMNS + schema.ITEM_COLUMNS + RAW_USER_COLUMNS)

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


class SourceError(RuntimeError):
    """The source cannot be read as declared: missing file, wrong checksum, missing column."""


@dataclass(frozen=True)
class RawTables:
    """The three canonical tables as read, before privacy and validation."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    origin: str

    def counts(self) -> dict[str, int]:
        return {
            "interactions": len(self.interactions),
            "items": len(self.items),
            "users": len(self.users),
        }


def read_source(
    params: IngestParams, downloads: Path = paths.DOWNLOADS, base_dir: Path = paths.ROOT
) -> RawTables:
    """The adapter named by `ingest.source`; relative table paths resolve against base_dir."""
    if params.source == "movielens":
        return read_movielens(params.movielens.recbole_version, downloads)
    return read_table_source(params.table, base_dir)


# ---- column coercion shared by every adapter ------------------------------------


def _as_id(values: pd.Series) -> pd.Series:
    """Ids as str; integral floats (a Parquet int column with nulls) lose their ".0"."""
    if pd.api.types.is_float_dtype(values):
        finite = values.dropna()
        if (finite == np.floor(finite)).all():
            values = values.astype("Int64")
    out = values.astype(object).where(values.notna(), None)
    text = out.map(lambda v: None if v is None else str(v).strip(), na_action="ignore")
    return text.where(text.notna() & (text != ""), None).astype(object)


def _as_text(values: pd.Series, default: str | None = None) -> pd.Series:
    text = _as_id(values)
    return text if default is None else text.where(text.notna(), default).astype(object)


def _unparseable(values: pd.Series, parsed: pd.Series) -> pd.Series:
    original = values.astype(object)
    blank = original.isna() | original.map(lambda v: isinstance(v, str) and not v.strip())
    return parsed.isna() & ~blank


def _fail_unparseable(table: str, column: str, values: pd.Series, bad: pd.Series) -> None:
    rows = list(values.index[bad][:5])
    samples = [repr(values[r]) for r in rows]
    raise SourceError(
        f"{table}.{column}: {int(bad.sum())} values are not numbers "
        f"(rows {rows}: {', '.join(samples)}); fix the file or the column mapping"
    )


def _as_float(values: pd.Series, table: str, column: str) -> pd.Series:
    parsed = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = _unparseable(values, parsed)
    if bad.any():
        _fail_unparseable(table, column, values, bad)
    return parsed


def _as_year(values: pd.Series) -> pd.Series:
    """Years as nullable ints; text such as "unknown" means no year, since year is only a
    description (MovieLens itself has "unkonwn" and "V" in this column)."""
    parsed = pd.to_numeric(values, errors="coerce").astype("float64")
    unreadable = int(_unparseable(values, parsed).sum())
    if unreadable:
        log.info("items.year: %d non-numeric values read as missing", unreadable)
    return np.floor(parsed).astype("Int64")


def _as_age(values: pd.Series) -> pd.Series:
    """Ages as nullable ints; an unreadable age becomes the "unknown" band later, not a crash."""
    return np.floor(pd.to_numeric(values, errors="coerce").astype("float64")).astype("Int64")


def _as_unix_seconds(values: pd.Series, table: str) -> pd.Series:
    """Unix seconds, or ISO date-times converted to them, so exports of either kind work.

    The column stays nullable (Int64) so a missing timestamp is one rejected row, not a crash.
    """
    seconds = pd.to_numeric(values, errors="coerce").astype("float64")
    textual = _unparseable(values, seconds)
    if textual.any():
        stamps = pd.to_datetime(values[textual], errors="coerce", utc=True, format="ISO8601")
        seconds[textual] = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    bad = _unparseable(values, seconds)
    if bad.any():
        rows = list(values.index[bad][:5])
        raise SourceError(
            f"{table}.{schema.TIMESTAMP}: {int(bad.sum())} values are neither Unix seconds nor "
            f"ISO date-times (rows {rows}: {', '.join(repr(values[r]) for r in rows)})"
        )
    return np.floor(seconds).astype("Int64")


def _as_genres(values: pd.Series, separator: str) -> pd.Series:
    """Genres as list[str]; a string is split on the separator, a list (Parquet) kept."""

    def parse(value: object) -> list[str]:
        if value is None or (np.isscalar(value) and pd.isna(value)):
            return []
        if isinstance(value, str):
            parts = value.split(separator) if separator != " " else value.split()
            return [p.strip() for p in parts if p.strip()]
        return [str(v).strip() for v in value if v is not None and str(v).strip()]

    return values.astype(object).map(parse).astype(object)


def _column(df: pd.DataFrame, name: str) -> pd.Series | None:
    return df[name] if name in df.columns else None


def canonical_interactions(df: pd.DataFrame) -> pd.DataFrame:
    """Interactions with the canonical columns and dtypes; rating may be absent (implicit)."""
    _require(df, "interactions", (schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP))
    rating = _column(df, schema.RATING)
    return pd.DataFrame(
        {
            schema.USER_ID: _as_id(df[schema.USER_ID]),
            schema.ITEM_ID: _as_id(df[schema.ITEM_ID]),
            schema.RATING: (
                _as_float(rating, "interactions", schema.RATING)
                if rating is not None
                else pd.Series(np.nan, index=df.index, dtype="float64")
            ),
            schema.TIMESTAMP: _as_unix_seconds(df[schema.TIMESTAMP], "interactions"),
        }
    ).reset_index(drop=True)


def canonical_items(df: pd.DataFrame, genre_separator: str) -> pd.DataFrame:
    """Items with canonical dtypes; a missing title falls back to the id, which is honest text."""
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
                _as_year(year)
                if year is not None
                else pd.Series(pd.NA, index=df.index, dtype="Int64")
            ),
            schema.GENRES: (
                _as_genres(genres, genre_separator)
                if genres is not None
                else pd.Series([[] for _ in range(len(df))], index=df.index, dtype=object)
            ),
        }
    ).reset_index(drop=True)


def canonical_users(df: pd.DataFrame) -> pd.DataFrame:
    """Raw users with canonical dtypes; unknown profile fields say "unknown", never a guess."""
    _require(df, "users", (schema.USER_ID,))
    unknown = pd.Series(UNKNOWN, index=df.index, dtype=object)
    age = _column(df, RAW_AGE)
    zip_code = _column(df, RAW_ZIP)

    def text(name: str) -> pd.Series:
        col = _column(df, name)
        return unknown if col is None else _as_text(col, UNKNOWN)

    return pd.DataFrame(
        {
            schema.USER_ID: _as_id(df[schema.USER_ID]),
            RAW_AGE: (
                _as_age(age) if age is not None else pd.Series(pd.NA, index=df.index, dtype="Int64")
            ),
            schema.GENDER: text(schema.GENDER),
            schema.OCCUPATION: text(schema.OCCUPATION),
            RAW_ZIP: unknown if zip_code is None else _as_text(zip_code),
        }
    ).reset_index(drop=True)


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
            f"{table} table lacks required column(s) {missing}; it has {list(df.columns)}"
        )


# ---- generic CSV / Parquet tables ------------------------------------------------


def read_frame(path: Path) -> pd.DataFrame:
    """A CSV/TSV or Parquet file as read; CSV cells stay text so ids keep leading zeros."""
    if not path.is_file():
        raise SourceError(f"{path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        if suffix in {".csv", ".tsv"}:
            return pd.read_csv(
                path,
                sep="\t" if suffix == ".tsv" else ",",
                dtype=str,
                keep_default_na=False,
                na_values=[""],
            )
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise SourceError(f"cannot read {path}: {err}") from err
    raise SourceError(f"{path}: unsupported file type {suffix!r} (use .csv, .tsv or .parquet)")


def _rename(df: pd.DataFrame, mapping: dict[str, str], wanted: tuple[str, ...]) -> pd.DataFrame:
    """Source columns renamed to canonical names; unmapped canonical names map to themselves."""
    renames = {mapping.get(c, c): c for c in wanted if mapping.get(c, c) in df.columns}
    return df[list(renames)].rename(columns=renames)


def _resolve(path: Path, base_dir: Path) -> Path:
    return path if path.is_absolute() else base_dir / path


def read_table_source(source: TableSource, base_dir: Path = paths.ROOT) -> RawTables:
    """Your own logs: files named in `ingest.table`, columns renamed by `ingest.table.columns`."""
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

    def load(
        path: Path,
        table: str,
        wanted: tuple[str, ...],
        required: tuple[str, ...],
        canon: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> pd.DataFrame:
        full = _resolve(path, base_dir)
        raw = read_frame(full)
        missing = [c for c in required if mapping.get(c, c) not in raw.columns]
        if missing:
            named = ", ".join(f"{mapping.get(c, c)!r} (for {c})" for c in missing)
            raise SourceError(
                f"{full}: {table} file lacks column {named}; it has {list(raw.columns)}"
            )
        frame = canon(_rename(raw, mapping, wanted))
        log.info("read %d %s rows from %s", len(frame), table, full)
        return frame

    interactions = load(
        source.interactions,
        "interactions",
        schema.INTERACTION_COLUMNS,
        (schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP),
        canonical_interactions,
    )
    items = (
        load(
            source.items,
            "items",
            schema.ITEM_COLUMNS,
            (schema.ITEM_ID,),
            lambda df: canonical_items(df, source.genre_separator),
        )
        if source.items is not None
        else items_from_interactions(interactions)
    )
    users = (
        load(source.users, "users", RAW_USER_COLUMNS, (schema.USER_ID,), canonical_users)
        if source.users is not None
        else users_from_interactions(interactions)
    )
    return RawTables(interactions, items, users, origin=f"table:{source.interactions}")


# ---- MovieLens-100K from the recbole wheel ---------------------------------------


def recbole_wheel(version: str, downloads: Path = paths.DOWNLOADS) -> Path:
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


def read_movielens(version: str = "1.2.1", downloads: Path = paths.DOWNLOADS) -> RawTables:
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
    tables = RawTables(
        interactions=canonical_interactions(frames["inter"]),
        items=canonical_items(frames["item"], MOVIELENS_GENRE_SEPARATOR),
        users=canonical_users(frames["user"]),
        origin=f"movielens-100k:{wheel.name}",
    )
    log.info("read MovieLens-100K from %s: %s", wheel, tables.counts())
    return tables
