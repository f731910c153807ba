"""Stage `coldstart`: the two cold-start protocols of design.md §5.

**New items (strict cold start).** A seeded ``share`` of the catalogue is
cold: every event on a cold item is removed from training and from every
input history (``remove_items``). Evaluated users are those with at least one
cold-item event anywhere in their full sequence. Each is given *all* their
warm events as history (train, validation and test events alike: the cold
items are the target here, not the held-out split) and the model ranks the
cold items only; relevant = the user's cold items. Recall@k and NDCG@k
(k = 20), compared with

- ``warm_ceiling``: the same model class trained on the standard training
  events, cold items included, scored on the same users, histories and
  candidates. It is a ceiling, not a fair rival: the user's own cold-item
  events in their training part were in its training data (on ML-100K this
  inflates EASE's NDCG@20 from 0.63 to 0.84);
- ``warm_cross_fitted`` (only with ``warm_folds`` ≥ 2): the warm ceiling
  without that leak. The evaluated users are split into folds; for each fold
  the model is trained with the cold items, but that fold's users contribute
  only their warm events, and it scores only that fold's users. It costs
  ``warm_folds`` more fits and is the fairer "what if the items were known";
- ``random``: the exact expectation of a uniformly random order of the cold
  items (each position holds a relevant item with probability R/C);
- ``index_order``: every cold item scored alike, so ties fall to item index.

A model that cannot score unseen items (``scores_unseen_items_from_text`` is
False, e.g. EASE) is still evaluated: it gives every cold item the same score
and the ranking falls back to item index (as in ``metrics.target_ranks``),
which is the honest answer; its number then equals ``index_order``. NOTE: on
MovieLens that is not the random number: item_idx follows the original item
id, and low ids are older, more popular films, so index order is a weak
popularity ranking in disguise. Compare such models with ``index_order``.

**New users (few-shot).** A seeded ``share`` of users is held out of training
entirely. For each held-out user and each k in ``shots``, the model gets the
first k events of the user's full sequence and the user's profile codes; the
target is event k+1 (``items[k]``); every item but the k seen is ranked.
NDCG@10 per k, compared with

- ``popularity``: training counts over the training users only, same masking;
- ``random``: the exact expectation of a uniformly random order of the
  ``n_items - k`` unmasked items;
- ``full_history``: the same model class trained on the standard training
  events *of all users* (the held-out users included), scored on the held-out
  users' standard test split (history = all events but the last, target = the
  last). It answers "how far is k-shot from knowing the user fully", on a
  later and harder target than event k+1, so it is a reference, not a bound.

Models are fitted through a ``fit`` callback (``FitInputs -> Recommender``:
training data plus a validation split for early stopping, both cut from the
arm's own training sequences), so any model plugs in; ``run_protocols`` fits
the warm model once and shares it between the item ceiling and the user
full-history reference. Per model that is 3 fits (+ ``warm_folds``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pipelines import paths
from pipelines.beyond_accuracy import ranks_and_top_k
from pipelines.config import ColdStartParams, Params, load_params
from pipelines.features import time_features
from pipelines.io import write_json, write_text
from pipelines.metrics import ndcg_from_ranks
from pipelines.models import MODELS, Histories, Recommender, TrainData, build_model
from pipelines.schema import ITEM_IDX, PROFILE_COLUMNS, USER_IDX
from pipelines.sequences import histories_for, profile_codes, targets_for, train_matrix
from pipelines.train import (
    Validation,
    fit_model,
    model_config,
    trainer_config,
    tuned_overrides,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SideInfo:
    """What a model may use besides interactions; identical in every arm of a protocol."""

    n_items: int
    item_embeddings: np.ndarray | None = None  # [n_items, D], cold items too: text is known
    item_texts: tuple[str, ...] | None = None  # the texts behind the embeddings
    profiles: np.ndarray | None = None  # [n_users, 4] codes, row = user_idx
    profile_sizes: tuple[int, ...] | None = None  # codes per profile field, unknown (0) included

    def profiles_of(self, user_idx: np.ndarray) -> np.ndarray | None:
        return None if self.profiles is None else self.profiles[np.asarray(user_idx, dtype=int)]


@dataclass(frozen=True)
class FitInputs:
    """What a ``fit`` callback is handed: training data and a validation split of the same
    users (for early stopping), both free of anything the protocol holds out."""

    train: TrainData
    valid_histories: Histories  # each user's training events
    valid_targets: torch.Tensor  # [U] the first event after them


FitFn = Callable[[FitInputs], Recommender]


def train_data(sequences: pd.DataFrame, side: SideInfo) -> TrainData:
    """TrainData of the training events of ``sequences`` (users with none are left out)."""
    kept = sequences[sequences["n_train"] > 0].reset_index(drop=True)
    return TrainData(
        matrix=train_matrix(kept, side.n_items),
        histories=histories_for(kept, "train", side.profiles_of(kept[USER_IDX].to_numpy())),
        n_items=side.n_items,
        item_embeddings=side.item_embeddings,
        item_texts=side.item_texts,
        profile_sizes=side.profile_sizes,
    )


def fit_inputs(sequences: pd.DataFrame, side: SideInfo) -> FitInputs:
    """Training data of ``sequences`` plus their validation split.

    Validation pairs each user's training events with the first event after
    them (users with no training event or none after are left out). On the
    feature sequences this is exactly the protocol's valid split; after
    ``remove_items`` it is the first warm held-out event.
    """
    items, stamps, targets, users = [], [], [], []
    for row in sequences.itertuples(index=False):
        n_train = int(row.n_train)
        if n_train < 1 or len(row.items) <= n_train:
            continue
        items.append([int(i) for i in row.items[:n_train]])
        stamps.append([int(t) for t in row.timestamps[:n_train]])
        targets.append(int(row.items[n_train]))
        users.append(int(getattr(row, USER_IDX)))
    profiles = side.profiles_of(np.asarray(users, dtype=np.int64))
    return FitInputs(
        train=train_data(sequences, side),
        valid_histories=Histories.from_lists(
            items, stamps, None if profiles is None else profiles.tolist()
        ),
        valid_targets=torch.as_tensor(targets, dtype=torch.long),
    )


# -- ranking over a candidate set with several relevant items ----------------------
def _discounts(k: int) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(k, dtype=torch.float64) + 2.0)  # [k]


def candidate_metrics(
    scores: torch.Tensor, relevant: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-user Recall@k and NDCG@k over a candidate set, ``[B]`` each.

    ``scores`` and ``relevant`` (bool) are ``[B, C]``, column c the same
    candidate for every user. Ties go to the lower column (candidates in item
    order: the lower item index), as in ``metrics.target_ranks``. Same values
    as ``metrics.recall_at_k`` / ``ndcg_at_k`` on the ranked list; a user
    with nothing relevant scores 0.
    """
    if scores.shape != relevant.shape:
        raise ValueError(
            f"scores {tuple(scores.shape)} and relevant {tuple(relevant.shape)} differ"
        )
    cut = min(k, scores.shape[1])
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :cut]  # [B, cut]
    hits = relevant.gather(1, order).double()  # [B, cut]
    discounts = _discounts(cut)
    n_relevant = relevant.sum(dim=1)  # [B]
    ideal = torch.cat([torch.zeros(1, dtype=torch.float64), discounts.cumsum(0)])  # [cut + 1]
    ideal = ideal[n_relevant.clamp(max=cut)]  # [B]
    has_any = n_relevant > 0
    safe = torch.where(has_any, ideal, torch.ones_like(ideal))
    ndcg = torch.where(has_any, (hits * discounts).sum(dim=1) / safe, torch.zeros_like(safe))
    recall = torch.where(
        has_any, hits.sum(dim=1) / n_relevant.clamp(min=1).double(), torch.zeros_like(safe)
    )
    return recall, ndcg


def random_candidate_metrics(
    n_relevant: torch.Tensor, n_candidates: int, k: int
) -> dict[str, float]:
    """Exact expected mean Recall@k and NDCG@k of a uniformly random candidate order.

    With R of C candidates relevant, each position holds a relevant item with
    probability R/C: E[recall@k] = min(k, C)/C and E[DCG@k] = R/C · Σ_{p<k} 1/log2(p+2),
    divided by the ideal DCG of R items. Users with R = 0 count as 0.
    """
    cut = min(k, n_candidates)
    discounts = _discounts(cut)
    ideal = torch.cat([torch.zeros(1, dtype=torch.float64), discounts.cumsum(0)])
    relevant = n_relevant.double()
    has_any = n_relevant > 0
    expected_dcg = relevant / n_candidates * discounts.sum()
    safe = torch.where(has_any, ideal[n_relevant.clamp(max=cut)], torch.ones_like(relevant))
    ndcg = torch.where(has_any, expected_dcg / safe, torch.zeros_like(relevant))
    recall = torch.where(has_any, torch.full_like(relevant, cut / n_candidates), 0.0)
    return {f"recall@{k}": float(recall.mean()), f"ndcg@{k}": float(ndcg.mean())}


def random_ndcg_one_target(n_candidates: int, k: int) -> float:
    """Exact expected NDCG@k of one relevant item placed uniformly among ``n_candidates``."""
    if n_candidates < 1:
        return 0.0
    return float(_discounts(min(k, n_candidates)).sum()) / n_candidates


# -- new items ----------------------------------------------------------------------
def choose_cold_items(n_items: int, share: float = 0.2, *, seed: int) -> np.ndarray:
    """``round(share · n_items)`` distinct item indices, sorted, drawn with ``seed``."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    count = round(share * n_items)
    chosen = np.random.default_rng(seed).choice(n_items, size=count, replace=False)
    return np.sort(chosen).astype(np.int64)


def remove_items(
    sequences: pd.DataFrame, items: np.ndarray | Sequence[int], max_gap_days: int = 365
) -> pd.DataFrame:
    """Every event on ``items`` dropped from every sequence; all users kept, in order.

    ``n_train`` becomes the number of kept events among the original training
    events, so the kept training part is still ``items[:n_train]``; the kept
    validation/test events follow it. Gaps, hours and weekdays are recomputed
    from the kept timestamps exactly as the features stage computes them
    (``max_gap_days`` should match ``params.features.max_gap_days``).
    """
    drop = np.asarray(items, dtype=np.int64)
    kept_items, kept_stamps, n_train = [], [], []
    for seq, stamps, n in zip(
        sequences["items"], sequences["timestamps"], sequences["n_train"], strict=True
    ):
        keep = ~np.isin(np.asarray(seq, dtype=np.int64), drop)
        kept_items.append(np.asarray(seq, dtype=np.int64)[keep])
        kept_stamps.append(np.asarray(stamps, dtype=np.int64)[keep])
        n_train.append(int(keep[: int(n)].sum()))
    # one time_features call over all events (pd.to_datetime per user is slow); the gap
    # of each user's first event is then reset to 0, as a per-user call would give
    lengths = np.array([len(stamps) for stamps in kept_stamps])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    flat = time_features(np.concatenate([np.zeros(0, np.int64), *kept_stamps]), max_gap_days)
    flat["gaps"][starts[lengths > 0]] = 0
    split = {name: np.split(values, np.cumsum(lengths)[:-1]) for name, values in flat.items()}
    out = pd.DataFrame(
        index=sequences.index,
        data={
            USER_IDX: sequences[USER_IDX].to_numpy(),
            "items": kept_items,
            "timestamps": kept_stamps,
            **split,
            "n_train": np.asarray(n_train, dtype=np.int64),
        },
    )
    return out[list(sequences.columns)]


@torch.inference_mode()
def score_candidates(
    model: Recommender, histories: Histories, candidates: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """Scores of the same ``candidates`` ``[C]`` for every history, ``[U, C]`` float."""
    model.eval()
    out = []
    for start in range(0, histories.items.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        batch = Histories(
            histories.items[rows],
            histories.timestamps[rows],
            None if histories.profiles is None else histories.profiles[rows],
        )
        chosen = candidates[None, :].expand(batch.items.shape[0], -1)  # [B, C]
        out.append(model.score(batch, chosen).float())
    return torch.cat(out) if out else torch.zeros(0, len(candidates))


def new_items_protocol(
    sequences: pd.DataFrame,
    side: SideInfo,
    fit: FitFn,
    cold: np.ndarray,
    *,
    k: int = 20,
    batch_size: int = 256,
    warm_model: Recommender | None = None,
    warm_folds: int = 0,
    seed: int = 0,
    max_gap_days: int = 365,
) -> dict[str, object]:
    """Strict item cold start (see the module docstring); returns plain numbers.

    ``warm_model``, when given, must be ``fit(fit_inputs(sequences, side))``;
    passing it saves a second fit when ``new_users_protocol`` needs it too.
    ``warm_folds`` ≥ 2 adds ``warm_cross_fitted`` (``warm_folds`` more fits,
    folds drawn with ``seed``).
    """
    cold = np.unique(np.asarray(cold, dtype=np.int64))
    if cold.size == 0:
        raise ValueError("no cold items: nothing to rank")
    is_cold = np.zeros(side.n_items, dtype=bool)
    is_cold[cold] = True
    affected = np.array(
        [bool(is_cold[np.asarray(s, dtype=np.int64)].any()) for s in sequences["items"]]
    )
    warm_sequences = remove_items(sequences, cold, max_gap_days)

    # inputs: all warm events of each affected user; relevant = their cold items
    users = warm_sequences[affected].reset_index(drop=True)
    user_idx = users[USER_IDX].to_numpy()
    histories = Histories.from_lists(
        [list(s) for s in users["items"]],
        [list(t) for t in users["timestamps"]],
        None if side.profiles is None else side.profiles_of(user_idx).tolist(),
    )
    column = {int(item): c for c, item in enumerate(cold)}
    relevant = torch.zeros(len(users), len(cold), dtype=torch.bool)  # [U, C]
    for row, seq in enumerate(sequences["items"][affected]):
        for item in set(np.asarray(seq, dtype=np.int64).tolist()) & column.keys():
            relevant[row, column[item]] = True
    candidates = torch.as_tensor(cold)

    def measured(model: Recommender) -> dict[str, float]:
        scores = score_candidates(model, histories, candidates, batch_size)
        recall, ndcg = candidate_metrics(scores, relevant, k)
        return {f"recall@{k}": float(recall.mean()), f"ndcg@{k}": float(ndcg.mean())}

    # what a model that scores every cold item alike gets: ties fall to item-index order
    index_order = [
        float(value.mean()) for value in candidate_metrics(torch.zeros(relevant.shape), relevant, k)
    ]
    cold_model = fit(fit_inputs(warm_sequences, side))
    if warm_model is None:
        warm_model = fit(fit_inputs(sequences, side))
    result: dict[str, object] = {
        "users": len(users),
        "cold_items": len(cold),
        "model": measured(cold_model),
        "warm_ceiling": measured(warm_model),
        "random": random_candidate_metrics(relevant.sum(dim=1), len(cold), k),
        "index_order": {f"recall@{k}": index_order[0], f"ndcg@{k}": index_order[1]},
    }
    if warm_folds >= 2:
        fold = np.full(len(sequences), -1)
        fold[affected] = np.random.default_rng(seed).permutation(len(users)) % warm_folds
        scores = torch.zeros(relevant.shape)  # [U, C]
        for f in range(warm_folds):
            # fold f's users keep only their warm events; everyone else keeps everything
            mixed = sequences.copy()
            mixed[fold == f] = warm_sequences[fold == f]
            model = fit(fit_inputs(mixed, side))
            rows = torch.as_tensor(np.flatnonzero(fold[affected] == f))
            scores[rows] = score_candidates(model, _rows(histories, rows), candidates, batch_size)
        recall, ndcg = candidate_metrics(scores, relevant, k)
        result["warm_cross_fitted"] = {
            f"recall@{k}": float(recall.mean()),
            f"ndcg@{k}": float(ndcg.mean()),
        }
    return result


def _rows(histories: Histories, rows: torch.Tensor) -> Histories:
    profiles = None if histories.profiles is None else histories.profiles[rows]
    return Histories(histories.items[rows], histories.timestamps[rows], profiles)


# -- new users ------------------------------------------------------------------------
def choose_new_users(n_users: int, share: float = 0.1, *, seed: int) -> np.ndarray:
    """``round(share · n_users)`` distinct user indices, sorted, drawn with ``seed``."""
    return choose_cold_items(n_users, share, seed=seed)  # the same seeded draw, over users


def few_shot_inputs(
    sequences: pd.DataFrame, shot: int, profiles: np.ndarray | None = None
) -> tuple[Histories, torch.Tensor, np.ndarray]:
    """The first ``shot`` events of each user as history and event ``shot + 1`` as target.

    Users whose sequence is too short (``len <= shot``), or whose target is one
    of the ``shot`` items already seen (it would be masked), are left out.
    ``profiles`` is ``[n_users, 4]`` indexed by user_idx. Returns the
    histories, the targets ``[U]`` and the user_idx of the users kept.
    """
    items, stamps, targets, kept = [], [], [], []
    for row in sequences.itertuples(index=False):
        seq = np.asarray(row.items, dtype=np.int64)
        if len(seq) <= shot or seq[shot] in seq[:shot]:
            continue
        items.append(seq[:shot].tolist())
        stamps.append(np.asarray(row.timestamps, dtype=np.int64)[:shot].tolist())
        targets.append(int(seq[shot]))
        kept.append(int(getattr(row, USER_IDX)))
    user_idx = np.asarray(kept, dtype=np.int64)
    rows = None if profiles is None else profiles[user_idx].tolist()
    histories = Histories.from_lists(items, stamps, rows)
    return histories, torch.as_tensor(targets, dtype=torch.long), user_idx


def _mean_ndcg(
    model: Recommender, histories: Histories, targets: torch.Tensor, k: int, batch_size: int
) -> float:
    if len(targets) == 0:
        return 0.0
    ranks, _ = ranks_and_top_k(model.eval(), histories, targets, k, batch_size)
    return float(ndcg_from_ranks(ranks, k).mean())


def new_users_protocol(
    sequences: pd.DataFrame,
    side: SideInfo,
    fit: FitFn,
    new_users: np.ndarray,
    *,
    shots: Sequence[int] = (0, 1, 3, 5),
    k: int = 10,
    batch_size: int = 256,
    full_model: Recommender | None = None,
) -> dict[str, object]:
    """Few-shot user cold start (see the module docstring); returns plain numbers.

    ``full_model``, when given, must be ``fit(fit_inputs(sequences, side))``
    (all users' training events); it is only used for ``full_history``.
    """
    held_out = np.isin(sequences[USER_IDX].to_numpy(), np.asarray(new_users))
    if not held_out.any():
        raise ValueError("none of the new users is in the sequences")
    inputs = fit_inputs(sequences[~held_out].reset_index(drop=True), side)
    model = fit(inputs)
    popularity = build_model("popularity", side.n_items)
    popularity.fit(inputs.train)
    newcomers = sequences[held_out].reset_index(drop=True)

    per_shot: dict[str, dict[str, float | int]] = {}
    for shot in shots:
        histories, targets, _ = few_shot_inputs(newcomers, shot, side.profiles)
        per_shot[str(shot)] = {
            "users": len(targets),
            f"ndcg@{k}": _mean_ndcg(model, histories, targets, k, batch_size),
            f"popularity_ndcg@{k}": _mean_ndcg(popularity, histories, targets, k, batch_size),
            f"random_ndcg@{k}": random_ndcg_one_target(side.n_items - shot, k),
        }

    if full_model is None:
        full_model = fit(fit_inputs(sequences, side))
    test_profiles = side.profiles_of(newcomers[USER_IDX].to_numpy())
    full_ndcg = _mean_ndcg(
        full_model,
        histories_for(newcomers, "test", test_profiles),
        targets_for(newcomers, "test"),
        k,
        batch_size,
    )
    return {
        "users": int(held_out.sum()),
        "shots": per_shot,
        "full_history": {"users": len(newcomers), f"ndcg@{k}": full_ndcg},
    }


# -- fitting by name: the one place that tells closed-form from gradient models --------
def fit_by_name(
    name: str, params: Params, inputs: FitInputs, tuned: dict[str, Any] | None = None
) -> Recommender:
    """Fit the model ``name`` exactly as the train stage does (``train.fit_model``),
    with the tuned hyperparameters and early stopping on ``inputs``' validation split."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    config = model_config(name, params.train, inputs.train, tuned)
    trainer = trainer_config(name, params.train, params.seed, tuned)
    valid = Validation(inputs.valid_histories, inputs.valid_targets)
    return fit_model(name, config, inputs.train, valid, trainer)[0]


# -- stage ------------------------------------------------------------------------------
def load_side_info(
    features_dir: Path, items_path: Path, embeddings_path: Path
) -> tuple[pd.DataFrame, SideInfo]:
    """The feature sequences and everything else a model may use, by user_idx and item_idx."""
    from pipelines.text_encoder import item_text  # light: no model is loaded

    sequences = pd.read_parquet(features_dir / paths.SEQUENCES.name)
    items = pd.read_parquet(items_path).sort_values(ITEM_IDX)
    profiles_frame = pd.read_parquet(features_dir / paths.PROFILES.name).sort_values(USER_IDX)
    if not np.array_equal(profiles_frame[USER_IDX].to_numpy(), np.arange(len(profiles_frame))):
        raise ValueError("profiles must hold user_idx 0..n_users-1")
    vocab_path = features_dir / paths.PROFILE_VOCAB.name
    profile_sizes = None
    if vocab_path.exists():
        vocab = json.loads(vocab_path.read_text())
        profile_sizes = tuple(len(vocab[column]) + 1 for column in PROFILE_COLUMNS)
    embeddings = np.load(embeddings_path) if embeddings_path.exists() else None
    texts = tuple(
        item_text(title, year, genres)
        for title, year, genres in zip(items["title"], items["year"], items["genres"], strict=True)
    )
    return sequences, SideInfo(
        n_items=len(items),
        item_embeddings=embeddings,
        item_texts=texts,
        profiles=profile_codes(profiles_frame),
        profile_sizes=profile_sizes,
    )


def run_protocols(
    sequences: pd.DataFrame,
    side: SideInfo,
    models: Sequence[str],
    fit: Callable[[str, FitInputs], Recommender],
    settings: ColdStartParams,
    seed: int,
    max_gap_days: int = 365,
) -> dict[str, object]:
    """Both protocols for every named model; ``fit(name, inputs)`` fits one model."""
    cold = choose_cold_items(side.n_items, settings.item_share, seed=seed)
    user_idx = sequences[USER_IDX].to_numpy()
    new_users = user_idx[choose_new_users(len(user_idx), settings.user_share, seed=seed)]
    results: dict[str, object] = {}
    for name in tqdm(models, desc="coldstart"):
        started = time.perf_counter()
        warm = fit(name, fit_inputs(sequences, side))
        fit_one: FitFn = lambda inputs, name=name: fit(name, inputs)  # noqa: E731
        results[name] = {
            "new_items": new_items_protocol(
                sequences,
                side,
                fit_one,
                cold,
                k=settings.item_k,
                batch_size=settings.batch_size,
                warm_model=warm,
                warm_folds=settings.warm_folds,
                seed=seed,
                max_gap_days=max_gap_days,
            ),
            "new_users": new_users_protocol(
                sequences,
                side,
                fit_one,
                new_users,
                shots=settings.shots,
                k=settings.user_k,
                batch_size=settings.batch_size,
                full_model=warm,
            ),
        }
        log.info("%s: %s in %.1fs", name, json.dumps(results[name]), time.perf_counter() - started)
    return {
        "seed": seed,
        "cold_items": len(cold),
        "new_users": len(new_users),
        "models": results,
    }


def coldstart_markdown(metrics: dict[str, object], settings: ColdStartParams) -> str:
    """Two tables: new items (model vs warm ceiling, baselines) and new users per k."""
    models: dict[str, dict] = metrics["models"]  # type: ignore[assignment]
    first = next(iter(models.values()), None)
    ik, uk = settings.item_k, settings.user_k
    item_metrics = (f"recall@{ik}", f"ndcg@{ik}")

    def row(name: str, values: Sequence[float | None]) -> str:
        cells = ["" if v is None else f"{v:.4f}" for v in values]
        return f"| {name} | " + " | ".join(cells) + " |"

    arms = ["model", "warm_ceiling"]
    if first is not None and "warm_cross_fitted" in first["new_items"]:
        arms.append("warm_cross_fitted")
    header = " | ".join(
        f"{arm.replace('_', ' ')} {m}".removeprefix("model ") for arm in arms for m in item_metrics
    )
    lines = [
        f"### New items ({metrics['cold_items']} cold items, strict; ranked among cold items)",
        "",
        f"| model | {header} |",
        "|---|" + "---:|" * (len(arms) * 2),
    ]
    for name, result in models.items():
        items = result["new_items"]
        lines.append(row(name, [items[arm][m] for arm in arms for m in item_metrics]))
    if first is not None:
        blanks = [None] * (2 * len(arms) - 2)
        for arm, label in (
            ("random", "random (expected)"),
            ("index_order", "all tied (item index)"),
        ):
            lines.append(row(label, [*(first["new_items"][arm][m] for m in item_metrics), *blanks]))
    shots = [str(s) for s in settings.shots]
    lines += [
        "",
        f"### New users ({metrics['new_users']} held out): NDCG@{uk} after k events",
        "",
        "| model | " + " | ".join(f"k={s}" for s in shots) + " | full history |",
        "|---|" + "---:|" * (len(shots) + 1),
    ]
    for name, result in models.items():
        users = result["new_users"]
        cells = [users["shots"][s][f"ndcg@{uk}"] for s in shots]
        lines.append(row(name, [*cells, users["full_history"][f"ndcg@{uk}"]]))
    if first is not None:
        for baseline, label in (
            ("popularity", "popularity (baseline)"),
            ("random", "random (expected)"),
        ):
            cells = [first["new_users"]["shots"][s][f"{baseline}_ndcg@{uk}"] for s in shots]
            lines.append(row(label, [*cells, None]))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, default=paths.FEATURES_DIR)
    parser.add_argument("--items", type=Path, default=paths.SPLIT_ITEMS)
    parser.add_argument("--embeddings", type=Path, default=paths.ITEM_EMBEDDINGS)
    parser.add_argument("--out", type=Path, default=paths.COLDSTART_DIR)
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="models to run (default: coldstart.models in params.yaml)",
    )
    parser.add_argument("--tuned", type=Path, default=paths.TUNE_BEST)
    parser.add_argument("--params", type=Path, default=paths.PARAMS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params(args.params)
    settings = params.coldstart
    models = tuple(args.models) if args.models else params.coldstart.models
    tuned = tuned_overrides(args.tuned)
    started = time.perf_counter()

    sequences, side = load_side_info(args.features, args.items, args.embeddings)
    log.info("read %d users, %d items from %s", len(sequences), side.n_items, args.features)
    metrics = run_protocols(
        sequences,
        side,
        models,
        lambda name, inputs: fit_by_name(name, params, inputs, tuned.get(name)),
        settings,
        params.seed,
        params.features.max_gap_days,
    )
    table = coldstart_markdown(metrics, settings)
    write_json(metrics, args.out / paths.COLDSTART_METRICS.name)
    write_text(table, args.out / paths.COLDSTART_MD.name)
    print(table)
    log.info("wrote %s in %.1fs", args.out, time.perf_counter() - started)


if __name__ == "__main__":
    main()
