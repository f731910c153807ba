"""The replay's params overrides: the `-S key=value` format of profiles/, applied and checked."""

from __future__ import annotations

import pytest
import yaml

from pipelines import paths
from pipelines.config import Params
from pipelines.monitoring.weekly import parse_overrides, with_overrides

PROFILE = paths.ROOT / "profiles" / "replay.args"


def test_overrides_parse_as_yaml_values():
    lines = ["# a comment", "", "-S tune.trials={ease: 4}", "-S train.models=[ease]  # why"]
    assert parse_overrides(lines) == {"tune.trials": {"ease": 4}, "train.models": ["ease"]}
    with pytest.raises(ValueError, match="expected '-S key=value'"):
        parse_overrides(["tune.trials.ease=4"])


def test_overrides_set_keys_and_refuse_a_misspelt_section():
    params = {"tune": {"trials": {"ease": 8, "sasrec": 2}}, "seed": 1}
    out = with_overrides(params, {"tune.trials": {"ease": 4}, "seed": 2})
    assert out == {"tune": {"trials": {"ease": 4}}, "seed": 2}
    assert params["tune"]["trials"]["sasrec"] == 2  # the input is left as it was
    with pytest.raises(ValueError, match="no section 'tunes'"):
        with_overrides(params, {"tunes.trials.ease": 4})


def test_the_replay_profile_gives_valid_params_with_fewer_models():
    params = yaml.safe_load(paths.PARAMS.read_text())
    overridden = Params.model_validate(
        with_overrides(params, parse_overrides(PROFILE.read_text().splitlines()))
    )
    assert set(overridden.train.models) < set(Params.model_validate(params).train.models)
    assert "fusion_transformer" in overridden.train.models
    assert set(overridden.tune.trials) <= set(overridden.train.models)
