"""Fixtures for the service tests: one tiny trained bundle per session, real MiniLM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="session")
def encoder():
    from pipelines.features.text import TextEncoder

    return TextEncoder(device="cpu")


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory, encoder) -> Path:
    from tests.inference.tiny import build_artifacts, item_vectors

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_artifacts(tmp_path_factory.mktemp("project"), item_vectors(encoder))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def bundle_dir(artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.inference.bundle import write_bundle

    directory = tmp_path_factory.mktemp("bundle") / "bundle"
    card = {"name": "fusion_transformer", "version": "tiny:1", "metrics": {}, "blessing": {}}
    write_bundle(
        directory,
        artifacts / "models" / "fusion_transformer",
        artifacts / "features",
        artifacts / "split",
        artifacts / "embeddings" / "items.npy",
        card,
    )
    return directory
