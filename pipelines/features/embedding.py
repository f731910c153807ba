"""One MiniLM sentence vector per catalogue item, cached by content.

Reads ``artifacts/split/items.parquet`` and writes

- ``artifacts/embeddings/items.npy``  float32 [n_items, dim], row i = item_idx i
- ``artifacts/embeddings/meta.json``  model, dim, n_items, max_length (run-independent);
  the device, timings and cache hits are logged and returned, not written

Vectors are cached by content: the key is sha256 of (model, max_length, item
text), so an item is encoded once per distinct text, ever. The cache lives in
``.cache/embeddings/`` — git-ignored and outside DVC's outputs, because DVC
deletes a stage's outputs before re-running it, which would empty a cache kept
there. When every item hits, the model is not even loaded.

Pure functions (texts, keys, cache lookup and merge) are separate from the I/O
in ``embed_catalogue`` so they can be tested without files or a model. The
``embed`` stage calls ``embed_catalogue``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core import schema
from pipelines.core.config import EmbedParams
from pipelines.core.device import resolve_device
from pipelines.core.io import atomic_write, write_checksums, write_json, write_npy
from pipelines.core.paths import PROJECT
from pipelines.features.text import TextEncoder, item_text

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump to invalidate every cache file if the key recipe changes (2: stable)
# MiniLM's float32 output moves in the last bits with the thread count and the batch a text
# lands in, and every downstream DVC hash moved with it (issue 18 item 7). The catalogue is
# encoded in float64 (run-to-run differences ~1e-16) and rounded to this many decimals, so a
# flip at a rounding boundary has odds ~1e-10 per value: the same bytes on every machine.
STABLE_DECIMALS = 6


# ---------------------------------------------------------------- pure parts


def build_texts(items: pd.DataFrame) -> list[str]:
    """Item texts in item_idx order, checking that row i really is item_idx i.

    The output row order *is* the index contract with every model, so a
    shuffled or gappy items table must fail here, not misalign vectors silently.
    """
    missing = [c for c in (schema.ITEM_IDX, schema.TITLE) if c not in items.columns]
    if missing:
        raise ValueError(f"items table lacks column(s) {missing}; got {list(items.columns)}")
    idx = items[schema.ITEM_IDX].to_numpy()
    if not np.array_equal(idx, np.arange(len(items))):
        raise ValueError(
            f"{schema.ITEM_IDX} must be 0..n-1 in row order (n={len(items)}); "
            "the split stage writes it that way, so the file is damaged or from another stage"
        )
    years = items[schema.YEAR] if schema.YEAR in items.columns else [None] * len(items)
    genres = items[schema.GENRES] if schema.GENRES in items.columns else [None] * len(items)
    return [
        item_text(title, year, genre)
        for title, year, genre in zip(items[schema.TITLE], years, genres, strict=True)
    ]


def stable_vectors(vectors: np.ndarray, decimals: int = STABLE_DECIMALS) -> np.ndarray:
    """Vectors rounded to ``decimals`` in float64, then stored as float32: [N, D].

    Rounding happens before the float32 cast, so equal float64 inputs to within far less
    than 10**-decimals give identical float32 bytes.
    """
    return np.round(np.asarray(vectors, dtype=np.float64), decimals).astype(np.float32)


def content_key(model: str, max_length: int, text: str) -> str:
    """sha256 hex of everything that decides a vector: model, truncation, text.

    JSON-encoding the triple keeps the fields apart, so no text can collide
    with another (model, max_length) by containing a separator.
    """
    payload = json.dumps([CACHE_FORMAT, model, max_length, text], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Cache:
    """Content-addressed vectors: ``keys[i]`` (sha256 hex) owns ``vectors[i]``."""

    keys: np.ndarray  # [M] str
    vectors: np.ndarray  # [M, D] float32

    @classmethod
    def empty(cls, dim: int) -> Cache:
        return cls(np.empty(0, dtype="U64"), np.empty((0, dim), dtype=np.float32))

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or len(self.keys) != len(self.vectors):
            raise ValueError(
                f"cache keys {self.keys.shape} and vectors {self.vectors.shape} do not match"
            )

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.keys)


def lookup(cache: Cache, keys: Sequence[str]) -> np.ndarray:
    """Row of each key in the cache, or -1 for a miss: [N] int64."""
    where = {key: row for row, key in enumerate(cache.keys.tolist())}
    return np.array([where.get(key, -1) for key in keys], dtype=np.int64)


def missing_keys(keys: Sequence[str], rows: np.ndarray) -> list[str]:
    """Distinct keys that missed, in first-seen order (duplicate texts encode once)."""
    return list(dict.fromkeys(key for key, row in zip(keys, rows, strict=True) if row < 0))


def merge(cache: Cache, new_keys: Sequence[str], new_vectors: np.ndarray) -> Cache:
    """Cache plus new entries; a key already present keeps its new vector.

    Old entries are kept even if no current item uses them: an item edited
    back, or a branch switched back, is then a hit too.
    """
    if len(new_keys) != len(new_vectors):
        raise ValueError(f"{len(new_keys)} keys for {len(new_vectors)} vectors")
    if not len(new_keys):
        return cache
    if new_vectors.shape[1] != cache.dim:
        raise ValueError(f"new vectors have dim {new_vectors.shape[1]}, cache has {cache.dim}")
    fresh = set(new_keys)
    keep = np.array([key not in fresh for key in cache.keys.tolist()], dtype=bool)  # [M]
    keys = np.concatenate([cache.keys[keep], np.asarray(new_keys, dtype="U64")])  # [M']
    vectors = np.concatenate([cache.vectors[keep], new_vectors.astype(np.float32)])  # [M', D]
    return Cache(keys, vectors)


def assemble(keys: Sequence[str], cache: Cache) -> np.ndarray:
    """Vectors for ``keys`` in order, all of which must be in the cache: [N, D]."""
    rows = lookup(cache, keys)
    if (rows < 0).any():
        raise KeyError(f"{int((rows < 0).sum())} key(s) are still missing from the cache")
    return cache.vectors[rows]  # [M, D] -> [N, D]


def cache_file(cache_dir: Path, model: str) -> Path:
    """One cache file per model name, made safe as a file name."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "--" for ch in model)
    return Path(cache_dir) / f"{safe}.npz"


# ---------------------------------------------------------------------- I/O


def load_cache(path: Path, dim: int) -> Cache:
    """The cache at ``path``, or an empty one if absent, unreadable or of another dim.

    The cache is only a speed-up, so a damaged file costs a re-encode, not a
    failed stage.
    """
    if not path.exists():
        return Cache.empty(dim)
    try:
        with np.load(path, allow_pickle=False) as data:
            cache = Cache(data["keys"].astype("U64"), data["vectors"].astype(np.float32))
    except (OSError, ValueError, KeyError) as err:
        log.warning("ignoring unreadable embedding cache %s: %s", path, err)
        return Cache.empty(dim)
    if cache.dim != dim:
        log.warning("ignoring embedding cache %s: dim %d, expected %d", path, cache.dim, dim)
        return Cache.empty(dim)
    return cache


def save_cache(path: Path, cache: Cache) -> None:
    with atomic_write(path) as handle:
        np.savez(handle, keys=cache.keys, vectors=cache.vectors)


EncoderFactory = Callable[[EmbedParams], TextEncoder]


def _default_encoder(params: EmbedParams) -> TextEncoder:
    return TextEncoder(params.model, device=params.device, max_length=params.max_length, exact=True)


def embed_catalogue(
    params: EmbedParams,
    *,
    items_path: Path = PROJECT.split_items,
    embeddings_path: Path = PROJECT.item_embeddings,
    meta_path: Path = PROJECT.embeddings_meta,
    cache_dir: Path = PROJECT.embed_cache,
    encoder: TextEncoder | EncoderFactory | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Embed every item of ``items_path``; returns what it wrote to meta.json.

    ``encoder`` may be a loaded TextEncoder (tests reuse one) or a factory;
    either way the model is loaded only if some item misses the cache.
    """
    started = time.perf_counter()

    if not Path(items_path).exists():
        raise FileNotFoundError(
            f"{items_path} not found: the split stage writes it (`dvc repro split`)"
        )
    items = pd.read_parquet(items_path)
    log.info("read %d items from %s", len(items), items_path)
    if items.empty:
        raise ValueError(f"{items_path} holds no items; nothing to embed")
    texts = build_texts(items)  # [N]
    keys = [content_key(params.model, params.max_length, text) for text in texts]  # [N]

    cache_path = cache_file(cache_dir, params.model)
    loaded: TextEncoder | None = encoder if isinstance(encoder, TextEncoder) else None
    dim = loaded.dim if loaded is not None else _cached_dim(cache_path)
    cache = load_cache(cache_path, dim) if dim is not None else None
    rows = lookup(cache, keys) if cache is not None else np.full(len(keys), -1, dtype=np.int64)
    todo = missing_keys(keys, rows)
    hits = int((rows >= 0).sum())
    log.info("cache %s: %d hits, %d distinct texts to encode", cache_path, hits, len(todo))

    device = str(loaded.device) if loaded is not None else str(resolve_device(params.device))
    encode_seconds = 0.0
    if todo:
        if loaded is None:
            factory = encoder if encoder is not None else _default_encoder
            loaded = factory(params)
            device = str(loaded.device)
        if cache is None or cache.dim != loaded.dim:
            cache = Cache.empty(loaded.dim)
        text_of = dict(zip(keys, texts, strict=True))
        t0 = time.perf_counter()
        vectors = loaded.encode(
            [text_of[key] for key in todo],
            batch_size=params.batch_size,
            show_progress=show_progress,
        )  # [misses, D]
        encode_seconds = time.perf_counter() - t0
        log.info("encoded %d texts in %.2fs on %s", len(todo), encode_seconds, device)
        cache = merge(cache, todo, stable_vectors(vectors))
        save_cache(cache_path, cache)
        log.info("wrote cache %s (%d entries)", cache_path, len(cache))
    assert cache is not None  # every key hit, or we just encoded the misses

    embeddings = np.ascontiguousarray(assemble(keys, cache), dtype=np.float32)  # [N, D]
    write_npy(embeddings, embeddings_path)
    write_checksums(embeddings_path.parent, [embeddings_path.name])
    # meta.json is a DVC output: only what the vectors depend on, so that the same
    # catalogue gives the same file (and dvc.lock) on every run and machine
    meta = {
        "model": params.model,
        "dim": int(embeddings.shape[1]),
        "n_items": int(embeddings.shape[0]),
        "max_length": params.max_length,
    }
    write_json(meta, meta_path)
    run = {
        "batch_size": params.batch_size,
        "device": device,
        "seconds": round(time.perf_counter() - started, 3),
        "encode_seconds": round(encode_seconds, 3),
        "cache": {"hits": hits, "misses": len(todo), "entries": len(cache)},
    }
    log.info(
        "wrote %s %s and %s in %.2fs", embeddings_path, embeddings.shape, meta_path, run["seconds"]
    )
    return {**meta, **run}


def _cached_dim(cache_path: Path) -> int | None:
    """Vector size recorded in an existing cache, without loading the model."""
    if not cache_path.exists():
        return None
    try:
        with np.load(cache_path, allow_pickle=False) as data:
            shape = data["vectors"].shape
    except (OSError, ValueError, KeyError):
        return None
    return int(shape[1]) if len(shape) == 2 else None
