"""Shilling (profile-injection) attacks on a recommender, and the detector ingestion runs.

**Attacks** (Lam & Riedl 2004; Mobasher, Burke, Bhaumik & Williams 2007, "Toward
trustworthy recommender systems"). An attacker creates fake user profiles that give a
*target* item the highest rating ("push") and rate *filler* items to look like people:

- ``random``: filler items drawn uniformly from the catalogue, rated around the global
  mean (normal with the global mean and standard deviation, rounded, clipped);
- ``average``: the same filler items rated around *each item's own* mean and standard
  deviation (needs more knowledge, looks more normal);
- ``bandwagon``: the most popular items (the "selected" set) at the highest rating, plus
  random filler as in the random attack: the fake profiles then resemble many real users.

The generators return a batch in the append format (``append.BATCH_FILES``: raw tables
before privacy) so an attack goes through the same door as any other batch. Each fake
profile is one session: events a few seconds apart, the target first (an attacker wants
it trained on, and the protocol holds out each user's *last* events), sessions started
uniformly over the batch's window (as real weekly batches are: a burst in time would be
too easy a tell, and real MovieLens users also rate in bursts).

**Detector.** Per profile of the batch (a user's events in it, at least ``min_events``)
the classic features of the detection literature, against the item statistics data/
already holds (Chirita, Nejdl & Zamfir 2005; Burke et al. 2006):

- ``rdma``: Rating Deviation from Mean Agreement, mean over the profile of
  ``|r - mean_i| / n_i`` (sparse items weigh more: pushing a rarely rated item shows);
- ``mean_dev``: mean ``|r - mean_i|``;
- ``max_share``: share of the profile at the highest rating;
- ``degsim``: mean Pearson similarity with the profile's ``neighbours`` most similar
  users (data/'s and the batch's: fake profiles built by one recipe resemble each other);
- ``obscurity``: minus the mean ``log(1 + n_i)`` of the profile's items (random filler
  is drawn from the whole catalogue, real people rate what is popular).

Each feature is turned into a one-sided robust z-score against the same features of a
sample of data/'s own users (``reference_users``, their item statistics leaving their own
rating out), in the direction an attack moves it; a profile's ``suspicion`` is the mean of
those z-scores. A lone odd profile is no attack: an attack is several profiles pushing the
**same item**. For every item, the *push group* is the batch's profiles that gave it the
highest rating; the group's score is the ``min_profiles``-th largest suspicion in it. The
batch is **suspect** when some group scores at least ``threshold``; the target is the item
of the group over it with the most flagged pushers net of unflagged ones (then the fewest
ratings in data/), and the flagged users are its pushers whose suspicion reaches
the threshold. bench/shilling.py measures the
false-alarm rate of the threshold on real MovieLens weeks and the detection rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.core import schema
from pipelines.core.config import ShillingParams

ATTACKS = ("random", "average", "bandwagon")
RAW_AGE, RAW_ZIP = "age", "zip"  # the raw user columns a batch carries (privacy.RAW_*)
RAW_USER_COLUMNS = (schema.USER_ID, RAW_AGE, schema.GENDER, schema.OCCUPATION, RAW_ZIP)
WEEK_SECONDS = 7 * 24 * 3600
# the direction in which each feature moves when a profile is fake (+1: higher is worse)
FEATURES = {"rdma": 1.0, "mean_dev": 1.0, "max_share": 1.0, "degsim": 1.0, "obscurity": 1.0}
MAD_TO_SD = 1.4826  # a normal's standard deviation is 1.4826 MADs


# ---- attacks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttackSpec:
    """One attack: who is pushed, by how many fake profiles, built how."""

    kind: str  # random | average | bandwagon
    target: str  # the item id pushed to the highest rating
    n_profiles: int
    start: int  # Unix seconds: sessions start uniformly in [start, start + window)
    # filler items per profile: 50 is 3% of ML-100K's 1,682 items, inside the 1-10% the
    # literature sweeps, and below a real new user's first week (about 70 events)
    filler_size: int = 50
    selected_size: int = 5  # bandwagon: the most popular items, rated highest
    window: int = WEEK_SECONDS  # one weekly batch
    gap_seconds: float = 20.0  # mean gap between a session's events (exponential)
    rating_range: tuple[float, float] = (1.0, 5.0)
    seed: int = 0
    prefix: str = "shill"  # raw user ids: <prefix>-<seed>-<n>, pseudonymised at the door

    def __post_init__(self) -> None:
        if self.kind not in ATTACKS:
            raise ValueError(f"attack kind must be one of {', '.join(ATTACKS)}; got {self.kind!r}")
        if self.n_profiles < 1:
            raise ValueError(f"an attack needs at least 1 profile; got {self.n_profiles}")
        if self.filler_size < 0 or self.selected_size < 0:
            raise ValueError("filler_size and selected_size must be >= 0")
        if self.window < 1 or self.gap_seconds <= 0:
            raise ValueError("window must be >= 1 s and gap_seconds > 0")
        if self.rating_range[0] > self.rating_range[1]:
            raise ValueError("rating_range must be [lowest, highest]")


def profiles_for_share(n_users: int, share: float) -> int:
    """Fake profiles that make ``share`` of the users data/ already holds (at least 1)."""
    if not 0 < share < 1:
        raise ValueError(f"share must be in (0, 1); got {share}")
    return max(1, round(share * n_users))


def item_stats(interactions: pd.DataFrame) -> pd.DataFrame:
    """Per item id: ``count``, rating ``mean`` and ``std`` (0 for one rating), by count."""
    grouped = interactions.groupby(schema.ITEM_ID)[schema.RATING]
    stats = pd.DataFrame({"count": grouped.size(), "mean": grouped.mean(), "std": grouped.std()})
    stats["std"] = stats["std"].fillna(0.0)
    return stats.sort_values("count", ascending=False, kind="stable")


def pick_target(interactions: pd.DataFrame, low: int = 5, high: int = 15, seed: int = 0) -> str:
    """An unpopular item to push: one with ``low`` to ``high`` ratings, drawn with ``seed``
    (at least 5 so the protocol's 5-core filter keeps it without the attack)."""
    counts = item_stats(interactions)["count"]
    pool = sorted(counts[(counts >= low) & (counts <= high)].index, key=str)
    if not pool:
        raise ValueError(f"no item has {low}-{high} ratings to serve as a target")
    return str(pool[np.random.default_rng(seed).integers(len(pool))])


def _ratings(
    rng: np.random.Generator, mean, std, bounds: tuple[float, float], size: int | None = None
) -> np.ndarray:
    """Normal draws rounded to whole stars and clipped to the scale."""
    drawn = rng.normal(mean, std, size=size)
    return np.clip(np.rint(drawn), bounds[0], bounds[1])


def attack_tables(
    spec: AttackSpec,
    interactions: pd.DataFrame,
    demographics: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """The attack as batch tables (raw, before privacy): interactions, items (none), users.

    ``interactions`` is what data/ holds (item statistics and the catalogue the filler is
    drawn from); ``demographics`` raw user rows (age, gender, occupation, zip) the fake
    profiles copy theirs from, drawn with replacement (None: one plain default).
    """
    stats = item_stats(interactions)
    if spec.target not in stats.index:
        raise ValueError(f"target item {spec.target!r} is not in data/: nothing to push")
    low, high = spec.rating_range
    rng = np.random.default_rng(spec.seed)
    ratings = interactions[schema.RATING].dropna()
    global_mean, global_std = float(ratings.mean()), float(ratings.std())
    selected = [i for i in stats.index if i != spec.target][: spec.selected_size]
    if spec.kind != "bandwagon":
        selected = []
    pool = np.array([i for i in stats.index if i != spec.target and i not in set(selected)])
    if spec.filler_size > len(pool):
        raise ValueError(f"filler_size {spec.filler_size} exceeds the {len(pool)} items left")
    rows = []
    for n in range(spec.n_profiles):
        user = f"{spec.prefix}-{spec.seed}-{n:04d}"
        filler = rng.choice(pool, size=spec.filler_size, replace=False)
        if spec.kind == "average":
            item_rows = stats.loc[filler]
            filler_r = _ratings(rng, item_rows["mean"], item_rows["std"], spec.rating_range)
        else:
            filler_r = _ratings(rng, global_mean, global_std, (low, high), size=len(filler))
        items = [spec.target, *selected, *filler]
        values = [high, *([high] * len(selected)), *filler_r]
        start = spec.start + int(rng.integers(spec.window))
        gaps = np.rint(rng.exponential(spec.gap_seconds, size=len(items) - 1))
        stamps = start + np.concatenate([[0], np.cumsum(gaps)]).astype(np.int64)
        stamps = np.minimum(stamps, spec.start + spec.window - 1)  # inside the batch's week
        for i, r, t in zip(items, values, stamps, strict=True):
            rows.append((user, str(i), float(r), int(t)))
    events = pd.DataFrame(rows, columns=list(schema.INTERACTION_COLUMNS))
    users = _fake_users(events[schema.USER_ID].unique(), demographics, rng)
    items = pd.DataFrame({c: [] for c in schema.ITEM_COLUMNS})
    return {"interactions": events, "items": items, "users": users}


def _fake_users(
    ids: Sequence[str], demographics: pd.DataFrame | None, rng: np.random.Generator
) -> pd.DataFrame:
    if demographics is None or demographics.empty:
        rows = pd.DataFrame(
            {
                RAW_AGE: [30.0],
                schema.GENDER: ["M"],
                schema.OCCUPATION: ["other"],
                RAW_ZIP: ["10001"],
            }
        )
    else:
        rows = demographics[list(RAW_USER_COLUMNS[1:])].reset_index(drop=True)
    picked = rows.iloc[rng.integers(len(rows), size=len(ids))].reset_index(drop=True)
    picked.insert(0, schema.USER_ID, list(ids))
    return picked


# ---- detector: per-profile features ----------------------------------------------------------


class DetectorSettings(ShillingParams):
    """``ingest.shilling`` (its defaults and reasons live in config.ShillingParams) plus what
    the data decides: the top of the rating scale is the push rating."""

    max_rating: float = 5.0
    seed: int = 0


DEFAULT_SETTINGS = DetectorSettings()


def _matrix(
    events: pd.DataFrame, users: pd.Index, items: pd.Index
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(ratings, mask) as sparse users x items; events on unknown items are dropped."""
    u = users.get_indexer(events[schema.USER_ID])
    i = items.get_indexer(events[schema.ITEM_ID])
    keep = (u >= 0) & (i >= 0)
    r = events[schema.RATING].to_numpy(dtype=np.float64)[keep]
    shape = (len(users), len(items))
    ratings = sp.csr_matrix((r, (u[keep], i[keep])), shape=shape)
    mask = sp.csr_matrix((np.ones(keep.sum()), (u[keep], i[keep])), shape=shape)
    return ratings, mask


def _centred(ratings: sp.csr_matrix, mask: sp.csr_matrix) -> sp.csr_matrix:
    """Each user's ratings minus the user's own mean (Pearson's centring)."""
    n = np.asarray(mask.sum(axis=1)).ravel()
    means = np.asarray(ratings.sum(axis=1)).ravel() / np.maximum(n, 1)
    out = ratings.copy().tocsr()
    out.data = out.data - np.repeat(means, np.diff(out.indptr))
    return out


def _degsim(
    x: sp.csr_matrix, mx: sp.csr_matrix, y: sp.csr_matrix, my: sp.csr_matrix, k: int, same: bool
) -> np.ndarray:
    """Mean of the ``k`` largest Pearson similarities of each row of x with the rows of y,
    over co-rated items (pairs sharing fewer than 3 items count as 0); ``same``: y is x."""
    num = (x @ y.T).toarray()
    xx = (x.multiply(x)) @ my.T
    yy = mx @ (y.multiply(y)).T
    co = (mx @ my.T).toarray()
    denom = np.sqrt(np.asarray(xx.toarray()) * np.asarray(yy.toarray()))
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = np.where((denom > 0) & (co >= 3), num / denom, 0.0)
    if same:
        np.fill_diagonal(sim, -np.inf)
    k = max(1, min(k, sim.shape[1] - (1 if same else 0)))
    if sim.shape[1] == 0:
        return np.zeros(sim.shape[0])
    top = -np.sort(-sim, axis=1)[:, :k]
    return np.where(np.isfinite(top), top, 0.0).mean(axis=1)


def _stats_features(
    events: pd.DataFrame,
    counts: pd.Series,
    sums: pd.Series,
    popularity: pd.Series,
    own: bool,
    min_item_ratings: int,
) -> pd.DataFrame:
    """rdma, mean_dev, max_share inputs and obscurity per user; ``own``: the events are
    already counted in ``counts``/``sums`` (data/'s users: their own rating is left out)."""
    n = events[schema.ITEM_ID].map(counts).fillna(0.0).to_numpy()
    s = events[schema.ITEM_ID].map(sums).fillna(0.0).to_numpy()
    r = events[schema.RATING].to_numpy(dtype=np.float64)
    if own:
        n, s = n - 1, s - r
    # an item mean from a handful of ratings says nothing (a new release rated once before
    # its week): only established items count towards the deviations
    known = n >= min_item_ratings
    mean = np.where(known, s / np.where(known, n, 1), np.nan)
    dev = np.abs(r - mean)
    frame = pd.DataFrame(
        {
            schema.USER_ID: events[schema.USER_ID].to_numpy(),
            "dev": np.where(known, dev, np.nan),
            "rdma_term": np.where(known, dev / np.where(known, n, 1), np.nan),
            "log_pop": np.log1p(events[schema.ITEM_ID].map(popularity).fillna(0.0).to_numpy()),
            "rating": r,
        }
    )
    return frame


def profile_features(
    batch: pd.DataFrame,
    held: pd.DataFrame,
    settings: DetectorSettings = DEFAULT_SETTINGS,
    *,
    reference: bool = False,
) -> pd.DataFrame:
    """Features of each profile (rows: user ids with ``min_events`` events or more).

    ``batch`` is the new events, ``held`` what data/ holds. With ``reference`` the users
    of ``held`` itself are profiled instead (a sample of ``reference_users``, each one's
    own ratings left out of the item statistics): the yardstick the z-scores use.
    """
    rated = held.dropna(subset=[schema.RATING])
    counts = rated.groupby(schema.ITEM_ID).size().astype(float)
    sums = rated.groupby(schema.ITEM_ID)[schema.RATING].sum()
    if reference:
        users = pd.Series(rated[schema.USER_ID].unique())
        if len(users) > settings.reference_users:
            users = users.sample(settings.reference_users, random_state=settings.seed)
        events = rated[rated[schema.USER_ID].isin(set(users))]
        popularity = counts
    else:
        events = batch.dropna(subset=[schema.RATING])
        popularity = counts.add(events.groupby(schema.ITEM_ID).size(), fill_value=0.0)
    sizes = events.groupby(schema.USER_ID).size()
    profiled = sizes[sizes >= settings.min_events].index
    events = events[events[schema.USER_ID].isin(set(profiled))]
    columns = ["n_events", *FEATURES]
    if events.empty:
        return pd.DataFrame(columns=columns, index=pd.Index([], name=schema.USER_ID), dtype=float)
    terms = _stats_features(
        events, counts, sums, popularity, own=reference, min_item_ratings=settings.min_item_ratings
    )
    grouped = terms.groupby(schema.USER_ID, sort=False)
    out = pd.DataFrame(
        {
            "n_events": grouped.size().astype(float),
            "rdma": grouped["rdma_term"].mean(),
            "mean_dev": grouped["dev"].mean(),
            "max_share": grouped["rating"].apply(
                lambda r: float((r >= settings.max_rating).mean())
            ),
            "obscurity": -grouped["log_pop"].mean(),
        }
    )
    out.index.name = schema.USER_ID
    # degree of similarity: against data/'s users (a sample) and the batch's own profiles
    items = pd.Index(pd.unique(pd.concat([rated[schema.ITEM_ID], events[schema.ITEM_ID]])))
    pool_users = pd.Index(rated[schema.USER_ID].unique())
    if len(pool_users) > settings.reference_users:
        pool_users = pd.Index(
            pd.Series(pool_users).sample(settings.reference_users, random_state=settings.seed)
        )
    who = pd.Index(out.index)
    x, mx = _matrix(events, who, items)
    xc = _centred(x, mx)
    if reference:
        sims = _degsim(xc, mx, xc, mx, settings.neighbours, same=True)
    else:
        pool = rated[rated[schema.USER_ID].isin(set(pool_users))]
        y, my = _matrix(pool, pool_users, items)
        yc = _centred(y, my)
        both = sp.vstack([yc, xc]).tocsr()
        mboth = sp.vstack([my, mx]).tocsr()
        sims = _degsim_with_self(xc, mx, both, mboth, len(pool_users), settings.neighbours)
    out["degsim"] = sims
    return out[columns]


def _degsim_with_self(x, mx, y, my, offset: int, k: int) -> np.ndarray:
    """_degsim of x against y = [data/'s users; x], each profile's own row excluded."""
    num = (x @ y.T).toarray()
    xx = ((x.multiply(x)) @ my.T).toarray()
    yy = (mx @ (y.multiply(y)).T).toarray()
    co = (mx @ my.T).toarray()
    denom = np.sqrt(xx * yy)
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = np.where((denom > 0) & (co >= 3), num / denom, 0.0)
    rows = np.arange(x.shape[0])
    sim[rows, offset + rows] = -np.inf
    k = max(1, min(k, sim.shape[1] - 1))
    top = -np.sort(-sim, axis=1)[:, :k]
    return np.where(np.isfinite(top), top, 0.0).mean(axis=1)


@dataclass(frozen=True)
class Yardstick:
    """Median and robust spread of each feature over data/'s own users."""

    median: dict[str, float]
    scale: dict[str, float]

    @classmethod
    def of(cls, reference: pd.DataFrame) -> Yardstick:
        median, scale = {}, {}
        for name in FEATURES:
            values = reference[name].dropna().to_numpy(dtype=np.float64)
            if values.size == 0:
                median[name], scale[name] = 0.0, 1.0
                continue
            mid = float(np.median(values))
            mad = float(np.median(np.abs(values - mid))) * MAD_TO_SD
            median[name], scale[name] = mid, mad if mad > 1e-12 else float(values.std() or 1.0)
        return cls(median, scale)


def suspicion(features: pd.DataFrame, yardstick: Yardstick, z_cap: float = 5.0) -> pd.Series:
    """Mean of the one-sided robust z-scores, each capped at ``z_cap`` (0 where a feature
    looks normal or is missing): one wild feature alone cannot make a profile suspect."""
    z = pd.DataFrame(index=features.index)
    for name, sign in FEATURES.items():
        raw = sign * (features[name] - yardstick.median[name]) / yardstick.scale[name]
        z[name] = raw.clip(lower=0.0, upper=z_cap).fillna(0.0)
    return z.mean(axis=1).rename("suspicion")


# ---- detector: the batch-level decision ------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The detector's decision on one batch, with its evidence."""

    suspect: bool
    score: float  # the best push group's score (min_profiles-th largest suspicion)
    threshold: float
    target: str | None  # the item the flagged profiles push (None when not suspect)
    flagged: tuple[str, ...]  # user ids (as in the batch after privacy)
    profiles: int  # profiles scored (users with min_events events or more)
    scores: dict[str, float] = field(default_factory=dict)  # suspicion of each flagged user
    groups: tuple[dict[str, Any], ...] = ()  # the best push groups, for the report
    features: dict[str, dict[str, float]] = field(default_factory=dict)  # flagged users'

    def to_dict(self) -> dict[str, Any]:
        return {
            "suspect": self.suspect,
            "score": round(self.score, 4),
            "threshold": self.threshold,
            "target": self.target,
            "flagged_users": list(self.flagged),
            "profiles_scored": self.profiles,
            "suspicion": {u: round(s, 4) for u, s in self.scores.items()},
            "push_groups": list(self.groups),
            "features": self.features,
        }

    def message(self) -> str:
        return (
            f"{len(self.flagged)} profile(s) look like a shilling attack pushing item "
            f"{self.target} (push group score {self.score:.2f} >= threshold {self.threshold:.2f})"
        )


def push_groups(
    batch: pd.DataFrame, scores: pd.Series, held_counts: pd.Series, settings: DetectorSettings
) -> pd.DataFrame:
    """Per item given the highest rating by at least ``min_profiles`` scored profiles: its
    pushers, their ``min_profiles``-th largest suspicion (``score``), how many reach the
    threshold, and the item's ratings in data/; best group first."""
    top = batch[
        (batch[schema.RATING] >= settings.max_rating) & batch[schema.USER_ID].isin(scores.index)
    ]
    top = top.drop_duplicates([schema.USER_ID, schema.ITEM_ID])
    rows = []
    m = settings.min_profiles
    for item, group in top.groupby(schema.ITEM_ID, sort=False):
        if len(group) < m:
            continue
        s = np.sort(scores.reindex(group[schema.USER_ID]).to_numpy())[::-1]
        rows.append(
            {
                "item": str(item),
                "pushers": len(group),
                "score": float(s[m - 1]),
                "flagged": int((s >= settings.threshold).sum()),
                "held_ratings": int(held_counts.get(item, 0)),
            }
        )
    frame = pd.DataFrame(rows, columns=["item", "pushers", "score", "flagged", "held_ratings"])
    return frame.sort_values(
        ["score", "flagged", "held_ratings"], ascending=[False, False, True], kind="stable"
    ).reset_index(drop=True)


def detect(
    batch: pd.DataFrame, held: pd.DataFrame, settings: DetectorSettings = DEFAULT_SETTINGS
) -> Verdict:
    """Is this batch of interactions a shilling attack on what data/ holds? (module doc)"""
    features = profile_features(batch, held, settings)
    if features.empty:
        return Verdict(False, 0.0, settings.threshold, None, (), 0)
    yardstick = Yardstick.of(profile_features(batch, held, settings, reference=True))
    scores = suspicion(features, yardstick, settings.z_cap)
    held_counts = held.groupby(schema.ITEM_ID).size()
    groups = push_groups(batch, scores, held_counts, settings)
    best = float(groups["score"].iloc[0]) if len(groups) else 0.0
    suspect = best >= settings.threshold
    target, flagged = None, ()
    if suspect:
        # among the groups over the threshold: the most flagged pushers net of unflagged
        # ones, then the rarest item. A bandwagon attack also pushes its popular "selected"
        # items, but many real people push those too; a few fakes that happen to give one
        # filler item the top rating make a small group
        over = groups[groups["score"] >= settings.threshold].assign(
            net=lambda g: 2 * g["flagged"] - g["pushers"]
        )
        over = over.sort_values(["net", "held_ratings"], ascending=[False, True], kind="stable")
        target = str(over["item"].iloc[0])
        pushers = batch[
            (batch[schema.ITEM_ID] == target) & (batch[schema.RATING] >= settings.max_rating)
        ][schema.USER_ID].unique()
        flagged = tuple(sorted(u for u in pushers if scores.get(u, 0.0) >= settings.threshold))
    return Verdict(
        suspect=suspect,
        score=best,
        threshold=settings.threshold,
        target=target,
        flagged=flagged,
        profiles=len(features),
        scores={u: float(scores[u]) for u in flagged},
        groups=tuple(groups.head(5).to_dict("records")),
        features={u: {k: round(float(v), 4) for k, v in features.loc[u].items()} for u in flagged},
    )
