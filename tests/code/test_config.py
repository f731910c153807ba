"""params.yaml: the shipped file loads, and mistakes are named, not swallowed."""

from __future__ import annotations

import pytest

from pipelines.core.config import (
    ParamsError,
    load_params,
    overridden_params,
    parse_overrides,
    with_overrides,
)
from pipelines.core.paths import PROJECT
from pipelines.training.fit import check_params


def test_shipped_params_load_and_check() -> None:
    params = load_params(PROJECT.params)
    assert params.split.min_count == 5
    assert params.train.section("ease")["l2"] > 0
    check_params(params)


def test_unknown_key_is_named(tmp_path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  ease:\n    lambda: 3\n")
    with pytest.raises(ParamsError, match=r"train\.ease: unknown key\(s\) lambda; known: l2"):
        check_params(load_params(bad))
    bad.write_text("train:\n  sasrec:\n    trainer: {learning_rate: 1}\n")
    with pytest.raises(
        ParamsError, match=r"train\.sasrec\.trainer: unknown key\(s\) learning_rate"
    ):
        check_params(load_params(bad))
    bad.write_text(
        "tune:\n  spaces:\n    ease:\n      model: {lambda: {type: float, low: 1, high: 2}}\n"
    )
    with pytest.raises(ParamsError, match=r"tune\.spaces\.ease\.model: unknown key\(s\) lambda"):
        check_params(load_params(bad))
    bad.write_text("trian:\n  models: [ease]\n")
    with pytest.raises(ParamsError, match="trian"):
        load_params(bad)


def test_out_of_range_value_is_named(tmp_path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("evaluate:\n  k: 0\n")
    with pytest.raises(ParamsError, match=r"evaluate\.k"):
        load_params(bad)


def test_missing_and_broken_files(tmp_path) -> None:
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "absent.yaml")
    broken = tmp_path / "params.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(broken)


def test_params_are_frozen() -> None:
    params = load_params(PROJECT.params)
    with pytest.raises(Exception, match="frozen"):
        params.seed = 1  # type: ignore[misc]


# ---- overrides (profiles/*.args, the replay workspace's params) ----

PROFILE = PROJECT.root / "profiles" / "replay.args"


def test_overrides_parse_as_yaml_values():
    lines = ["# a comment", "", "-S tune.trials={ease: 4}", "-S train.models=[ease]  # why"]
    assert parse_overrides(lines) == {"tune.trials": {"ease": 4}, "train.models": ["ease"]}
    with pytest.raises(ParamsError, match="expected '-S key=value'"):
        parse_overrides(["tune.trials.ease=4"])


def test_overrides_set_keys_and_refuse_a_misspelt_section():
    params = {"tune": {"trials": {"ease": 8, "sasrec": 2}}, "seed": 1}
    out = with_overrides(params, {"tune.trials": {"ease": 4}, "seed": 2})
    assert out == {"tune": {"trials": {"ease": 4}}, "seed": 2}
    assert params["tune"]["trials"]["sasrec"] == 2  # the input is left as it was
    with pytest.raises(ParamsError, match="no section 'tunes'"):
        with_overrides(params, {"tunes.trials.ease": 4})


def test_the_replay_profile_gives_valid_params_with_fewer_models():
    _, overridden = overridden_params(
        PROJECT.params, parse_overrides(PROFILE.read_text().splitlines())
    )
    assert set(overridden.train.models) < set(load_params(PROJECT.params).train.models)
    assert "fusion_transformer" in overridden.train.models
    assert set(overridden.tune.trials) <= set(overridden.train.models)
