"""Repeat consumption as a protocol choice (evaluate.mask_history, issue 20): one setting for
evaluate, tune, early stopping and cold start; which models can recommend a repeat."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from pipelines.core.config import Params, ParamsError
from pipelines.evaluation.coldstart import few_shot_inputs, new_users_protocol
from pipelines.evaluation.ranking import candidates, evaluate_model, history_share
from pipelines.features.dataset import SideInfo
from pipelines.features.sequences import build_sequences
from pipelines.models import Histories, Recommender, TrainData, build_model
from pipelines.models.base import Validation
from pipelines.training import loop, tuning
from pipelines.training.fit import check_params, resolve

N_ITEMS = 6


class Fixed(Recommender):
    """Scores every item by a fixed vector."""

    name = "fixed"

    def __init__(self, scores: list[float]) -> None:
        super().__init__(len(scores))
        self.register_buffer("fixed", torch.tensor(scores, dtype=torch.float32))

    def fit(self, train: TrainData) -> None:
        pass

    def score_all(self, histories: Histories) -> torch.Tensor:
        return self.fixed[None, :].expand(histories.items.shape[0], -1)


# user 0 buys item 0 again (a repeat target), user 1 buys a new item, 3
HISTORIES = Histories.from_lists([[0, 1], [1, 2]], [[1, 2], [1, 2]])
TARGETS = torch.tensor([0, 3])
PREFERS_0_THEN_3 = Fixed([5.0, 0.0, 0.0, 4.0, 0.0, 0.0])


def test_a_masked_repeat_target_is_a_certain_miss() -> None:
    metrics = evaluate_model(PREFERS_0_THEN_3, HISTORIES, TARGETS, 1, 8)
    # user 0: item 0 is masked, the target can never be hit; user 1: item 0 first → miss
    assert metrics["hr@1"] == 0.0
    assert "repeats@1" not in metrics, "0 by construction, so not reported"


def test_unmasked_the_repeat_is_a_candidate_and_repeats_at_k_says_how_much() -> None:
    metrics = evaluate_model(PREFERS_0_THEN_3, HISTORIES, TARGETS, 1, 8, exclude_seen=False)
    assert metrics["hr@1"] == 0.5  # user 0's repeat is hit; user 1 gets item 0 (not seen)
    assert metrics["repeats@1"] == 0.5  # user 0's one slot holds a history item
    top2 = torch.tensor([[0, 3], [0, 3]])
    assert history_share(top2, HISTORIES, N_ITEMS, 1) == 0.25


def test_unmasked_every_item_is_a_candidate() -> None:
    assert candidates(HISTORIES, N_ITEMS).tolist() == [4, 4]
    assert candidates(HISTORIES, N_ITEMS, exclude_seen=False).tolist() == [6, 6]


# -- which models can recommend a repeat -------------------------------------------------
def shop_train() -> TrainData:
    rows = [[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 4, 5]]
    users = [u for u, row in enumerate(rows) for _ in row]
    items = [i for row in rows for i in row]
    matrix = sp.csr_matrix((np.ones(len(items), np.float32), (users, items)), shape=(4, N_ITEMS))
    return TrainData(matrix, Histories.from_lists(rows, [[1, 2, 3]] * 4), n_items=N_ITEMS)


def test_popularity_recommends_a_repeat_when_it_is_allowed() -> None:
    model = build_model("popularity", N_ITEMS)
    model.fit(shop_train())
    history = Histories.from_lists([[0]], [[1]])  # item 0 is the most bought
    assert evaluate_model(model, history, torch.tensor([0]), 1, 8, exclude_seen=False)["hr@1"] == 1
    assert evaluate_model(model, history, torch.tensor([0]), 1, 8)["hr@1"] == 0


@pytest.mark.parametrize("name", ["ease", "itemknn"])
def test_item_to_item_models_never_score_an_item_from_itself(name: str) -> None:
    # zero diagonal by construction: a history item is scored only by the *other* history
    # items, so they recommend a repeat only when its neighbours point at it
    model = build_model(name, N_ITEMS)
    model.fit(shop_train())
    alone = model.score_all(Histories.from_lists([[0]], [[1]]))[0]
    assert alone[0] == 0.0
    with_neighbour = model.score_all(Histories.from_lists([[0, 1]], [[1, 2]]))[0]
    assert with_neighbour[0] != 0.0, "item 1 points at item 0: a repeat can be scored"


# -- cold start: the same protocol --------------------------------------------------------
def sequences_of(rows: list[list[int]]) -> pd.DataFrame:
    events = pd.DataFrame(
        [(u, i, 1000 * u + t, "train") for u, row in enumerate(rows) for t, i in enumerate(row)],
        columns=["user_idx", "item_idx", "timestamp", "split"],
    )
    return build_sequences(events)


def test_a_k_shot_target_the_user_had_is_kept_as_evaluate_keeps_it() -> None:
    _, targets, users = few_shot_inputs(sequences_of([[2, 2, 3], [4, 5, 1]]), 1)
    assert users.tolist() == [0, 1] and targets.tolist() == [2, 5]


def test_new_users_follow_mask_history() -> None:
    # the new users (2, 3) buy item 5 twice; a model that ranks item 5 first
    rows = [[0, 1, 2, 3], [1, 2, 3, 0], [5, 5, 4, 1], [5, 5, 1, 4]]
    model = Fixed([0.0] * 5 + [1.0])
    results = {
        mask: new_users_protocol(
            sequences_of(rows),
            SideInfo(N_ITEMS),
            lambda inputs: model,
            np.array([2, 3]),
            shots=(1,),
            mask_history=mask,
        )["shots"]["1"]
        for mask in (True, False)
    }
    assert results[True]["users"] == results[False]["users"] == 2
    # masked: item 5 is seen, target 5 is a certain miss; unmasked: it ranks first
    assert results[True]["ndcg@10"] == 0.0
    assert results[False]["ndcg@10"] == 1.0
    assert results[False]["random_ndcg@10"] == pytest.approx(
        1 / N_ITEMS * sum(1 / math.log2(r + 2) for r in range(N_ITEMS))
    )


# -- early stopping and tuning judge the same way -----------------------------------------
def tiny() -> tuple[TrainData, Validation]:
    train = shop_train()
    return train, Validation(train.histories, torch.tensor([0, 1, 2, 4]))


def test_resolve_takes_the_protocol_from_evaluate_and_records_where() -> None:
    train, _ = tiny()
    params = Params()
    spec = resolve("sasrec", params.train, 1, train, mask_history=False)
    assert spec.trainer.mask_history is False
    assert spec.sources["trainer.mask_history"] == "params.yaml evaluate.mask_history"
    assert resolve("sasrec", params.train, 1, train).trainer.mask_history is True


def test_mask_history_is_one_setting_not_a_trainer_key() -> None:
    params = Params.model_validate({"train": {"trainer": {"mask_history": False}}})
    with pytest.raises(ParamsError, match=r"set by evaluate\.mask_history alone"):
        check_params(params)


def test_early_stopping_ranks_as_evaluate_does(monkeypatch) -> None:
    train, valid = tiny()
    seen = []

    def recording(*args, **kwargs):
        seen.append(kwargs.get("exclude_seen", True))
        return {"ndcg@10": 0.1}

    monkeypatch.setattr(loop, "evaluate_model", recording)
    config = {"train": {"sasrec": {"hidden": 8, "heads": 1, "layers": 1, "max_len": 4}}}
    params = Params.model_validate(config)
    spec = resolve("sasrec", params.train, 1, train, mask_history=False)
    model = build_model("sasrec", N_ITEMS, spec.model)
    trainer = spec.trainer.__class__(**{**spec.record()["trainer"], "epochs": 2})
    loop.fit_gradient(model, train, valid, trainer)
    assert seen == [False, False]


def test_tuning_judges_closed_form_trials_by_the_protocol(monkeypatch) -> None:
    train, valid = tiny()
    space = {"ease": {"model": {"l2": {"type": "float", "low": 1, "high": 10}}}}
    raw = {"tune": {"trials": {"ease": 1}, "spaces": space}, "evaluate": {"mask_history": False}}
    params = Params.model_validate(raw)
    seen = []

    def recording(*args, **kwargs):
        seen.append(kwargs.get("exclude_seen", True))
        return {"ndcg@10": 0.1}

    monkeypatch.setattr(tuning, "evaluate_model", recording)
    tuning.run_study("ease", params, train, valid, storage="sqlite:///:memory:")
    assert seen == [False]
    default = Params.model_validate({**raw, "evaluate": {}})
    # a study under the other protocol is another study; the default keeps its old key
    assert tuning.study_key("ease", params, "d") != tuning.study_key("ease", default, "d")
