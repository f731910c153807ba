"""Stage `select`: pick the winner by validation metric only; report its test numbers.

Refuses (exit 2, nothing written) to crown a winner when fewer than `select.min_users`
users were evaluated.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pipelines.core.config import Params
from pipelines.core.io import write_json, write_text
from pipelines.core.paths import PROJECT
from pipelines.evaluation.selection import check_size, decision, leaderboard
from pipelines.stages import cli
from pipelines.stages.render import markdown_table

READS = {"metrics": PROJECT.eval_metrics, "tuned": PROJECT.tune_best}
WRITES = {"out": PROJECT.selection_dir}


def leaderboard_markdown(rows: list[dict], metric: str, tuned: dict[str, dict]) -> str:
    """The leaderboard as markdown; the first row is the winner."""
    k = metric.split("@")[1]
    names = [f"ndcg@{k}", f"hr@{k}", f"mrr@{k}", f"coverage@{k}"]
    header = ["rank", "model", f"valid {metric}", *(f"test {name}" for name in names), "tuned"]
    table = []
    for row in rows:
        trials = tuned.get(row["model"], {}).get("trials")
        table.append(
            [
                row["rank"],
                row["model"],
                row["valid"][metric],
                *(row["test"][name] for name in names),
                f"{trials} trials" if trials else "no",
            ]
        )
    return markdown_table(header, table)


def run(params: Params, metrics: Path, tuned: Path, out: Path) -> dict[str, Any]:
    metric = params.select.metric
    measured = json.loads(metrics.read_text())
    trials = json.loads(tuned.read_text()) if tuned.exists() else {}
    check_size(measured, params.select.min_users)
    chosen = decision(measured, metric)
    rows = leaderboard(measured, metric)
    write_json(rows, out / PROJECT.selection_leaderboard_json.name)
    write_text(
        leaderboard_markdown(rows, metric, trials), out / PROJECT.selection_leaderboard_md.name
    )
    write_json(chosen, out / PROJECT.selection.name)
    print(
        f"winner: {chosen['winner']} (valid {metric} = {chosen['valid'][metric]:.4f}; "
        f"test {metric} = {chosen['test'][metric]:.4f})"
    )
    return {"winner": chosen["winner"]}


def main(argv: list[str] | None = None) -> int:
    return cli.main("select", __doc__, run, READS, WRITES, argv)


if __name__ == "__main__":
    sys.exit(main())
