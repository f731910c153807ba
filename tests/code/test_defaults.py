"""One place per default: where params.yaml states a value, the typed default agrees.

A default that disagrees with params.yaml is a trap: the stages run with params.yaml's,
while a test, a bench script or a library caller that builds the config itself runs
with the code's, and a reader cannot tell which one is meant. Mappings that params.yaml
fills on purpose (a column mapping, trial budgets, search spaces, model sections) have
empty defaults and are compared key by key where a typed config stands behind them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel

from pipelines.core.config import Params, read_params_file
from pipelines.core.paths import PROJECT
from pipelines.models import MODELS
from pipelines.training.loop import TrainerConfig

# filled by params.yaml on purpose: the defaults are empty (no mapping, no study, no space)
FILLED_BY_PARAMS = {"ingest.table.columns", "tune.trials", "tune.spaces"}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def disagreements(section: BaseModel, raw: dict[str, Any], where: str = "") -> list[str]:
    out = []
    for key, value in raw.items():
        name = f"{where}{key}"
        default = getattr(type(section)(), key)
        if name in FILLED_BY_PARAMS or (name.startswith("train.") and isinstance(default, dict)):
            continue
        if isinstance(default, BaseModel):
            out += disagreements(default, value, f"{name}.")
        elif _plain(default) != value and not (
            isinstance(default, float | int) and not isinstance(value, bool) and default == value
        ):
            out.append(f"{name}: code {_plain(default)!r}, params.yaml {value!r}")
    return out


def test_every_section_default_agrees_with_params_yaml() -> None:
    assert disagreements(Params(), read_params_file(PROJECT.params)) == []


def test_every_model_default_agrees_with_its_params_yaml_section() -> None:
    train = read_params_file(PROJECT.params)["train"]
    found = []
    for name, section in train.items():
        if name not in MODELS:
            continue
        default = dataclasses.asdict(MODELS[name].config_class())
        for key, value in section.items():
            if key != "trainer" and default[key] != value:
                found.append(f"train.{name}.{key}: code {default[key]!r}, params.yaml {value!r}")
    # a model's own trainer section overrides the shared one for that model on purpose;
    # the shared section is the loop's defaults, stated
    shared = dataclasses.asdict(TrainerConfig())
    for key, value in train["trainer"].items():
        if shared[key] != value:
            found.append(f"train.trainer.{key}: code {shared[key]!r}, params.yaml {value!r}")
    assert found == []


def test_a_disagreement_is_found(monkeypatch) -> None:
    raw = read_params_file(PROJECT.params)
    raw["tune"]["timeout_minutes"] = 99
    assert disagreements(Params(), raw) == ["tune.timeout_minutes: code 60.0, params.yaml 99"]
