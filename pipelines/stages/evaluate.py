"""Stage `evaluate`: full-ranking evaluation of every trained model (design.md §4).

All items are scored, the user's history is masked (``evaluate.mask_history``; false
keeps the items a user had as candidates, and ``repeats@k`` says how much of each list
they fill), and the rank of the one held-out item gives NDCG@k, HR@k and MRR@k,
averaged over all users; coverage, novelty and recommended popularity describe the
lists, and a fairness table gives test NDCG per gender and age band, or, when no user
has a profile, per activity band and test-item popularity band (the leaderboard says
which). Where test targets repeat an item of the history, repeat and new targets are
segments too, and with ``evaluate.rhythm_clusters`` so are the behaviour clusters of the
users' training events (``features.behaviour``), with each cluster's size and centre.

Every model is also compared with the best on validation, paired on the same test users
(``paired.json``: the mean difference of test NDCG@k, its bootstrap interval over users
and a sign-flip test's p-value, ``evaluation.stats``), so the leaderboard calls a
difference a gain or a loss only where its interval excludes zero.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipelines.core.config import Params
from pipelines.core.io import write_json, write_text
from pipelines.core.paths import PROJECT
from pipelines.core.schema import SEQ_ITEMS, SEQ_N_TRAIN, SEQ_TIMESTAMPS, TEST, VALID
from pipelines.evaluation.beyond_accuracy import (
    NO_DEMOGRAPHICS,
    behaviour_segments,
    fairness_markdown,
    fairness_table,
    has_demographics,
    item_popularity,
)
from pipelines.evaluation.ranking import Catalogue, evaluate_per_user, metric_names
from pipelines.evaluation.stats import Difference, paired_against
from pipelines.features.behaviour import RHYTHM_FEATURES, Rhythms, fit_rhythms, rhythm_features
from pipelines.features.profiles import profile_codes
from pipelines.features.sequences import histories_for, targets_for, train_matrix
from pipelines.models import load_model
from pipelines.stages import cli
from pipelines.stages.render import markdown_table

log = logging.getLogger(__name__)

SPLITS = (VALID, TEST)
READS = {"features": PROJECT.features_dir, "models": PROJECT.models_dir}
WRITES = {"out": PROJECT.eval_dir}


def leaderboard_markdown(metrics: dict[str, dict[str, dict[str, float]]], k: int) -> str:
    """A model × metric table per split, best validation NDCG first."""
    names = metric_names(k)
    order = sorted(metrics, key=lambda model: -metrics[model][VALID][names[0]])
    names = tuple(name for name in names if name in metrics[order[0]][VALID])
    sections = []
    for split in SPLITS:
        rows = [[model, *(metrics[model][split][name] for name in names)] for model in order]
        sections.append(f"### {split}\n\n" + markdown_table(["model", *names], rows))
    return "\n".join(sections)


def best_on_validation(metrics: dict[str, dict[str, dict[str, float]]], k: int) -> str:
    return max(metrics, key=lambda model: metrics[model][VALID][f"ndcg@{k}"])


def paired_markdown(reference: str, differences: dict[str, Difference], k: int) -> str:
    """One row per model: test NDCG@k minus the reference's, its interval and p-value."""
    rows = [
        [model, diff.mean, f"[{diff.low:+.4f}, {diff.high:+.4f}]", diff.p_value, diff.verdict]
        for model, diff in sorted(differences.items(), key=lambda item: -item[1].mean)
    ]
    header = ["model", f"Δ test NDCG@{k}", "95% interval", "p (sign-flip)", f"vs {reference}"]
    return (
        f"### paired with {reference} (best on validation), the same test users\n\n"
        + markdown_table(header, rows)
    )


def training_times(sequences: pd.DataFrame) -> list[np.ndarray]:
    """Each user's training event times: the clusters must not see validation or test."""
    return [
        np.asarray(stamps)[:n_train]
        for stamps, n_train in zip(sequences[SEQ_TIMESTAMPS], sequences[SEQ_N_TRAIN], strict=True)
    ]


def rhythm_markdown(rhythms: Rhythms, labels: list[str]) -> str:
    """Each cluster's size and centre, in the features' own units."""
    sizes = pd.Series(labels).value_counts()
    rows = [
        [row["cluster"], int(sizes.get(row["cluster"], 0)), *(row[f] for f in RHYTHM_FEATURES)]
        for row in rhythms.profile()
    ]
    header = ["cluster", "users", *RHYTHM_FEATURES]
    return "### behaviour clusters (training events; hours in UTC)\n\n" + markdown_table(
        header, rows
    )


REPEATS_NOTE = (
    "Repeats allowed (evaluate.mask_history: false): items a user had before stay "
    "candidates; repeats@{k} is the share of each list they fill.\n\n"
)


def run(params: Params, features: Path, models: Path, out: Path) -> dict[str, Any]:
    k, batch_size = params.evaluate.k, params.evaluate.batch_size
    exclude_seen = params.evaluate.mask_history
    sequences = pd.read_parquet(features / PROJECT.sequences.name)
    profile_frame = pd.read_parquet(features / PROJECT.profiles.name)
    profiles = profile_codes(profile_frame)
    inputs = {
        split: (histories_for(sequences, split, profiles), targets_for(sequences, split))
        for split in SPLITS
    }
    demographics = has_demographics(profile_frame)
    test_targets = inputs[TEST][1].numpy()
    repeats = [int(items[-1]) in set(items[:-1].tolist()) for items in sequences[SEQ_ITEMS]]
    rhythm, rhythm_table = None, ""
    if params.evaluate.rhythm_clusters:
        behaviour = rhythm_features(training_times(sequences))  # [users, 8]
        rhythms = fit_rhythms(behaviour, params.evaluate.rhythm_clusters)
        rhythm = rhythms.labels(behaviour)
        rhythm_table = "\n" + rhythm_markdown(rhythms, rhythm)
    segments, attributes = None, ()
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    fairness: dict[str, dict] = {}
    catalogue: Catalogue | None = None
    test_ndcg: dict[str, Any] = {}  # model -> per-user test NDCG@k, for the paired table
    for model_dir in tqdm(sorted(p for p in models.iterdir() if p.is_dir()), desc="evaluate"):
        started = time.perf_counter()
        model = load_model(model_dir)
        if catalogue is None:
            matrix = train_matrix(sequences, model.n_items)
            catalogue = Catalogue(item_popularity(matrix), matrix.shape[0])
            segments, attributes = behaviour_segments(
                sequences[SEQ_N_TRAIN].to_numpy(),
                test_targets,
                catalogue.popularity,
                repeats,
                profile_frame if demographics else None,
                rhythm,
            )
        metrics[model.name] = {}
        for split in SPLITS:
            metrics[model.name][split], per_user = evaluate_per_user(
                model, *inputs[split], k, batch_size, catalogue, exclude_seen
            )
        test_ndcg[model.name] = per_user.numpy()
        fairness[model.name] = fairness_table(per_user.numpy(), segments, k, attributes)
        log.info(
            "%s: valid %s in %.1fs",
            model.name,
            metrics[model.name][VALID],
            time.perf_counter() - started,
        )

    reference = best_on_validation(metrics, k)
    differences = paired_against(test_ndcg, reference)
    paired = {
        "reference": reference,
        "metric": f"ndcg@{k}",
        "split": TEST,
        "differences": {
            name: {**diff.to_dict(), "verdict": diff.verdict} for name, diff in differences.items()
        },
    }
    table = ("" if exclude_seen else REPEATS_NOTE.format(k=k)) + leaderboard_markdown(metrics, k)
    table += "\n" + paired_markdown(reference, differences, k) + "\n"
    sections = [f"#### {name}\n\n{fairness_markdown(fairness[name], k)}" for name in fairness]
    table += "\n### fairness (test NDCG per segment)\n\n"
    table += "" if demographics else NO_DEMOGRAPHICS + "\n\n"
    table += "\n".join(sections)
    table += rhythm_table
    write_json(metrics, out / PROJECT.eval_metrics.name)
    write_json(fairness, out / PROJECT.fairness.name)
    write_json(paired, out / PROJECT.eval_paired.name)
    write_text(table, out / PROJECT.leaderboard_md.name)
    print(table)
    return {"models": sorted(metrics)}


def main(argv: list[str] | None = None) -> int:
    return cli.main("evaluate", __doc__, run, READS, WRITES, argv)


if __name__ == "__main__":
    sys.exit(main())
