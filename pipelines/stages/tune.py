"""Stage `tune`: an Optuna study per model with a trial budget, chosen on validation NDCG.

Writes the best trial per model (``best.json``, read by `train`), every trial's
value and the best so far as a DVC plot, one series per model (``history/<model>.csv``),
and an optimisation-history page per model.
The studies themselves (SQLite) live under ``.cache/tune/`` keyed by what they
depend on, so a killed run resumes; they are not copied into the output, whose
files must be the same on every run (the databases hold trial wall-clock times).
The best trial's fitted model is kept in ``fitted/<model>/``: the train stage
reuses it rather than fitting the same configs on the same data again.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import optuna

from pipelines.core.config import Params
from pipelines.core.io import replaced_dir, write_json, write_text
from pipelines.core.paths import PROJECT
from pipelines.features.dataset import load_dataset, train_data, validation
from pipelines.stages import cli
from pipelines.training.fit import check_params
from pipelines.training.tuning import (
    best_fit_keeper,
    file_digest,
    history_rows,
    run_study,
    study_key,
    summary,
)

log = logging.getLogger(__name__)

READS = {
    "features": PROJECT.features_dir,
    "items": PROJECT.split_items,
    "embeddings": PROJECT.item_embeddings,
    "studies": PROJECT.tune_cache,
}
WRITES = {"out": PROJECT.tune_dir}
FITTED = PROJECT.tune_fitted.name  # the best trial's fitted model per model


def to_csv(rows: list[dict[str, Any]]) -> str:
    """One model's history: trial, its value, the best value so far."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=["trial", "value", "best"], extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def run(
    params: Params, features: Path, items: Path, embeddings: Path, studies: Path, out: Path
) -> dict[str, Any]:
    check_params(params)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dataset = load_dataset(features, items, embeddings)
    train = train_data(dataset.sequences, dataset.side)
    valid = validation(dataset.sequences, dataset.side)
    data_digest = file_digest(
        features / PROJECT.sequences.name, features / PROJECT.profiles.name, items, embeddings
    )
    best = {}
    history = PROJECT.tune_history.name
    with replaced_dir(out) as staging:
        (staging / FITTED).mkdir()
        (staging / history).mkdir()
        write_text(
            "The best trial's fitted model per tuned model; the train stage reuses one when\n"
            "its configs and data are exactly those of the train stage's own fit.\n",
            staging / FITTED / "README.txt",
        )
        for name, budget in params.tune.trials.items():
            if budget < 1:
                log.info("%s: no trial budget, its params.yaml values are used as they are", name)
                continue
            started = time.perf_counter()
            key = study_key(name, params, data_digest)[:16]
            store = studies / f"{name}-{key}.db"
            store.parent.mkdir(parents=True, exist_ok=True)
            kept = studies / f"{name}-{key}-best"
            keep = best_fit_keeper(kept, train, valid)
            study = run_study(name, params, train, valid, f"sqlite:///{store}", keep)
            best[name] = summary(study, params.tune.spaces[name])
            write_text(to_csv(history_rows(name, study)), staging / history / f"{name}.csv")
            page = optuna.visualization.plot_optimization_history(study)
            # a fixed div id: plotly draws a random one, which would change the file every run
            page.write_html(
                staging / f"{name}_history.html", include_plotlyjs="cdn", div_id=f"{name}-history"
            )
            best_fit = kept / f"trial-{study.best_trial.number}"
            if best_fit.is_dir():  # train reuses it instead of fitting the same configs again
                shutil.copytree(best_fit, staging / FITTED / name)
            log.info(
                "%s: best valid ndcg %.4f with %s %s (trial %d of %d, %d pruned) in %.0fs",
                name,
                best[name]["value"],
                best[name]["model"],
                best[name]["trainer"],
                best[name]["trial"],
                best[name]["trials"],
                best[name]["pruned"],
                time.perf_counter() - started,
            )
        write_json(best, staging / PROJECT.tune_best.name)
    return {name: entry["value"] for name, entry in best.items()}


def main(argv: list[str] | None = None) -> int:
    return cli.main("tune", __doc__, run, READS, WRITES, argv)


if __name__ == "__main__":
    sys.exit(main())
