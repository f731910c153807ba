"""Privacy at the door (design.md §2): what leaves ingestion carries no raw identity.

User ids become keyed hashes (HMAC-SHA256), so the same person keeps the same
pseudonym across batches while nobody without the key can reverse or recompute
it; ages become bands and zip codes a short region prefix, so a profile can no
longer single out one person; free-text profile cells that look like contact
data are withheld. Everything here is a pure function of its inputs except the
key functions (`load_or_create_key` and the fingerprint helpers), which own the
one secret.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import os
import re
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pipelines.core import schema

KEY_ENV = "RECOPS_PSEUDONYM_KEY"
KEY_BYTES = 32
MIN_KEY_BYTES = 16
PSEUDONYM_PREFIX = "u_"
PSEUDONYM_HEX_CHARS = 16
PSEUDONYM_PATTERN = rf"^{PSEUDONYM_PREFIX}[0-9a-f]{{{PSEUDONYM_HEX_CHARS}}}$"
# every item id, and every user id a client sends (raw or pseudonym): 1-64 URL- and
# log-safe characters. One pattern for the data contract and the service alike.
ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
_PSEUDONYM = re.compile(PSEUDONYM_PATTERN)
UNKNOWN = schema.UNKNOWN

RAW_AGE = "age"
RAW_ZIP = "zip"

# free-text profile fields (gender, occupation) must be short category labels
SHORT_LABEL_MAX = 32
SHORT_LABEL_PATTERN = rf"^(?!.*\d{{5}})[A-Za-z][A-Za-z0-9 _.&'/+-]{{0,{SHORT_LABEL_MAX - 1}}}$"
# what contact data and identifiers look like: an e-mail address, a web address,
# five or more digits in a row (zip codes, account numbers), or seven or more digits
# with phone punctuation between them
_CONTACT_DATA = re.compile(r"\S@\S|https?://|www\.|\d{5,}|(?:\d[\s().+-]*){7,}", re.IGNORECASE)

# MovieLens-100K's user numbers are already anonymous, so pseudonymising them gives
# no secrecy; the public demo uses this fixed, published key so that every machine
# writes the same data/, data.dvc and dvc.lock (and trains on the same user order).
# Every other source keeps a secret key (the key file or $RECOPS_PSEUDONYM_KEY).
PUBLIC_DEMO_KEY = hashlib.sha256(b"recops public MovieLens-100K demo key, not a secret").digest()

FINGERPRINT_LABEL = b"recops pseudonym key fingerprint v1"
FINGERPRINT_CHARS = 16

log = logging.getLogger(__name__)


class PseudonymKeyError(ValueError):
    """The pseudonymisation key is unreadable, malformed or too short."""


def pseudonymise_id(user_id: str, key: bytes) -> str:
    """One pseudonym; truncating the MAC to 64 bits keeps ids short and collisions negligible."""
    digest = hmac.new(key, str(user_id).encode("utf-8"), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:PSEUDONYM_HEX_CHARS]


def is_pseudonym(value: object) -> bool:
    """True for an id that already is a pseudonym (what ``pseudonymise_id`` writes)."""
    return isinstance(value, str) and _PSEUDONYM.fullmatch(value) is not None


def pseudonymise(user_ids: pd.Series | Sequence[str], key: bytes) -> pd.Series:
    """Pseudonyms for many ids; missing ids stay missing so validation can reject them.

    An id that already is a pseudonym (a quarantine's accepted rows, ingested again) is
    kept as it is: hashing it again would give that person a second, unrelated pseudonym
    and orphan their history. Hashes each distinct id once, because logs repeat the same
    user thousands of times.
    """
    ids = user_ids if isinstance(user_ids, pd.Series) else pd.Series(list(user_ids), dtype=object)
    present = ids.notna()
    mapping = {
        uid: uid if is_pseudonym(uid) else pseudonymise_id(uid, key)
        for uid in pd.unique(ids[present])
    }
    pseudonyms = [mapping[v] if ok else None for v, ok in zip(ids, present, strict=True)]
    return pd.Series(pseudonyms, index=ids.index, dtype=object, name=ids.name)


def band_labels(bands: Sequence[int]) -> tuple[str, ...]:
    """Labels in band order, e.g. ("<18", "18-24", …, "56+"), so reports can list the valid set."""
    lows = list(bands)
    labels = [f"<{lows[0]}"]
    labels += [f"{lo}-{hi - 1}" for lo, hi in itertools.pairwise(lows)]
    labels.append(f"{lows[-1]}+")
    return tuple(labels)


def age_band(age: float | int | None, bands: Sequence[int]) -> str:
    """The band an age falls in; an absent or impossible age is "unknown", never a guess."""
    if age is None or pd.isna(age):
        return UNKNOWN
    try:
        value = float(age)
    except (TypeError, ValueError):
        return UNKNOWN
    if value < 0 or value > 130:
        return UNKNOWN
    labels = band_labels(bands)
    for i, low in enumerate(bands):
        if value < low:
            return labels[i]
    return labels[-1]


def age_bands(ages: pd.Series, bands: Sequence[int]) -> pd.Series:
    """`age_band` over a column, computed once per distinct age."""
    numeric = pd.to_numeric(ages, errors="coerce")
    mapping = {a: age_band(a, bands) for a in pd.unique(numeric.dropna())}
    return numeric.map(mapping).fillna(UNKNOWN).astype(object)


def region(zip_code: str | None, digits: int = 3) -> str:
    """Leading characters of a postal code, upper-cased (Canadian codes are alphanumeric).

    A code with anything but letters and digits in its prefix is "unknown" rather than
    passed through, since free text in that field could carry anything.
    """
    if zip_code is None or (not isinstance(zip_code, str) and pd.isna(zip_code)):
        return UNKNOWN
    if str(zip_code).strip().lower() == UNKNOWN:
        return UNKNOWN
    prefix = str(zip_code).strip().upper()[:digits]
    if not prefix or not prefix.isascii() or not prefix.isalnum():
        return UNKNOWN
    return prefix


def regions(zips: pd.Series, digits: int = 3) -> pd.Series:
    """`region` over a column, computed once per distinct code."""
    present = zips.notna()
    mapping = {z: region(z, digits) for z in pd.unique(zips[present])}
    return zips.map(mapping).where(present, UNKNOWN).astype(object)


def looks_like_contact_data(value: object) -> bool:
    """True for text that looks like an e-mail or web address, a phone number or an id."""
    return isinstance(value, str) and _CONTACT_DATA.search(value) is not None


def withhold_contact_data(
    users: pd.DataFrame, columns: Sequence[str] = (schema.GENDER, schema.OCCUPATION)
) -> tuple[pd.DataFrame, dict[str, list[int]]]:
    """Users whose free-text profile cells that look like contact data say "unknown" instead,
    and the row positions per column, so validation rejects those rows with a reason.

    The value itself is dropped here, so it reaches neither data/ nor quarantine/.
    """
    out = users.reset_index(drop=True).copy()
    found: dict[str, list[int]] = {}
    for column in columns:
        if column not in out.columns:
            continue
        hits = out[column].map(looks_like_contact_data).to_numpy(dtype=bool)
        if hits.any():
            out.loc[hits, column] = UNKNOWN
            found[column] = [int(i) for i in hits.nonzero()[0]]
    return out, found


def _key_from_hex(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise PseudonymKeyError(f"{where} is not a hex string") from None
    if len(key) < MIN_KEY_BYTES:
        raise PseudonymKeyError(
            f"{where} holds {len(key)} bytes; at least {MIN_KEY_BYTES} are needed"
        )
    return key


def _read_key_file(path: Path) -> bytes:
    if path.is_dir():
        raise PseudonymKeyError(f"{path} is a directory, not a key file")
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise PseudonymKeyError(f"cannot read the key file {path}: {type(err).__name__}") from err
    if mode & 0o077:
        log.warning(
            "the key file %s can be read by group or others (mode %o); run: chmod 600 %s",
            path,
            mode,
            path,
        )
    return _key_from_hex(text, str(path))


def key_source(path: Path) -> str:
    """Where the key comes from, for messages: the environment variable or the file."""
    return f"${KEY_ENV}" if os.environ.get(KEY_ENV) else str(path)


def key_exists(path: Path) -> bool:
    return bool(os.environ.get(KEY_ENV)) or Path(path).exists()


def load_or_create_key(path: Path, *, allow_create: bool = True) -> bytes:
    """The HMAC key: $RECOPS_PSEUDONYM_KEY (hex) if set, else the key file, created on first run.

    The file is created with mode 0600 in one step (O_EXCL), so the secret is never
    readable by others, and an existing key is never overwritten: losing it would
    give every user a new pseudonym and orphan their history. A key file that group
    or others can read is used, with a warning. Without `allow_create` a missing key
    is a `PseudonymKeyError` (the caller knows whether data already depends on it).
    """
    env = os.environ.get(KEY_ENV)
    if env:
        return _key_from_hex(env, f"${KEY_ENV}")
    path = Path(path)
    if path.exists():
        return _read_key_file(path)
    if not allow_create:
        raise PseudonymKeyError(f"the pseudonymisation key {path} does not exist")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex() + "\n")
    log.info("created a new pseudonymisation key in %s", path)
    return key


def key_fingerprint(key: bytes) -> str:
    """A short public tag of the key (a MAC of a fixed label): says which key, reveals nothing."""
    digest = hmac.new(key, FINGERPRINT_LABEL, hashlib.sha256).hexdigest()
    return digest[:FINGERPRINT_CHARS]


def read_fingerprint(path: Path) -> str | None:
    """The recorded fingerprint, or None when none was recorded yet."""
    path = Path(path)
    if not path.is_file():
        return None
    return path.read_text().strip() or None


def write_fingerprint(path: Path, key: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(key_fingerprint(key) + "\n")
    staging.replace(path)


def apply_privacy(
    users: pd.DataFrame,
    interactions: pd.DataFrame,
    key: bytes,
    bands: Sequence[int],
    digits: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Users with exactly schema.USER_COLUMNS and interactions with pseudonymised ids.

    Raw age and zip columns are dropped by construction (the output is built column
    by column, not by editing the input), so nothing identifying can slip through.
    """
    safe_users = pd.DataFrame(
        {
            schema.USER_ID: pseudonymise(users[schema.USER_ID], key),
            schema.AGE_BAND: age_bands(users[RAW_AGE], bands),
            schema.GENDER: users[schema.GENDER],
            schema.OCCUPATION: users[schema.OCCUPATION],
            schema.REGION: regions(users[RAW_ZIP], digits),
        },
        index=users.index,
    )[list(schema.USER_COLUMNS)]
    safe_interactions = interactions.copy()
    safe_interactions[schema.USER_ID] = pseudonymise(interactions[schema.USER_ID], key)
    return safe_users, safe_interactions
