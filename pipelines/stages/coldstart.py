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


NOT_MEASURED = "n/a"  # a cell of too few users (coldstart.min_users), or not applicable


def _shown(value: object) -> object:
    return NOT_MEASURED if value is None else value


def coldstart_markdown(metrics: dict[str, Any], settings: ColdStartParams) -> str:
    """Two tables: new items (model vs warm ceiling, baselines) and new users per k.

    A cell measured on fewer than ``coldstart.min_users`` users, or not applicable, says
    n/a; a note under the table says why."""
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
        [name, *(_shown(result["new_items"][arm][m]) for arm in arms for m in item_metrics)]
        for name, result in models.items()
    ]
    if first is not None:
        blanks = [None] * (2 * len(arms) - 2)
        for arm, label in (
            ("random", "random (expected)"),
            ("index_order", "all tied (item index)"),
        ):
            cells = (_shown(first["new_items"][arm][m]) for m in item_metrics)
            rows.append([label, *cells, *blanks])
    items_table = (
        f"### New items ({metrics['cold_items']} cold items, strict; ranked among cold items)\n\n"
        + markdown_table(header, rows)
    )
    affected = None if first is None else first["new_items"]["users"]
    if affected is not None and affected < settings.min_users:
        items_table += (
            f"\nn/a: {affected} users have a cold-item event, fewer than coldstart.min_users "
            f"= {settings.min_users}\n"
        )
    shots = [str(s) for s in settings.shots]
    rows = [
        [
            name,
            *(_shown(result["new_users"]["shots"][s][f"ndcg@{uk}"]) for s in shots),
            _shown(result["new_users"]["full_history"][f"ndcg@{uk}"]),
        ]
        for name, result in models.items()
    ]
    notes: list[str] = []
    if first is not None:
        for baseline, label in (
            ("popularity", "popularity (baseline)"),
            ("random", "random (expected)"),
        ):
            cells = [_shown(first["new_users"]["shots"][s][f"{baseline}_ndcg@{uk}"]) for s in shots]
            rows.append([label, *cells, None])
        cells_by_shot = first["new_users"]["shots"]
        few = [s for s in shots if cells_by_shot[s]["users"] < settings.min_users]
        if few:
            counts = ", ".join(f"k={s}: {cells_by_shot[s]['users']}" for s in few)
            notes.append(
                f"n/a: too few users to measure ({counts}; coldstart.min_users = "
                f"{settings.min_users})"
            )
        reason = next(
            (c["not_applicable"] for c in cells_by_shot.values() if "not_applicable" in c), None
        )
        if reason is not None:
            notes.append(f"k=0 {reason}")
    users_table = (
        f"### New users ({metrics['new_users']} held out): NDCG@{uk} after k events\n\n"
        + markdown_table(["model", *(f"k={s}" for s in shots), "full history"], rows)
    )
    users_table += "".join(f"\n{note}\n" for note in notes)
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
            name,
            params.train,
            params.seed,
            inputs.train,
            best.get(name),
            k=params.evaluate.k,
            mask_history=params.evaluate.mask_history,
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
        mask_history=params.evaluate.mask_history,
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
