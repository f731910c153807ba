"""The selection rule: the winner is the best model on a validation metric, nothing else.

Test numbers travel with the decision for reporting; they never take part in
choosing (design.md §4).
"""

from __future__ import annotations

from typing import Any

from pipelines.core.config import TooLittleData

Metrics = dict[str, dict[str, dict[str, float]]]  # model -> split -> metric -> value


def ranking(metrics: Metrics, metric: str) -> list[str]:
    """Models by validation ``metric``, best first; ties go to the first name alphabetically."""
    if not metrics:
        raise ValueError("no evaluated models to choose from")
    missing = [model for model, splits in metrics.items() if metric not in splits.get("valid", {})]
    if missing:
        raise ValueError(f"validation {metric} missing for: {', '.join(sorted(missing))}")
    return sorted(sorted(metrics), key=lambda model: -metrics[model]["valid"][metric])


def check_size(metrics: Metrics, min_users: int) -> None:
    """Refuse to crown a winner on fewer than ``min_users`` evaluated users: the numbers are
    reported (the evaluate leaderboard), but a difference on so few is noise."""
    counts = [
        int(split.get("users", 0)) for splits in metrics.values() for split in splits.values()
    ]
    if counts and min(counts) < min_users:
        raise TooLittleData(
            f"{min(counts)} users were evaluated, fewer than select.min_users = {min_users}: "
            "no winner is crowned on so few (one hit more or less moves NDCG@10 by more than "
            "the gap between models; the numbers are in the evaluate leaderboard). Bring "
            "more users, or lower select.min_users"
        )


def choose_winner(metrics: Metrics, metric: str) -> str:
    """The model with the best validation ``metric``."""
    return ranking(metrics, metric)[0]


def decision(metrics: Metrics, metric: str) -> dict[str, Any]:
    order = ranking(metrics, metric)
    winner = order[0]
    return {
        "winner": winner,
        "chosen_by": f"valid {metric}",
        "valid": metrics[winner]["valid"],
        "test": metrics[winner]["test"],
        "ranking": [{"model": m, f"valid {metric}": metrics[m]["valid"][metric]} for m in order],
    }


def leaderboard(metrics: Metrics, metric: str) -> list[dict[str, Any]]:
    """One row per model, best validation ``metric`` first, with its test numbers beside."""
    return [
        {
            "rank": position,
            "model": model,
            "valid": metrics[model]["valid"],
            "test": metrics[model]["test"],
        }
        for position, model in enumerate(ranking(metrics, metric), start=1)
    ]
