"""Privacy at the door: pseudonyms, age bands, regions and the key's life cycle."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import stat

import numpy as np
import pandas as pd
import pytest

from pipelines.core import schema
from pipelines.data.privacy import (
    KEY_ENV,
    MIN_KEY_BYTES,
    PSEUDONYM_PATTERN,
    UNKNOWN,
    PseudonymKeyError,
    age_band,
    age_bands,
    apply_privacy,
    band_labels,
    key_exists,
    key_fingerprint,
    key_source,
    load_or_create_key,
    looks_like_contact_data,
    pseudonymise,
    pseudonymise_id,
    read_fingerprint,
    region,
    regions,
    withhold_contact_data,
    write_fingerprint,
)
from pipelines.features.profiles import encode_profiles, profile_vocabulary

BANDS = (18, 25, 35, 45, 50, 56)
KEY_A = b"a" * 32
KEY_B = b"b" * 32


def test_pseudonym_is_truncated_hmac_sha256() -> None:
    expected = "u_" + hmac.new(KEY_A, b"196", hashlib.sha256).hexdigest()[:16]
    assert pseudonymise_id("196", KEY_A) == expected
    assert re.fullmatch(PSEUDONYM_PATTERN, expected)


def test_pseudonyms_are_stable_per_key_and_differ_across_keys() -> None:
    ids = pd.Series(["1", "2", "1", "943"])
    first, again = pseudonymise(ids, KEY_A), pseudonymise(ids, KEY_A)
    other = pseudonymise(ids, KEY_B)
    assert first.tolist() == again.tolist()
    assert first[0] == first[2] and first[0] != first[1]
    assert not set(first) & set(other)
    assert all(re.fullmatch(PSEUDONYM_PATTERN, p) for p in first)


def test_missing_ids_stay_missing_so_validation_can_reject_them() -> None:
    out = pseudonymise(pd.Series(["1", None]), KEY_A)
    assert out[0].startswith("u_") and out[1] is None


def test_plain_sequences_are_accepted() -> None:
    assert pseudonymise(["7"], KEY_A).tolist() == [pseudonymise_id("7", KEY_A)]


def test_band_labels() -> None:
    assert band_labels(BANDS) == ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")


@pytest.mark.parametrize(
    ("age", "band"),
    [
        (7, "<18"),
        (17, "<18"),
        (18, "18-24"),
        (24, "18-24"),
        (25, "25-34"),
        (49, "45-49"),
        (50, "50-55"),
        (55, "50-55"),
        (56, "56+"),
        (73, "56+"),
        (None, "unknown"),
        (float("nan"), "unknown"),
        (-1, "unknown"),
        (200, "unknown"),
        ("x", "unknown"),
    ],
)
def test_age_band(age: object, band: str) -> None:
    assert age_band(age, BANDS) == band


def test_age_bands_column() -> None:
    ages = pd.Series(pd.array([24, None, 60], dtype="Int64"))
    assert age_bands(ages, BANDS).tolist() == ["18-24", "unknown", "56+"]


@pytest.mark.parametrize(
    ("zip_code", "digits", "expected"),
    [
        ("85711", 3, "857"),
        ("02139", 3, "021"),
        ("T8H1N", 3, "T8H"),
        ("v3n4p", 3, "V3N"),
        (" L9G2B ", 3, "L9G"),
        ("85711", 1, "8"),
        ("", 3, "unknown"),
        (None, 3, "unknown"),
        ("?!x", 3, "unknown"),
        ("unknown", 3, "unknown"),
        ("Unknown", 3, "unknown"),
        ("ab-12", 3, "unknown"),
    ],
)
def test_region_keeps_a_prefix_upper_cased(zip_code: str | None, digits: int, expected: str):
    assert region(zip_code, digits) == expected


def test_key_is_created_once_with_mode_0600(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    path = tmp_path / ".secrets" / "pseudonym.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key


def test_env_var_overrides_the_key_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, "cd" * 32)
    path = tmp_path / "pseudonym.key"
    assert load_or_create_key(path) == bytes.fromhex("cd" * 32)
    assert not path.exists()


@pytest.mark.parametrize("bad", ["not-hex", "abcd"])
def test_malformed_keys_are_refused(tmp_path, monkeypatch, bad: str) -> None:
    monkeypatch.setenv(KEY_ENV, bad)
    with pytest.raises(PseudonymKeyError):
        load_or_create_key(tmp_path / "k")


def test_apply_privacy_leaves_no_raw_identity() -> None:
    users = pd.DataFrame(
        {
            "user_id": ["1", "2"],
            "age": pd.array([24, 61], dtype="Int64"),
            "gender": ["M", "F"],
            "occupation": ["writer", "other"],
            "zip": ["85711", "T8H1N"],
        }
    )
    interactions = pd.DataFrame(
        {
            "user_id": ["2", "1", "2"],
            "item_id": ["5", "6", "7"],
            "rating": [1.0, 2.0, 3.0],
            "timestamp": [900_000_000] * 3,
        }
    )
    safe_users, safe_events = apply_privacy(users, interactions, KEY_A, BANDS, 3)
    assert tuple(safe_users.columns) == schema.USER_COLUMNS
    assert safe_users[schema.REGION].tolist() == ["857", "T8H"]
    assert safe_users[schema.AGE_BAND].tolist() == ["18-24", "56+"]
    assert not set(safe_users[schema.USER_ID]) & {"1", "2"}
    assert set(safe_events[schema.USER_ID]) == set(safe_users[schema.USER_ID])
    assert safe_events[schema.USER_ID][0] == safe_users[schema.USER_ID][1]
    assert interactions["user_id"].tolist() == ["2", "1", "2"], "input must not be modified"


@pytest.mark.parametrize(
    ("value", "contact"),
    [
        ("writer", False),
        ("M", False),
        ("unknown", False),
        ("K-12 teacher", False),
        ("jane@example.com", True),
        ("4155550123", True),
        ("+1 (415) 555-0123", True),
        ("12345", True),
        ("see www.example.org", True),
    ],
)
def test_contact_data_is_recognised(value: str, contact: bool) -> None:
    assert looks_like_contact_data(value) is contact


def test_contact_data_is_withheld_and_its_rows_reported() -> None:
    users = pd.DataFrame(
        {
            "user_id": ["1", "2", "3"],
            "gender": ["F", "0123456789", "M"],
            "occupation": ["writer", "other", "me@example.com"],
        },
        index=[10, 11, 12],
    )
    safe, found = withhold_contact_data(users)
    assert found == {"gender": [1], "occupation": [2]}
    assert safe["gender"].tolist() == ["F", "unknown", "M"]
    assert safe["occupation"].tolist() == ["writer", "other", "unknown"]
    assert users["gender"][11] == "0123456789", "input must not be modified"


def test_a_missing_key_is_created_only_when_allowed(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    path = tmp_path / "k"
    with pytest.raises(PseudonymKeyError, match="does not exist"):
        load_or_create_key(path, allow_create=False)
    assert not path.exists()
    key = load_or_create_key(path)
    assert load_or_create_key(path, allow_create=False) == key


def test_a_key_readable_by_others_warns_and_a_directory_is_refused(
    tmp_path, monkeypatch, caplog
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    path = tmp_path / "k"
    path.write_text("ab" * 32)
    path.chmod(0o640)
    assert load_or_create_key(path) == bytes.fromhex("ab" * 32)
    assert "chmod 600" in caplog.text and "ab" * 32 not in caplog.text
    (tmp_path / "dir").mkdir()
    with pytest.raises(PseudonymKeyError, match="is a directory"):
        load_or_create_key(tmp_path / "dir")


def test_fingerprints_tell_keys_apart_and_do_not_reveal_them() -> None:
    assert key_fingerprint(KEY_A) == key_fingerprint(KEY_A) != key_fingerprint(KEY_B)
    assert KEY_A.hex()[:16] not in key_fingerprint(KEY_A)


def test_the_shortest_accepted_key_is_min_key_bytes(tmp_path, monkeypatch) -> None:
    # exactly 16 bytes pass; one byte fewer is refused, with the count in the message
    monkeypatch.setenv(KEY_ENV, "ab" * MIN_KEY_BYTES)
    assert load_or_create_key(tmp_path / "k") == bytes.fromhex("ab" * MIN_KEY_BYTES)
    monkeypatch.setenv(KEY_ENV, "ab" * (MIN_KEY_BYTES - 1))
    with pytest.raises(PseudonymKeyError, match=f"holds {MIN_KEY_BYTES - 1} bytes"):
        load_or_create_key(tmp_path / "k")
    monkeypatch.delenv(KEY_ENV)
    short = tmp_path / "short.key"
    short.write_text("ab" * (MIN_KEY_BYTES - 1) + "\n")
    with pytest.raises(PseudonymKeyError, match=f"at least {MIN_KEY_BYTES}"):
        load_or_create_key(short)


def test_users_without_a_zip_share_the_one_unknown_region() -> None:
    # a missing, blank or "unknown" zip is one region, "unknown", which the models encode
    # as code 0 like any unseen region: never a region of its own ("nan", "", "NON")
    users = pd.DataFrame(
        {
            "user_id": [str(u) for u in range(6)],
            "age": [30] * 6,
            "gender": ["F"] * 6,
            "occupation": ["writer"] * 6,
            "zip": ["85711", None, np.nan, "", "   ", "Unknown"],
        }
    )
    safe, _ = apply_privacy(users, users[["user_id"]], KEY_A, BANDS, 3)
    assert safe[schema.REGION].tolist() == ["857", *[UNKNOWN] * 5]
    assert regions(users["zip"]).tolist() == safe[schema.REGION].tolist()
    vocabulary = profile_vocabulary(safe)
    assert vocabulary[schema.REGION] == ["857"]
    codes = encode_profiles(safe.assign(user_idx=range(6)), vocabulary)["region_code"]
    assert codes.tolist() == [1, 0, 0, 0, 0, 0]


def test_the_age_band_edges_are_inclusive_at_the_low_end() -> None:
    # 0 and 130 are the extreme ages kept; just outside them is "unknown", not a band
    assert age_band(0, BANDS) == "<18" and age_band(130, BANDS) == "56+"
    assert age_band(-0.5, BANDS) == age_band(130.5, BANDS) == UNKNOWN
    assert age_band(17.9, BANDS) == "<18" and age_band("18", BANDS) == "18-24"


def test_pseudonymise_keeps_the_index_and_name_and_reads_ids_as_text() -> None:
    ids = pd.Series(["7", None], index=[10, 11], name="user_id")
    out = pseudonymise(ids, KEY_A)
    assert out.index.tolist() == [10, 11] and out.name == "user_id" and out.dtype == object
    # a plain list with a gap must not turn 7 into 7.0 (a float column) before hashing
    assert pseudonymise([7, None], KEY_A).tolist() == [pseudonymise_id("7", KEY_A), None]


def test_unreadable_ages_and_regions_become_unknown() -> None:
    ages = pd.Series(["24", "x", None, 61])
    assert age_bands(ages, BANDS).tolist() == ["18-24", UNKNOWN, UNKNOWN, "56+"]
    assert region("85711") == "857"  # three characters unless told otherwise
    assert region(float("nan")) == region(pd.NA) == UNKNOWN  # not "NAN"
    assert region(85711) == "857"  # a zip code read as a number
    assert region("Ä1234") == region("１２３45") == UNKNOWN  # letters or digits, but not ASCII
    assert regions(pd.Series(["85711", "T8H1N", None]), 1).tolist() == ["8", "T", UNKNOWN]
    users = pd.DataFrame(
        {"user_id": ["1"], "age": [30], "gender": ["F"], "occupation": ["x"], "zip": ["85711"]}
    )
    safe, _ = apply_privacy(users, users[["user_id"]], KEY_A, BANDS, 2)
    assert safe[schema.REGION].tolist() == ["85"]


def test_withholding_renumbers_rows_and_skips_absent_columns() -> None:
    users = pd.DataFrame(
        {"user_id": ["1", "2"], "occupation": ["writer", "me@example.com"]}, index=[5, 9]
    )
    safe, found = withhold_contact_data(users)  # no gender column: occupation still checked
    assert found == {"occupation": [1]}
    assert list(safe.columns) == ["user_id", "occupation"] and safe.index.tolist() == [0, 1]
    assert safe["occupation"].tolist() == ["writer", UNKNOWN]


def test_key_errors_name_where_the_key_came_from(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, "not-hex")
    with pytest.raises(PseudonymKeyError, match=r"^\$RECOPS_PSEUDONYM_KEY is not a hex string$"):
        load_or_create_key(tmp_path / "k")
    monkeypatch.delenv(KEY_ENV)
    short = tmp_path / "short.key"
    short.write_text("abcd")
    short.chmod(0o600)
    with pytest.raises(PseudonymKeyError, match=rf"^{re.escape(str(short))} holds 2 bytes"):
        load_or_create_key(short)
    binary = tmp_path / "binary.key"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(
        PseudonymKeyError,
        match=rf"^cannot read the key file {re.escape(str(binary))}: UnicodeDecodeError$",
    ):
        load_or_create_key(binary)


def test_key_file_warnings_name_the_file_and_its_mode(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    private, shared = tmp_path / "private.key", tmp_path / "shared.key"
    for path, mode in ((private, 0o600), (shared, 0o640)):
        path.write_text("ab" * 32)
        path.chmod(mode)
    with caplog.at_level(logging.INFO, logger="pipelines.data.privacy"):
        load_or_create_key(private)
        assert not caplog.records  # a private key file is used silently
        load_or_create_key(shared)
    assert [r.getMessage() for r in caplog.records] == [
        f"the key file {shared} can be read by group or others (mode 640); run: chmod 600 {shared}"
    ]


def test_a_new_key_gets_a_private_folder_at_any_depth(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    path = tmp_path / "deep" / ".secrets" / "pseudonym.key"
    with caplog.at_level(logging.INFO, logger="pipelines.data.privacy"):
        key = load_or_create_key(path)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text() == key.hex() + "\n" and len(key) == 32
    assert [r.getMessage() for r in caplog.records] == [
        f"created a new pseudonymisation key in {path}"
    ]


def test_key_source_and_existence_follow_the_environment_first(tmp_path, monkeypatch) -> None:
    path = tmp_path / "k"
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert key_source(path) == str(path) and key_exists(path) is False
    path.write_text("ab" * 32)
    assert key_exists(path) is True
    monkeypatch.setenv(KEY_ENV, "cd" * 32)
    assert key_source(path) == "$RECOPS_PSEUDONYM_KEY"
    assert key_exists(tmp_path / "missing") is True


def test_fingerprint_is_a_mac_of_a_fixed_label_and_round_trips(tmp_path) -> None:
    label = b"recops pseudonym key fingerprint v1"
    assert key_fingerprint(KEY_A) == hmac.new(KEY_A, label, hashlib.sha256).hexdigest()[:16]
    path = tmp_path / "deep" / ".secrets" / "data.key-fingerprint"
    assert read_fingerprint(path) is None  # nothing recorded yet
    write_fingerprint(path, KEY_A)
    assert path.read_text() == key_fingerprint(KEY_A) + "\n"
    assert read_fingerprint(path) == key_fingerprint(KEY_A)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no staging file left
    write_fingerprint(path, KEY_B)  # replaces the record
    assert read_fingerprint(path) == key_fingerprint(KEY_B)
    path.write_text("\n")
    assert read_fingerprint(path) is None  # an empty record is no record
