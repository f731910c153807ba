"""Time features of an event sequence: the gap since the previous event, hour and weekday."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.core.schema import SEQ_GAPS, SEQ_HOURS, SEQ_WEEKDAYS

SECONDS_PER_DAY = 86_400


def time_features(timestamps: np.ndarray, max_gap_days: int) -> dict[str, np.ndarray]:
    """Gap since the previous event (s, clipped; 0 for the first), UTC hour and weekday."""
    gaps = np.diff(timestamps, prepend=timestamps[:1])
    gaps = np.clip(gaps, 0, max_gap_days * SECONDS_PER_DAY)
    moments = pd.to_datetime(timestamps, unit="s", utc=True)
    return {
        SEQ_GAPS: gaps.astype(np.int64),
        SEQ_HOURS: moments.hour.to_numpy(np.int64),
        SEQ_WEEKDAYS: moments.dayofweek.to_numpy(np.int64),  # Monday = 0
    }
