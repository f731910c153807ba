"""Serving-time compression of a model: int8 dynamic quantisation or bf16 weights.

- ``int8``: ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear``
  (weights stored as int8, activations quantised on the fly; CPU only). The
  flagship's attention, MLP and gate projections are Linear layers; its
  embeddings and the whitening experts stay float32.
- ``bf16``: every floating parameter and buffer cast to bfloat16 (CPUs with
  AVX512-BF16/AMX and CUDA run it natively; elsewhere it is emulated and slower).
- ``none``: the model as trained.

Whether a mode is worth it is measured, not assumed: ``bench/serve.py
--quantize`` reports test NDCG@10 through the evaluator and latency for each.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

from pipelines.models import Recommender

Quantization = Literal["none", "int8", "bf16"]
MODES: tuple[str, ...] = ("none", "int8", "bf16")


def quantize(model: Recommender, mode: Quantization) -> Recommender:
    """A compressed copy of ``model`` in eval mode (the model itself for ``none``)."""
    if mode == "none":
        return model.eval()
    if mode == "int8":
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)
    if mode == "bf16":
        return copy.deepcopy(model).to(torch.bfloat16).eval()
    raise ValueError(f"quantization must be one of {', '.join(MODES)}, got {mode!r}")
