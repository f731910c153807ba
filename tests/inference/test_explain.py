"""Explanations: the history item that really drove a recommendation is named first."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from pipelines.inference.explain import explain, explain_from_weights
from pipelines.models import Histories, TrainData, build_model


def hand_built_vectors() -> torch.Tensor:
    """10 items on orthogonal axes, except item 7, which is history item 2 with a tiny tilt."""
    vectors = torch.eye(10)
    vectors[7] = vectors[2] + 0.05 * vectors[5]
    return vectors


def test_nearly_identical_history_item_is_named_first() -> None:
    vectors = hand_built_vectors()
    reasons = explain([0, 5, 2], [7], vectors, top_n=3)
    assert [item for item, _ in reasons[7]] == [2, 5]  # item 0 is orthogonal: not a reason
    assert reasons[7][0][1] == pytest.approx(1 / np.sqrt(1 + 0.05**2))


def test_ties_go_to_the_lower_index_whatever_the_history_order() -> None:
    vectors = torch.eye(6)
    vectors[4] = vectors[1] + vectors[3]  # equally close to items 1 and 3
    assert explain([3, 1], [4], vectors) == explain([1, 3], [4], vectors)
    assert [item for item, _ in explain([3, 1], [4], vectors)[4]] == [1, 3]


def test_top_n_self_and_duplicates() -> None:
    vectors = torch.ones(5, 2)  # everything identical
    reasons = explain([4, 0, 0, 1, 2, 3], [3], vectors, top_n=2)
    assert reasons == {3: [(0, pytest.approx(1.0)), (1, pytest.approx(1.0))]}  # 3 never explains 3


def test_empty_history_and_bad_input() -> None:
    assert explain([], [1, 2], torch.eye(3)) == {1: [], 2: []}
    with pytest.raises(ValueError, match="outside"):
        explain([9], [1], torch.eye(3))
    with pytest.raises(ValueError, match="top_n"):
        explain([0], [1], torch.eye(3), top_n=0)


def test_weights_variant_reads_the_from_to_entry() -> None:
    weights = np.zeros((4, 4))
    weights[0, 3], weights[1, 3], weights[2, 3] = 0.5, 0.9, -0.2
    reasons = explain_from_weights([0, 1, 2], [3], weights)
    assert reasons == {3: [(1, 0.9), (0, 0.5)]}  # the negative weight did not drive it
    everything = explain_from_weights([0, 1, 2], [3], weights, positive_only=False)
    assert everything[3][-1] == (2, -0.2)
    with pytest.raises(ValueError, match="square"):
        explain_from_weights([0], [1], np.zeros((3, 2)))


def test_ease_contributions_add_up_to_its_score() -> None:
    matrix = sp.csr_matrix(
        np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1]], dtype=np.float32)
    )
    rows = [np.flatnonzero(row).tolist() for row in matrix.toarray()]
    histories = Histories.from_lists(rows, [list(range(len(r))) for r in rows])
    model = build_model("ease", 4, {"l2": 0.5})
    model.fit(TrainData(matrix, histories, n_items=4))
    history = [0, 2]
    score = model.score_all(Histories.from_lists([history], [[1, 2]]))[0, 1]
    reasons = explain_from_weights(history, [1], model.weights, top_n=4, positive_only=False)
    assert sum(weight for _, weight in reasons[1]) == pytest.approx(float(score), abs=1e-6)
    assert reasons[1][0][0] == 0  # item 1 always co-occurs with item 0


def test_the_fast_top_n_agrees_with_a_full_stable_sort() -> None:
    # explain picks the top n in O(H) (topk) and re-sorts only rows with ties: the same
    # answer as sorting everything stably, ties included (integer tables tie a lot)
    import random

    from pipelines.inference.explain import _drivers

    def stable(history, recommended, contributions, top_n):
        out = {}
        for column, item in enumerate(recommended):
            pairs = [
                (source, float(contributions[row, column]))
                for row, source in enumerate(history)
                if source != item and contributions[row, column] > 0
            ]
            pairs.sort(key=lambda pair: (-pair[1], pair[0]))
            out[item] = pairs[:top_n]
        return out

    rng = random.Random(0)
    for trial in range(300):
        h, r = rng.randint(1, 30), rng.randint(1, 8)
        table = torch.randint(-2, 4, (h, r)).double() if trial % 2 else torch.randn(h, r).double()
        history, recommended = rng.sample(range(100), h), rng.sample(range(100), r)
        if trial % 3 == 0:
            recommended[0] = history[0]  # an item never explains itself
        top_n = rng.randint(1, 5)
        assert _drivers(history, recommended, table, top_n, True) == stable(
            history, recommended, table, top_n
        ), trial
