"""Reusing a fit: the same configs on the same data give the same model, so it is not refitted."""

from __future__ import annotations

import pytest
import torch

from pipelines.core.config import Params
from pipelines.training.fit import (
    Tuned,
    fit_fingerprint,
    fit_model,
    fit_or_reuse,
    resolve,
    save_fitted,
)
from tests.training.test_tuning import tiny_train

pytestmark = pytest.mark.usefixtures("one_thread")

GRADIENT = {
    "train": {
        "sasrec": {
            "hidden": 8,
            "heads": 1,
            "layers": 1,
            "max_len": 4,
            "trainer": {"epochs": 2, "batch_size": 2},
        }
    }
}


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ["ease", "sasrec"])
def test_an_identical_fit_is_reused_and_equals_a_new_one(tmp_path, name: str) -> None:
    train, valid = tiny_train()
    params = Params.model_validate(GRADIENT)
    spec = resolve(name, params.train, 1, train, Tuned({}, {}, trial=0))
    model, result = fit_model(spec, train, valid)
    save_fitted(model, spec, result, fit_fingerprint(spec, train, valid), tmp_path / name)

    reused, reused_result, origin = fit_or_reuse(spec, train, valid, [tmp_path / name])
    assert origin == str(tmp_path / name)
    assert states_equal(reused, model) and reused_result == result
    fresh, _ = fit_model(spec, train, valid)  # deterministic: the reuse is no approximation
    assert states_equal(fresh, model)


def test_another_config_or_other_data_is_fitted_anew(tmp_path) -> None:
    train, valid = tiny_train()
    params = Params()
    spec = resolve("ease", params.train, 1, train)
    model, _ = fit_model(spec, train, valid)
    save_fitted(model, spec, None, fit_fingerprint(spec, train, valid), tmp_path / "ease")
    other = resolve("ease", params.train, 1, train, Tuned({"l2": 3.0}, {}, trial=1))
    assert fit_or_reuse(other, train, valid, [tmp_path / "ease"])[2] == "fitted"
    fewer = type(train)(train.matrix[:3], train.histories.rows(slice(0, 3)), train.n_items)
    assert fit_or_reuse(spec, fewer, valid, [tmp_path / "ease"])[2] == "fitted"
