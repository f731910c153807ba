"""Hyperparameter search: spaces are honoured, defaults are trial 0, the best is kept."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import scipy.sparse as sp
import torch

from pipelines.core.config import Params, ParamsError, SearchDimension, SearchSpace
from pipelines.models import Histories, TrainData
from pipelines.models.base import Validation
from pipelines.training import tuning
from pipelines.training.fit import Tuned, log_tuned_choices, read_tuned, resolve
from pipelines.training.tuning import current_point, history_rows, run_study, suggest, summary


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
                "spaces": {
                    "ease": {
                        "model": {"l2": {"type": "float", "low": 1, "high": 1000, "log": True}}
                    }
                },
            }
        }
    )


def test_suggest_stays_inside_the_space() -> None:
    space = SearchSpace(
        model={
            "l2": SearchDimension(type="float", low=1, high=10, log=True),
            "neighbours": SearchDimension(type="int", low=2, high=5),
        },
        trainer={"mode": SearchDimension(type="categorical", choices=("a", "b"))},
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        point = suggest(study.ask(), space)
        assert 1 <= point.model["l2"] <= 10 and 2 <= point.model["neighbours"] <= 5
        assert point.trainer["mode"] in ("a", "b")


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
    best = summary(study, params.tune.spaces["ease"])
    assert best["value"] == max(t.value for t in study.trials)
    assert best["model"] == study.best_params and best["trainer"] == {}
    rows = history_rows("ease", study)
    assert [row["best"] for row in rows] == sorted(row["best"] for row in rows)


def test_tuned_values_override_params_and_reach_the_trainer() -> None:
    train, _ = tiny_train()
    params = Params()
    spec = resolve("ease", params.train, 1, train, Tuned({"l2": 7.0}, {}, trial=4))
    assert spec.model.l2 == 7.0 and spec.sources["l2"] == "tune trial 4"
    spec = resolve("sasrec", params.train, 3, train, Tuned({}, {"lr": 0.01}, trial=2))
    assert spec.trainer.lr == 0.01 and spec.trainer.seed == 3
    assert spec.sources["trainer.lr"] == "tune trial 2"


def test_a_model_section_trainer_overrides_the_shared_trainer() -> None:
    train, _ = tiny_train()
    params = Params.model_validate(
        {"train": {"trainer": {"lr": 0.5, "patience": 2}, "sasrec": {"trainer": {"patience": 9}}}}
    )
    spec = resolve("sasrec", params.train, 1, train)
    assert (spec.trainer.lr, spec.trainer.patience) == (0.5, 9)
    assert spec.sources["trainer.patience"] == "params.yaml train.sasrec.trainer"


def test_unknown_keys_are_params_errors_naming_the_section() -> None:
    train, _ = tiny_train()
    params = Params.model_validate({"train": {"trainer": {"learning_rate": 0.1}}})
    with pytest.raises(ParamsError, match=r"train.sasrec.trainer: .*learning_rate.*known"):
        resolve("sasrec", params.train, 1, train)
    params = Params.model_validate({"train": {"ease": {"lambda": 3}}})
    with pytest.raises(ParamsError, match=r"train.ease: .*lambda"):
        resolve("ease", params.train, 1, train)
    params = Params.model_validate({"train": {"ease": {"trainer": {"lr": 3}}}})
    with pytest.raises(ParamsError, match="closed form"):
        resolve("ease", params.train, 1, train)


def test_read_tuned_gives_typed_updates(tmp_path) -> None:
    best = tmp_path / "best.json"
    best.write_text('{"sasrec": {"model": {"dropout": 0.3}, "trainer": {"lr": 0.002}, "trial": 1}}')
    assert read_tuned(best) == {"sasrec": Tuned({"dropout": 0.3}, {"lr": 0.002}, 1)}
    assert read_tuned(tmp_path / "none.json") == {}


def test_a_tuned_value_that_overrides_params_is_logged(caplog) -> None:
    train, _ = tiny_train()
    params = Params.model_validate({"train": {"ease": {"l2": 250.0}}})
    spec = resolve("ease", params.train, 1, train, Tuned({"l2": 7.0}, {}, trial=3))
    with caplog.at_level("WARNING"):
        log_tuned_choices(spec, params.train)
    assert "train.ease.l2: using 7.0 from tune trial 3, not params.yaml's 250.0" in caplog.text
    assert "tune.trials.ease: 0" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        log_tuned_choices(resolve("ease", params.train, 1, train), params.train)
    assert caplog.text == ""


def test_a_killed_study_resumes_to_the_same_result(tmp_path) -> None:
    train, valid = tiny_train()
    params = params_with(5)
    whole = run_study("ease", params, train, valid, f"sqlite:///{tmp_path / 'whole.db'}")

    class Killed(BaseException):
        """Stands for SIGKILL: nothing in the study catches it."""

    storage = f"sqlite:///{tmp_path / 'cut.db'}"
    calls = {"n": 0}
    original = tuning.objective

    def dying_objective(*args, **kwargs):
        run_trial = original(*args, **kwargs)

        def trial(t):
            calls["n"] += 1
            if calls["n"] == 3:
                raise Killed
            return run_trial(t)

        return trial

    tuning.objective = dying_objective
    try:
        with pytest.raises(Killed):
            run_study("ease", params, train, valid, storage)
    finally:
        tuning.objective = original
    study = optuna.load_study(study_name="ease", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "RUNNING"]

    resumed = run_study("ease", params, train, valid, storage)
    states = [t.state.name for t in resumed.trials]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == 5  # 2 kept, 3 run
    assert resumed.best_params == whole.best_params
    assert resumed.best_value == whole.best_value
    finished = [t for t in resumed.trials if t.state.name == "COMPLETE"]
    assert [t.params for t in finished] == [t.params for t in whole.trials]
