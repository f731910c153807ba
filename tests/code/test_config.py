"""params.yaml: the shipped file loads, and mistakes are named, not swallowed."""

from __future__ import annotations

import pytest

from pipelines import paths
from pipelines.config import ParamsError, load_params


def test_shipped_params_load() -> None:
    params = load_params(paths.PARAMS)
    assert params.split.min_count == 5
    assert params.train.ease.l2 > 0


def test_unknown_key_is_named(tmp_path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  ease:\n    lambda: 3\n")
    with pytest.raises(ParamsError, match=r"train\.ease\.lambda"):
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
    params = load_params(paths.PARAMS)
    with pytest.raises(Exception, match="frozen"):
        params.seed = 1  # type: ignore[misc]
