"""Model registry: every recommender by its params.yaml name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.core.io import verify_checksum
from pipelines.models.base import MODEL_META, Histories, Recommender, TrainData
from pipelines.models.ease import EASE
from pipelines.models.fusion_transformer import FusionTransformer
from pipelines.models.itemknn import ItemKNN
from pipelines.models.popularity import Popularity
from pipelines.models.sasrec import SASRec
from pipelines.models.text_zero_shot import TextZeroShot

MODELS: dict[str, type[Recommender]] = {
    model.name: model
    for model in (Popularity, ItemKNN, EASE, TextZeroShot, SASRec, FusionTransformer)
}

__all__ = ["MODELS", "Histories", "Recommender", "TrainData", "build_model", "load_model"]


def build_model(name: str, n_items: int, config: dict[str, Any] | None = None) -> Recommender:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name](n_items, config)


def load_model(directory: Path) -> Recommender:
    """Rebuild a saved model from its ``model.json`` and ``state.pt``."""
    verify_checksum(directory / MODEL_META)
    meta = json.loads((directory / MODEL_META).read_text())
    model = build_model(meta["name"], meta["n_items"], meta["config"])
    model.load_state(directory)
    return model.eval()
