"""The embed stage: right rows, atomic outputs, and a content cache that skips work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.core.config import EmbedParams
from pipelines.features.embedding import (
    Cache,
    assemble,
    build_texts,
    cache_file,
    content_key,
    embed_catalogue,
    load_cache,
    lookup,
    merge,
    missing_keys,
    save_cache,
    stable_vectors,
)
from pipelines.features.text import EMBED_DIM, TextEncoder

PARAMS = EmbedParams(batch_size=4, max_length=64, device="cpu")


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(PARAMS.model, device=PARAMS.device, max_length=PARAMS.max_length)


def split_items() -> pd.DataFrame:
    """A tiny artifacts/split/items.parquet: item_idx 0..n-1 in row order."""
    return pd.DataFrame(
        {
            "item_idx": np.arange(5, dtype=np.int64),
            "item_id": ["1", "2", "50", "181", "1682"],
            "title": [
                "Toy Story",
                "GoldenEye",
                "Star Wars",
                "Return of the Jedi",
                "Scream of Stone",
            ],
            "year": pd.array([1995, 1995, 1977, None, 1991], dtype="Int64"),
            "genres": [
                ["Animation", "Children's", "Comedy"],
                ["Action", "Adventure", "Thriller"],
                ["Action", "Sci-Fi"],
                [],
                ["Drama"],
            ],
        }
    )


def run_stage(tmp_path: Path, items: pd.DataFrame, encoder: Any) -> tuple[np.ndarray, dict]:
    items_path = tmp_path / "split" / "items.parquet"
    items_path.parent.mkdir(parents=True, exist_ok=True)
    items.to_parquet(items_path, index=False)
    out = tmp_path / "embeddings"
    meta = embed_catalogue(
        PARAMS,
        items_path=items_path,
        embeddings_path=out / "items.npy",
        meta_path=out / "meta.json",
        cache_dir=tmp_path / "cache",
        encoder=encoder,
        show_progress=False,
    )
    written = json.loads((out / "meta.json").read_text())
    # the file holds what the vectors depend on; timings and cache counts are only returned
    assert written == {k: meta[k] for k in ("model", "dim", "n_items", "max_length")}
    return np.load(out / "items.npy"), meta


class FakeEncoder:
    """Stands in for a model where only the count of encoded texts matters."""

    dim = EMBED_DIM
    device = "cpu"

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def encode(self, texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        self.encoded.extend(texts)
        vectors = np.ones((len(texts), self.dim), dtype=np.float32)
        return vectors / np.sqrt(self.dim)


def refuse_to_load(params: EmbedParams) -> TextEncoder:
    raise AssertionError("the model was loaded although every item should hit the cache")


# -- the stage ---------------------------------------------------------------------------


def test_stage_writes_one_unit_vector_per_item_in_item_idx_order(
    tmp_path: Path, encoder: TextEncoder
) -> None:
    items = split_items()
    vectors, meta = run_stage(tmp_path, items, encoder)

    assert vectors.shape == (len(items), EMBED_DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    expected = encoder.encode(build_texts(items))
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert meta["model"] == "all-MiniLM-L6-v2"
    assert meta["dim"] == EMBED_DIM
    assert meta["n_items"] == len(items)
    assert meta["device"] == "cpu"
    assert meta["seconds"] >= 0
    assert meta["cache"] == {"hits": 0, "misses": len(items), "entries": len(items)}
    assert not list(tmp_path.rglob("*.tmp")), "temp files must be renamed or removed"


def test_second_run_encodes_nothing_and_does_not_load_the_model(
    tmp_path: Path, encoder: TextEncoder
) -> None:
    first, _ = run_stage(tmp_path, split_items(), encoder)
    first_meta = (tmp_path / "embeddings" / "meta.json").read_bytes()
    second, meta = run_stage(tmp_path, split_items(), refuse_to_load)

    # a DVC output that changed between identical runs would dirty dvc.lock
    assert (tmp_path / "embeddings" / "meta.json").read_bytes() == first_meta
    assert meta["cache"]["misses"] == 0
    assert meta["cache"]["hits"] == len(first)
    np.testing.assert_array_equal(second, first)


def test_changing_one_title_re_encodes_exactly_that_item(
    tmp_path: Path, encoder: TextEncoder
) -> None:
    first, _ = run_stage(tmp_path, split_items(), encoder)
    items = split_items()
    items.loc[2, "title"] = "Star Wars: Episode IV - A New Hope"
    second, meta = run_stage(tmp_path, items, encoder)

    assert meta["cache"]["misses"] == 1
    assert meta["cache"]["hits"] == len(items) - 1
    unchanged = [0, 1, 3, 4]
    np.testing.assert_array_equal(second[unchanged], first[unchanged])
    assert np.abs(second[2] - first[2]).max() > 1e-3


def test_max_length_is_part_of_the_cache_key(tmp_path: Path, encoder: TextEncoder) -> None:
    run_stage(tmp_path, split_items(), encoder)
    items_path = tmp_path / "split" / "items.parquet"
    meta = embed_catalogue(
        PARAMS.model_copy(update={"max_length": 32}),
        items_path=items_path,
        embeddings_path=tmp_path / "other" / "items.npy",
        meta_path=tmp_path / "other" / "meta.json",
        cache_dir=tmp_path / "cache",
        encoder=lambda params: FakeEncoder(),
        show_progress=False,
    )
    assert meta["cache"]["misses"] == len(split_items())


def test_shuffled_items_are_refused(tmp_path: Path, encoder: TextEncoder) -> None:
    items = split_items().iloc[[1, 0, 2, 3, 4]]
    with pytest.raises(ValueError, match=r"item_idx must be 0\.\.n-1 in row order"):
        run_stage(tmp_path, items, encoder)


def test_missing_items_file_names_the_stage_that_makes_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="split stage"):
        embed_catalogue(PARAMS, items_path=tmp_path / "nope.parquet", cache_dir=tmp_path)


# -- pure parts --------------------------------------------------------------------------


def test_build_texts_follow_item_idx_order() -> None:
    texts = build_texts(split_items())
    assert texts[0] == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    assert texts[3] == "Return of the Jedi."


def test_content_key_depends_on_model_length_and_text() -> None:
    key = content_key("all-MiniLM-L6-v2", 64, "Heat (1995).")
    assert key == content_key("all-MiniLM-L6-v2", 64, "Heat (1995).")
    assert len(key) == 64
    assert key != content_key("all-MiniLM-L6-v2", 32, "Heat (1995).")
    assert key != content_key("other-model", 64, "Heat (1995).")
    assert key != content_key("all-MiniLM-L6-v2", 64, "Heat (1996).")


def _cache(keys: list[str], dim: int = 3) -> Cache:
    vectors = np.arange(len(keys) * dim, dtype=np.float32).reshape(len(keys), dim)
    return Cache(np.array(keys, dtype="U64"), vectors)


def test_lookup_and_missing_keys() -> None:
    cache = _cache(["a", "b"])
    rows = lookup(cache, ["b", "x", "a", "x", "y"])
    assert rows.tolist() == [1, -1, 0, -1, -1]
    assert missing_keys(["b", "x", "a", "x", "y"], rows) == ["x", "y"]  # duplicates once


def test_merge_adds_new_and_replaces_existing() -> None:
    cache = _cache(["a", "b"])
    merged = merge(cache, ["b", "c"], np.full((2, 3), 9.0, dtype=np.float32))
    assert sorted(merged.keys.tolist()) == ["a", "b", "c"]
    np.testing.assert_array_equal(assemble(["a", "b", "c"], merged)[1:], np.full((2, 3), 9.0))
    np.testing.assert_array_equal(assemble(["a"], merged), cache.vectors[:1])
    with pytest.raises(KeyError, match="missing"):
        assemble(["zzz"], merged)


def test_cache_round_trip_and_damaged_file(tmp_path: Path) -> None:
    path = cache_file(tmp_path, "sentence-transformers/all-MiniLM-L6-v2")
    assert path.parent == tmp_path and "/" not in path.name
    cache = _cache(["a", "b"])
    save_cache(path, cache)
    loaded = load_cache(path, dim=3)
    assert loaded.keys.tolist() == ["a", "b"]
    np.testing.assert_array_equal(loaded.vectors, cache.vectors)
    assert len(load_cache(path, dim=4)) == 0  # another dim: start over
    path.write_bytes(b"not a zip file")
    assert len(load_cache(path, dim=3)) == 0  # damaged: start over, do not fail


def _catalogue(n: int) -> pd.DataFrame:
    """n items whose texts differ in length, so batches pad differently per batch size."""
    words = [
        "star",
        "wars",
        "return",
        "jedi",
        "toy",
        "story",
        "scream",
        "stone",
        "golden",
        "eye",
        "heat",
        "twelve",
        "monkeys",
    ]
    titles = [" ".join(words[(i * 7 + j) % len(words)] for j in range(1 + i % 9)) for i in range(n)]
    return pd.DataFrame(
        {
            "item_idx": np.arange(n, dtype=np.int64),
            "item_id": [str(i + 1) for i in range(n)],
            "title": titles,
            "year": pd.array([1950 + i for i in range(n)], dtype="Int64"),
            "genres": [["Drama"] if i % 2 else ["Action", "Sci-Fi"] for i in range(n)],
        }
    )


def test_two_runs_in_different_folders_write_the_same_bytes(tmp_path: Path) -> None:
    """The stage's own encoder (float64, rounded) gives one file whatever the thread count
    and batch size; dvc.lock then names the same md5 on every machine (issue 18 item 7)."""
    import hashlib

    import torch

    items = _catalogue(24)
    threads = torch.get_num_threads()
    digests = []
    try:
        for n_threads, batch_size in ((1, 3), (2, 16)):
            torch.set_num_threads(n_threads)
            folder = tmp_path / f"clone-{n_threads}"
            items_path = folder / "items.parquet"
            folder.mkdir()
            items.to_parquet(items_path, index=False)
            embed_catalogue(
                PARAMS.model_copy(update={"batch_size": batch_size}),
                items_path=items_path,
                embeddings_path=folder / "out" / "items.npy",
                meta_path=folder / "out" / "meta.json",
                cache_dir=folder / "cache",
                show_progress=False,
            )
            digests.append(hashlib.md5((folder / "out" / "items.npy").read_bytes()).hexdigest())
    finally:
        torch.set_num_threads(threads)
    assert digests[0] == digests[1]


def test_stable_vectors_absorb_last_bit_noise_that_float32_keeps() -> None:
    vectors = np.array([[0.3, -0.0412345, 0.71]])
    nudged = vectors + 3e-8  # a different thread count moves float32 output this much
    assert vectors.astype(np.float32).tobytes() != nudged.astype(np.float32).tobytes()
    assert stable_vectors(vectors).tobytes() == stable_vectors(nudged).tobytes()
    assert stable_vectors(vectors).dtype == np.float32
