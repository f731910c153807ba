"""How ids are ordered wherever order matters: numerically when every id is an integer."""

from __future__ import annotations

import pandas as pd

# at most 18 digits: any such integer fits int64, so the numeric order never overflows
_INTEGER_ID = r"\d{1,18}"


def id_sort_key(ids: pd.Series) -> pd.Series:
    """Integers compare as numbers ("9" < "10") when every id is one, else as strings."""
    text = ids.astype(str)
    return text.astype("int64") if text.str.fullmatch(_INTEGER_ID).all() else text
