"""Evaluation and selection: an oracle scores 1.0, and test numbers never choose."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.evaluation.ranking import evaluate_model
from pipelines.evaluation.selection import choose_winner, decision
from pipelines.evaluation.stats import paired_against
from pipelines.models import Histories, Recommender
from pipelines.stages.evaluate import best_on_validation, leaderboard_markdown, paired_markdown


class Oracle(Recommender):
    """Scores the known target highest; optionally puts it behind ``offset`` decoys."""

    name = "oracle"

    def __init__(self, n_items: int, targets: torch.Tensor, offset: int = 0) -> None:
        super().__init__(n_items)
        self.targets, self.offset = targets, offset
        self.calls = 0

    def score_all(self, histories: Histories) -> torch.Tensor:
        rows = slice(self.calls, self.calls + histories.items.shape[0])
        self.calls += histories.items.shape[0]
        scores = torch.zeros(histories.items.shape[0], self.n_items)
        scores.scatter_(1, self.targets[rows, None], 1.0)
        scores[:, : self.offset] = 2.0  # decoys ahead of the target
        return scores


def histories_without(targets: torch.Tensor) -> Histories:
    return Histories.from_lists([[9]] * len(targets), [[1]] * len(targets))


def test_oracle_scores_one() -> None:
    targets = torch.tensor([3, 4, 5, 6, 7])
    metrics = evaluate_model(Oracle(10, targets), histories_without(targets), targets, 10, 2)
    assert metrics["ndcg@10"] == pytest.approx(1.0)
    assert metrics["hr@10"] == 1.0 and metrics["mrr@10"] == 1.0
    assert metrics["users"] == 5


def test_history_items_are_masked() -> None:
    # the decoy (item 0) is in every history, so it is masked and the target ranks first
    targets = torch.tensor([3, 4])
    histories = Histories.from_lists([[0], [0]], [[1], [1]])
    metrics = evaluate_model(Oracle(10, targets, offset=1), histories, targets, 10, 8)
    assert metrics["mrr@10"] == 1.0


def test_target_below_cutoff_scores_zero() -> None:
    targets = torch.tensor([8, 9])
    metrics = evaluate_model(
        Oracle(10, targets, offset=5), histories_without(targets), targets, 3, 8
    )
    assert metrics["ndcg@3"] == 0.0 and metrics["hr@3"] == 0.0


def run_metrics(valid: float, test: float) -> dict[str, dict[str, float]]:
    return {
        "valid": {"ndcg@10": valid, "hr@10": 0.0, "mrr@10": 0.0, "coverage@10": 0.0},
        "test": {"ndcg@10": test, "hr@10": 0.0, "mrr@10": 0.0, "coverage@10": 0.0},
    }


def test_winner_is_chosen_on_validation_only() -> None:
    metrics = {"a": run_metrics(0.05, 0.20), "b": run_metrics(0.06, 0.01)}
    assert choose_winner(metrics, "ndcg@10") == "b"
    chosen = decision(metrics, "ndcg@10")
    assert chosen["test"]["ndcg@10"] == 0.01  # reported, not used
    assert [row["model"] for row in chosen["ranking"]] == ["b", "a"]


def test_selection_refuses_empty_or_incomplete_metrics() -> None:
    with pytest.raises(ValueError, match="no evaluated models"):
        choose_winner({}, "ndcg@10")
    with pytest.raises(ValueError, match="missing"):
        choose_winner({"a": {"valid": {}}}, "ndcg@10")


def test_leaderboard_lists_every_model_per_split() -> None:
    table = leaderboard_markdown({"a": run_metrics(0.05, 0.2), "b": run_metrics(0.06, 0.1)}, 10)
    assert table.count("| a |") == 2 and table.count("| b |") == 2
    assert table.index("| b |") < table.index("| a |")  # best validation first


def test_paired_table_names_the_reference_and_calls_only_what_its_interval_shows() -> None:
    metrics = {"a": run_metrics(0.05, 0.2), "b": run_metrics(0.06, 0.1)}
    assert best_on_validation(metrics, 10) == "b"
    users = np.linspace(0, 1, 500)
    differences = paired_against({"b": users, "a": users - 0.1, "c": users}, "b")
    table = paired_markdown("b", differences, 10)
    assert "paired with b (best on validation)" in table
    assert "| a | -0.1000 |" in table and "worse" in table
    assert "| c | 0.0000 |" in table and "no difference shown" in table
