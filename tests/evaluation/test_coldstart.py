"""Cold-start protocols: cold items never leak into training, new users never train,
k-shot histories hold exactly k events, and the numbers match hand-computed answers."""

from __future__ import annotations

import inspect
import itertools
import json
import math
import random

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.core.config import Params
from pipelines.evaluation.coldstart import (
    FitInputs,
    choose_cold_items,
    choose_new_users,
    few_shot_inputs,
    fit_inputs,
    new_items_protocol,
    new_users_protocol,
)
from pipelines.evaluation.metrics import (
    candidate_metrics,
    ndcg_at_k,
    random_candidate_metrics,
    random_ndcg_one_target,
    recall_at_k,
)
from pipelines.features.dataset import SideInfo, train_data
from pipelines.features.sequences import build_sequences, histories_for, remove_items, targets_for
from pipelines.models import MODELS, Histories, Recommender, TrainData
from pipelines.models.base import PAD
from pipelines.stages import coldstart

N_ITEMS = 10
DAY = 86_400


class FixedScores(Recommender):
    """Scores every item by a fixed vector; remembers what it was trained on."""

    name = "fixed"

    def __init__(self, scores: list[float]) -> None:
        super().__init__(len(scores))
        self.register_buffer("fixed", torch.tensor(scores, dtype=torch.float32))
        self.trained_on: TrainData | None = None

    def fit(self, train: TrainData) -> None:
        self.trained_on = train

    def score_all(self, histories: Histories) -> torch.Tensor:
        return self.fixed[None, :].expand(histories.items.shape[0], -1)  # [B, n_items]


class Spy:
    """A ``fit`` callback that records every TrainData it is handed."""

    def __init__(self, scores: list[float]) -> None:
        self.scores, self.seen = scores, []

    def __call__(self, inputs: FitInputs) -> Recommender:
        model = FixedScores(self.scores)
        model.fit(inputs.train)
        self.seen.append(inputs)
        return model


def sequences_of(rows: list[list[int]], held_out: int = 2) -> pd.DataFrame:
    """Feature sequences as the features stage builds them: the last two events are valid/test."""
    events = [
        {
            "user_idx": user,
            "item_idx": item,
            "timestamp": DAY * (user + 1) + 3600 * position,
            "split": "train" if position < len(items) - held_out else "held",
        }
        for user, items in enumerate(rows)
        for position, item in enumerate(items)
    ]
    return build_sequences(pd.DataFrame(events))


# 4 users over 10 items; items 2 and 7 will be cold
ROWS = [[0, 2, 1, 3, 7], [4, 5, 6, 1], [7, 0, 8, 9, 2, 3], [1, 3, 4, 5, 6]]
COLD = np.array([2, 7])


def test_choose_cold_items_is_seeded_distinct_and_sized() -> None:
    cold = choose_cold_items(1349, 0.2, seed=42)
    assert len(cold) == round(0.2 * 1349) and len(set(cold.tolist())) == len(cold)
    assert cold.tolist() == sorted(cold.tolist()) and cold.max() < 1349
    assert np.array_equal(cold, choose_cold_items(1349, 0.2, seed=42))
    assert not np.array_equal(cold, choose_cold_items(1349, 0.2, seed=7))
    assert len(choose_new_users(943, 0.1, seed=42)) == 94
    with pytest.raises(ValueError, match="share"):
        choose_cold_items(10, 1.5, seed=0)


def test_remove_items_drops_them_everywhere_and_keeps_n_train() -> None:
    sequences = sequences_of(ROWS)
    warm = remove_items(sequences, COLD)
    assert [s.tolist() for s in warm["items"]] == [
        [0, 1, 3],
        [4, 5, 6, 1],
        [0, 8, 9, 3],
        [1, 3, 4, 5, 6],
    ]
    # training parts were [0 2 1], [4 5], [7 0 8 9], [1 3 4]: cold events leave n_train
    assert warm["n_train"].tolist() == [2, 2, 3, 3]
    assert list(warm.columns) == list(sequences.columns) and len(warm) == len(sequences)
    for row in warm.itertuples():  # timestamps stay aligned with the kept events
        assert len(row.timestamps) == len(row.items)
    # nothing cold reaches a model's training data
    data = train_data(warm, SideInfo(N_ITEMS))
    assert data.matrix[:, COLD].nnz == 0
    assert not np.isin(data.histories.items.numpy(), COLD).any()


def test_removing_nothing_changes_nothing() -> None:
    sequences = sequences_of([[0, 1, 2], [3, 4, 5, 6], *ROWS])
    same = remove_items(sequences, [])
    for column in sequences.columns:
        assert [np.asarray(v).tolist() for v in same[column]] == [
            np.asarray(v).tolist() for v in sequences[column]
        ]


def test_a_user_can_lose_every_event() -> None:
    emptied = remove_items(sequences_of([[0, 1, 2], [3, 4, 5]]), [3, 4, 5])
    assert emptied["items"][1].tolist() == [] and emptied["timestamps"][1].tolist() == []
    assert emptied["n_train"].tolist() == [1, 0]
    assert train_data(emptied, SideInfo(N_ITEMS)).matrix.shape == (1, N_ITEMS)  # left out


def test_fit_inputs_validation_is_the_protocol_valid_split() -> None:
    sequences = sequences_of(ROWS)
    profiles = np.arange(16).reshape(4, 4)
    inputs = fit_inputs(sequences, SideInfo(N_ITEMS, profiles=profiles))
    reference = histories_for(sequences, "valid", profiles)
    assert torch.equal(inputs.valid.histories.items, reference.items)
    assert torch.equal(inputs.valid.targets, targets_for(sequences, "valid"))
    assert torch.equal(inputs.valid.histories.profiles, reference.profiles)
    # after removal, validation is the first warm held-out event: never a cold item
    warm = fit_inputs(remove_items(sequences, COLD), SideInfo(N_ITEMS))
    assert warm.valid.targets.tolist() == [3, 6, 3, 5]
    assert not np.isin(warm.valid.histories.items.numpy(), COLD).any()


def test_candidate_metrics_match_the_reference_forms() -> None:
    rng = random.Random(0)
    for _ in range(50):
        n_candidates, k = rng.randint(1, 12), rng.randint(1, 8)
        scores = torch.tensor([[float(rng.randint(0, 3)) for _ in range(n_candidates)]])  # ties
        relevant = torch.tensor([[rng.random() < 0.3 for _ in range(n_candidates)]])
        recall, ndcg = candidate_metrics(scores, relevant, k)
        ranked = sorted(range(n_candidates), key=lambda c: (-scores[0, c].item(), c))
        truth = {c for c in range(n_candidates) if relevant[0, c]}
        assert recall.item() == pytest.approx(recall_at_k(ranked, truth, k))
        assert ndcg.item() == pytest.approx(ndcg_at_k(ranked, truth, k))


def test_random_expectation_equals_the_mean_over_all_orders() -> None:
    for n_candidates, n_relevant, k in [(5, 2, 2), (4, 1, 3), (3, 3, 5), (6, 2, 4)]:
        truth = set(range(n_relevant))
        orders = list(itertools.permutations(range(n_candidates)))
        exact = random_candidate_metrics(torch.tensor([n_relevant]), n_candidates, k)
        assert exact[f"ndcg@{k}"] == pytest.approx(
            sum(ndcg_at_k(o, truth, k) for o in orders) / len(orders)
        )
        assert exact[f"recall@{k}"] == pytest.approx(
            sum(recall_at_k(o, truth, k) for o in orders) / len(orders)
        )
    assert random_ndcg_one_target(1, 10) == 1.0
    assert random_ndcg_one_target(4, 2) == pytest.approx((1 + 1 / math.log2(3)) / 4)


def test_new_items_protocol_known_answers_and_no_leak() -> None:
    sequences = sequences_of(ROWS)
    # the model prefers item 7 over item 2; users 0 and 2 have both cold items, nobody else any
    spy = Spy([0.0] * 2 + [1.0] + [0.0] * 4 + [2.0] + [0.0] * 2)
    result = new_items_protocol(sequences, SideInfo(N_ITEMS), spy, COLD, k=1)
    assert result["users"] == 2 and result["cold_items"] == 2
    assert result["model"] == {"recall@1": 0.5, "ndcg@1": 1.0}  # top-1 is relevant, half found
    assert result["warm_ceiling"] == result["model"]  # a fixed vector learns nothing
    assert result["random"]["ndcg@1"] == pytest.approx(1.0)  # every candidate is relevant
    cold_train, warm_train = (inputs.train for inputs in spy.seen)
    assert cold_train.matrix[:, COLD].nnz == 0  # the cold model never saw a cold item
    assert warm_train.matrix[:, COLD].nnz == 2  # the ceiling did: item 2 (user 0), 7 (user 2)


def test_cross_fitted_warm_never_trains_on_the_scored_users_cold_events() -> None:
    sequences = sequences_of(ROWS)
    spy = Spy([0.0] * 2 + [1.0] + [0.0] * 4 + [2.0] + [0.0] * 2)
    result = new_items_protocol(sequences, SideInfo(N_ITEMS), spy, COLD, k=1, warm_folds=2)
    assert result["warm_cross_fitted"] == result["model"]  # a fixed vector: same ranking
    fold_fits = spy.seen[2:]
    assert len(fold_fits) == 2
    # users 0 and 2 are the affected ones, one per fold: each fold fit keeps the other's
    # single cold training event (item 2 of user 0 or item 7 of user 2), never both
    kept = sorted(int(fit.train.matrix[:, COLD].sum()) for fit in fold_fits)
    assert kept == [1, 1]
    assert {fit.train.matrix[:, COLD].nonzero()[1][0] for fit in fold_fits} == {0, 1}


def items_in(inputs: FitInputs) -> set[int]:
    """Every item a fit callback could learn from: matrix, sequences, early-stopping data."""
    train, valid = inputs.train, inputs.valid
    seen = set(train.matrix.nonzero()[1].tolist())
    for histories in (train.histories, valid.histories):
        seen |= set(histories.items[histories.items != PAD].tolist())
    return seen | set(valid.targets.tolist())


def test_no_cold_item_reaches_any_input_of_the_cold_model() -> None:
    spy = Spy([0.0] * N_ITEMS)
    new_items_protocol(sequences_of(ROWS), SideInfo(N_ITEMS), spy, COLD)
    cold_model, warm_ceiling = spy.seen
    assert items_in(cold_model) and not items_in(cold_model) & set(COLD.tolist())
    assert items_in(warm_ceiling) >= set(COLD.tolist())  # the guard can see a cold item


def test_new_items_protocol_ties_fall_back_to_item_index() -> None:
    # a model that cannot score unseen items gives them all the same score
    rows = [[0, 3, 1, 5], [1, 2, 0, 4], [6, 0, 5, 1]]
    cold = np.array([3, 4, 5])
    result = new_items_protocol(
        sequences_of(rows), SideInfo(N_ITEMS), Spy([0.0] * N_ITEMS), cold, k=1
    )
    # order is always 3, 4, 5: user 0 has {3, 5} → hit; user 1 {4} → miss; user 2 {5} → miss
    assert result["users"] == 3
    assert result["model"]["ndcg@1"] == pytest.approx(1 / 3)
    assert result["model"]["recall@1"] == pytest.approx((1 / 2) / 3)
    assert result["index_order"] == result["model"]


def test_histories_hold_only_warm_events() -> None:
    sequences = sequences_of(ROWS)
    seen: list[Histories] = []

    class Recorder(FixedScores):
        def score_all(self, histories: Histories) -> torch.Tensor:
            seen.append(histories)
            return super().score_all(histories)

    new_items_protocol(
        sequences,
        SideInfo(N_ITEMS),
        lambda inputs: Recorder([0.0] * N_ITEMS),
        COLD,
    )
    items = torch.cat([h.items for h in seen])
    assert not np.isin(items.numpy(), COLD).any()
    # user 0's history is all their warm events, valid and test ones included
    assert items[0][items[0] >= 0].tolist() == [0, 1, 3]


# -- new users ----------------------------------------------------------------------
def test_few_shot_histories_hold_exactly_k_events() -> None:
    sequences = sequences_of(ROWS)
    profiles = np.arange(16).reshape(4, 4)
    for shot in (0, 1, 3, 5):
        histories, targets, users = few_shot_inputs(sequences, shot, profiles)
        assert (histories.mask.sum(dim=1) == shot).all()
        expected = [u for u, row in enumerate(ROWS) if len(row) > shot]  # user 1 has only 4
        assert users.tolist() == expected
        assert targets.tolist() == [ROWS[u][shot] for u in expected]
        assert histories.profiles.tolist() == profiles[expected].tolist()


def test_new_users_never_train_and_get_known_answers() -> None:
    # user u's marker item u appears in no other sequence
    rows = [[u, 8, 9, 6, 7] for u in range(4)]
    sequences = sequences_of(rows)
    spy = Spy([float(i) for i in range(N_ITEMS)])  # prefers higher item index
    result = new_users_protocol(sequences, SideInfo(N_ITEMS), spy, np.array([1, 3]), shots=(0, 1))
    held_out_train, full_train = (inputs.train for inputs in spy.seen)
    assert held_out_train.matrix.shape[0] == 2 and full_train.matrix.shape[0] == 4
    assert held_out_train.matrix[:, [1, 3]].nnz == 0  # their marker items never reach training
    assert result["users"] == 2
    # k=0: the target is the marker (1 or 3); the model ranks items 9, 8, ..., 0: ranks 8 and 6
    assert result["shots"]["0"]["ndcg@10"] == pytest.approx(
        (1 / math.log2(10) + 1 / math.log2(8)) / 2
    )
    # k=1: target is item 8, item 9 is ahead of it and the marker is masked → rank 1
    assert result["shots"]["1"]["ndcg@10"] == pytest.approx(1 / math.log2(3))
    assert result["shots"]["1"]["random_ndcg@10"] == pytest.approx(random_ndcg_one_target(9, 10))
    # full history: target 7, and the only items above it (8, 9) are in the history
    assert result["full_history"] == {"users": 2, "ndcg@10": 1.0}


def test_no_event_of_a_new_user_reaches_any_training_input() -> None:
    # user u's marker item 10 + u appears in no other sequence, not even as a target
    rows = [[10 + u, 8, 9, 6, 7, 0, 1] for u in range(6)]
    spy = Spy([0.0] * 16)
    new_users = np.array([1, 4])
    new_users_protocol(sequences_of(rows), SideInfo(16), spy, new_users, shots=(0, 1))
    held_out_fit, full_fit = spy.seen
    markers = {10 + int(u) for u in new_users}
    assert len(held_out_fit.valid.targets) == held_out_fit.train.matrix.shape[0] == 4
    assert items_in(held_out_fit) >= {10, 12, 13, 15} and not items_in(held_out_fit) & markers
    assert items_in(full_fit) >= markers


def test_popularity_baseline_learns_from_training_users_only() -> None:
    # the held-out users (2, 3) all start with item 6, which no training user has
    rows = [[0, 1, 2, 3, 4], [0, 1, 2, 4, 3], [6, 5, 0, 1, 2], [6, 5, 1, 0, 2]]
    result = new_users_protocol(
        sequences_of(rows), SideInfo(N_ITEMS), Spy([0.0] * N_ITEMS), np.array([2, 3]), shots=(0,)
    )
    # trained on users 0 and 1 (training events 0, 1, 2), popularity ranks 0, 1, 2 first,
    # then 3..9 in index order: item 6 has rank 6 (0-based) → NDCG 1/log2(8)
    assert result["shots"]["0"]["popularity_ndcg@10"] == pytest.approx(1 / math.log2(8))


def test_full_history_uses_the_model_trained_with_everyone() -> None:
    rows = [[0, 1, 2, 3, 4], [0, 1, 2, 4, 3], [6, 5, 0, 1, 9], [6, 5, 1, 0, 9]]
    full = FixedScores([0.0] * 9 + [1.0])  # puts item 9, the held-out users' last event, first
    result = new_users_protocol(
        sequences_of(rows),
        SideInfo(N_ITEMS),
        Spy([0.0] * N_ITEMS),
        np.array([2, 3]),
        shots=(0,),
        full_model=full,
    )
    assert result["full_history"] == {"users": 2, "ndcg@10": 1.0}


# -- the stage --------------------------------------------------------------------------
def write_tiny_stage_inputs(root) -> tuple:
    rng = np.random.default_rng(0)
    n_users, n_items = 30, 12
    rows = [rng.permutation(n_items)[:8].tolist() for _ in range(n_users)]
    features = root / "features"
    features.mkdir()
    sequences_of(rows).to_parquet(features / "sequences.parquet")
    genders = ["F", "M"]
    pd.DataFrame(
        {
            "user_idx": range(n_users),
            "age_band": ["18-24"] * n_users,
            "gender": [genders[u % 2] for u in range(n_users)],
            "occupation": ["other"] * n_users,
            "region": ["857"] * n_users,
            "age_band_code": 1,
            "gender_code": [1 + u % 2 for u in range(n_users)],
            "occupation_code": 1,
            "region_code": 1,
        }
    ).to_parquet(features / "profiles.parquet")
    (features / "profile_vocab.json").write_text(
        json.dumps(
            {"age_band": ["18-24"], "gender": genders, "occupation": ["other"], "region": ["857"]}
        )
    )
    items = root / "items.parquet"
    pd.DataFrame(
        {
            "item_idx": range(n_items),
            "item_id": [str(i) for i in range(n_items)],
            "title": [f"Movie {i}" for i in range(n_items)],
            "year": [1990 + i for i in range(n_items)],
            "genres": [["Drama"] if i % 2 else ["Comedy"] for i in range(n_items)],
        }
    ).to_parquet(items)
    embeddings = root / "items.npy"
    np.save(embeddings, rng.normal(size=(n_items, 8)).astype(np.float32))
    return features, items, embeddings


def test_stage_writes_metrics_and_table(tmp_path) -> None:
    features, items, embeddings = write_tiny_stage_inputs(tmp_path)
    out = tmp_path / "coldstart"
    params = tmp_path / "params.yaml"
    params.write_text("coldstart:\n  models: [text_zero_shot, ease, popularity]\n")
    assert (
        coldstart.main(
            [
                "--features",
                str(features),
                "--items",
                str(items),
                "--embeddings",
                str(embeddings),
                "--out",
                str(out),
                "--tuned",
                str(tmp_path / "no-tuning.json"),
                "--params",
                str(params),
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"text_zero_shot", "ease", "popularity"}
    assert metrics["cold_items"] == round(0.2 * 12) and metrics["new_users"] == 3
    ease = metrics["models"]["ease"]
    assert set(ease["new_users"]["shots"]) == {"0", "1", "3", "5"}
    assert 0.0 <= ease["new_items"]["model"]["ndcg@20"] <= 1.0
    table = (out / "coldstart.md").read_text()
    assert "| text_zero_shot |" in table and "| random (expected) |" in table
    assert "warm_cross_fitted" not in ease["new_items"]  # off unless params ask for it


class TinyNextItem(Recommender):
    """A trainable bigram model: the last item's embedding scores the next item."""

    name = "tiny_next_item"
    trainable = True

    def __init__(self, n_items: int, config: dict | None = None) -> None:
        super().__init__(n_items, config)
        self.embed = torch.nn.Embedding(n_items + 1, 8)  # row 0 = PAD
        self.out = torch.nn.Linear(8, n_items)
        self.fitted = False

    def fit(self, train: TrainData) -> None:
        self.fitted = True

    def loss(self, batch: Histories) -> torch.Tensor:
        inputs, targets = batch.items[:, :-1] + 1, batch.items[:, 1:]  # PAD → row 0
        logits = self.out(self.embed(inputs))  # [B, L - 1, n_items]
        valid = (targets != PAD) & (inputs != 0)
        return torch.nn.functional.cross_entropy(logits[valid], targets[valid])

    def score_all(self, histories: Histories) -> torch.Tensor:
        return self.out(self.embed(histories.items[:, -1] + 1))  # [B, n_items]


def test_trainable_models_go_through_the_shared_trainer(monkeypatch) -> None:
    # the real loop is exercised by the loop's own tests; here: the call matches its signature
    from pipelines.training import fit as fit_module
    from pipelines.training import loop

    calls = []

    def recording_fit_gradient(*args, **kwargs):
        inspect.signature(loop.fit_gradient).bind(*args, **kwargs)  # TypeError if it drifts
        calls.append(args)

    monkeypatch.setitem(MODELS, TinyNextItem.name, TinyNextItem)
    monkeypatch.setattr(fit_module, "fit_gradient", recording_fit_gradient)
    rows = [[0, 1, 2, 3, 4], [1, 2, 3, 4, 0], [2, 3, 4, 0, 1]]
    inputs = fit_inputs(sequences_of(rows), SideInfo(12))
    params = Params.model_validate({"seed": 3})
    spec = fit_module.resolve(TinyNextItem.name, params.train, params.seed, inputs.train)
    model, _ = fit_module.fit_model(spec, inputs.train, inputs.valid)
    assert isinstance(model, TinyNextItem) and model.fitted and not model.training
    ((passed_model, train, valid, config, *_),) = calls
    assert passed_model is model and train is inputs.train
    assert valid.histories.items.shape == (3, 3)  # each user's 3 training events
    assert valid.targets.tolist() == [3, 4, 0] and config.seed == 3
