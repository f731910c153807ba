"""Serving helpers: history cleaning, fallbacks, similarity, new items, cache, quantisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.evaluation.ranking import masked_scores
from pipelines.inference.cache import VersionedLRU
from pipelines.inference.catalogue import CannotExtend, extend_model, scores_from_text
from pipelines.inference.quantize import quantize
from pipelines.inference.recommend import clean_history, histories_of, popular, recommend, similar
from pipelines.models import build_model
from tests.models.test_fusion_transformer import SMALL, train_data, unit_vectors


@pytest.fixture(autouse=True)
def _seeded(one_thread: None) -> None:
    torch.manual_seed(0)


def flagship(n_items: int = 8):
    sequences = [[(s + t) % n_items for t in range(5)] for s in range(n_items)]
    model = build_model("fusion_transformer", n_items, SMALL)
    model.fit(train_data(sequences, n_items, profiles=[[1, 1, 1, 1]] * n_items))
    return model.eval(), sequences


def test_clean_history_keeps_each_item_once_at_its_latest_event() -> None:
    items, stamps = clean_history([(3, 50), (1, 10), (3, 70), (2, 70)])
    assert items == [1, 3, 2] and stamps == [10, 70, 70]  # same-second order kept
    assert clean_history([]) == ([], [])


def test_popular_and_similar_rank_with_ties_to_the_lower_index() -> None:
    counts = np.array([1.0, 5.0, 5.0, 2.0])
    assert [s.item for s in popular(counts, 3)] == [1, 2, 3]
    assert [s.item for s in popular(counts, 3, exclude=[1])] == [2, 3, 0]
    vectors = np.eye(4, dtype=np.float32)
    assert [s.item for s in similar(vectors, vectors[2] * 3, 2, exclude=[2])] == [0, 1]


def test_recommend_matches_the_evaluation_ranking_and_masks_history() -> None:
    model, sequences = flagship()
    histories = histories_of([sequences[0]], [[1, 2, 3, 4, 5]], [[1, 1, 1, 1]], model.n_items)
    picked = recommend(model, histories, 3, unit_vectors(8))[0]
    with torch.inference_mode():
        expected = torch.sort(masked_scores(model, histories)[0], descending=True, stable=True)
    assert [s.item for s in picked] == expected.indices[:3].tolist()
    assert not {s.item for s in picked} & set(sequences[0])
    assert all(len(s.reasons) <= 3 for s in picked)
    # more than the unseen items: only the 3 unseen ones come back
    assert len(recommend(model, histories, 8, unit_vectors(8))[0]) == 3


def test_histories_of_drops_items_the_model_cannot_score() -> None:
    histories = histories_of([[0, 9, 1]], [[1, 2, 3]], None, n_items=5)
    assert histories.items.tolist() == [[0, 1]]


def test_extended_flagship_keeps_old_scores_and_scores_the_new_item() -> None:
    model, sequences = flagship()
    assert scores_from_text(model)
    histories = histories_of([sequences[1]], [[1, 2, 3, 4, 5]], [[1, 1, 1, 1]], 8)
    new = unit_vectors(9, seed=3)[8:]
    bigger = extend_model(model, new)
    with torch.inference_mode():
        old, grown = model.score_all(histories), bigger.score_all(histories)
    assert grown.shape == (1, 9) and torch.isfinite(grown[0, 8])
    torch.testing.assert_close(grown[:, :8], old, atol=1e-5, rtol=1e-5)
    assert not bool(bigger.items.has_id[8])


def test_models_without_a_text_path_cannot_be_extended() -> None:
    with pytest.raises(CannotExtend):
        extend_model(build_model("ease", 4), unit_vectors(1))


def test_versioned_lru_evicts_and_empties_on_a_new_version() -> None:
    cache = VersionedLRU(2, version="a")
    cache.put("x", 1)
    cache.put("y", 2)
    assert cache.get("x") == 1
    cache.put("z", 3)  # evicts y, the least recently used
    assert cache.get("y") is None and cache.get("z") == 3
    cache.set_version("b")
    assert len(cache) == 0 and cache.get("x") is None
    assert cache.hits == 2 and cache.misses == 2 and cache.hit_rate == 0.5


@pytest.mark.parametrize("mode", ["int8", "bf16"])
def test_quantized_flagship_scores_close_to_the_original(mode: str) -> None:
    model, sequences = flagship()
    histories = histories_of([sequences[2]], [[1, 2, 3, 4, 5]], [[1, 1, 1, 1]], 8)
    small = quantize(model, mode)
    with torch.inference_mode():
        a, b = model.score_all(histories).float(), small.score_all(histories).float()
    assert torch.corrcoef(torch.stack([a[0], b[0]]))[0, 1] > 0.95
    with pytest.raises(ValueError):
        quantize(model, "fp4")  # type: ignore[arg-type]
