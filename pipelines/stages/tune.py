"""Stage `tune`: an Optuna study per model with a trial budget, chosen on validation NDCG.

Writes the best trial per model (``best.json``, read by `train`), every trial's
value as a DVC plot (``history.csv``), an optimisation-history page per model,
and a copy of the studies (``studies.db``, SQLite). The studies themselves live
under ``.cache/tune/`` keyed by what they depend on, so a killed run resumes.
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

from pipelines import paths
from pipelines.config import Params
from pipelines.features.dataset import load_dataset, train_data, validation
from pipelines.io import atomic_path, replaced_dir, write_json, write_text
from pipelines.stages import cli
from pipelines.training.fit import check_params
from pipelines.training.tuning import file_digest, history_rows, run_study, study_key, summary

log = logging.getLogger(__name__)

READS = {
    "features": paths.FEATURES_DIR,
    "items": paths.SPLIT_ITEMS,
    "embeddings": paths.ITEM_EMBEDDINGS,
    "studies": paths.TUNE_CACHE,
}
WRITES = {"out": paths.TUNE_DIR}


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["model", "trial", "value", "best"])
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
        features / paths.SEQUENCES.name, features / paths.PROFILES.name, items, embeddings
    )
    best, rows = {}, []
    with replaced_dir(out) as staging:
        for name, budget in params.tune.trials.items():
            if budget < 1:
                log.info("%s: no trial budget, its params.yaml values are used as they are", name)
                continue
            started = time.perf_counter()
            store = studies / f"{name}-{study_key(name, params, data_digest)[:16]}.db"
            store.parent.mkdir(parents=True, exist_ok=True)
            study = run_study(name, params, train, valid, f"sqlite:///{store}")
            best[name] = summary(study, params.tune.spaces[name])
            rows += history_rows(name, study)
            page = optuna.visualization.plot_optimization_history(study)
            page.write_html(staging / f"{name}_history.html", include_plotlyjs="cdn")
            with atomic_path(staging / f"{name}.db") as temp:
                shutil.copyfile(store, temp)
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
        write_json(best, staging / paths.TUNE_BEST.name)
        write_text(to_csv(rows), staging / paths.TUNE_HISTORY.name)
    return {name: entry["value"] for name, entry in best.items()}


def main(argv: list[str] | None = None) -> int:
    return cli.main("tune", __doc__, run, READS, WRITES, argv)


if __name__ == "__main__":
    sys.exit(main())
