"""DVC stage `evaluate`: full-ranking evaluation of every trained model (design.md §4).

All items are scored, the user's history is masked, and the rank of the one
held-out item gives NDCG@k, HR@k and MRR@k, averaged over all users. Catalogue
coverage tells how much of the catalogue the top-k lists reach at all.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pipelines import paths
from pipelines.beyond_accuracy import (
    fairness_markdown,
    fairness_table,
    item_popularity,
    list_metrics,
    ranks_and_top_k,
)
from pipelines.config import load_params
from pipelines.io import write_json, write_text
from pipelines.metrics import catalogue_coverage, hit_from_ranks, mrr_from_ranks, ndcg_from_ranks
from pipelines.models import Histories, Recommender, load_model
from pipelines.sequences import histories_for, profile_codes, targets_for, train_matrix

log = logging.getLogger(__name__)

SPLITS = ("valid", "test")


def metric_names(k: int) -> tuple[str, ...]:
    return (f"ndcg@{k}", f"hr@{k}", f"mrr@{k}", f"coverage@{k}", f"novelty@{k}", f"arp@{k}")


@dataclass(frozen=True)
class Catalogue:
    """What beyond-accuracy metrics compare the lists with: training popularity."""

    popularity: np.ndarray  # [n_items] distinct training users per item
    n_users: int


@torch.inference_mode()
def evaluate_per_user(
    model: Recommender,
    histories: Histories,
    targets: torch.Tensor,
    k: int,
    batch_size: int,
    catalogue: Catalogue | None = None,
) -> tuple[dict[str, float], torch.Tensor]:
    """Mean metrics over all users, and each user's NDCG@k (for segment tables)."""
    ranks, top = ranks_and_top_k(model, histories, targets, k, batch_size)
    per_user_ndcg = ndcg_from_ranks(ranks, k)
    metrics = {
        f"ndcg@{k}": float(per_user_ndcg.mean()),
        f"hr@{k}": float(hit_from_ranks(ranks, k).mean()),
        f"mrr@{k}": float(mrr_from_ranks(ranks, k).mean()),
    }
    if catalogue is None:
        metrics[f"coverage@{k}"] = catalogue_coverage(top, model.n_items)
    else:
        metrics |= list_metrics(top, catalogue.popularity, catalogue.n_users, model.n_items)
    metrics["users"] = len(ranks)
    return metrics, per_user_ndcg


def evaluate_model(
    model: Recommender, histories: Histories, targets: torch.Tensor, k: int, batch_size: int
) -> dict[str, float]:
    """Mean ranking metrics of ``model`` over all users, scoring the full catalogue."""
    return evaluate_per_user(model, histories, targets, k, batch_size)[0]


def leaderboard_markdown(metrics: dict[str, dict[str, dict[str, float]]], k: int) -> str:
    """A model × metric table per split, best validation NDCG first."""
    names = metric_names(k)
    order = sorted(metrics, key=lambda model: -metrics[model]["valid"][names[0]])
    names = tuple(name for name in names if name in metrics[order[0]]["valid"])
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
    profile_frame = pd.read_parquet(args.features / paths.PROFILES.name)
    profiles = profile_codes(profile_frame)
    inputs = {
        split: (histories_for(sequences, split, profiles), targets_for(sequences, split))
        for split in SPLITS
    }
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    fairness: dict[str, dict] = {}
    catalogue: Catalogue | None = None
    for model_dir in tqdm(sorted(p for p in args.models.iterdir() if p.is_dir()), desc="evaluate"):
        started = time.perf_counter()
        model = load_model(model_dir)
        if catalogue is None:
            matrix = train_matrix(sequences, model.n_items)
            catalogue = Catalogue(item_popularity(matrix), matrix.shape[0])
        metrics[model.name] = {}
        for split in SPLITS:
            metrics[model.name][split], per_user = evaluate_per_user(
                model, *inputs[split], params.k, params.batch_size, catalogue
            )
        fairness[model.name] = fairness_table(per_user.numpy(), profile_frame, params.k)
        log.info(
            "%s: valid %s in %.1fs",
            model.name,
            metrics[model.name]["valid"],
            time.perf_counter() - started,
        )

    table = leaderboard_markdown(metrics, params.k)
    sections = [
        f"#### {name}\n\n{fairness_markdown(fairness[name], params.k)}" for name in fairness
    ]
    table += "\n### fairness (test NDCG per segment)\n\n" + "\n".join(sections)
    write_json(metrics, args.out / paths.EVAL_METRICS.name)
    write_json(fairness, args.out / paths.FAIRNESS.name)
    write_text(table, args.out / paths.LEADERBOARD_MD.name)
    print(table)


if __name__ == "__main__":
    main()
