"""A stand-in for `dvc repro` in the DAG tests: seconds instead of minutes, real release code.

    python tests/dags/tiny_repro.py        (run in the workspace root, as `dvc repro` would be)

What is real: the `split` and `features` stages on the workspace's data/ (the batches the
ingest DAG appended), a popularity model fitted and saved by the model code, and the
`gate` stage (the winner's blend; with a champion, the paired comparison on the newest
events, as served) and the `package` stage: the blessing rule, the bundle, the BentoML model
store and the Bento build in the workspace's .bentoml/. What stands in: item vectors are
seeded random unit vectors instead of MiniLM, and the evaluate stage's metrics are written,
not measured: validation NDCG@10 is 0.05 + 0.01 x the batches in data/ledger.json (the
floors pass). There is no tune, evaluate or coldstart stage.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path.cwd()
ART = ROOT / "artifacts"


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    from pipelines.core.config import load_params
    from pipelines.core.io import write_json, write_npy
    from pipelines.core.paths import PROJECT
    from pipelines.features.dataset import load_dataset, train_data
    from pipelines.models import build_model
    from pipelines.stages import features, gate, package, split

    params = load_params(ROOT / "params.yaml")
    split.run(params, data=ROOT / "data", out=ART / "split")
    features.run(params, split=ART / "split", out=ART / "features")
    items = ART / "split" / PROJECT.split_items.name
    n_items = len(__import__("pandas").read_parquet(items))
    vectors = np.random.default_rng(0).normal(size=(n_items, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    embeddings = ART / "embeddings" / PROJECT.item_embeddings.name
    write_npy(vectors, embeddings)

    dataset = load_dataset(ART / "features", items, embeddings)
    model = build_model("popularity", dataset.side.n_items)
    model.fit(train_data(dataset.sequences, dataset.side))
    model.save(ART / "models" / "popularity")

    batches = len(json.loads((ROOT / "data" / "ledger.json").read_text())["batches"])
    ndcg = round(0.05 + 0.01 * batches, 4)
    measured = {
        "valid": {"ndcg@10": ndcg, "hr@10": 2 * ndcg, "mrr@10": ndcg / 2},
        "test": {"ndcg@10": ndcg, "hr@10": 2 * ndcg, "mrr@10": ndcg / 2},
    }
    write_json({"popularity": measured}, ART / "eval" / "metrics.json")
    write_json(
        {"winner": "popularity", "chosen_by": "valid ndcg@10", **measured, "ranking": []},
        ART / "selection" / "selection.json",
    )
    # the real gate: the winner's blend, and with a champion, its paired comparison on the
    # newest events (a popularity refit without them: seconds)
    gate.run(
        params,
        data=ROOT / "data",
        selection=ART / "selection" / "selection.json",
        tuned=ART / "tune" / "best.json",
        models=ART / "models",
        features=ART / "features",
        split=ART / "split",
        embeddings=embeddings,
        bentoml_home=ROOT / ".bentoml",
        out=ART / "gate",
    )
    package.run(
        params,
        selection=ART / "selection" / "selection.json",
        metrics=ART / "eval" / "metrics.json",
        coldstart=ART / "coldstart" / "metrics.json",  # absent: cold start not compared
        models=ART / "models",
        features=ART / "features",
        split=ART / "split",
        embeddings=embeddings,
        data_dvc=ROOT / "data.dvc",
        gate=ART / "gate" / "gate.json",
        blend=ART / "gate" / "blend.json",
        out=ART / "release",
        bentoml_home=ROOT / ".bentoml",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
