"""Stage `coldstart`: the new-item and new-user protocols of design.md §5 for chosen models.

Each model is fitted exactly as the train stage fits it (its resolved config,
tuned values included), on each protocol arm's own training events.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.core.config import ColdStartParams, Params
from pipelines.core.io import write_json, write_text
from pipelines.core.paths import PROJECT
from pipelines.evaluation.coldstart import FitInputs, run_protocols
from pipelines.features.dataset import load_dataset
from pipelines.models import Recommender
from pipelines.stages import cli
from pipelines.stages.render import markdown_table
from pipelines.training.fit import check_params, fit_or_reuse, read_tuned, resolve

READS = {
    "features": PROJECT.features_dir,
    "items": PROJECT.split_items,
    "embeddings": PROJECT.item_embeddings,
    "tuned": PROJECT.tune_best,
    "models": PROJECT.models_dir,
}
WRITES = {"out": PROJECT.coldstart_dir}


def coldstart_markdown(metrics: dict[str, Any], settings: ColdStartParams) -> str:
    """Two tables: new items (model vs warm ceiling, baselines) and new users per k."""
    models: dict[str, dict] = metrics["models"]
    first = next(iter(models.values()), None)
    ik, uk = settings.item_k, settings.user_k
    item_metrics = (f"recall@{ik}", f"ndcg@{ik}")
    arms = ["model", "warm_ceiling"]
    if first is not None and "warm_cross_fitted" in first["new_items"]:
        arms.append("warm_cross_fitted")
    header = [
        "model",
        *(
            f"{arm.replace('_', ' ')} {m}".removeprefix("model ")
            for arm in arms
            for m in item_metrics
        ),
    ]
    rows: list[Sequence[object]] = [
        [name, *(result["new_items"][arm][m] for arm in arms for m in item_metrics)]
        for name, result in models.items()
    ]
    if first is not None:
        blanks = [None] * (2 * len(arms) - 2)
        for arm, label in (
            ("random", "random (expected)"),
            ("index_order", "all tied (item index)"),
        ):
            rows.append([label, *(first["new_items"][arm][m] for m in item_metrics), *blanks])
    items_table = (
        f"### New items ({metrics['cold_items']} cold items, strict; ranked among cold items)\n\n"
        + markdown_table(header, rows)
    )
    shots = [str(s) for s in settings.shots]
    rows = [
        [
            name,
            *(result["new_users"]["shots"][s][f"ndcg@{uk}"] for s in shots),
            result["new_users"]["full_history"][f"ndcg@{uk}"],
        ]
        for name, result in models.items()
    ]
    if first is not None:
        for baseline, label in (
            ("popularity", "popularity (baseline)"),
            ("random", "random (expected)"),
        ):
            cells = [first["new_users"]["shots"][s][f"{baseline}_ndcg@{uk}"] for s in shots]
            rows.append([label, *cells, None])
    users_table = (
        f"### New users ({metrics['new_users']} held out): NDCG@{uk} after k events\n\n"
        + markdown_table(["model", *(f"k={s}" for s in shots), "full history"], rows)
    )
    return items_table + "\n" + users_table


def run(
    params: Params,
    features: Path,
    items: Path,
    embeddings: Path,
    tuned: Path,
    models: Path,
    out: Path,
) -> dict[str, Any]:
    check_params(params)
    dataset = load_dataset(features, items, embeddings)
    best = read_tuned(tuned)

    def fit(name: str, inputs: FitInputs) -> Recommender:
        spec = resolve(
            name, params.train, params.seed, inputs.train, best.get(name), k=params.evaluate.k
        )
        # the warm arm is the train stage's own fit: reused when configs and data match
        return fit_or_reuse(spec, inputs.train, inputs.valid, [models / name])[0]

    metrics = run_protocols(
        dataset.sequences,
        dataset.side,
        params.coldstart.models,
        fit,
        params.coldstart,
        params.seed,
    )
    table = coldstart_markdown(metrics, params.coldstart)
    write_json(metrics, out / PROJECT.coldstart_metrics.name)
    write_text(table, out / PROJECT.coldstart_md.name)
    print(table)
    return {"models": list(params.coldstart.models)}


def main(argv: list[str] | None = None) -> int:
    return cli.main("coldstart", __doc__, run, READS, WRITES, argv)


if __name__ == "__main__":
    sys.exit(main())
