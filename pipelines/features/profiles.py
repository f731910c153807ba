"""User profiles as integer codes a model can embed: 0 is "unknown" in every field."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.core.schema import PROFILE_COLUMNS, UNKNOWN, USER_IDX


def profile_vocabulary(users: pd.DataFrame) -> dict[str, list[str]]:
    """Per profile field, the known values; position + 1 is the code, 0 is unknown."""
    return {
        column: sorted(v for v in users[column].dropna().astype(str).unique() if v != UNKNOWN)
        for column in PROFILE_COLUMNS
    }


def encode_profiles(users: pd.DataFrame, vocabulary: dict[str, list[str]]) -> pd.DataFrame:
    """Profile fields as they are plus integer codes ``<field>_code`` for models."""
    encoded = users[[USER_IDX, *PROFILE_COLUMNS]].copy()
    for column in PROFILE_COLUMNS:
        codes = {value: position + 1 for position, value in enumerate(vocabulary[column])}
        encoded[f"{column}_code"] = (
            users[column].astype("string").map(codes).fillna(0).astype(np.int64)
        )
    return encoded


def profile_codes(profiles: pd.DataFrame) -> np.ndarray:
    """``[n_users, 4]`` integer codes (age band, gender, occupation, region), 0 = unknown."""
    return profiles[[f"{column}_code" for column in PROFILE_COLUMNS]].to_numpy(np.int64)


def profile_sizes(vocabulary: dict[str, list[str]]) -> tuple[int, ...]:
    """Codes per field in PROFILE_COLUMNS order, unknown (0) included."""
    return tuple(len(vocabulary[column]) + 1 for column in PROFILE_COLUMNS)
