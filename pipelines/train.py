"""DVC stage `train`: fit every model named in params.yaml on the training events."""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import paths
from pipelines.config import TrainParams, load_params
from pipelines.models import Recommender, TrainData, build_model
from pipelines.sequences import histories_for, train_matrix

log = logging.getLogger(__name__)


def model_config(name: str, params: TrainParams, embedding_dim: int) -> dict:
    """The plain-value config each model is built with (and saved next to its weights)."""
    section = getattr(params, name, None)
    config = section.model_dump() if section is not None else {}
    if name == "text_zero_shot":
        config["dim"] = embedding_dim
    return config


def load_train_data(features_dir: Path, split_dir: Path, embeddings_path: Path) -> TrainData:
    sequences = pd.read_parquet(features_dir / paths.SEQUENCES.name)
    n_items = len(pd.read_parquet(split_dir / paths.SPLIT_ITEMS.name))
    embeddings = np.load(embeddings_path) if embeddings_path.exists() else None
    return TrainData(
        matrix=train_matrix(sequences, n_items),
        histories=histories_for(sequences, "train"),
        n_items=n_items,
        item_embeddings=embeddings,
    )


def fit_model(name: str, params: TrainParams, train: TrainData) -> Recommender:
    dim = 0 if train.item_embeddings is None else train.item_embeddings.shape[1]
    model = build_model(name, train.n_items, model_config(name, params, dim))
    model.fit(train)
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, default=paths.FEATURES_DIR)
    parser.add_argument("--split", type=Path, default=paths.SPLIT_DIR)
    parser.add_argument("--embeddings", type=Path, default=paths.ITEM_EMBEDDINGS)
    parser.add_argument("--out", type=Path, default=paths.MODELS_DIR)
    parser.add_argument("--params", type=Path, default=paths.PARAMS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params(args.params).train

    train = load_train_data(args.features, args.split, args.embeddings)
    log.info(
        "training on %d events of %d users, %d items",
        train.matrix.nnz,
        train.matrix.shape[0],
        train.n_items,
    )
    # all models land in a temporary folder first: no half-written model set
    args.out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=args.out.parent, prefix=".models."))
    try:
        for name in params.models:
            started = time.perf_counter()
            fit_model(name, params, train).save(staging / name)
            log.info("fitted %s in %.1fs", name, time.perf_counter() - started)
        shutil.rmtree(args.out, ignore_errors=True)
        staging.rename(args.out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    main()
