"""DVC stage `select`: pick the winner by validation metric only; report its test numbers.

Test numbers are copied into the decision for reporting; they never take
part in choosing (design.md §4).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipelines import paths
from pipelines.config import load_params
from pipelines.io import write_json, write_text

log = logging.getLogger(__name__)


def choose_winner(metrics: dict[str, dict[str, dict[str, float]]], metric: str) -> str:
    """The model with the best validation ``metric``; ties go to the first name alphabetically."""
    if not metrics:
        raise ValueError("no evaluated models to choose from")
    missing = [model for model, splits in metrics.items() if metric not in splits.get("valid", {})]
    if missing:
        raise ValueError(f"validation {metric} missing for: {', '.join(sorted(missing))}")
    return min(sorted(metrics), key=lambda model: -metrics[model]["valid"][metric])


def decision(metrics: dict[str, dict[str, dict[str, float]]], metric: str) -> dict:
    winner = choose_winner(metrics, metric)
    ranking = sorted(metrics, key=lambda model: -metrics[model]["valid"][metric])
    return {
        "winner": winner,
        "chosen_by": f"valid {metric}",
        "valid": metrics[winner]["valid"],
        "test": metrics[winner]["test"],
        "ranking": [{"model": m, f"valid {metric}": metrics[m]["valid"][metric]} for m in ranking],
    }


def leaderboard(metrics: dict[str, dict[str, dict[str, float]]], metric: str) -> list[dict]:
    """One row per model, best validation ``metric`` first, with its test numbers beside."""
    ranking = sorted(metrics, key=lambda model: -metrics[model]["valid"][metric])
    return [
        {
            "rank": position,
            "model": model,
            "valid": metrics[model]["valid"],
            "test": metrics[model]["test"],
        }
        for position, model in enumerate(ranking, start=1)
    ]


def leaderboard_markdown(rows: list[dict], metric: str, tuned: dict[str, dict]) -> str:
    """The leaderboard as markdown; the first row is the winner."""
    k = metric.split("@")[1]
    names = [f"ndcg@{k}", f"hr@{k}", f"mrr@{k}", f"coverage@{k}"]
    header = ["rank", "model", f"valid {metric}", *(f"test {name}" for name in names), "tuned"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        trials = tuned.get(row["model"], {}).get("trials")
        cells = [str(row["rank"]), row["model"], f"{row['valid'][metric]:.4f}"]
        cells += [f"{row['test'][name]:.4f}" for name in names]
        cells.append(f"{trials} trials" if trials else "no")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=Path, default=paths.EVAL_METRICS)
    parser.add_argument("--tuned", type=Path, default=paths.TUNE_BEST)
    parser.add_argument("--out", type=Path, default=paths.SELECTION_DIR)
    parser.add_argument("--params", type=Path, default=paths.PARAMS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    metric = load_params(args.params).select.metric

    metrics = json.loads(args.metrics.read_text())
    tuned = json.loads(args.tuned.read_text()) if args.tuned.exists() else {}
    chosen = decision(metrics, metric)
    rows = leaderboard(metrics, metric)
    write_json(rows, args.out / paths.SELECTION_LEADERBOARD_JSON.name)
    write_text(
        leaderboard_markdown(rows, metric, tuned), args.out / paths.SELECTION_LEADERBOARD_MD.name
    )
    write_json(chosen, args.out / paths.SELECTION.name)
    print(
        f"winner: {chosen['winner']} (valid {metric} = {chosen['valid'][metric]:.4f}; "
        f"test {metric} = {chosen['test'][metric]:.4f})"
    )


if __name__ == "__main__":
    main()
