"""Serving helpers: history cleaning, fallbacks, similarity, new items, cache, quantisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.evaluation.ranking import masked_scores
from pipelines.inference.cache import OVERHEAD, BytesLRU
from pipelines.inference.catalogue import (
    CannotExtend,
    extend_model,
    grow_model,
    scores_from_text,
)
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


def test_bytes_lru_is_bounded_in_bytes_and_empties_on_a_new_version() -> None:
    cache = BytesLRU(2 * (OVERHEAD + 10), version="a")
    cache.put("x", b"x" * 10)
    cache.put("y", b"y" * 10)
    assert cache.get("x") == b"x" * 10
    cache.put("z", b"z" * 10)  # evicts y, the least recently used
    assert cache.get("y") is None and cache.get("z") == b"z" * 10
    assert cache.bytes == 2 * (OVERHEAD + 10)
    cache.put("huge", b"h" * 10_000)  # over the whole budget: never stored
    assert cache.get("huge") is None and cache.bytes <= cache.max_bytes
    cache.set_version("b")
    assert len(cache) == 0 and cache.bytes == 0 and cache.get("x") is None
    assert cache.hits == 2 and cache.misses == 3
    with pytest.raises(TypeError):
        cache.put("obj", {"not": "bytes"})  # type: ignore[arg-type]


def test_a_million_answers_never_grow_the_cache_past_its_budget() -> None:
    cache = BytesLRU(50_000)
    for user in range(2_000):
        cache.put((f"u{user}", 100, True), b"x" * 5_000)
    assert cache.bytes <= 50_000 and len(cache) == 50_000 // (5_000 + OVERHEAD)


@pytest.mark.parametrize("name", ["fusion_transformer", "text_zero_shot"])
def test_grown_in_place_scores_like_the_rebuilt_model(name: str) -> None:
    if name == "fusion_transformer":
        model, sequences = flagship()
    else:
        model = build_model(name, 8)
        model.fit(train_data([[0, 1, 2]] * 8, 8, embeddings=unit_vectors(8)))
        sequences = [[0, 1, 2, 3, 4]] * 8
    histories = histories_of([sequences[1]], [[1, 2, 3, 4, 5]], [[1, 1, 1, 1]], 8)
    with torch.inference_mode():
        model.score_all(histories)  # fills the flagship's item cache: growth must extend it
    new = unit_vectors(11, seed=3)[8:]
    reference = extend_model(model, new)
    for row in range(3):  # one at a time, as POST /items adds them
        grow_model(model, new[row : row + 1])
    assert model.n_items == 11
    histories = histories_of([sequences[1]], [[1, 2, 3, 4, 5]], [[1, 1, 1, 1]], 11)
    with torch.inference_mode():
        torch.testing.assert_close(
            model.score_all(histories), reference.score_all(histories), atol=1e-5, rtol=1e-5
        )


def test_growing_never_copies_the_catalogue_each_time() -> None:
    model, _ = flagship()
    grow_model(model, unit_vectors(9, seed=1)[8:])
    store = model._grow_rows["items.text.vectors"].store
    for seed in range(2, 6):  # within the spare rows: the same storage, written in place
        grow_model(model, unit_vectors(9, seed=seed)[8:])
        assert model._grow_rows["items.text.vectors"].store is store
    assert model.n_items == 13 and model.items.text.vectors.shape[0] == 13


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
