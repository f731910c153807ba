"""Leak guards: no validation or test target ever reaches what a model learns from.

Every user's validation and test targets are *planted* items that occur nowhere
else, so any trace of one in the training matrix, the training sequences, the
trainer's windows, the early-stopping input or the tuning objective is a leak.
A training history one event too long (the mutant the reviewers planted) fails
every test here.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.core.config import Params, SearchSpace
from pipelines.data.split import split_interactions
from pipelines.features.batch import Histories
from pipelines.features.dataset import SideInfo, train_data, validation
from pipelines.features.sequences import build_sequences, histories_for, targets_for
from pipelines.models import MODELS
from pipelines.models.base import PAD, Recommender, TrainData
from pipelines.training import tuning
from pipelines.training.fit import fit_model, resolve
from pipelines.training.loop import Sequences, TrainerConfig, batches

pytestmark = pytest.mark.usefixtures("one_thread")

N_USERS, N_COMMON = 12, 10


def planted() -> tuple[pd.DataFrame, set[int], set[int]]:
    """Users see common items 0..9, then a private valid item, then a private test item."""
    rows, rng = [], np.random.default_rng(0)
    for user in range(N_USERS):
        common = rng.permutation(N_COMMON)[: rng.integers(4, 9)]
        stamps = iter(range(1000 * user, 1000 * user + 100, 5))
        rows += [(f"u{user}", str(item), next(stamps)) for item in common]
        rows.append((f"u{user}", str(100 + user), next(stamps)))  # the validation target
        rows.append((f"u{user}", str(200 + user), next(stamps)))  # the test target
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    split = split_interactions(frame, min_count=1)
    index = dict(zip(split["item_id"], split["item_idx"], strict=False))
    valid = {int(index[str(100 + u)]) for u in range(N_USERS)}
    test = {int(index[str(200 + u)]) for u in range(N_USERS)}
    return split, valid, test


@pytest.fixture(scope="module")
def data():
    split, valid_items, test_items = planted()
    sequences = build_sequences(split)
    n_items = int(split["item_idx"].max()) + 1
    side = SideInfo(
        n_items=n_items,
        item_embeddings=np.random.default_rng(1).normal(size=(n_items, 16)).astype(np.float32),
        profiles=np.ones((N_USERS, 4), dtype=np.int64),
        profile_sizes=(2, 2, 2, 2),
    )
    return sequences, side, valid_items, test_items


def items_of(histories: Histories) -> set[int]:
    return set(histories.items[histories.items != PAD].tolist())


def test_training_matrix_and_sequences_hold_no_target(data) -> None:
    sequences, side, valid_items, test_items = data
    train = train_data(sequences, side)
    columns = set(np.flatnonzero(np.asarray(train.matrix.sum(axis=0)).ravel()).tolist())
    assert not columns & (valid_items | test_items)
    assert not items_of(train.histories) & (valid_items | test_items)


def test_early_stopping_sees_validation_targets_only_as_targets(data) -> None:
    sequences, side, valid_items, test_items = data
    valid = validation(sequences, side)
    assert set(valid.targets.tolist()) == valid_items
    assert not items_of(valid.histories) & (valid_items | test_items)
    # the test split's history holds the validation item, never the test item
    test_histories = histories_for(sequences, "test")
    assert items_of(test_histories) & valid_items == valid_items
    assert not items_of(test_histories) & test_items
    assert set(targets_for(sequences, "test").tolist()) == test_items


def test_the_trainers_windows_hold_no_target(data) -> None:
    sequences, side, valid_items, test_items = data
    train = train_data(sequences, side)
    windows = Sequences.from_histories(train.histories)
    config = TrainerConfig(batch_size=4, random_windows=3)
    seen: set[int] = set()
    for epoch in range(5):
        generator = torch.Generator().manual_seed(epoch)
        for batch in batches(windows, config, 4, generator):
            seen |= items_of(batch)
    assert seen and not seen & (valid_items | test_items)


class Spy(Recommender):
    """Records every batch it learns from and every history it is asked to rank."""

    name = "spy"
    trainable = True
    context_length = 6
    learned: ClassVar[list[set[int]]] = []
    ranked: ClassVar[list[set[int]]] = []

    def __init__(self, n_items: int, config=None) -> None:
        super().__init__(n_items, config)
        self.bias = torch.nn.Parameter(torch.zeros(n_items))

    def loss(self, batch: Histories) -> torch.Tensor:
        Spy.learned.append(items_of(batch))
        return -torch.log_softmax(self.bias, 0)[batch.items.clamp(min=0)].mean()

    def score_all(self, histories: Histories) -> torch.Tensor:
        Spy.ranked.append(items_of(histories))
        return self.bias.expand(len(histories), -1)


@pytest.mark.parametrize("how", ["train stage fit", "tuning objective"])
def test_no_target_reaches_a_trainable_model(data, monkeypatch, how: str) -> None:
    sequences, side, valid_items, test_items = data
    monkeypatch.setitem(MODELS, Spy.name, Spy)
    Spy.learned, Spy.ranked = [], []
    train, valid = train_data(sequences, side), validation(sequences, side)
    params = Params.model_validate({"train": {"trainer": {"epochs": 3, "batch_size": 4}}})
    spec = resolve(Spy.name, params.train, 1, train)
    if how == "train stage fit":
        fit_model(spec, train, valid)
    else:

        class Trial:
            number = 0

            def report(self, value: float, step: int) -> None: ...

            def should_prune(self) -> bool:
                return False

        monkeypatch.setattr(tuning, "suggest", lambda trial, space: tuning.Tuned({}, {}, 0))
        spaces = {Spy.name: SearchSpace()}  # model_copy skips validation: Spy is no ModelName
        params = params.model_copy(
            update={"tune": params.tune.model_copy(update={"spaces": spaces})}
        )
        tuning.objective(Spy.name, params, train, valid)(Trial())
    learned, ranked = set().union(*Spy.learned), set().union(*Spy.ranked)
    assert learned and not learned & (valid_items | test_items)
    assert ranked and not ranked & (valid_items | test_items)


@pytest.mark.parametrize("name", ["sasrec", "fusion_transformer"])
def test_real_models_train_on_windows_without_targets(data, monkeypatch, name: str) -> None:
    sequences, side, valid_items, test_items = data
    model_class = MODELS[name]
    learned: list[set[int]] = []
    original = model_class.loss

    def recording_loss(self, batch: Histories) -> torch.Tensor:
        learned.append(items_of(batch))
        return original(self, batch)

    monkeypatch.setattr(model_class, "loss", recording_loss)
    small = {
        "sasrec": {"hidden": 8, "heads": 1, "layers": 1, "max_len": 6},
        "fusion_transformer": {"hidden": 8, "n_heads": 1, "n_layers": 1, "max_len": 6},
    }
    params = Params.model_validate(
        {"train": {name: {**small[name], "trainer": {"epochs": 2, "batch_size": 4}}}}
    )
    train: TrainData = train_data(sequences, side)
    fit_model(resolve(name, params.train, 1, train), train, validation(sequences, side))
    assert learned and not set().union(*learned) & (valid_items | test_items)
