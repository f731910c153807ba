"""Beyond-accuracy metrics: hand-built lists with known novelty, popularity and segment means."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from pipelines.core.schema import PROFILE_COLUMNS
from pipelines.evaluation.beyond_accuracy import (
    average_popularity,
    fairness_markdown,
    fairness_table,
    item_popularity,
    list_metrics,
    max_min_ratio,
    novelty,
    segment_ndcg,
)
from pipelines.evaluation.metrics import ndcg_from_ranks
from pipelines.evaluation.ranking import evaluate_model, ranks_and_top_k
from pipelines.models import Histories, Recommender

# 4 training users; item 0 seen by all, item 1 by two, item 2 by one, item 3 by none
POPULARITY = np.array([4, 2, 1, 0])


class FixedScores(Recommender):
    """Every history gets the same score vector: rankings known in advance."""

    name = "fixed"

    def __init__(self, scores: list[float]) -> None:
        super().__init__(len(scores))
        self.register_buffer("fixed", torch.tensor(scores))

    def score_all(self, histories: Histories) -> torch.Tensor:
        return self.fixed[None, :].expand(histories.items.shape[0], -1)  # [B, n_items]


def test_item_popularity_counts_distinct_users() -> None:
    matrix = sp.csr_matrix(np.array([[1, 1, 0], [2, 0, 0], [1, 0, 0]], dtype=np.float32))
    assert item_popularity(matrix).tolist() == [3, 1, 0]  # a repeated event counts once


def test_novelty_known_value() -> None:
    # self-information: item 0 → 0 bits, 1 → 1, 2 → 2, 3 (no user) clipped to 1 user → 2
    top = torch.tensor([[0, 1], [2, 3]])
    assert novelty(top, POPULARITY, n_users=4) == pytest.approx((0 + 1 + 2 + 2) / 4)


def test_novelty_bounds() -> None:
    assert novelty(np.array([[0, 0]]), POPULARITY, 4) == 0.0  # only universal items
    assert novelty(np.array([[3]]), POPULARITY, 4) == pytest.approx(math.log2(4))  # the max
    assert novelty(np.zeros((0, 2), dtype=int), POPULARITY, 4) == 0.0  # no users
    with pytest.raises(ValueError, match="n_users"):
        novelty(np.array([[0]]), POPULARITY, 0)


def test_average_popularity_known_value() -> None:
    assert average_popularity(np.array([[0, 1], [2, 3]]), POPULARITY) == pytest.approx(7 / 4)
    assert average_popularity(np.zeros((0, 3), dtype=int), POPULARITY) == 0.0


def test_list_metrics_names_carry_k() -> None:
    metrics = list_metrics(np.array([[0, 1], [0, 2]]), POPULARITY, n_users=4, n_items=4)
    assert metrics["coverage@2"] == pytest.approx(3 / 4)
    assert set(metrics) == {"coverage@2", "novelty@2", "arp@2"}


def test_ranks_and_top_k_mask_history_and_break_ties_by_index() -> None:
    model = FixedScores([1.0, 5.0, 5.0, 3.0, 0.0])
    histories = Histories.from_lists([[1], [], [2, 3]], [[1], [], [1, 2]])
    targets = torch.tensor([3, 2, 0])
    ranks, top = ranks_and_top_k(model, histories, targets, k=2, batch_size=2)
    # user 0: item 1 masked → order 2, 3, 0, 4; user 1: 1, 2 (tie → index), 3; user 2: 1, 0, 4
    assert top.tolist() == [[2, 3], [1, 2], [1, 0]]
    assert ranks.tolist() == [1, 1, 1]
    for user, rank in enumerate(ranks.tolist()):
        assert top[user, rank] == targets[user]  # the list and the rank agree


def test_ranks_and_top_k_agree_with_evaluate_model() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (30,), generator=generator).float().tolist()  # many ties
    model = FixedScores(scores)
    items = [torch.randperm(30, generator=generator)[:3].tolist() for _ in range(12)]
    histories = Histories.from_lists(items, [[1, 2, 3]] * 12)
    targets = torch.tensor([next(i for i in range(30) if i not in row) for row in items])
    ranks, top = ranks_and_top_k(model, histories, targets, k=10, batch_size=5)
    reference = evaluate_model(model, histories, targets, k=10, batch_size=5)
    assert float(ndcg_from_ranks(ranks, 10).mean()) == pytest.approx(reference["ndcg@10"])
    assert top.shape == (12, 10)


def test_segment_ndcg_means_and_unknown() -> None:
    table = segment_ndcg([1.0, 0.0, 0.5, 0.5], ["F", "M", "F", None])
    assert table == {
        "F": {"users": 2, "ndcg@10": 0.75},
        "M": {"users": 1, "ndcg@10": 0.0},
        "unknown": {"users": 1, "ndcg@10": 0.5},
    }
    with pytest.raises(ValueError, match="segment labels"):
        segment_ndcg([1.0], ["F", "M"])


def test_fairness_table_rows_and_ratio() -> None:
    profiles = pd.DataFrame(
        {
            "user_idx": [0, 1, 2, 3, 4],
            "gender": ["F", "F", "M", "M", "M"],
            "age_band": ["18-24", "25-34", "18-24", "25-34", "56+"],
        }
    )
    ndcg = torch.tensor([0.4, 0.2, 0.1, 0.2, 0.0])
    table = fairness_table(ndcg, profiles, k=10)
    assert table["gender"]["segments"]["F"] == {"users": 2, "ndcg@10": pytest.approx(0.3)}
    assert table["gender"]["max_min_ratio"] == pytest.approx(0.3 / 0.1)
    assert table["age_band"]["max_min_ratio"] is None  # "56+" has mean 0: undefined
    # counting only segments with ≥ 2 users leaves 18-24 (0.25) and 25-34 (0.2)
    trimmed = fairness_table(ndcg, profiles, min_users=2)
    assert trimmed["age_band"]["max_min_ratio"] == pytest.approx(0.25 / 0.2)
    markdown = fairness_markdown(table)
    assert (
        "| gender | F | 2 | 0.3000 |" in markdown
        and "| age_band | max/min ratio | | n/a |" in markdown
    )


def test_fairness_table_rejects_misaligned_inputs() -> None:
    profiles = pd.DataFrame({"gender": ["F"], "age_band": ["18-24"]})
    with pytest.raises(ValueError, match="profile rows"):
        fairness_table([0.1, 0.2], profiles)
    with pytest.raises(ValueError, match="occupation"):
        fairness_table([0.1], profiles, attributes=("occupation",))


def test_max_min_ratio_needs_two_segments() -> None:
    assert max_min_ratio({"F": {"users": 3, "ndcg@10": 0.2}}) is None
    assert (
        max_min_ratio({"a": {"users": 1, "ndcg@10": 0.2}, "b": {"users": 1, "ndcg@10": 0.1}}) == 2
    )


# -- without demographics (issue 20) --------------------------------------------------------
def test_demographics_are_detected() -> None:
    from pipelines.evaluation.beyond_accuracy import has_demographics

    unknown = pd.DataFrame({c: ["unknown"] * 3 for c in PROFILE_COLUMNS})
    assert not has_demographics(unknown)
    assert has_demographics(unknown.assign(region=["unknown", "021", "unknown"]))


def test_activity_bands_are_terciles_labelled_with_their_ranges() -> None:
    from pipelines.evaluation.beyond_accuracy import activity_bands

    bands = activity_bands([3, 4, 5, 8, 9, 10, 20, 30, 40])
    assert bands[:3] == ["1 light: 3-5 events"] * 3
    assert bands[3:6] == ["2 medium: 6-10 events"] * 3
    assert bands[6:] == ["3 heavy: 11-40 events"] * 3
    assert set(activity_bands([5, 5, 5, 5])) == {"1 light: 5 events"}, "ties never split"


def test_popularity_bands_put_the_top_fifth_of_items_in_the_head() -> None:
    from pipelines.evaluation.beyond_accuracy import popularity_bands

    popularity = np.array([1, 50, 2, 3, 4, 5, 6, 7, 8, 40])  # items 1 and 9 are the top 20%
    labels = popularity_bands([1, 9, 0, 5], popularity)
    assert labels == ["head (top 20% of items)"] * 2 + ["tail (other 80%)"] * 2


def test_without_demographics_fairness_is_by_behaviour_and_repeats_are_a_segment() -> None:
    from pipelines.evaluation.beyond_accuracy import ACTIVITY, ITEM_POPULARITY, TARGET
    from pipelines.evaluation.beyond_accuracy import behaviour_segments as segments

    frame, attributes = segments([3, 9, 27], [0, 1, 1], np.array([9, 1]), [True, False, False])
    assert attributes == (ACTIVITY, ITEM_POPULARITY, TARGET)
    table = fairness_table([1.0, 0.0, 0.5], frame, 10, attributes)
    assert table[TARGET]["segments"]["repeat (had it before)"] == {"users": 1, "ndcg@10": 1.0}
    _, attributes = segments([3, 9], [0, 1], np.array([9, 1]), [False, False])
    assert attributes == (ACTIVITY, ITEM_POPULARITY), "no repeat target: no target segment"
    profiles = pd.DataFrame({"gender": ["F", "M"], "age_band": ["18-24", "25-34"]})
    _, attributes = segments([3, 9], [0, 1], np.array([9, 1]), None, profiles)
    assert attributes == ("gender", "age_band")


def test_rhythm_labels_are_a_segment_and_must_match_the_users() -> None:
    from pipelines.evaluation.beyond_accuracy import RHYTHM
    from pipelines.evaluation.beyond_accuracy import behaviour_segments as segments

    frame, attributes = segments([3, 9], [0, 1], np.array([9, 1]), None, None, ["a", "b"])
    assert attributes[-1] == RHYTHM and frame[RHYTHM].tolist() == ["a", "b"]
    with pytest.raises(ValueError, match="1 rhythm labels for 2 users"):
        segments([3, 9], [0, 1], np.array([9, 1]), None, None, ["a"])
