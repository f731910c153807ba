"""Stage `gate`: the evidence the release is blessed on, and the winner's blend with "now".

Two outputs, both read by `package`:

- ``blend.json``: the winner's ``NowBlend`` (recent popularity by gap bucket), chosen on
  its own leave-one-out validation events (``monitoring.gate.validation_blend``);
- ``gate.json`` (a DVC metric): the paired comparison with the served champion on the
  newest ``gate.holdout_days`` of data/, both as served; the challenger here is the
  winner's config fitted on the events before them (``monitoring.gate``). Before the
  first release there is no champion, and no gate fit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core import schema
from pipelines.core.config import Params
from pipelines.core.io import replaced_dir, write_json
from pipelines.core.paths import PROJECT
from pipelines.features.dataset import load_dataset
from pipelines.inference import release
from pipelines.inference.bundle import load_bundle
from pipelines.models import load_model
from pipelines.monitoring.gate import gate_evidence, validation_blend
from pipelines.monitoring.quality import text_vectoriser
from pipelines.stages import cli
from pipelines.training.fit import read_tuned

READS = {
    "data": PROJECT.data,
    "selection": PROJECT.selection,
    "tuned": PROJECT.tune_best,
    "models": PROJECT.models_dir,
    "features": PROJECT.features_dir,
    "split": PROJECT.split_dir,
    "embeddings": PROJECT.item_embeddings,
    "bentoml_home": PROJECT.bentoml_home,
}
WRITES = {"out": PROJECT.gate_dir}


def run(
    params: Params,
    data: Path,
    selection: Path,
    tuned: Path,
    models: Path,
    features: Path,
    split: Path,
    embeddings: Path,
    bentoml_home: Path,
    out: Path,
) -> dict[str, Any]:
    winner = json.loads(selection.read_text())["winner"]
    dataset = load_dataset(features, split / PROJECT.split_items.name, embeddings)
    split_events = pd.read_parquet(split / PROJECT.split_interactions.name)
    blend, report = validation_blend(
        load_model(models / winner), dataset, split_events, params.evaluate.k
    )
    items = pd.read_parquet(split / PROJECT.split_items.name)
    vectors = dict(zip(items[schema.ITEM_ID].astype(str), np.load(embeddings), strict=True))
    release.use_home(bentoml_home)
    current = release.champion()
    champion = None if current is None else load_bundle(current.path)
    evidence = gate_evidence(
        data,
        params,
        winner,
        read_tuned(tuned).get(winner),
        vectors,
        champion,
        text_vectoriser(pd.read_parquet(data / PROJECT.items.name)),
    )
    evidence["champion"] = None if current is None else current.model
    evidence["challenger"] = winner
    with replaced_dir(out) as staging:
        write_json({**blend.to_dict(), "chosen_on": report}, staging / "blend.json")
        write_json(evidence, staging / PROJECT.gate.name)
    known = (evidence.get("comparison") or {}).get("known users", {})
    return {
        "winner": winner,
        "blend": blend.weights,
        "difference": known.get("difference"),
        "why": evidence.get("why"),
    }


def main(argv: list[str] | None = None) -> int:
    return cli.main("gate", __doc__, run, READS, WRITES, argv)


if __name__ == "__main__":
    sys.exit(main())
