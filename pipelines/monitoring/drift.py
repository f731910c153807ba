"""Drift of a new batch against the training reference, with Evidently, and a decision.

Signals (each with its threshold in ``MonitoringParams``):

- **interaction features**: per event, the item's reference popularity (log), its
  first genre and the hour of day; per active user, the profile fields (age band,
  gender, occupation, region area: the first character of the 3-character region).
  PSI per feature through Evidently's ``DataDriftPreset``; drift when a share of them
  cross the PSI threshold. Profiles are counted once per user, not once per event: a
  week of MovieLens is ~50-100 users, a handful of whom give a third of its events, so
  per-event profile shares mostly measure how much those few rated. The 3-character
  regions (hundreds of them) are too many categories for PSI at that size;
- **embedding drift** of the items the batch touches: MiniLM vectors of the
  events' items (the champion's catalogue vectors) against the reference events',
  Evidently's ``EmbeddingsDrift`` (cosine distance between the means);
- **unseen share**: the batch's events on items the reference never saw, and its
  users the reference never saw;
- **quality**: the champion's next-item NDCG@k on the batch (``quality.next_item_ndcg``)
  against its value on its first week in service with at least ``min_quality_users``
  users (the baseline: the same protocol, out of sample; its LOO validation NDCG is a
  different task, the event right after the previous one, and several times higher).
  Fewer users than that: measured and reported, not decided on.

Below ``min_events`` the monitor decides nothing (``decision: insufficient``).
The result is an HTML report (Evidently's, with a summary of the decision on top)
and a JSON decision with every reason; ``drift`` is true only when a threshold is
crossed.
"""

from __future__ import annotations

import html
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core import schema
from pipelines.core.config import MonitoringParams
from pipelines.core.io import write_json, write_text
from pipelines.monitoring.quality import Ranker, next_item_ndcg

log = logging.getLogger(__name__)

POPULARITY, GENRE, HOUR = "item_popularity", "genre", "hour"
REGION_AREA = "region_area"
PROFILE_FEATURES = (schema.AGE_BAND, schema.GENDER, schema.OCCUPATION, REGION_AREA)
NUMERICAL = (POPULARITY, HOUR)
CATEGORICAL = (GENRE, *PROFILE_FEATURES)
FEATURES = (*NUMERICAL, *CATEGORICAL)
NO_GENRE = "(none)"

# item ids -> unit vectors (rows), or None for an item without one
Vectoriser = Callable[[Sequence[str]], np.ndarray | None]


@dataclass(frozen=True)
class Decision:
    batch: str
    status: str  # drift | no_drift | insufficient
    reasons: tuple[str, ...]
    signals: dict[str, Any] = field(default_factory=dict)

    @property
    def drift(self) -> bool:
        return self.status == "drift"

    @property
    def main_reason(self) -> str:
        return self.reasons[0] if self.reasons else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "status": self.status,
            "drift": self.drift,
            "reasons": list(self.reasons),
            "signals": self.signals,
        }


def event_features(
    events: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, popularity: pd.Series
) -> pd.DataFrame:
    """One row per event: the interaction features the drift checks compare.

    The profile columns hold one row per distinct active user, repeated in turn to the
    events' length (one Evidently dataset holds both; repeating keeps their shares).
    """
    genres = items.set_index(schema.ITEM_ID)[schema.GENRES].map(
        lambda g: str(next(iter(g))) if g is not None and len(g) else NO_GENRE
    )
    out = pd.DataFrame(
        {
            POPULARITY: np.log1p(
                events[schema.ITEM_ID].map(popularity).fillna(0).to_numpy(dtype=float)
            ),
            GENRE: events[schema.ITEM_ID].map(genres).fillna(NO_GENRE).to_numpy(),
            HOUR: ((events[schema.TIMESTAMP].to_numpy(dtype=np.int64) // 3600) % 24).astype(float),
        }
    )
    profiles = user_features(pd.unique(events[schema.USER_ID]), users)
    for column in PROFILE_FEATURES:
        out[column] = np.resize(profiles[column].to_numpy(), len(out)) if len(out) else []
    return out


def user_features(user_ids, users: pd.DataFrame) -> pd.DataFrame:
    """One row per user id: the profile fields drift compares (unknown when not held)."""
    profile = users.drop_duplicates(schema.USER_ID, keep="last").set_index(schema.USER_ID)
    ids = pd.Series(user_ids, dtype=object)
    out = {}
    for column in (schema.AGE_BAND, schema.GENDER, schema.OCCUPATION, schema.REGION):
        values = ids.map(profile[column]) if column in profile else pd.Series(index=ids.index)
        # positions, not labels: the result is built row by row from ``ids``
        out[column] = values.fillna(schema.UNKNOWN).astype(str).to_numpy()
    frame = pd.DataFrame(out)
    frame[REGION_AREA] = frame.pop(schema.REGION).str[:1]
    return frame


def _sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    return frame if len(frame) <= rows else frame.sample(n=rows, random_state=seed)


def _evidently_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    ref_vectors: np.ndarray | None,
    cur_vectors: np.ndarray | None,
    cfg: MonitoringParams,
):
    """Evidently's snapshot of the feature drift (PSI) and, when vectors exist, embedding drift."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift
    from evidently.metrics.embeddings import DistanceDriftMethod
    from evidently.presets import DataDriftPreset

    metrics: list[Any] = [
        DataDriftPreset(
            columns=list(FEATURES),
            method="psi",
            threshold=cfg.psi_threshold,
            drift_share=cfg.feature_drift_share,
        )
    ]
    definition = {"numerical_columns": list(NUMERICAL), "categorical_columns": list(CATEGORICAL)}
    ref, cur = reference.reset_index(drop=True), current.reset_index(drop=True)
    embedding = (
        ref_vectors is not None
        and cur_vectors is not None
        and len(ref_vectors)
        and len(cur_vectors)
    )
    if embedding:
        columns = [f"e{i}" for i in range(ref_vectors.shape[1])]
        # Evidently wants one frame per side: vectors ride along as their own rows' columns
        n = max(len(ref), len(ref_vectors)), max(len(cur), len(cur_vectors))
        ref = _padded(ref, ref_vectors, columns, n[0])
        cur = _padded(cur, cur_vectors, columns, n[1])
        definition["embeddings"] = {"items": columns}
        metrics.append(
            EmbeddingsDrift(
                embeddings_name="items",
                drift_method=DistanceDriftMethod(
                    dist="cosine", threshold=cfg.embedding_threshold, bootstrap=False
                ),
            )
        )
    if embedding:
        from evidently.legacy.metrics.data_drift import embeddings_drift

        # Evidently draws a t-SNE of up to 2,500 vectors a side for the report's plot, about
        # a minute on 2 cores; the plot needs far fewer (the drift score uses every vector)
        embeddings_drift.SAMPLE_CONSTANT = cfg.embedding_plot_rows
    dd = DataDefinition(**definition)
    report = Report(metrics)
    return report.run(
        Dataset.from_pandas(cur, data_definition=dd), Dataset.from_pandas(ref, data_definition=dd)
    )


def _padded(
    frame: pd.DataFrame, vectors: np.ndarray, columns: list[str], rows: int
) -> pd.DataFrame:
    """Features and vectors side by side; the shorter part is resampled (with replacement)."""
    rng = np.random.default_rng(0)
    if len(frame) < rows:
        frame = frame.iloc[rng.integers(0, len(frame), rows)].reset_index(drop=True)
    if len(vectors) < rows:
        vectors = vectors[rng.integers(0, len(vectors), rows)]
    return pd.concat([frame.reset_index(drop=True), pd.DataFrame(vectors, columns=columns)], axis=1)


def _values(snapshot) -> dict[str, Any]:
    """Evidently's metric values by name: PSI per feature, drifted share, embedding distance."""
    out: dict[str, Any] = {"psi": {}}
    for metric in snapshot.dict()["metrics"]:
        config, value = metric["config"], metric["value"]
        kind = config["type"].rsplit(":", 1)[-1]
        if kind == "ValueDrift":
            out["psi"][config["column"]] = float(value)
        elif kind == "DriftedColumnsCount":
            out["drifted_share"] = float(value["share"])
        elif kind == "EmbeddingsDrift":
            out["embedding_distance"] = float(value)
    return out


def mean_vectors(vectoriser: Vectoriser | None, item_ids: Sequence[str]) -> np.ndarray | None:
    if vectoriser is None:
        return None
    vectors = vectoriser(list(item_ids))
    return None if vectors is None or not len(vectors) else np.asarray(vectors, dtype=np.float32)


def assess(
    batch: str,
    reference: dict[str, pd.DataFrame],
    current: dict[str, pd.DataFrame],
    cfg: MonitoringParams,
    *,
    out_dir: Path,
    ranker: Ranker | None = None,
    baseline_ndcg: float | None = None,
    vectoriser: Vectoriser | None = None,
    history: pd.DataFrame | None = None,
) -> Decision:
    """Compare a batch with the reference; write ``report.html`` and ``decision.json`` to out_dir.

    ``reference`` and ``current`` hold ``interactions``, ``items`` and ``users`` frames
    (canonical, after privacy). ``ranker`` scores the champion (None: no quality signal);
    ``baseline_ndcg`` is its NDCG on its first week in service (None: nothing to compare
    with yet). ``history`` is every event before the batch, whose users' histories the
    champion is scored with (default: the reference).
    """
    started = time.perf_counter()
    events, ref_events = current["interactions"], reference["interactions"]
    items = pd.concat([reference["items"], current["items"]]).drop_duplicates(
        schema.ITEM_ID, keep="last"
    )
    users = pd.concat([reference["users"], current["users"]]).drop_duplicates(
        schema.USER_ID, keep="last"
    )
    signals: dict[str, Any] = {"events": len(events), "reference_events": len(ref_events)}
    if len(events) < cfg.min_events:
        decision = Decision(
            batch,
            "insufficient",
            (f"{len(events)} events, below the minimum window of {cfg.min_events}: no decision",),
            signals,
        )
        _write(decision, out_dir, None)
        return decision

    popularity = ref_events[schema.ITEM_ID].value_counts()
    ref_sample = _sample(ref_events, cfg.reference_rows, cfg.seed)
    ref_features = event_features(ref_sample, items, users, popularity)
    cur_features = event_features(events, items, users, popularity)
    ref_vectors = mean_vectors(vectoriser, ref_sample[schema.ITEM_ID].tolist())
    cur_vectors = mean_vectors(vectoriser, events[schema.ITEM_ID].tolist())
    snapshot = _evidently_report(ref_features, cur_features, ref_vectors, cur_vectors, cfg)
    signals.update(_values(snapshot))

    known_items = set(ref_events[schema.ITEM_ID])
    known_users = set(ref_events[schema.USER_ID])
    signals["unseen_items_share"] = float((~events[schema.ITEM_ID].isin(known_items)).mean())
    batch_users = pd.Series(events[schema.USER_ID].unique())
    signals["unseen_users_share"] = float((~batch_users.isin(known_users)).mean())
    if ranker is not None:
        past = ref_events if history is None else history
        ndcg, n_users = next_item_ndcg(past, events, ranker, cfg.k)
        signals.update(
            {f"ndcg@{cfg.k}": ndcg, "ndcg_users": n_users, f"baseline_ndcg@{cfg.k}": baseline_ndcg}
        )

    reasons = _reasons(signals, cfg)
    status = "drift" if reasons else "no_drift"
    if not reasons:
        reasons = [_calm(signals, cfg)]
    decision = Decision(batch, status, tuple(reasons), signals)
    _write(decision, out_dir, snapshot)
    log.info(
        "batch %s: %s (%s) in %.1fs",
        batch,
        status,
        decision.main_reason,
        time.perf_counter() - started,
    )
    return decision


def _reasons(s: dict[str, Any], cfg: MonitoringParams) -> list[str]:
    """Every crossed threshold, most telling first (quality, unseen, embedding, features)."""
    found: list[tuple[float, str]] = []
    ndcg, baseline = s.get(f"ndcg@{cfg.k}"), s.get(f"baseline_ndcg@{cfg.k}")
    if ndcg is not None and baseline:
        drop = 1 - ndcg / baseline
        s["ndcg_drop"] = drop
        if drop > cfg.ndcg_drop and s.get("ndcg_users", 0) >= cfg.min_quality_users:
            found.append(
                (
                    4 + drop,
                    f"champion NDCG@{cfg.k} fell {drop:.0%} on this batch ({ndcg:.4f} against "
                    f"{baseline:.4f} on its first week; limit {cfg.ndcg_drop:.0%})",
                )
            )
    share = s["unseen_items_share"]
    if share > cfg.unseen_items_share:
        found.append(
            (
                3 + share,
                f"{share:.0%} of events are on items the model never saw "
                f"(limit {cfg.unseen_items_share:.0%})",
            )
        )
    share = s["unseen_users_share"]
    if share > cfg.unseen_users_share:
        found.append(
            (2 + share, f"{share:.0%} of active users are new (limit {cfg.unseen_users_share:.0%})")
        )
    distance = s.get("embedding_distance")
    if distance is not None and distance > cfg.embedding_threshold:
        found.append(
            (
                1 + distance,
                f"embedding drift of the touched items: cosine distance {distance:.3f} "
                f"(limit {cfg.embedding_threshold})",
            )
        )
    drifted = sorted(
        ((v, c) for c, v in s.get("psi", {}).items() if v >= cfg.psi_threshold), reverse=True
    )
    if s.get("drifted_share", 0.0) >= cfg.feature_drift_share and drifted:
        names = ", ".join(f"{c} (PSI {v:.2f})" for v, c in drifted[:3])
        found.append(
            (
                s["drifted_share"],
                f"{len(drifted)} of {len(FEATURES)} interaction features drifted: {names}",
            )
        )
    return [text for _, text in sorted(found, reverse=True)]


def _calm(s: dict[str, Any], cfg: MonitoringParams) -> str:
    worst = max(s.get("psi", {}).items(), key=lambda kv: kv[1], default=("none", 0.0))
    return (
        f"no threshold crossed: largest PSI {worst[1]:.2f} ({worst[0]}), "
        f"{s['unseen_items_share']:.0%} events on unseen items"
    )


def _write(decision: Decision, out_dir: Path, snapshot) -> None:
    out_dir = Path(out_dir)
    write_json(decision.to_dict(), out_dir / "decision.json")
    head = (
        f"<h1>Batch {html.escape(decision.batch)}: {html.escape(decision.status)}</h1><ul>"
        + "".join(f"<li>{html.escape(r)}</li>" for r in decision.reasons)
        + f"</ul><pre>{html.escape(json.dumps(decision.signals, indent=2, default=str))}</pre>"
    )
    if snapshot is None:
        write_text(f"<!doctype html><html><body>{head}</body></html>\n", out_dir / "report.html")
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        snapshot.save_html(str(Path(tmp) / "report.html"))
        body = (Path(tmp) / "report.html").read_text()
    marker = "<body>"
    page = (
        body.replace(marker, marker + f'<div id="recops-decision">{head}</div>', 1)
        if marker in body
        else head + body
    )
    write_text(page, out_dir / "report.html")
