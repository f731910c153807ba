"""Stage `train`: fit every model named in params.yaml on the training events.

Each model is fitted with its resolved config (``training.fit``): its
``params.yaml`` section, the sizes the data decides, and the best trial of
the ``tune`` stage for the searched keys; early stopping ranks as
``evaluate.mask_history`` says; ``training.json`` records every value and where it
came from. Gradient models checkpoint as they train, so a
killed run resumes; checkpoints are dropped only once every model is published.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from pipelines.core.config import Params
from pipelines.core.io import replaced_dir, write_json, write_text
from pipelines.core.paths import PROJECT
from pipelines.core.schema import SEQ_N_TRAIN
from pipelines.features.dataset import load_dataset, train_data, validation
from pipelines.stages import cli
from pipelines.training.fit import (
    check_params,
    fit_fingerprint,
    fit_or_reuse,
    log_tuned_choices,
    read_tuned,
    resolve,
    save_fitted,
)
from pipelines.training.loop import TrainResult

log = logging.getLogger(__name__)

READS = {
    "features": PROJECT.features_dir,
    "items": PROJECT.split_items,
    "embeddings": PROJECT.item_embeddings,
    "tuned": PROJECT.tune_best,
    "fitted": PROJECT.tune_fitted,
    "checkpoints": PROJECT.checkpoints,
}
WRITES = {"out": PROJECT.models_dir}

TRAINING_RECORD = "training.json"
CURVE = "curve.csv"  # a gradient model's validation NDCG@k per evaluated epoch: a DVC plot


def curve_csv(result: TrainResult) -> str:
    lines = ["epoch,valid_ndcg", *(f"{epoch},{ndcg:.6f}" for epoch, ndcg in result.history)]
    return "\n".join(lines) + "\n"


def run(
    params: Params,
    features: Path,
    items: Path,
    embeddings: Path,
    tuned: Path,
    fitted: Path,
    checkpoints: Path,
    out: Path,
) -> dict[str, Any]:
    check_params(params)
    dataset = load_dataset(features, items, embeddings)
    train = train_data(dataset.sequences, dataset.side)
    valid = validation(dataset.sequences, dataset.side)
    best = read_tuned(tuned)
    log.info(
        "training on %d events (%d distinct user-item pairs) of %d users, %d items",
        int(dataset.sequences[SEQ_N_TRAIN].sum()),
        train.matrix.nnz,
        train.matrix.shape[0],
        train.n_items,
    )
    seconds: dict[str, float] = {}
    # every model lands in a staging folder first: never a half-written model set
    with replaced_dir(out) as staging:
        for name in params.train.models:
            started = time.perf_counter()
            spec = resolve(
                name,
                params.train,
                params.seed,
                train,
                best.get(name),
                k=params.evaluate.k,
                mask_history=params.evaluate.mask_history,
            )
            log_tuned_choices(spec, params.train)
            # the tune stage's best trial is this very fit when the configs and data match;
            # otherwise fit, resuming an interrupted run from its checkpoint
            model, result, origin = fit_or_reuse(
                spec, train, valid, [fitted / name], checkpoint_dir=checkpoints / name
            )
            save_fitted(model, spec, result, fit_fingerprint(spec, train, valid), staging / name)
            # relative: the record is a DVC output, the same in every clone
            record = {"config": spec.record(), "origin": PROJECT.relative(origin)}
            if result is not None:
                record["result"] = result.record()
                write_text(curve_csv(result), staging / name / CURVE)
            write_json(record, staging / name / TRAINING_RECORD)
            seconds[name] = round(time.perf_counter() - started, 1)
            log.info("%s: %s in %.1fs", name, origin, seconds[name])
    # only now are the models safe in `out`: a kill before this point resumes from these
    for name in params.train.models:
        shutil.rmtree(checkpoints / name, ignore_errors=True)
    return {"seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    return cli.main("train", __doc__, run, READS, WRITES, argv)


if __name__ == "__main__":
    sys.exit(main())
