"""The selection rule: the winner is the best model on a validation metric, nothing else.

Test numbers travel with the decision for reporting; they never take part in
choosing (design.md §4).
"""

from __future__ import annotations

from typing import Any

Metrics = dict[str, dict[str, dict[str, float]]]  # model -> split -> metric -> value


def ranking(metrics: Metrics, metric: str) -> list[str]:
    """Models by validation ``metric``, best first; ties go to the first name alphabetically."""
    if not metrics:
        raise ValueError("no evaluated models to choose from")
    missing = [model for model, splits in metrics.items() if metric not in splits.get("valid", {})]
    if missing:
        raise ValueError(f"validation {metric} missing for: {', '.join(sorted(missing))}")
    return sorted(sorted(metrics), key=lambda model: -metrics[model]["valid"][metric])


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
