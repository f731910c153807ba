"""DVC stage `tune`: an Optuna study per model, chosen on validation NDCG@10.

TPE sampler (seeded) and a median pruner that stops gradient trials whose
validation NDCG@10 trails the median of earlier trials at the same epoch.
Search spaces and budgets live in params.yaml (`tune`); a model with no budget
is not tuned. Writes the best hyperparameters (read by `train`), every trial's
value as a DVC plot, an optimisation-history page per model, and the studies
themselves (SQLite) so they can be inspected or continued with Optuna.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from pipelines import paths
from pipelines.config import Params, SearchDimension, load_params
from pipelines.evaluate import evaluate_model
from pipelines.io import replaced_dir, write_json, write_text
from pipelines.models import TrainData
from pipelines.train import Validation, fit_model, load_train_data, model_config, trainer_config

log = logging.getLogger(__name__)


def suggest(trial: optuna.Trial, space: dict[str, SearchDimension]) -> dict[str, Any]:
    """One point of the search space, keyed as in params.yaml."""
    point: dict[str, Any] = {}
    for key, dim in space.items():
        if dim.type == "categorical":
            point[key] = trial.suggest_categorical(key, list(dim.choices or ()))
        elif dim.type == "int":
            point[key] = trial.suggest_int(key, int(dim.low), int(dim.high), log=dim.log)
        else:
            point[key] = trial.suggest_float(key, float(dim.low), float(dim.high), log=dim.log)
    return point


def current_point(name: str, params: Params, train: TrainData) -> dict[str, Any]:
    """The searched keys' values as params.yaml sets them, where they lie in the space.

    Enqueued as trial 0, so a study never ends worse than the untuned defaults.
    """
    config = model_config(name, params.train, train)
    trainer = dataclasses.asdict(trainer_config(name, params.train, params.seed))
    point = {}
    for key, dim in params.tune.spaces[name].items():
        value = trainer.get(key[8:]) if key.startswith("trainer.") else config.get(key)
        inside = (
            value in (dim.choices or ())
            if dim.type == "categorical"
            else value is not None and dim.low <= value <= dim.high
        )
        if inside:
            point[key] = value
    return point


def objective(
    name: str, params: Params, train: TrainData, valid: Validation
) -> Callable[[optuna.Trial], float]:
    """Validation NDCG@k of model ``name`` trained with a trial's hyperparameters."""
    k = params.evaluate.k

    def run_trial(trial: optuna.Trial) -> float:
        overrides = suggest(trial, params.tune.spaces[name])

        def report(epoch: int, value: float) -> None:
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: valid ndcg@{k} {value:.4f}")

        config = model_config(name, params.train, train, overrides)
        trainer = trainer_config(name, params.train, params.seed, overrides)
        model, result = fit_model(name, config, train, valid, trainer, report=report)
        if result is not None:
            return result.best_valid_ndcg
        metrics = evaluate_model(
            model, valid.histories, valid.targets, k, params.evaluate.batch_size
        )
        return metrics[f"ndcg@{k}"]

    return run_trial


def run_study(
    name: str, params: Params, train: TrainData, valid: Validation, storage: str
) -> optuna.Study:
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=params.seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=2, n_warmup_steps=params.tune.pruner_warmup
        ),
    )
    study.enqueue_trial(current_point(name, params, train), skip_if_exists=True)
    study.optimize(
        objective(name, params, train, valid),
        n_trials=params.tune.trials[name],
        timeout=params.tune.timeout_minutes * 60,
    )
    return study


def history_rows(name: str, study: optuna.Study) -> list[dict[str, Any]]:
    """Each finished trial's value and the best so far: the optimisation history."""
    rows, best = [], float("-inf")
    for trial in study.trials:
        if trial.state != optuna.trial.TrialState.COMPLETE:
            continue
        best = max(best, trial.value)
        rows.append({"model": name, "trial": trial.number, "value": trial.value, "best": best})
    return rows


def summary(study: optuna.Study) -> dict[str, Any]:
    states = [trial.state for trial in study.trials]
    return {
        "params": study.best_params,
        "value": study.best_value,
        "trial": study.best_trial.number,
        "trials": len(states),
        "pruned": states.count(optuna.trial.TrialState.PRUNED),
    }


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["model", "trial", "value", "best"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, default=paths.FEATURES_DIR)
    parser.add_argument("--split", type=Path, default=paths.SPLIT_DIR)
    parser.add_argument("--embeddings", type=Path, default=paths.ITEM_EMBEDDINGS)
    parser.add_argument("--out", type=Path, default=paths.TUNE_DIR)
    parser.add_argument("--params", type=Path, default=paths.PARAMS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = load_params(args.params)
    train, valid = load_train_data(args.features, args.split, args.embeddings)

    with replaced_dir(args.out) as staging:
        storage = f"sqlite:///{staging / paths.TUNE_STUDIES.name}"
        best, rows = {}, []
        for name, budget in params.tune.trials.items():
            if budget < 1:
                continue
            started = time.perf_counter()
            study = run_study(name, params, train, valid, storage)
            best[name] = summary(study)
            rows += history_rows(name, study)
            page = optuna.visualization.plot_optimization_history(study)
            page.write_html(staging / f"{name}_history.html", include_plotlyjs="cdn")
            log.info(
                "%s: best valid ndcg %.4f with %s (%d trials, %d pruned) in %.0fs",
                name,
                best[name]["value"],
                best[name]["params"],
                best[name]["trials"],
                best[name]["pruned"],
                time.perf_counter() - started,
            )
        write_json(best, staging / paths.TUNE_BEST.name)
        write_text(to_csv(rows), staging / paths.TUNE_HISTORY.name)


if __name__ == "__main__":
    main()
