"""Baselines behind the common contract: known answers on hand-built data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from pipelines.models import MODELS, Histories, TrainData, build_model, load_model
from pipelines.models.base import PAD
from pipelines.models.ease import EASEConfig, ease_weights
from pipelines.models.itemknn import ItemKNNConfig, cosine_similarity, keep_top_neighbours

# 4 users × 4 items: items 0 and 1 always together, item 3 with item 2 once
MATRIX = sp.csr_matrix(
    np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1]], dtype=np.float32)
)


def train_data(embeddings: np.ndarray | None = None) -> TrainData:
    rows = [np.flatnonzero(row).tolist() for row in MATRIX.toarray()]
    histories = Histories.from_lists(rows, [list(range(len(r))) for r in rows])
    return TrainData(MATRIX, histories, n_items=4, item_embeddings=embeddings)


def one_history(items: list[int]) -> Histories:
    return Histories.from_lists([items], [list(range(len(items)))])


def test_histories_pad_left_and_truncate() -> None:
    batch = Histories.from_lists([[1, 2, 3], [4]], [[10, 20, 30], [40]], max_len=2)
    assert batch.items.tolist() == [[2, 3], [PAD, 4]]
    assert batch.timestamps.tolist() == [[20, 30], [0, 40]]
    assert batch.to_matrix(5).tolist() == [[0, 0, 1, 1, 0], [0, 0, 0, 0, 1]]


def test_histories_reject_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="timestamps"):
        Histories.from_lists([[1, 2]], [[1]])


def test_popularity_ranks_by_training_count() -> None:
    model = build_model("popularity", 4)
    model.fit(train_data())
    scores = model.score_all(one_history([3]))
    assert scores.tolist() == [[3.0, 3.0, 2.0, 1.0]]


def test_itemknn_cosine_known_values() -> None:
    similarity = cosine_similarity(MATRIX, shrink=0.0)
    assert similarity[0, 1] == pytest.approx(1.0)  # identical columns
    assert similarity[2, 3] == pytest.approx(1 / np.sqrt(2))
    assert similarity[0, 3] == 0.0 and np.all(np.diag(similarity) == 0)
    pruned = keep_top_neighbours(similarity, 1)
    assert (pruned > 0).sum(axis=1).max() == 1


def test_itemknn_shrinkage_known_values() -> None:
    # items 0 and 1 share 3 users (norms √3 · √3 = 3), items 2 and 3 one user (√2 · √1):
    # shrink s damps the cosine co / (‖a‖‖b‖ + s), the rarely co-rated pair far more
    similarity = cosine_similarity(MATRIX, shrink=1.0)
    assert similarity[0, 1] == pytest.approx(3 / 4)
    assert similarity[2, 3] == pytest.approx(1 / (np.sqrt(2) + 1))
    assert similarity[1, 2] == pytest.approx(1 / (np.sqrt(3) * np.sqrt(2) + 1))
    assert np.allclose(similarity, similarity.T) and np.all(np.diag(similarity) == 0)
    model = build_model("itemknn", 4, {"shrink": 1.0, "neighbours": 1})
    model.fit(train_data())
    # one neighbour each: item 2's is item 3 (0.414 beats 0.290), item 0's is item 1
    assert model.score_all(one_history([2]))[0].tolist() == pytest.approx([0, 0, 0, 0.41421356])
    assert model.score_all(one_history([0, 2]))[0].tolist() == pytest.approx(
        [0, 0.75, 0, 0.41421356]
    )


def test_ease_has_zero_diagonal_and_learns_co_occurrence() -> None:
    weights = ease_weights(MATRIX, l2=0.5)
    assert np.allclose(np.diag(weights), 0.0)
    model = build_model("ease", 4, {"l2": 0.5})
    model.fit(train_data())
    scores = model.score_all(one_history([0]))[0]
    assert scores[1] > scores[2] and scores[1] > scores[3]


def test_ease_solves_its_closed_form() -> None:
    # EASE^R: B = I - P diagMat(1/diag(P)) with P = (XᵀX + λI)⁻¹ (Steck 2019, eq. 8)
    l2 = 2.0
    gram = (MATRIX.T @ MATRIX).toarray() + l2 * np.eye(4)
    precision = np.linalg.inv(gram)
    expected = np.eye(4) - precision / np.diag(precision)
    assert np.allclose(ease_weights(MATRIX, l2), expected)


def test_text_zero_shot_follows_the_text() -> None:
    embeddings = np.eye(4, dtype=np.float32)
    embeddings[3] = [0.9, 0.1, 0.0, 0.0]  # item 3 reads like item 0
    model = build_model("text_zero_shot", 4, {"dim": 4})
    model.fit(train_data(embeddings))
    scores = model.score_all(one_history([0]))[0]
    assert int(torch.argmax(scores[1:])) + 1 == 3
    assert (
        model.score_all(Histories.from_lists([[]], [[]])).abs().sum() == 0
    )  # no history, no opinion


def test_text_zero_shot_needs_embeddings() -> None:
    with pytest.raises(ValueError, match="embeddings"):
        build_model("text_zero_shot", 4, {"dim": 4}).fit(train_data())


def test_closed_form_models_have_no_loss() -> None:
    with pytest.raises(NotImplementedError):
        build_model("ease", 4).loss(None)


def test_unknown_model_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="known models"):
        build_model("sasrec2", 4)


# gradient models have their own round-trip tests next to their training
@pytest.mark.parametrize("name", sorted(n for n, model in MODELS.items() if not model.trainable))
def test_every_closed_form_model_round_trips_through_disk(name: str, tmp_path) -> None:
    config = {"dim": 4} if name == "text_zero_shot" else {}
    model = build_model(name, 4, config)
    model.fit(train_data(np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)))
    model.save(tmp_path / name)
    restored = load_model(tmp_path / name)
    history = one_history([0, 2])
    assert torch.equal(model.score_all(history), restored.score_all(history))
    assert torch.equal(
        restored.score(history, torch.tensor([[3, 1]])),
        restored.score_all(history)[:, [3, 1]],
    )


def test_keep_top_neighbours_keeps_exactly_the_largest() -> None:
    rng = np.random.default_rng(0)
    similarity = rng.random((6, 6))
    for k in range(1, 6):
        pruned = keep_top_neighbours(similarity, k)
        for row in range(6):
            top = set(np.argsort(-similarity[row])[:k].tolist())
            assert set(np.flatnonzero(pruned[row]).tolist()) == top, (k, row)
            assert np.array_equal(pruned[row, list(top)], similarity[row, list(top)])
    assert keep_top_neighbours(similarity, 6) is similarity  # nothing to prune
    wide = rng.random((20, 300))  # selection bugs show on rows this long
    for k in (1, 7):
        pruned = keep_top_neighbours(wide, k)
        assert np.array_equal(np.sort(pruned, axis=1)[:, -k:], np.sort(wide, axis=1)[:, -k:])
        assert ((pruned > 0).sum(axis=1) == k).all()


def test_configs_refuse_impossible_values_and_keep_the_given_ones() -> None:
    with pytest.raises(ValueError, match=r"^l2 must be positive, got 0$"):
        EASEConfig(l2=0)
    message = r"^neighbours must be at least 1 and shrink not negative$"
    for bad in ({"neighbours": 0}, {"shrink": -1.0}):
        with pytest.raises(ValueError, match=message):
            ItemKNNConfig(**bad)
    assert ItemKNNConfig(neighbours=1, shrink=0.0).shrink == 0.0  # no shrinkage is allowed
    ease = build_model("ease", 4, {"l2": 0.5})
    knn = build_model("itemknn", 4, {"neighbours": 2, "shrink": 0.5})
    assert (ease.l2, knn.neighbours, knn.shrink) == (0.5, 2, 0.5)
    with pytest.raises(ValueError, match="unknown key"):
        build_model("popularity", 4, {"neighbours": 2})  # popularity has no settings


def test_popularity_counts_stay_float32_whatever_the_matrix_type() -> None:
    model = build_model("popularity", 4)
    data = train_data()
    model.fit(TrainData(MATRIX.astype(np.float64), data.histories, n_items=4))
    assert model.counts.dtype == torch.float32
    assert model.counts.tolist() == [3.0, 3.0, 2.0, 1.0]


def test_the_same_model_saved_in_two_folders_has_the_same_bytes(tmp_path) -> None:
    # dvc.lock names each model file's md5: it must not depend on the folder or the run
    model = build_model("ease", 4)
    model.fit(train_data(np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)))
    model.save(tmp_path / "clone-a" / "ease")
    model.save(tmp_path / "b" / "ease")
    for name in ("state.pt", "model.json", "checksums.json"):
        first = (tmp_path / "clone-a" / "ease" / name).read_bytes()
        assert first == (tmp_path / "b" / "ease" / name).read_bytes(), name
