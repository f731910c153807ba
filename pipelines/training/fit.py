"""Fit one model by name: resolve its typed config, then fit in closed form or by gradient.

The one place that turns params into a model. A model's config is built in
three steps, each a typed update of the one before, and every value keeps a
note of where it came from:

1. the model's config dataclass defaults (``pipelines/models/<name>.py``);
2. its ``params.yaml`` section, plus the sizes only the data knows
   (``Recommender.data_config``: text width, profile vocabulary);
3. the best trial of the ``tune`` stage, for the keys that were searched.

The training loop's config is built the same way from ``TrainerConfig``,
``train.trainer``, the model's own ``trainer:`` values and the tuned ones.
A tuned value wins over ``params.yaml``; to pin a value, give the model no
trial budget (``tune.trials.<model>: 0``) or leave the key out of its space.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipelines.core.config import MODEL_NAMES, Params, ParamsError, TrainParams
from pipelines.core.io import write_json
from pipelines.models import MODELS, Recommender, TrainData, load_model
from pipelines.models.base import Validation, config_from_dict, config_to_dict
from pipelines.training.loop import TrainerConfig, TrainResult, data_digest, fit_gradient

log = logging.getLogger(__name__)

DEFAULT, PARAMS, DATA = "default", "params.yaml", "data"


@dataclass(frozen=True)
class Tuned:
    """The best trial of a model's study, as a typed update of its two configs."""

    model: Mapping[str, Any] = field(default_factory=dict)  # keys of the model's config
    trainer: Mapping[str, Any] = field(default_factory=dict)  # keys of TrainerConfig
    trial: int | None = None  # the Optuna trial number, for the record

    @property
    def source(self) -> str:
        return f"tune trial {self.trial}"


@dataclass(frozen=True)
class FitSpec:
    """Everything that decides how one model is fitted, and where each value came from."""

    name: str
    model: Any  # the model's frozen config dataclass
    trainer: TrainerConfig | None  # None for closed-form models
    sources: Mapping[str, str]  # "key" / "trainer.key" -> default | params.yaml | data | tune …

    def record(self) -> dict[str, Any]:
        """JSON-ready: the values used and their origin (written to training.json)."""
        return {
            "model": config_to_dict(self.model),
            "trainer": None if self.trainer is None else dataclasses.asdict(self.trainer),
            "sources": dict(sorted(self.sources.items())),
        }


def _sources(
    keys: Mapping[str, Any], layers: list[tuple[str, Mapping[str, Any]]], prefix: str = ""
) -> dict[str, str]:
    """Per key, the last layer that set it (``default`` when none did)."""
    origin = {}
    for key in keys:
        origin[f"{prefix}{key}"] = next(
            (name for name, values in reversed(layers) if key in values), DEFAULT
        )
    return origin


def _build(config_class: type, values: dict[str, Any], where: str) -> Any:
    try:
        return config_from_dict(config_class, values)
    except (TypeError, ValueError) as err:
        raise ParamsError(f"{where}: {err}") from err


MASK_HISTORY = "mask_history"  # a TrainerConfig key set by evaluate.mask_history only


def resolve(
    name: str,
    params: TrainParams,
    seed: int,
    train: TrainData,
    tuned: Tuned | None = None,
    *,
    k: int | None = None,
    mask_history: bool | None = None,
) -> FitSpec:
    """The typed configs model ``name`` is fitted with (see the module docstring);
    ``k`` and ``mask_history`` (``evaluate.k``, ``evaluate.mask_history``) tell early
    stopping how to rank, as the evaluate stage does."""
    if name not in MODELS:
        raise ParamsError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    model_class = MODELS[name]
    tuned = tuned or Tuned()
    section = params.section(name)
    own_trainer = section.pop("trainer", None) or {}
    model_layers = [(PARAMS, section), (DATA, model_class.data_config(train))]
    model_layers.append((tuned.source, dict(tuned.model)))
    values = {key: value for _, layer in model_layers for key, value in layer.items()}
    config = _build(model_class.config_class, values, f"train.{name}")
    sources = _sources(config_to_dict(config), model_layers)

    trainer = None
    if model_class.trainable:
        trainer_layers = [
            ("seed", {"seed": seed}),
            ("params.yaml evaluate.k", {} if k is None else {"k": k}),
            ("params.yaml train.trainer", params.trainer),
            (f"params.yaml train.{name}.trainer", own_trainer),
            (tuned.source, dict(tuned.trainer)),
            # last: the protocol is evaluate's alone (check_params refuses it elsewhere)
            (
                "params.yaml evaluate.mask_history",
                {} if mask_history is None else {MASK_HISTORY: mask_history},
            ),
        ]
        values = {key: value for _, layer in trainer_layers for key, value in layer.items()}
        trainer = _build(TrainerConfig, values, f"train.{name}.trainer")
        sources |= _sources(dataclasses.asdict(trainer), trainer_layers, prefix="trainer.")
    elif own_trainer or tuned.trainer:
        raise ParamsError(f"train.{name}.trainer: {name} is fitted in closed form, not trained")
    return FitSpec(name, config, trainer, sources)


def log_tuned_choices(spec: FitSpec, params: TrainParams) -> None:
    """Say, for each tuned value that differs from params.yaml, which one is used and why."""
    section = params.section(spec.name)
    own_trainer = section.pop("trainer", None) or {}
    written = {
        **section,
        **{f"trainer.{k}": v for k, v in {**params.trainer, **own_trainer}.items()},
    }
    used = {**config_to_dict(spec.model)}
    if spec.trainer is not None:
        used |= {f"trainer.{k}": v for k, v in dataclasses.asdict(spec.trainer).items()}
    for key, source in sorted(spec.sources.items()):
        if not source.startswith("tune"):
            continue
        if key in written and written[key] != used[key]:
            log.warning(
                "train.%s.%s: using %r from %s, not params.yaml's %r "
                "(set tune.trials.%s: 0 to pin the params.yaml value)",
                spec.name,
                key,
                used[key],
                source,
                written[key],
                spec.name,
            )
        else:
            log.info("train.%s.%s: using %r from %s", spec.name, key, used[key], source)


def check_params(params: Params) -> None:
    """Every model section and search space against its config dataclass, before any fit.

    A typo fails at once, naming the key, instead of after hours of training.
    """
    # the validation cutoff is the protocol's (evaluate.k), not a training choice
    trainer_keys = {f.name for f in dataclasses.fields(TrainerConfig)} - {"k"}
    for name in MODEL_NAMES:
        model_class = MODELS[name]
        section = params.train.section(name)
        own_trainer = section.pop("trainer", None) or {}
        known = {f.name for f in dataclasses.fields(model_class.config_class)}
        space = params.tune.spaces.get(name)
        checks = [
            (f"train.{name}", section.keys(), known),
            (f"train.{name}.trainer", own_trainer.keys(), trainer_keys),
            ("train.trainer", params.train.trainer.keys(), trainer_keys),
        ]
        if space is not None:
            checks.append((f"tune.spaces.{name}.model", space.model.keys(), known))
            checks.append((f"tune.spaces.{name}.trainer", space.trainer.keys(), trainer_keys))
        for where, keys, allowed in checks:
            if MASK_HISTORY in keys:
                raise ParamsError(
                    f"{where}: {MASK_HISTORY} is set by evaluate.mask_history alone (one "
                    "protocol for evaluate, tune, early stopping and cold start); set it there"
                )
            unknown = sorted(set(keys) - allowed)
            if unknown:
                known = ", ".join(sorted(allowed))
                raise ParamsError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {known}")
        if own_trainer and not model_class.trainable:
            raise ParamsError(f"train.{name}.trainer: {name} is fitted in closed form, not trained")


def fit_model(
    spec: FitSpec,
    train: TrainData,
    valid: Validation | None = None,
    report: Callable[[int, float], None] | None = None,
    checkpoint_dir: Path | None = None,
) -> tuple[Recommender, TrainResult | None]:
    """Build and fit one model; gradient models also need ``valid`` for early stopping."""
    if spec.trainer is not None:
        torch.manual_seed(spec.trainer.seed)  # the initial weights belong to the seed too
    model = MODELS[spec.name](train.n_items, spec.model)
    model.fit(train)
    result = None
    if model.trainable:
        if valid is None or spec.trainer is None:
            raise ValueError(f"{spec.name} trains by gradient and needs a validation set")
        result = fit_gradient(model, train, valid, spec.trainer, checkpoint_dir, report)
    return model.eval(), result


# -- reusing a fit: the same configs on the same data give the same model ----------------
FIT_RECORD = "fit.json"


def fit_fingerprint(spec: FitSpec, train: TrainData, valid: Validation | None) -> str:
    """Digest of what decides a fit's outcome: the configs (bar the device) and the data."""
    record = spec.record()
    if record["trainer"] is not None:
        record["trainer"] = {k: v for k, v in record["trainer"].items() if k != "device"}
    payload = {"name": spec.name, "model": record["model"], "trainer": record["trainer"]}
    payload["data"] = data_digest(train, valid if spec.trainer is not None else None)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def save_fitted(
    model: Recommender, spec: FitSpec, result: TrainResult | None, fingerprint: str, directory: Path
) -> None:
    """The model plus what it was fitted with, so an identical fit can be skipped later."""
    model.save(directory)
    record = {
        "fingerprint": fingerprint,
        "config": spec.record(),
        "result": None if result is None else result.record(),
    }
    write_json(record, directory / FIT_RECORD)


def load_fitted(directory: Path, fingerprint: str) -> tuple[Recommender, TrainResult | None] | None:
    """The model saved in ``directory`` if it was fitted exactly as asked, else None.

    Training is deterministic (seeded, deterministic kernels on CPU), so a saved fit
    with the same fingerprint is the model a new fit would give; on a GPU the same
    fingerprint may come from a run whose float order differed, which is still a
    model of the same configs and data.
    """
    record_path = directory / FIT_RECORD
    if not record_path.exists():
        return None
    record = json.loads(record_path.read_text())
    if record.get("fingerprint") != fingerprint:
        return None
    result = record.get("result")
    if result is not None:
        result = TrainResult(**{**result, "history": tuple(map(tuple, result["history"]))})
    return load_model(directory), result


def fit_or_reuse(
    spec: FitSpec,
    train: TrainData,
    valid: Validation | None,
    candidates: Sequence[Path] = (),
    **fit_options: Any,
) -> tuple[Recommender, TrainResult | None, str]:
    """Reuse the first saved fit in ``candidates`` made with the same configs and data,
    else fit; returns the model, its training result, and where it came from."""
    fingerprint = fit_fingerprint(spec, train, valid)
    for directory in candidates:
        found = load_fitted(directory, fingerprint)
        if found is not None:
            log.info("%s: reusing the identical fit in %s", spec.name, directory)
            return *found, str(directory)
    model, result = fit_model(spec, train, valid, **fit_options)
    return model, result, "fitted"


def read_tuned(best_path: Path) -> dict[str, Tuned]:
    """Best trial per model from the tune stage's ``best.json`` ({} when nothing was tuned)."""
    if not best_path.exists():
        return {}
    entries = json.loads(best_path.read_text())
    return {
        model: Tuned(entry["model"], entry["trainer"], entry.get("trial"))
        for model, entry in entries.items()
    }
