"""The paired gate (design.md §6): champion and challenger on the same newest events, as served.

Comparing the champion's validation number from its own release with the challenger's on
newer data compares two different sets of cases; one hit more or less among a few hundred
users decides it. Here both are scored on **the same cases**: the events of the newest
``holdout_days`` of data/, each with every earlier event as its history, as served
(live history, a catalogue that grows as items arrive, each model's own ``NowBlend``).

- The **challenger** is the winner's config fitted again on every event before the
  holdout (the *gate fit*): it has never seen the cases it is judged on. The release is
  the train stage's fit on all data; the gate only decides whether it ships.
- The **champion** is what is served now, unchanged (it was trained before the holdout).

The evidence is the paired per-case difference of NDCG@k (challenger - champion), with a
bootstrap interval over users (``evaluation.stats``), on the known users' events and on
two cold slices: events on items that arrived in the holdout, and new users' events.

``validation_blend`` chooses a model's ``NowBlend`` on its own leave-one-out validation
events (the second-to-last event of each user, with the training events before it as
"what was popular recently"): no extra fit, so every release carries one.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipelines.core import schema
from pipelines.core.config import Params
from pipelines.core.io import write_json, write_npy, write_parquet
from pipelines.data.split import catalogue, split_interactions, user_table
from pipelines.evaluation.ranking import masked_scores
from pipelines.evaluation.stats import mean_interval, paired_difference
from pipelines.features.batch import Histories
from pipelines.features.dataset import Dataset, load_dataset, train_data, validation
from pipelines.features.profiles import encode_profiles, profile_vocabulary
from pipelines.features.sequences import build_sequences
from pipelines.inference.bundle import Bundle, load_bundle, write_bundle
from pipelines.inference.now import NowBlend, fit_blend
from pipelines.models import Recommender
from pipelines.monitoring import quality
from pipelines.training.fit import Tuned, fit_model, resolve

log = logging.getLogger(__name__)

DAY = quality.DAY


# ---- the blend of a model, chosen on its validation events ------------------------------------


def validation_blend(
    model: Recommender, dataset: Dataset, split_events: pd.DataFrame, k: int
) -> tuple[NowBlend, dict[str, Any]]:
    """The model's NowBlend with the best validation NDCG@k per gap bucket (module doc)."""
    sequences = dataset.sequences
    valid = validation(sequences, dataset.side)
    moments = torch.as_tensor(
        [int(stamps[-2]) for stamps in sequences[schema.SEQ_TIMESTAMPS]], dtype=torch.long
    )
    histories = Histories(
        valid.histories.items, valid.histories.timestamps, valid.histories.profiles, moments
    )
    with torch.inference_mode():
        scores = masked_scores(model, histories, exclude_seen=False).float().numpy()
    last = histories.timestamps[:, -1].numpy()
    gaps = np.where(histories.mask[:, -1].numpy(), moments.numpy() - last, -1)
    train = split_events[split_events[schema.SPLIT] == schema.TRAIN].sort_values(
        schema.TIMESTAMP, kind="stable"
    )
    times = train[schema.TIMESTAMP].to_numpy(np.int64)
    items = train[schema.ITEM_IDX].to_numpy(np.int64)
    window = 7 * DAY
    recent = np.zeros(scores.shape, dtype=np.float32)
    for row, moment in enumerate(moments.tolist()):
        lo, hi = np.searchsorted(times, [moment - window, moment], side="left")
        recent[row] = np.bincount(items[lo:hi], minlength=scores.shape[1])[: scores.shape[1]]
    seen = histories.to_matrix(scores.shape[1]).numpy() > 0
    blend, report = fit_blend(scores, recent, gaps, valid.targets.numpy(), seen, k=k)
    report["cases"] = len(gaps)
    return blend, report


# ---- the gate fit: the winner's config on the events before the holdout ---------------------


@dataclass(frozen=True)
class Snapshot:
    """data/'s three canonical tables."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame

    @classmethod
    def read(cls, data_dir: Path) -> Snapshot:
        return cls(
            *(
                pd.read_parquet(Path(data_dir) / name)
                for name in ("interactions.parquet", "items.parquet", "users.parquet")
            )
        )

    def before(self, moment: int) -> Snapshot:
        events = self.interactions[self.interactions[schema.TIMESTAMP] < moment]
        return Snapshot(events.reset_index(drop=True), self.items, self.users)


def holdout_start(events: pd.DataFrame, days: float) -> int:
    """The first second of the holdout: the newest ``days`` of the events."""
    return int(events[schema.TIMESTAMP].max()) + 1 - int(days * DAY)


def fit_before(
    snapshot: Snapshot,
    vectors: dict[str, np.ndarray],
    winner: str,
    params: Params,
    tuned: Tuned | None,
    work: Path,
    card: dict[str, Any],
) -> Bundle:
    """A bundle of ``winner`` fitted (its resolved config, the train stage's) on ``snapshot``,
    with its validation blend in the card; built in ``work`` by the pipeline's own steps."""
    split = split_interactions(
        snapshot.interactions, params.split.min_count, params.split.tie_break
    )
    split_dir, features_dir, models_dir = work / "split", work / "features", work / "models"
    for folder in (split_dir, features_dir, models_dir):
        folder.mkdir(parents=True, exist_ok=True)
    items = catalogue(split, snapshot.items)
    users = user_table(split, snapshot.users)
    write_parquet(split, split_dir / "interactions.parquet")
    write_parquet(items, split_dir / "items.parquet")
    write_parquet(users, split_dir / "users.parquet")
    vocabulary = profile_vocabulary(users)
    write_parquet(build_sequences(split), features_dir / "sequences.parquet")
    write_parquet(encode_profiles(users, vocabulary), features_dir / "profiles.parquet")
    write_json(vocabulary, features_dir / "profile_vocab.json")
    embeddings = work / "items.npy"
    write_npy(np.stack([vectors[str(i)] for i in items[schema.ITEM_ID]]), embeddings)

    dataset = load_dataset(features_dir, split_dir / "items.parquet", embeddings)
    train = train_data(dataset.sequences, dataset.side)
    valid = validation(dataset.sequences, dataset.side)
    spec = resolve(winner, params.train, params.seed, train, tuned, k=params.evaluate.k)
    log.info("gate fit: %s on %d events before the holdout", winner, train.matrix.nnz)
    model, _ = fit_model(spec, train, valid)
    blend, _ = validation_blend(model, dataset, split, params.evaluate.k)
    model.save(models_dir / winner)
    bundle_dir = work / "bundle"
    write_bundle(
        bundle_dir,
        models_dir / winner,
        features_dir,
        split_dir,
        embeddings,
        {**card, "now_blend": blend.to_dict()},
    )
    return load_bundle(bundle_dir)


# ---- the comparison ---------------------------------------------------------------------------


SLICES = {
    "known users": lambda c, new_item: c.known,
    "new items": lambda c, new_item: c.known & new_item,
    "new users": lambda c, new_item: ~c.known,
}


def compare(
    champion: Bundle,
    challenger: Bundle,
    snapshot: Snapshot,
    start: int,
    vectoriser: quality.Vectoriser | None,
    k: int,
    seed: int = 42,
) -> dict[str, Any]:
    """Both bundles as served on the events from ``start`` on: per slice, each one's NDCG@k
    and HR@k with intervals, and the paired difference (challenger - champion)."""
    timeline = quality.Timeline.from_events(snapshot.interactions)
    cases = quality.window_cases(timeline, start, int(timeline.times.max()) + 1)
    ours = quality.Served(challenger, live=True, users=snapshot.users, vectoriser=vectoriser)
    theirs = quality.Served(champion, live=True, users=snapshot.users, vectoriser=vectoriser)
    ours.name, theirs.name = "challenger", "champion"
    scored = quality.score([ours, theirs], timeline, cases, k)
    new_item = timeline.first_seen[timeline.item_codes[cases.events]] >= timeline.index_at(start)
    out: dict[str, Any] = {"holdout_start": start, "k": k}
    for name, pick in SLICES.items():
        mask = pick(cases, new_item)
        entry: dict[str, Any] = {
            "cases": int(mask.sum()),
            "users": len(set(cases.users[mask])),
        }
        if mask.any():
            groups = cases.users[mask]
            for s in scored:
                entry[s.name] = {
                    f"ndcg@{k}": mean_interval(s.ndcg[mask], groups, seed=seed).to_dict(),
                    f"hr@{k}": mean_interval(s.hr[mask], groups, seed=seed).to_dict(),
                }
            diff = paired_difference(scored[0].ndcg[mask], scored[1].ndcg[mask], groups, seed=seed)
            entry["difference"] = {**diff.to_dict(), "verdict": diff.verdict}
        out[name] = entry
    return out


def gate_evidence(
    data_dir: Path,
    params: Params,
    winner: str,
    tuned: Tuned | None,
    vectors: dict[str, np.ndarray],
    champion: Bundle | None,
    vectoriser: quality.Vectoriser | None,
) -> dict[str, Any]:
    """What the package stage blesses on: the paired comparison, or why there is none."""
    if champion is None:
        return {"comparison": None, "why": "no champion yet: the floors alone decide"}
    snapshot = Snapshot.read(data_dir)
    start = holdout_start(snapshot.interactions, params.gate.holdout_days)
    with tempfile.TemporaryDirectory(prefix="recops-gate-") as work:
        challenger = fit_before(
            snapshot.before(start),
            vectors,
            winner,
            params,
            tuned,
            Path(work),
            {"name": winner, "version": "gate-fit"},
        )
        comparison = compare(
            champion, challenger, snapshot, start, vectoriser, params.evaluate.k, params.seed
        )
    cases = comparison["known users"]["cases"]
    if cases < params.gate.min_cases:
        return {
            "comparison": comparison,
            "why": f"{cases} held-out cases of known users, below gate.min_cases "
            f"{params.gate.min_cases}: too few to compare, the floors alone decide",
        }
    return {"comparison": comparison, "why": None}
