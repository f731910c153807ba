"""The BentoML model store and Bento store as the release registry of served models.

- The **champion** is the model inside the newest Bento named ``BENTO_NAME``:
  a Bento is built only after its model is safely in the store, so a crash at
  any point leaves the previous newest Bento, and its model, the champion.
- ``publish`` saves a bundle folder as a new store model (BentoML writes it to a
  temporary folder and moves it in only when the ``with`` block succeeds), then
  builds the Bento; if the build fails, the new model is deleted again, so the
  store holds nothing that is not served.

The store lives in ``BENTOML_HOME`` (``.bentoml/`` in the project, git-ignored);
``use_home`` must run before anything imports bentoml in this process, because
BentoML reads that variable once.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL_NAME = "recops_recommender"  # the store model; also the Bento's name
BENTO_NAME = MODEL_NAME
EVIDENCE_KEY = "evidence"  # model metadata key holding the blessing evidence


@dataclass(frozen=True)
class Champion:
    bento: str  # exact Bento tag
    model: str  # exact model tag
    metadata: dict[str, Any]
    path: Path  # the bundle folder inside the model store


def use_home(home: Path) -> None:
    """Point BentoML at ``home``; fails if bentoml was already imported with another home."""
    home = Path(home).resolve()
    if "bentoml" in sys.modules:
        from bentoml._internal.configuration.containers import BentoMLContainer

        current = Path(BentoMLContainer.bentoml_home.get()).resolve()
        if current != home:
            raise RuntimeError(f"bentoml already uses {current}; cannot switch to {home}")
    os.environ["BENTOML_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)


def champion() -> Champion | None:
    """The served champion: the model of the newest Bento, or None before the first release."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        bento = bentoml.bentos.get(f"{BENTO_NAME}:latest")
    except NotFound:
        return None
    tags = [info.tag for info in bento.info.all_models if info.tag.name == MODEL_NAME]
    if not tags:
        return None
    try:
        model = bentoml.models.get(tags[0])
    except NotFound:
        return None
    return Champion(str(bento.tag), str(model.tag), dict(model.info.metadata), Path(model.path))


def model_exists(version: str) -> bool:
    """Whether the store already holds ``MODEL_NAME:version``."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        bentoml.models.get(f"{MODEL_NAME}:{version}")
    except NotFound:
        return False
    return True


def pinned_model_path(bento: Any) -> Path | None:
    """The bundle folder of the model a served Bento was built with (None outside a Bento)."""
    if bento is None:
        return None
    import bentoml

    for info in bento.info.all_models:
        if info.tag.name == MODEL_NAME:
            return Path(bentoml.models.get(info.tag).path)
    return None


def publish(
    bundle_dir: Path,
    version: str,
    metadata: dict[str, Any],
    labels: dict[str, str],
    service: str,
    build_ctx: Path,
    include: list[str],
    exclude: list[str],
) -> tuple[str, str]:
    """Save ``bundle_dir`` as a store model, then build the Bento; returns (model, bento) tags.

    Either both exist afterwards, or neither does.
    """
    import bentoml

    tag = f"{MODEL_NAME}:{version}"
    with bentoml.models.create(tag, labels=labels, metadata=metadata) as model:
        shutil.copytree(bundle_dir, model.path, dirs_exist_ok=True)
    try:
        bento = build_bento(service, version, build_ctx, include, exclude, labels)
    except BaseException:
        bentoml.models.delete(model.tag)
        raise
    return str(model.tag), str(bento)


def build_bento(
    service: str,
    version: str,
    build_ctx: Path,
    include: list[str],
    exclude: list[str],
    labels: dict[str, str],
) -> str:
    """Build the Bento of ``service`` (``module:Class``) from ``build_ctx``; its Python
    requirements come from the image the service declares in code."""
    import bentoml

    bento = bentoml.bentos.build(
        service,
        name=BENTO_NAME,
        version=version,
        labels=labels,
        include=include,
        exclude=exclude,
        build_ctx=str(build_ctx),
    )
    return str(bento.tag)
