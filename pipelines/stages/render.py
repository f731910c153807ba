"""Markdown tables for the stages' reports (leaderboards, fairness, cold start)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def cell(value: object) -> str:
    """None is a blank (nothing belongs there); a NaN float, a mean of nothing, is n/a."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub table; the first column is left-aligned, numbers right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
