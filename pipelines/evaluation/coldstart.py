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

**Small data, repeats, no demographics.** A cell measured on fewer than ``min_users``
users is None (``n/a`` in the table), not a number; a draw that leaves no cold item or
no new user refuses (``TooLittleData``). ``mask_history`` is ``evaluate.mask_history``:
with it (the default) a k-shot target the user already had is a certain miss, counted
as a zero exactly as the evaluate stage counts it; without it the seen items stay
candidates. When no user has a profile (every field unknown) the k = 0 arm gives a
model nothing to go on: it is reported as not applicable (None and a note), while the
popularity and random references, which need no profile, stay.

Models are fitted through a ``fit`` callback (``FitInputs -> Recommender``:
training data plus a validation split for early stopping, both cut from the
arm's own training sequences), so any model plugs in; ``run_protocols`` fits
the warm model once and shares it between the item ceiling and the user
full-history reference. Per model that is 3 fits (+ ``warm_folds``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pipelines.core.config import ColdStartParams, TooLittleData
from pipelines.core.schema import SEQ_ITEMS, SEQ_N_TRAIN, SEQ_TIMESTAMPS, TEST, USER_IDX
from pipelines.evaluation.metrics import (
    candidate_metrics,
    ndcg_from_ranks,
    random_candidate_metrics,
    random_ndcg_one_target,
)
from pipelines.evaluation.ranking import ranks_and_top_k
from pipelines.features.dataset import SideInfo, train_data
from pipelines.features.sequences import histories_for, remove_items, targets_for
from pipelines.models import Histories, Recommender, build_model
from pipelines.models.base import TrainData, Validation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitInputs:
    """What a ``fit`` callback is handed: training data and a validation split of the same
    users (for early stopping), both free of anything the protocol holds out."""

    train: TrainData
    valid: Validation  # each user's training events, and the first event after them


FitFn = Callable[[FitInputs], Recommender]


def fit_inputs(sequences: pd.DataFrame, side: SideInfo) -> FitInputs:
    """Training data of ``sequences`` plus their validation split.

    Validation pairs each user's training events with the first event after
    them (users with no training event or none after are left out). On the
    feature sequences this is exactly the protocol's valid split; after
    ``remove_items`` it is the first warm held-out event.
    """
    items, stamps, targets, users = [], [], [], []
    for row in sequences.itertuples(index=False):
        n_train = int(getattr(row, SEQ_N_TRAIN))
        items_of_user = getattr(row, SEQ_ITEMS)
        if n_train < 1 or len(items_of_user) <= n_train:
            continue
        items.append([int(i) for i in items_of_user[:n_train]])
        stamps.append([int(t) for t in getattr(row, SEQ_TIMESTAMPS)[:n_train]])
        targets.append(int(items_of_user[n_train]))
        users.append(int(getattr(row, USER_IDX)))
    profiles = side.profiles_of(np.asarray(users, dtype=np.int64))
    histories = Histories.from_lists(items, stamps, None if profiles is None else profiles.tolist())
    return FitInputs(
        train=train_data(sequences, side),
        valid=Validation(histories, torch.as_tensor(targets, dtype=torch.long)),
    )


# -- new items ----------------------------------------------------------------------
def choose_cold_items(n_items: int, share: float = 0.2, *, seed: int) -> np.ndarray:
    """``round(share · n_items)`` distinct item indices, sorted, drawn with ``seed``."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    count = round(share * n_items)
    chosen = np.random.default_rng(seed).choice(n_items, size=count, replace=False)
    return np.sort(chosen).astype(np.int64)


@torch.inference_mode()
def score_candidates(
    model: Recommender, histories: Histories, candidates: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """Scores of the same ``candidates`` ``[C]`` for every history, ``[U, C]`` float."""
    model.eval()
    out = []
    for _, batch in histories.batches(batch_size):
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
    min_users: int = 1,
) -> dict[str, object]:
    """Strict item cold start (see the module docstring); returns plain numbers.

    With fewer than ``min_users`` affected users every arm is None (nothing is fitted).

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
        [bool(is_cold[np.asarray(s, dtype=np.int64)].any()) for s in sequences[SEQ_ITEMS]]
    )
    warm_sequences = remove_items(sequences, cold)

    # inputs: all warm events of each affected user; relevant = their cold items
    users = warm_sequences[affected].reset_index(drop=True)
    user_idx = users[USER_IDX].to_numpy()
    histories = Histories.from_lists(
        [list(s) for s in users[SEQ_ITEMS]],
        [list(t) for t in users[SEQ_TIMESTAMPS]],
        None if side.profiles is None else side.profiles_of(user_idx).tolist(),
    )
    if len(users) < max(min_users, 1):
        log.info("new items: %d users with a cold-item event, below %d", len(users), min_users)
        nothing = {f"recall@{k}": None, f"ndcg@{k}": None}
        arms = ["model", "warm_ceiling", "random", "index_order"]
        arms += ["warm_cross_fitted"] if warm_folds >= 2 else []
        return {"users": len(users), "cold_items": len(cold), **dict.fromkeys(arms, nothing)}
    column = {int(item): c for c, item in enumerate(cold)}
    relevant = torch.zeros(len(users), len(cold), dtype=torch.bool)  # [U, C]
    for row, seq in enumerate(sequences[SEQ_ITEMS][affected]):
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
            scores[rows] = score_candidates(model, histories.rows(rows), candidates, batch_size)
        recall, ndcg = candidate_metrics(scores, relevant, k)
        result["warm_cross_fitted"] = {
            f"recall@{k}": float(recall.mean()),
            f"ndcg@{k}": float(ndcg.mean()),
        }
    return result


# -- new users ------------------------------------------------------------------------
def choose_new_users(n_users: int, share: float = 0.1, *, seed: int) -> np.ndarray:
    """``round(share · n_users)`` distinct user indices, sorted, drawn with ``seed``."""
    return choose_cold_items(n_users, share, seed=seed)  # the same seeded draw, over users


def few_shot_inputs(
    sequences: pd.DataFrame, shot: int, profiles: np.ndarray | None = None
) -> tuple[Histories, torch.Tensor, np.ndarray]:
    """The first ``shot`` events of each user as history and event ``shot + 1`` as target.

    Users whose sequence is too short (``len <= shot``) are left out. A target that is
    one of the ``shot`` items already seen is kept, as the evaluate stage keeps it: a
    certain miss when the history is masked, a candidate when it is not.
    ``profiles`` is ``[n_users, 4]`` indexed by user_idx. Returns the
    histories, the targets ``[U]`` and the user_idx of the users kept.
    """
    items, stamps, targets, kept = [], [], [], []
    for row in sequences.itertuples(index=False):
        seq = np.asarray(getattr(row, SEQ_ITEMS), dtype=np.int64)
        if len(seq) <= shot:
            continue
        items.append(seq[:shot].tolist())
        stamps.append(np.asarray(getattr(row, SEQ_TIMESTAMPS), dtype=np.int64)[:shot].tolist())
        targets.append(int(seq[shot]))
        kept.append(int(getattr(row, USER_IDX)))
    user_idx = np.asarray(kept, dtype=np.int64)
    rows = None if profiles is None else profiles[user_idx].tolist()
    histories = Histories.from_lists(items, stamps, rows)
    return histories, torch.as_tensor(targets, dtype=torch.long), user_idx


def _mean_ndcg(
    model: Recommender,
    histories: Histories,
    targets: torch.Tensor,
    k: int,
    batch_size: int,
    *,
    min_users: int = 1,
    exclude_seen: bool = True,
) -> float | None:
    """Mean NDCG@k, or None when fewer than ``min_users`` users were measured."""
    if len(targets) < max(min_users, 1):
        return None
    ranks, _ = ranks_and_top_k(model.eval(), histories, targets, k, batch_size, exclude_seen)
    return float(ndcg_from_ranks(ranks, k).mean())


def has_profiles(side: SideInfo) -> bool:
    """Whether any user has a known profile field (a code above 0, which is unknown)."""
    return side.profiles is not None and bool((np.asarray(side.profiles) > 0).any())


NO_PROFILES = (
    "not applicable: no user has a profile (every field unknown), so with k = 0 events a "
    "model has nothing to go on; popularity is the k = 0 answer"
)


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
    min_users: int = 1,
    mask_history: bool = True,
    profiled: bool = True,
) -> dict[str, object]:
    """Few-shot user cold start (see the module docstring); returns plain numbers.

    ``full_model``, when given, must be ``fit(fit_inputs(sequences, side))``
    (all users' training events); it is only used for ``full_history``. A cell of
    fewer than ``min_users`` users is None; so is the models' k = 0 cell when not
    ``profiled`` (no user has a profile: ``has_profiles``).
    """
    held_out = np.isin(sequences[USER_IDX].to_numpy(), np.asarray(new_users))
    if not held_out.any():
        raise ValueError("none of the new users is in the sequences")
    inputs = fit_inputs(sequences[~held_out].reset_index(drop=True), side)
    model = fit(inputs)
    popularity = build_model("popularity", side.n_items)
    popularity.fit(inputs.train)
    newcomers = sequences[held_out].reset_index(drop=True)

    rules = {"min_users": min_users, "exclude_seen": mask_history}
    per_shot: dict[str, dict[str, float | int | str | None]] = {}
    for shot in shots:
        histories, targets, _ = few_shot_inputs(newcomers, shot, side.profiles)
        cell: dict[str, float | int | str | None] = {
            "users": len(targets),
            f"ndcg@{k}": _mean_ndcg(model, histories, targets, k, batch_size, **rules),
            f"popularity_ndcg@{k}": _mean_ndcg(
                popularity, histories, targets, k, batch_size, **rules
            ),
            f"random_ndcg@{k}": (
                None
                if len(targets) < min_users
                else random_ndcg_one_target(side.n_items - (shot if mask_history else 0), k)
            ),
        }
        if shot == 0 and not profiled:
            cell[f"ndcg@{k}"] = None
            cell["not_applicable"] = NO_PROFILES
        per_shot[str(shot)] = cell

    if full_model is None:
        full_model = fit(fit_inputs(sequences, side))
    test_profiles = side.profiles_of(newcomers[USER_IDX].to_numpy())
    full_ndcg = _mean_ndcg(
        full_model,
        histories_for(newcomers, TEST, test_profiles),
        targets_for(newcomers, TEST),
        k,
        batch_size,
        **rules,
    )
    return {
        "users": int(held_out.sum()),
        "shots": per_shot,
        "full_history": {"users": len(newcomers), f"ndcg@{k}": full_ndcg},
    }


def run_protocols(
    sequences: pd.DataFrame,
    side: SideInfo,
    models: Sequence[str],
    fit: Callable[[str, FitInputs], Recommender],
    settings: ColdStartParams,
    seed: int,
    mask_history: bool = True,
) -> dict[str, object]:
    """Both protocols for every named model; ``fit(name, inputs)`` fits one model.

    Refuses (``TooLittleData``) a draw with no cold item or no new user: the protocols
    would have nothing to measure."""
    cold = choose_cold_items(side.n_items, settings.item_share, seed=seed)
    user_idx = sequences[USER_IDX].to_numpy()
    new_users = user_idx[choose_new_users(len(user_idx), settings.user_share, seed=seed)]
    for drawn, share, total, what in (
        (cold, "item_share", side.n_items, "items"),
        (new_users, "user_share", len(user_idx), "users"),
    ):
        if len(drawn) == 0:
            raise TooLittleData(
                f"coldstart.{share} = {getattr(settings, share)} of {total} {what} draws none "
                f"to hold out: raise coldstart.{share}, or bring more {what}"
            )
    profiled = has_profiles(side)
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
                min_users=settings.min_users,
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
                min_users=settings.min_users,
                mask_history=mask_history,
                profiled=profiled,
            ),
        }
        log.info("%s: %s in %.1fs", name, json.dumps(results[name]), time.perf_counter() - started)
    return {
        "seed": seed,
        "cold_items": len(cold),
        "new_users": len(new_users),
        "models": results,
    }
