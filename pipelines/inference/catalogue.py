"""New items at serving time: extend a text-aware model's catalogue without retraining.

A model that scores an item from its text alone (``scores_unseen_items_from_text``,
e.g. the flagship FusionTransformer or the zero-shot text model) holds the
catalogue's MiniLM vectors in a buffer. ``extend_model`` rebuilds the model with
``m`` more items and copies every learned weight unchanged: the text buffers get
the new items' vectors, per-item tables (id embeddings) get zero rows, and
``has_id`` marks the new items as id-less, so they are scored from text exactly
like the strict cold-start items of design.md §5. Nothing is trained.
"""

from __future__ import annotations

import numpy as np
import torch

from pipelines.models import Recommender


class CannotExtend(ValueError):
    """The model cannot score an item from its text (no text path, or LoRA text tokens)."""


def scores_from_text(model: Recommender) -> bool:
    """True when ``model`` can rank an item it has no interactions for, from its text."""
    return bool(model.scores_unseen_items_from_text) and getattr(model.cfg, "use_text", True)


def _grown(name: str, old: torch.Tensor, shape: torch.Size, text: torch.Tensor) -> torch.Tensor:
    """``old`` padded from ``n`` to ``n + m`` rows along every dimension that grew."""
    if name.endswith("token_ids") or name.endswith("token_mask"):
        raise CannotExtend("a LoRA text encoder would need the new items' tokens")
    if name.endswith("has_id"):
        return torch.cat([old, torch.zeros(shape[0] - old.shape[0], dtype=old.dtype)])
    if name.endswith("vectors") and old.ndim == 2 and old.shape[1] == text.shape[1]:
        return torch.cat([old, text.to(old.dtype)])  # the text path: the new items' vectors
    grown = torch.zeros(shape, dtype=old.dtype)
    grown[tuple(slice(0, size) for size in old.shape)] = old  # per-item tables: zero rows
    return grown


def extend_model(model: Recommender, text_vectors: np.ndarray) -> Recommender:
    """A copy of ``model`` that also scores ``m`` new items from their unit MiniLM vectors
    ``[m, D]``; items ``0..n-1`` keep their indices and scores."""
    if not scores_from_text(model):
        raise CannotExtend(f"{model.name} cannot score an item from its text")
    text = torch.as_tensor(np.asarray(text_vectors, dtype=np.float32))
    if text.ndim != 2 or len(text) == 0:
        raise ValueError("text_vectors must be [m, D] with m >= 1")
    bigger = type(model)(model.n_items + len(text), model.cfg)
    target = bigger.state_dict()
    state = {}
    for name, old in model.state_dict().items():
        shape = target[name].shape
        state[name] = old if old.shape == shape else _grown(name, old, shape, text)
    bigger.load_state_dict(state)
    return bigger.eval()
