"""Hyperparameter search: spaces are honoured, defaults are trial 0, the best is kept."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import scipy.sparse as sp
import torch

from pipelines.config import Params, ParamsError, SearchDimension
from pipelines.models import Histories, TrainData
from pipelines.train import Validation, model_config, trainer_config
from pipelines.tune import current_point, history_rows, run_study, suggest, summary


def tiny_train() -> tuple[TrainData, Validation]:
    rows = [[0, 1, 2], [1, 2, 3], [2, 3, 4], [0, 2, 4]]
    matrix = sp.csr_matrix(
        (
            np.ones(12, dtype=np.float32),
            ([u for u, r in enumerate(rows) for _ in r], [item for row in rows for item in row]),
        ),
        shape=(4, 6),
    )
    histories = Histories.from_lists(rows, [[1, 2, 3]] * 4)
    valid = Validation(histories, torch.tensor([3, 4, 5, 1]))
    return TrainData(matrix, histories, n_items=6), valid


def params_with(trials: int) -> Params:
    return Params.model_validate(
        {
            "tune": {
                "trials": {"ease": trials},
                "spaces": {"ease": {"l2": {"type": "float", "low": 1, "high": 1000, "log": True}}},
            }
        }
    )


def test_suggest_stays_inside_the_space() -> None:
    space = {
        "l2": SearchDimension(type="float", low=1, high=10, log=True),
        "neighbours": SearchDimension(type="int", low=2, high=5),
        "mode": SearchDimension(type="categorical", choices=("a", "b")),
    }
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        point = suggest(study.ask(), space)
        assert 1 <= point["l2"] <= 10 and 2 <= point["neighbours"] <= 5
        assert point["mode"] in ("a", "b")


def test_search_dimensions_are_validated() -> None:
    with pytest.raises(ValueError, match="low <= high"):
        SearchDimension(type="float", low=5, high=1)
    with pytest.raises(ValueError, match="choices"):
        SearchDimension(type="categorical")
    with pytest.raises(ValueError, match="no search space"):
        Params.model_validate({"tune": {"trials": {"ease": 3}}})


def test_defaults_are_the_first_trial_and_the_best_is_kept() -> None:
    train, valid = tiny_train()
    params = params_with(4)
    assert current_point("ease", params, train) == {"l2": 250.0}
    study = run_study("ease", params, train, valid, storage="sqlite:///:memory:")
    assert study.trials[0].params == {"l2": 250.0}
    assert len(study.trials) == 4
    best = summary(study)
    assert best["value"] == max(t.value for t in study.trials)
    rows = history_rows("ease", study)
    assert [row["best"] for row in rows] == sorted(row["best"] for row in rows)


def test_tuned_values_override_params_and_reach_the_trainer() -> None:
    train, _ = tiny_train()
    params = Params()
    config = model_config("ease", params.train, train, {"l2": 7.0, "trainer.lr": 0.01})
    assert config == {"l2": 7.0}
    assert trainer_config("sasrec", params.train, 3, {"trainer.lr": 0.01}).lr == 0.01


def test_unknown_trainer_key_is_a_params_error() -> None:
    params = Params.model_validate({"train": {"trainer": {"learning_rate": 0.1}}})
    with pytest.raises(ParamsError, match="known keys"):
        trainer_config("sasrec", params.train, 1)
