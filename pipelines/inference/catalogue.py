"""New items at serving time: grow a text-aware model's catalogue without retraining.

A model that scores an item from its text alone (``scores_unseen_items_from_text``,
e.g. the flagship FusionTransformer or the zero-shot text model) holds the
catalogue's MiniLM vectors in a buffer. Growing it by ``m`` items copies every
learned weight unchanged: the text buffers get the new items' vectors, per-item
tables (id embeddings) get zero rows, and ``has_id`` marks the new items as id-less,
so they are scored from text exactly like the strict cold-start items of design.md §5.
Nothing is trained.

- ``grow_model`` does it in place in amortised O(m): every per-item tensor lives in a
  backing store with spare rows (doubled when full), so an add writes ``m`` rows and
  never copies the catalogue; a model that caches its item representations (the
  flagship) gets only the new rows computed (``adaptor(text)``, as its item tower does
  for an id-less item), not the whole table again.
- ``extend_model`` is the reference: a fresh copy with ``n + m`` items, rebuilt from the
  state dict (O(n)); the tests hold the two to the same scores.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipelines.models import Recommender


class CannotExtend(ValueError):
    """The model cannot score an item from its text (no text path, or LoRA text tokens)."""


def scores_from_text(model: Recommender) -> bool:
    """True when ``model`` can rank an item it has no interactions for, from its text."""
    return bool(model.scores_unseen_items_from_text) and getattr(model.cfg, "use_text", True)


def _new_rows(name: str, old: torch.Tensor, m: int, text: torch.Tensor) -> torch.Tensor:
    """The ``m`` rows a per-item tensor ``old`` ``[n, ...]`` gets for the new items."""
    if name.endswith("token_ids") or name.endswith("token_mask"):
        raise CannotExtend("a LoRA text encoder would need the new items' tokens")
    if name.endswith("has_id"):
        return torch.zeros(m, dtype=old.dtype)  # id-less: scored from text
    if name.endswith("vectors") and old.ndim == 2 and old.shape[1] == text.shape[1]:
        return text.to(old.dtype)  # the text path: the new items' vectors
    return torch.zeros((m, *old.shape[1:]), dtype=old.dtype)  # per-item tables: zero rows


def _grown(name: str, old: torch.Tensor, shape: torch.Size, text: torch.Tensor) -> torch.Tensor:
    """``old`` padded from ``n`` to ``n + m`` rows along every dimension that grew."""
    if old.ndim >= 1 and old.shape[1:] == shape[1:]:
        return torch.cat([old, _new_rows(name, old, shape[0] - old.shape[0], text)])
    _new_rows(name, old, 0, text)  # refuses LoRA tokens
    grown = torch.zeros(shape, dtype=old.dtype)
    grown[tuple(slice(0, size) for size in old.shape)] = old
    return grown


def _check(model: Recommender, text_vectors: np.ndarray) -> torch.Tensor:
    if not scores_from_text(model):
        raise CannotExtend(f"{model.name} cannot score an item from its text")
    text = torch.as_tensor(np.asarray(text_vectors, dtype=np.float32))
    if text.ndim != 2 or len(text) == 0:
        raise ValueError("text_vectors must be [m, D] with m >= 1")
    return text


def extend_model(model: Recommender, text_vectors: np.ndarray) -> Recommender:
    """A copy of ``model`` that also scores ``m`` new items from their unit MiniLM vectors
    ``[m, D]``; items ``0..n-1`` keep their indices and scores. O(n): the reference."""
    text = _check(model, text_vectors)
    bigger = type(model)(model.n_items + len(text), model.cfg)
    target = bigger.state_dict()
    state = {}
    for name, old in model.state_dict().items():
        shape = target[name].shape
        state[name] = old if old.shape == shape else _grown(name, old, shape, text)
    bigger.load_state_dict(state)
    return bigger.eval()


class _Rows:
    """A tensor's rows with spare capacity: ``view`` is the first ``n`` of ``store``."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.n = tensor.shape[0]
        self.store = torch.empty((max(16, 2 * self.n), *tensor.shape[1:]), dtype=tensor.dtype)
        self.store[: self.n] = tensor.detach()

    def append(self, rows: torch.Tensor) -> torch.Tensor:
        m = rows.shape[0]
        if self.n + m > self.store.shape[0]:
            bigger = torch.empty(
                (max(2 * self.store.shape[0], self.n + m), *self.store.shape[1:]),
                dtype=self.store.dtype,
            )
            bigger[: self.n] = self.store[: self.n]
            self.store = bigger
        self.store[self.n : self.n + m] = rows.to(self.store.dtype)
        self.n += m
        return self.store[: self.n]


def _per_item_tensors(model: nn.Module, n_items: int):
    """(module, attribute, kind, full name) of every parameter or buffer with one row per item."""
    for module_name, module in model.named_modules():
        for kind, table in (("param", module._parameters), ("buffer", module._buffers)):
            for attribute, tensor in table.items():
                if tensor is None or tensor.ndim == 0 or tensor.shape[0] != n_items:
                    continue
                if tensor.ndim == 2 and tensor.shape[1] == n_items:
                    raise CannotExtend("an item × item matrix cannot be grown from text")
                name = f"{module_name}.{attribute}" if module_name else attribute
                yield module, attribute, kind, name


@torch.inference_mode()
def grow_model(model: Recommender, text_vectors: np.ndarray) -> Recommender:
    """Grow ``model`` in place by ``m`` items scored from their unit MiniLM vectors
    ``[m, D]``; amortised O(m), items ``0..n-1`` keep their indices and scores."""
    text = _check(model, text_vectors)
    n, m = model.n_items, len(text)
    stores: dict[str, _Rows] = model.__dict__.setdefault("_grow_rows", {})
    for module, attribute, kind, name in list(_per_item_tensors(model, n)):
        table = module._parameters if kind == "param" else module._buffers
        old = table[attribute]
        if name not in stores or stores[name].n != n:
            stores[name] = _Rows(old)
        view = stores[name].append(_new_rows(name, old, m, text))
        table[attribute] = nn.Parameter(view, requires_grad=False) if kind == "param" else view
        if isinstance(module, nn.Embedding):
            module.num_embeddings = view.shape[0]
    cached = getattr(model, "_cached_items", None)
    tower = getattr(model, "items", None)
    adaptor = getattr(tower, "adaptor", None)
    if cached is not None and adaptor is not None and cached.shape[0] == n:
        key = "_cached_items"
        if key not in stores or stores[key].n != n:
            stores[key] = _Rows(cached)
        model._cached_items = stores[key].append(adaptor(text.to(cached.dtype)))  # id-less rows
    elif cached is not None:
        model._cached_items = None  # recomputed at the next score, once
    model.n_items = n + m
    return model
