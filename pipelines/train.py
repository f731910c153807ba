"""DVC stage `train`: fit every model named in params.yaml on the training events.

Closed-form models learn in ``fit``; gradient models prepare their buffers in
``fit`` and then train through the shared loop in ``pipelines.trainer`` with
early stopping on validation NDCG@10. ``fit_model`` is the one place that
tells the two apart; tuning and the cold-start protocols call it too.
Hyperparameters found by the ``tune`` stage override those in params.yaml.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipelines import paths
from pipelines.config import ParamsError, TrainParams, load_params
from pipelines.io import replaced_dir
from pipelines.models import Histories, Recommender, TrainData, build_model
from pipelines.sequences import histories_for, profile_codes, targets_for, train_matrix
from pipelines.text_encoder import item_text
from pipelines.trainer import TrainerConfig, TrainResult, fit_gradient

log = logging.getLogger(__name__)

# params sections that hold a model's own config keys
_CLOSED_FORM_SECTIONS = ("itemknn", "ease")


@dataclasses.dataclass(frozen=True)
class Validation:
    """The held-out events early stopping and tuning look at (never the test events)."""

    histories: Histories
    targets: torch.Tensor


def load_train_data(
    features_dir: Path, split_dir: Path, embeddings_path: Path
) -> tuple[TrainData, Validation]:
    """Training events with every side input a model may use, and the validation set."""
    sequences = pd.read_parquet(features_dir / paths.SEQUENCES.name)
    profiles = profile_codes(pd.read_parquet(features_dir / paths.PROFILES.name))
    vocabulary = json.loads((features_dir / paths.PROFILE_VOCAB.name).read_text())
    items = pd.read_parquet(split_dir / paths.SPLIT_ITEMS.name)
    embeddings = np.load(embeddings_path) if embeddings_path.exists() else None
    train = TrainData(
        matrix=train_matrix(sequences, len(items)),
        histories=histories_for(sequences, "train", profiles),
        n_items=len(items),
        item_embeddings=embeddings,
        item_texts=tuple(
            item_text(row.title, row.year, row.genres) for row in items.itertuples(index=False)
        ),
        profile_sizes=tuple(len(values) + 1 for values in vocabulary.values()),
    )
    valid = Validation(histories_for(sequences, "valid", profiles), targets_for(sequences, "valid"))
    return train, valid


def model_config(
    name: str, params: TrainParams, train: TrainData, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The plain-value config a model is built with (and saved next to its weights)."""
    if name in _CLOSED_FORM_SECTIONS:
        config = getattr(params, name).model_dump()
    else:
        config = dict(getattr(params, name, None) or {})
    dim = 0 if train.item_embeddings is None else int(train.item_embeddings.shape[1])
    if name == "text_zero_shot":
        config["dim"] = dim
    if name == "fusion_transformer":  # sizes only the data knows
        config["text_dim"] = dim
        config["profile_sizes"] = list(train.profile_sizes or ())
    config.update({k: v for k, v in (overrides or {}).items() if not k.startswith("trainer.")})
    return config


def trainer_config(
    name: str, params: TrainParams, seed: int, overrides: dict[str, Any] | None = None
) -> TrainerConfig:
    """TrainerConfig from params.yaml, the model's own overrides, then tuned values."""
    values: dict[str, Any] = {"seed": seed, **params.trainer}
    values.update(params.trainer_overrides.get(name, {}))
    values.update({k[8:]: v for k, v in (overrides or {}).items() if k.startswith("trainer.")})
    try:
        return TrainerConfig(**values)
    except (TypeError, ValueError) as err:
        known = ", ".join(f.name for f in dataclasses.fields(TrainerConfig))
        raise ParamsError(f"train.trainer for {name}: {err} (known keys: {known})") from err


def fit_model(
    name: str,
    config: dict[str, Any],
    train: TrainData,
    valid: Validation | None = None,
    trainer: TrainerConfig | None = None,
    report: Callable[[int, float], None] | None = None,
    checkpoint_dir: Path | None = None,
) -> tuple[Recommender, TrainResult | None]:
    """Build and fit one model; gradient models also need ``valid`` and ``trainer``."""
    if trainer is not None:
        torch.manual_seed(trainer.seed)  # the initial weights belong to the seed too
    try:
        model = build_model(name, train.n_items, config)
    except TypeError as err:
        raise ParamsError(f"train.{name}: {err}") from err
    model.fit(train)
    result = None
    if model.trainable:
        if valid is None or trainer is None:
            raise ValueError(f"{name} trains by gradient and needs a validation set and trainer")
        result = fit_gradient(
            model, train, valid.histories, valid.targets, trainer, checkpoint_dir, report
        )
    return model.eval(), result


def tuned_overrides(best_path: Path) -> dict[str, dict[str, Any]]:
    """Best hyperparameters per model from the tune stage ({} when nothing was tuned)."""
    if not best_path.exists():
        return {}
    return {model: entry["params"] for model, entry in json.loads(best_path.read_text()).items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, default=paths.FEATURES_DIR)
    parser.add_argument("--split", type=Path, default=paths.SPLIT_DIR)
    parser.add_argument("--embeddings", type=Path, default=paths.ITEM_EMBEDDINGS)
    parser.add_argument("--tuned", type=Path, default=paths.TUNE_BEST)
    parser.add_argument("--out", type=Path, default=paths.MODELS_DIR)
    parser.add_argument("--params", type=Path, default=paths.PARAMS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params(args.params)

    train, valid = load_train_data(args.features, args.split, args.embeddings)
    tuned = tuned_overrides(args.tuned)
    log.info(
        "training on %d events of %d users, %d items",
        train.matrix.nnz,
        train.matrix.shape[0],
        train.n_items,
    )
    # all models land in a staging folder first: never a half-written model set
    with replaced_dir(args.out) as staging:
        for name in params.train.models:
            started = time.perf_counter()
            overrides = tuned.get(name)
            config = model_config(name, params.train, train, overrides)
            trainer = trainer_config(name, params.train, params.seed, overrides)
            # resumes an interrupted run (the trainer ignores one of other data or config);
            # dropped once the model is saved, so changed model code never meets old weights
            checkpoints = paths.CHECKPOINTS / name
            model, result = fit_model(
                name, config, train, valid, trainer, checkpoint_dir=checkpoints
            )
            model.save(staging / name)
            shutil.rmtree(checkpoints, ignore_errors=True)
            if result is not None:
                (staging / name / "training.json").write_text(
                    json.dumps(dataclasses.asdict(result), indent=2) + "\n"
                )
            log.info("fitted %s in %.1fs", name, time.perf_counter() - started)


if __name__ == "__main__":
    main()
