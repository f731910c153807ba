"""Hyperparameter search: an Optuna study per model, judged on validation NDCG@k only.

TPE sampler (seeded) and a median pruner that stops gradient trials whose
validation NDCG trails the median of earlier trials at the same epoch. The
model's resolved ``params.yaml`` values are enqueued as trial 0, so a study
never ends below the untuned defaults.

A study lives in a SQLite file keyed by everything it depends on (data,
params, seed, model), outside the stage's DVC outputs: a killed tune stage
finds its finished trials there on the next run and only runs what is left;
a trial the kill interrupted is marked failed and does not count.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from pipelines.core.config import Params, SearchDimension, SearchSpace
from pipelines.core.io import write_json
from pipelines.evaluation.ranking import evaluate_model
from pipelines.models import Recommender
from pipelines.models.base import TrainData, Validation, config_to_dict
from pipelines.training.fit import (
    FIT_RECORD,
    FitSpec,
    Tuned,
    fit_fingerprint,
    fit_model,
    resolve,
    save_fitted,
)
from pipelines.training.loop import TrainResult

log = logging.getLogger(__name__)

TRAINER_PREFIX = "trainer."  # Optuna names a trainer key this way; ours stay typed


def _suggest_one(trial: optuna.Trial, name: str, dim: SearchDimension) -> Any:
    if dim.type == "categorical":
        return trial.suggest_categorical(name, list(dim.choices or ()))
    if dim.type == "int":
        return trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
    return trial.suggest_float(name, float(dim.low), float(dim.high), log=dim.log)


def suggest(trial: optuna.Trial, space: SearchSpace) -> Tuned:
    """One point of the search space, as a typed update of the model and trainer configs."""
    model = {key: _suggest_one(trial, key, dim) for key, dim in space.model.items()}
    trainer = {
        key: _suggest_one(trial, TRAINER_PREFIX + key, dim) for key, dim in space.trainer.items()
    }
    return Tuned(model, trainer, trial.number)


def from_trial_params(space: SearchSpace, values: dict[str, Any], trial: int) -> Tuned:
    """A finished trial's Optuna parameters back into a typed update."""
    return Tuned(
        {key: values[key] for key in space.model},
        {key: values[TRAINER_PREFIX + key] for key in space.trainer},
        trial,
    )


def _inside(value: Any, dim: SearchDimension) -> bool:
    if dim.type == "categorical":
        return value in (dim.choices or ())
    return value is not None and dim.low <= value <= dim.high


def current_point(name: str, params: Params, train: TrainData) -> dict[str, Any]:
    """The searched keys' values as params.yaml resolves them, where they lie in the space."""
    spec = resolve(
        name,
        params.train,
        params.seed,
        train,
        k=params.evaluate.k,
        mask_history=params.evaluate.mask_history,
    )
    space = params.tune.spaces[name]
    model = config_to_dict(spec.model)
    trainer = {} if spec.trainer is None else spec.record()["trainer"]
    point = {key: model[key] for key, dim in space.model.items() if _inside(model[key], dim)}
    point |= {
        TRAINER_PREFIX + key: trainer[key]
        for key, dim in space.trainer.items()
        if _inside(trainer.get(key), dim)
    }
    return point


Keep = Callable[[int, float, Recommender, FitSpec, "TrainResult | None"], None]


def objective(
    name: str, params: Params, train: TrainData, valid: Validation, keep: Keep | None = None
) -> Callable[[optuna.Trial], float]:
    """Validation NDCG@k of model ``name`` trained with a trial's hyperparameters.

    ``keep(trial, value, model, spec, result)`` sees every finished fit (to save the best).
    """
    k = params.evaluate.k

    def run_trial(trial: optuna.Trial) -> float:
        tuned = suggest(trial, params.tune.spaces[name])

        def report(epoch: int, value: float) -> None:
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: valid ndcg@{k} {value:.4f}")

        mask = params.evaluate.mask_history
        spec = resolve(
            name, params.train, params.seed, train, tuned, k=params.evaluate.k, mask_history=mask
        )
        model, result = fit_model(spec, train, valid, report=report)
        if result is not None:
            value = result.best_valid_ndcg
        else:
            batch_size = params.evaluate.batch_size
            value = evaluate_model(
                model, valid.histories, valid.targets, k, batch_size, exclude_seen=mask
            )[f"ndcg@{k}"]
        if keep is not None:
            keep(trial.number, value, model, spec, result)
        return value

    return run_trial


def study_key(name: str, params: Params, data_digest: str) -> str:
    """Digest of everything a study's trials depend on; a new one starts a new study."""
    payload = {
        "model": name,
        "seed": params.seed,
        "trials_space": params.tune.spaces[name].model_dump(mode="json"),
        "pruner_warmup": params.tune.pruner_warmup,
        "train": params.train.section(name),
        "trainer": params.train.trainer,
        "k": params.evaluate.k,
        "data": data_digest,
    }
    if not params.evaluate.mask_history:  # only then: studies of the default keep their key
        payload["mask_history"] = False
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def fail_interrupted(study: optuna.Study) -> int:
    """Mark trials a killed run left RUNNING as failed; returns how many there were."""
    stuck = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
    for trial in stuck:
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    return len(stuck)


def finished(study: optuna.Study) -> int:
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(trial.state in done for trial in study.get_trials(deepcopy=False))


def sampler_for(seed: int, finished_trials: int) -> optuna.samplers.TPESampler:
    """The sampler for the next trial, seeded by how many trials have finished, not by run.

    A fresh run and one resumed after a kill then propose the same points from the
    same finished trials (an interrupted trial is failed and does not count), so a
    resumed study ends where an uninterrupted one does.
    """
    return optuna.samplers.TPESampler(seed=seed + finished_trials)


def best_fit_keeper(folder: Path, train: TrainData, valid: Validation) -> Keep:
    """Saves a trial's fitted model under ``folder/trial-<n>`` when it is the best so far,
    so the train stage can reuse it instead of fitting the same configs again."""
    best = {"value": float("-inf")}
    for saved in folder.glob("trial-*/fit.json"):  # a resumed study: what was kept before
        best["value"] = max(best["value"], json.loads(saved.read_text()).get("value", -1.0))

    def keep(trial: int, value: float, model: Recommender, spec: FitSpec, result) -> None:
        if value <= best["value"]:
            return
        best["value"] = value
        target = folder / f"trial-{trial}"
        save_fitted(model, spec, result, fit_fingerprint(spec, train, valid), target)
        record = json.loads((target / FIT_RECORD).read_text())
        write_json({**record, "value": value, "trial": trial}, target / FIT_RECORD)
        for other in folder.glob("trial-*"):
            if other != target:
                shutil.rmtree(other, ignore_errors=True)

    return keep


def run_study(
    name: str,
    params: Params,
    train: TrainData,
    valid: Validation,
    storage: str,
    keep: Keep | None = None,
) -> optuna.Study:
    """Create or resume model ``name``'s study and run the trials its budget has left."""
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        load_if_exists=True,
        direction="maximize",
        sampler=sampler_for(params.seed, 0),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=2, n_warmup_steps=params.tune.pruner_warmup
        ),
    )
    interrupted = fail_interrupted(study)
    done = finished(study)
    if done or interrupted:
        log.info(
            "%s: resuming a study with %d finished trial(s); %d interrupted one(s) marked failed",
            name,
            done,
            interrupted,
        )
    waiting = [t for t in study.get_trials(deepcopy=False) if t.state.name == "WAITING"]
    if done == 0 and not waiting:  # trial 0, again if a kill interrupted it
        study.enqueue_trial(current_point(name, params, train))
    run_trial = objective(name, params, train, valid, keep)
    deadline = time.monotonic() + params.tune.timeout_minutes * 60
    while finished(study) < params.tune.trials[name] and time.monotonic() < deadline:
        study.sampler = sampler_for(params.seed, finished(study))
        study.optimize(run_trial, n_trials=1, timeout=deadline - time.monotonic())
    if finished(study) < params.tune.trials[name]:
        log.warning(
            "%s: tune.timeout_minutes (%s) stopped the study after %d of %d trials: its best "
            "trial, tune/best.json and dvc.lock now depend on this machine's speed and load",
            name,
            params.tune.timeout_minutes,
            finished(study),
            params.tune.trials[name],
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


def summary(study: optuna.Study, space: SearchSpace) -> dict[str, Any]:
    """The best trial as ``best.json`` holds it: a typed update plus the study's counts."""
    states = [trial.state for trial in study.trials]
    best = from_trial_params(space, study.best_params, study.best_trial.number)
    return {
        "model": dict(best.model),
        "trainer": dict(best.trainer),
        "trial": best.trial,
        "value": study.best_value,
        "trials": len(states),
        "pruned": states.count(optuna.trial.TrialState.PRUNED),
        "failed": states.count(optuna.trial.TrialState.FAIL),
    }


def file_digest(*files: Path) -> str:
    digest = hashlib.sha256()
    for path in files:
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()
