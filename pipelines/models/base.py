"""The one contract every recommender keeps (design.md §7).

Trainer, evaluator and service call only these verbs, so they never ask which
model they hold:

- ``fit(train)``            closed-form models learn here; gradient models
                            train through ``loss`` and leave ``fit`` alone.
- ``loss(batch)``           a scalar training loss (gradient models only); the
                            batch is a ``Histories`` of training sequences and
                            the model predicts each next item within them.
- ``score(histories, items)``  scores of chosen candidates, ``[B, C]``.
- ``score_all(histories)``     scores of every catalogue item, ``[B, n_items]``.

Models score *histories*, never user ids, so a user unseen in training is
served from what they did (and their profile), not from a lookup table.
"""

from __future__ import annotations

import dataclasses
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from pipelines.core.io import verify_checksum, write_checksums, write_json, write_torch

# the data a model consumes is defined one layer down, with the features that build it
from pipelines.features.batch import PAD, Histories, TrainData, Validation

MODEL_META = "model.json"  # name, n_items and every config value
MODEL_STATE = "state.pt"  # the weights, a plain state dict

__all__ = ["PAD", "Histories", "Recommender", "TrainData", "Validation"]


@dataclass(frozen=True)
class NoConfig:
    """The config of a model with no hyperparameters."""


def config_from_dict(config_class: type, values: dict[str, Any] | None) -> Any:
    """A model's frozen config dataclass from plain values (params.yaml or model.json).

    Unknown keys are errors that name the known ones; JSON lists become the
    tuples the dataclass declares, so a saved config rebuilds the same model.
    """
    values = dict(values or {})
    fields = {field.name: field for field in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)}; known: {', '.join(fields) or 'none'}"
        )
    hints = typing.get_type_hints(config_class)
    for key, value in values.items():
        if typing.get_origin(hints[key]) is tuple and isinstance(value, list):
            values[key] = tuple(value)
    return config_class(**values)


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready values of a config dataclass: tuples become lists."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in dataclasses.asdict(config).items()
    }


class Recommender(nn.Module, ABC):
    """Base of every model. Subclasses set ``name`` and ``config_class``, implement
    ``score_all``, and build themselves from ``self.cfg``."""

    name: ClassVar[str]
    # the model's frozen config dataclass: each default, with its reason, lives there
    config_class: ClassVar[type] = NoConfig
    # True when the model can score an item it never saw in training from its text alone
    scores_unseen_items_from_text: ClassVar[bool] = False
    # False for closed-form models that learn in ``fit`` and have no loss
    trainable: ClassVar[bool] = False

    def __init__(self, n_items: int, config: Any = None) -> None:
        super().__init__()
        self.n_items = n_items
        self.cfg = (
            config
            if isinstance(config, self.config_class)
            else config_from_dict(self.config_class, config)
        )
        self.config = config_to_dict(self.cfg)  # every field lands in model.json

    @classmethod
    def data_config(cls, train: TrainData) -> dict[str, Any]:
        """Config values only the data knows (text width, profile sizes); none by default."""
        return {}

    @property
    def context_length(self) -> int | None:
        """Newest events a sequence model attends to; None for models that see whole histories."""
        return None

    def fit(self, train: TrainData) -> None:
        """Closed-form learning; gradient models train through ``loss`` instead."""

    def loss(self, batch: Any) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} is fitted in closed form and has no loss")

    @abstractmethod
    def score_all(self, histories: Histories) -> torch.Tensor:
        """Scores of every item for each history, ``[B, n_items]``; higher is better."""

    def score(self, histories: Histories, items: torch.Tensor) -> torch.Tensor:
        """Scores of candidate items ``[B, C]`` for each history."""
        return self.score_all(histories).gather(1, items)

    # -- persistence: a JSON config next to a state dict, never a pickle --------
    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"name": self.name, "n_items": self.n_items, "config": self.config}
        write_json(meta, directory / MODEL_META)
        write_torch(self.state_dict(), directory / MODEL_STATE)
        write_checksums(directory, [MODEL_META, MODEL_STATE])

    def load_state(self, directory: Path) -> None:
        verify_checksum(directory / MODEL_STATE)
        state = torch.load(directory / MODEL_STATE, map_location="cpu", weights_only=True)
        self.load_state_dict(state)
