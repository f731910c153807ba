"""DVC stage `evaluate`: full-ranking evaluation of every trained model (design.md §4).

All items are scored, the user's history is masked, and the rank of the one
held-out item gives NDCG@k, HR@k and MRR@k, averaged over all users. Catalogue
coverage tells how much of the catalogue the top-k lists reach at all.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from pipelines import paths
from pipelines.config import load_params
from pipelines.io import write_json, write_text
from pipelines.metrics import (
    catalogue_coverage,
    hit_from_ranks,
    mask_seen,
    mrr_from_ranks,
    ndcg_from_ranks,
    target_ranks,
)
from pipelines.models import Histories, Recommender, load_model
from pipelines.sequences import histories_for, profile_codes, targets_for

log = logging.getLogger(__name__)

SPLITS = ("valid", "test")


def metric_names(k: int) -> tuple[str, ...]:
    return (f"ndcg@{k}", f"hr@{k}", f"mrr@{k}", f"coverage@{k}")


@torch.inference_mode()
def evaluate_model(
    model: Recommender, histories: Histories, targets: torch.Tensor, k: int, batch_size: int
) -> dict[str, float]:
    """Mean ranking metrics of ``model`` over all users, scoring the full catalogue."""
    ranks, top_items = [], []
    for start in range(0, len(targets), batch_size):
        rows = slice(start, start + batch_size)
        batch = Histories(
            histories.items[rows],
            histories.timestamps[rows],
            None if histories.profiles is None else histories.profiles[rows],
        )
        seen = batch.to_matrix(model.n_items).bool()  # [B, n_items]
        scores = mask_seen(model.score_all(batch).float(), seen)
        ranks.append(target_ranks(scores, targets[rows]))
        top_items.append(scores.topk(k, dim=1).indices)
    rank = torch.cat(ranks)
    ndcg, hr, mrr, coverage = metric_names(k)
    return {
        ndcg: float(ndcg_from_ranks(rank, k).mean()),
        hr: float(hit_from_ranks(rank, k).mean()),
        mrr: float(mrr_from_ranks(rank, k).mean()),
        coverage: catalogue_coverage(torch.cat(top_items), model.n_items),
        "users": len(rank),
    }


def leaderboard_markdown(metrics: dict[str, dict[str, dict[str, float]]], k: int) -> str:
    """A model × metric table per split, best validation NDCG first."""
    names = metric_names(k)
    order = sorted(metrics, key=lambda model: -metrics[model]["valid"][names[0]])
    lines = []
    for split in SPLITS:
        lines += [
            f"### {split}",
            "",
            "| model | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for model in order:
            values = " | ".join(f"{metrics[model][split][name]:.4f}" for name in names)
            lines.append(f"| {model} | {values} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, default=paths.FEATURES_DIR)
    parser.add_argument("--models", type=Path, default=paths.MODELS_DIR)
    parser.add_argument("--out", type=Path, default=paths.EVAL_DIR)
    parser.add_argument("--params", type=Path, default=paths.PARAMS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params(args.params).evaluate

    sequences = pd.read_parquet(args.features / paths.SEQUENCES.name)
    profiles = profile_codes(pd.read_parquet(args.features / paths.PROFILES.name))
    inputs = {
        split: (histories_for(sequences, split, profiles), targets_for(sequences, split))
        for split in SPLITS
    }
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    for model_dir in tqdm(sorted(p for p in args.models.iterdir() if p.is_dir()), desc="evaluate"):
        started = time.perf_counter()
        model = load_model(model_dir)
        metrics[model.name] = {
            split: evaluate_model(model, *inputs[split], params.k, params.batch_size)
            for split in SPLITS
        }
        log.info(
            "%s: valid %s in %.1fs",
            model.name,
            metrics[model.name]["valid"],
            time.perf_counter() - started,
        )

    table = leaderboard_markdown(metrics, params.k)
    write_json(metrics, args.out / paths.EVAL_METRICS.name)
    write_text(table, args.out / paths.LEADERBOARD_MD.name)
    print(table)


if __name__ == "__main__":
    main()
