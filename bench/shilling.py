"""Shilling attacks on MovieLens-100K: what they do to the models, and what the check catches
(issue 18 item 2).

    python bench/shilling.py [--targets 1] [--seed 0]

Reads data/ (`python -m pipelines.stages.ingest`, MovieLens with the public demo key) and
params.yaml (``ingest.shilling``, ``split``, ``train``: params.yaml's model values, not the
tune stage's). Prints Markdown tables; writes nothing outside a temporary folder.

1. **False alarms on clean batches.** Real MovieLens weeks (Monday-aligned, as the replay
   cuts them), each judged against every event before it: weeks 4-11 (inside the replay's
   initial snapshot) and weeks 12-31 (the replay's 20 weekly batches). A flagged clean week
   is a false alarm; the rate comes with its exact (Clopper-Pearson) 95% interval.
2. **Detection.** Each attack (random, average, bandwagon) at 1% and 5% of the 943 users
   (9 and 47 profiles) mixed into each of the 20 replay weeks, pushing an item with 5-15
   ratings before that week: batch-level detection (flagged, with the right target) and
   user-level precision and recall of the flagged users.
3. **Effect.** Each attack as one batch after the last event, appended through the real
   door (``append_batch`` into a copy of data/, the check off); popularity, EASE and
   ItemKNN refitted on the protocol's split (design.md §4) and scored on the real users'
   test histories: the target's hit rate in their top-10 (users who had it are left out)
   and NDCG@10, attacked minus clean, paired per user with a bootstrap interval.
4. **Defence.** The same batch with the check on: quarantined (data/ unchanged, so the
   model is the clean one), and the user-level alternative (only the flagged users
   dropped, the rest appended and trained on).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import beta

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines.core import schema  # noqa: E402
from pipelines.core.config import Params, load_params  # noqa: E402
from pipelines.core.paths import PROJECT  # noqa: E402
from pipelines.data.append import append_batch, detector_settings  # noqa: E402
from pipelines.data.privacy import PUBLIC_DEMO_KEY, pseudonymise_id  # noqa: E402
from pipelines.data.shilling import (  # noqa: E402
    ATTACKS,
    WEEK_SECONDS,
    AttackSpec,
    attack_tables,
    detect,
    pick_target,
    profiles_for_share,
)
from pipelines.data.snapshot import fingerprint_path  # noqa: E402
from pipelines.data.sources import read_movielens  # noqa: E402
from pipelines.data.split import split_interactions  # noqa: E402
from pipelines.evaluation.metrics import ndcg_from_ranks  # noqa: E402
from pipelines.evaluation.ranking import ranks_and_top_k  # noqa: E402
from pipelines.evaluation.stats import paired_difference  # noqa: E402
from pipelines.features.dataset import SideInfo, train_data  # noqa: E402
from pipelines.features.sequences import build_sequences, histories_for, targets_for  # noqa: E402
from pipelines.loop.stream import week_anchor, write_batch  # noqa: E402
from pipelines.training.fit import fit_model, resolve  # noqa: E402

SHARES = (0.01, 0.05)
MODELS = ("popularity", "ease", "itemknn")
K = 10
CALIBRATION, REPLAY = range(4, 12), range(12, 32)  # week indices from the first Monday


def exact_interval(hits: int, n: int) -> tuple[float, float]:
    """Clopper-Pearson 95% interval of a proportion (a bootstrap of 0/20 would be [0, 0])."""
    low = 0.0 if hits == 0 else float(beta.ppf(0.025, hits, n - hits + 1))
    high = 1.0 if hits == n else float(beta.ppf(0.975, hits + 1, n - hits))
    return low, high


def weeks_of(events: pd.DataFrame) -> np.ndarray:
    anchor = week_anchor(int(events[schema.TIMESTAMP].min()))
    return ((events[schema.TIMESTAMP].to_numpy() - anchor) // WEEK_SECONDS).astype(int)


# ---- 1. false alarms ---------------------------------------------------------------------------


def false_alarms(events: pd.DataFrame, settings) -> tuple[str, dict]:
    week = weeks_of(events)
    ts = events[schema.TIMESTAMP].to_numpy()
    anchor = week_anchor(int(ts.min()))
    # 7-day windows starting every 2nd day from the 5th week on: more clean batches, but
    # overlapping ones, so their interval is optimistic (the windows are not independent)
    starts = range(anchor + 4 * WEEK_SECONDS, int(ts.max()) - WEEK_SECONDS, 2 * 86_400)
    periods = {
        "weeks 4-11 (initial snapshot)": [
            (events[week == w], events[week < w], w) for w in CALIBRATION
        ],
        "weeks 12-31 (replay batches)": [(events[week == w], events[week < w], w) for w in REPLAY],
        "7-day windows, every 2nd day (overlapping)": [
            (
                events[(ts >= t) & (ts < t + WEEK_SECONDS)],
                events[ts < t],
                f"day {(t - anchor) // 86_400}",
            )
            for t in starts
        ],
    }
    rows, raw = [], {}
    for label, cases in periods.items():
        weeks = [name for _, _, name in cases]
        verdicts = [detect(batch, held, settings) for batch, held, _ in cases]
        flagged = sum(v.suspect for v in verdicts)
        low, high = exact_interval(flagged, len(verdicts))
        users = sum(len(v.flagged) for v in verdicts)
        profiles = sum(v.profiles for v in verdicts)
        best = max(verdicts, key=lambda v: v.score)
        rows.append(
            f"| {label} | {len(verdicts)} | {profiles} | {flagged} | "
            f"{flagged / len(verdicts):.2f} [{low:.2f}, {high:.2f}] | {users} | "
            f"{best.score:.2f} ({weeks[verdicts.index(best)]}) |"
        )
        if len(verdicts) <= 20:
            raw[label] = [round(v.score, 3) for v in verdicts]
    head = [
        "| clean batches | batches | profiles scored | flagged | false-alarm rate [95% exact] "
        "| users flagged | highest push-group score |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    return "\n".join(head + rows), raw


# ---- 2. detection in real weeks ----------------------------------------------------------------


def detection(events, demographics, settings, n_users: int, seed: int) -> str:
    week = weeks_of(events)
    anchor = week_anchor(int(events[schema.TIMESTAMP].min()))
    rows = []
    for kind in ATTACKS:
        for share in SHARES:
            n = profiles_for_share(n_users, share)
            caught = right = tp = fp = fakes = 0
            for w in REPLAY:
                held = events[week < w]
                spec = AttackSpec(
                    kind,
                    pick_target(held, seed=seed + w),
                    n,
                    start=anchor + w * WEEK_SECONDS,
                    seed=seed + w,
                )
                attack = attack_tables(spec, held, demographics)["interactions"]
                batch = pd.concat([events[week == w], attack], ignore_index=True)
                verdict = detect(batch, held, settings)
                fake = set(attack[schema.USER_ID])
                flagged = set(verdict.flagged)
                caught += verdict.suspect
                right += verdict.suspect and verdict.target == spec.target
                tp += len(flagged & fake)
                fp += len(flagged - fake)
                fakes += len(fake)
            low, high = exact_interval(right, len(REPLAY))
            precision = tp / (tp + fp) if tp + fp else float("nan")
            rows.append(
                f"| {kind} | {share:.0%} | {n} | {caught}/{len(REPLAY)} | "
                f"{right}/{len(REPLAY)} ({right / len(REPLAY):.2f} [{low:.2f}, {high:.2f}]) | "
                f"{precision:.3f} ({tp}/{tp + fp}) | {tp / fakes:.3f} ({tp}/{fakes}) |"
            )
    head = [
        "| attack | share | profiles | batches flagged | flagged with the right target "
        "[95% exact] | user precision | user recall |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    return "\n".join(head + rows)


# ---- 3-4. effect on the models, with and without the defence ---------------------------------


def scores_of(data_dir: Path, params: Params, target: str, real: set[str] | None) -> dict:
    """Per model, a frame by real user id: NDCG@10 on the test target, target in top-10,
    and whether the target could be recommended at all (not in the user's history)."""
    events = pd.read_parquet(data_dir / PROJECT.interactions.name)
    split = split_interactions(events, params.split.min_count, params.split.tie_break)
    sequences = build_sequences(split)
    n_items = int(split[schema.ITEM_IDX].max()) + 1
    side = SideInfo(n_items=n_items)
    ids = split[[schema.USER_IDX, schema.USER_ID]].drop_duplicates().set_index(schema.USER_IDX)
    user_ids = ids.loc[sequences[schema.USER_IDX], schema.USER_ID].to_numpy()
    item_index = dict(zip(split[schema.ITEM_ID], split[schema.ITEM_IDX], strict=True))
    target_idx = item_index.get(target)
    train = train_data(sequences, side)
    histories = histories_for(sequences, schema.TEST)
    targets = targets_for(sequences, schema.TEST)
    seen = np.array(
        [
            target_idx is not None and target_idx in set(items[:-1])
            for items in sequences[schema.SEQ_ITEMS]
        ]
    )
    out = {}
    for name in MODELS:
        spec = resolve(name, params.train, params.seed, train, None, k=K)
        model, _ = fit_model(spec, train)
        ranks, top = ranks_and_top_k(model, histories, targets, K, 256)
        hit = (top == -1 if target_idx is None else top == target_idx).any(dim=1).numpy()
        frame = pd.DataFrame(
            {
                "ndcg": ndcg_from_ranks(ranks, K).numpy(),
                "hit": hit.astype(float),
                "eligible": ~seen,
            },
            index=pd.Index(user_ids, name=schema.USER_ID),
        )
        out[name] = frame if real is None else frame[frame.index.isin(real)]
    return out


def copy_data(src: Path, dst_root: Path) -> Path:
    dst = dst_root / "data"
    shutil.copytree(src, dst)
    (dst_root / ".secrets").mkdir(exist_ok=True)
    shutil.copy(fingerprint_path(src), fingerprint_path(dst))
    return dst


def appended(params: Params, tables: dict, root: Path, name: str, check: bool):
    """Append the attack batch to a fresh copy of data/ through ``append_batch``."""
    workdir = root / name
    workdir.mkdir()
    data_dir = copy_data(PROJECT.data, workdir)
    batch = write_batch(tables, workdir / "landing", name)
    shilling = params.ingest.shilling.model_copy(update={"check": check})
    cfg = params.ingest.model_copy(update={"shilling": shilling})
    result = append_batch(
        cfg, batch, data_dir=data_dir, quarantine_dir=workdir / "quarantine", key=PUBLIC_DEMO_KEY
    )
    return result, data_dir


def shift(clean: pd.DataFrame, other: pd.DataFrame, column: str, eligible: bool) -> str:
    both = clean.join(other, lsuffix="_c", rsuffix="_a", how="inner")
    if eligible:
        both = both[both["eligible_c"] & both["eligible_a"]]
    diff = paired_difference(both[f"{column}_a"].to_numpy(), both[f"{column}_c"].to_numpy())
    return f"{both[f'{column}_a'].mean():.4f} ({diff.text()})"


def effect(params: Params, demographics: pd.DataFrame, n_targets: int, seed: int) -> str:
    events = pd.read_parquet(PROJECT.interactions)
    real = set(events[schema.USER_ID])
    n_users = len(real)
    start = week_anchor(int(events[schema.TIMESTAMP].max())) + WEEK_SECONDS
    effect_rows, defence_rows, door_rows = [], [], []
    with tempfile.TemporaryDirectory(prefix="shilling-") as tmp:
        root = Path(tmp)
        for t in range(n_targets):
            target = pick_target(events, seed=seed + t)
            clean = scores_of(PROJECT.data, params, target, real)
            for kind in ATTACKS:
                for share in SHARES:
                    n = profiles_for_share(n_users, share)
                    spec = AttackSpec(kind, target, n, start=start, seed=seed + t)
                    tables = attack_tables(spec, events, demographics)
                    label = f"{kind}-{share:.2f}-{t}"
                    off, data_off = appended(params, tables, root, f"off-{label}", check=False)
                    assert off.accepted, off.messages
                    attacked = scores_of(data_off, params, target, real)
                    on, _ = appended(params, tables, root, f"on-{label}", check=True)
                    flagged = set()
                    if on.status == "quarantined":
                        report = json.loads((on.quarantine / "report.json").read_text())
                        flagged = set(report.get("shilling", {}).get("flagged_users", []))
                    fake_ids = {
                        pseudonymise_id(u, PUBLIC_DEMO_KEY) for u in tables["users"][schema.USER_ID]
                    }
                    door_rows.append(
                        f"| {target} | {kind} | {share:.0%} | {n} | {on.status} | "
                        f"{len(flagged & fake_ids)}/{n} | {len(flagged - fake_ids)} |"
                    )
                    # user-level alternative: drop the flagged users, append and train on the rest
                    kept_raw = [
                        u
                        for u in tables["users"][schema.USER_ID]
                        if pseudonymise_id(u, PUBLIC_DEMO_KEY) not in flagged
                    ]
                    if kept_raw:
                        rest = {
                            "interactions": tables["interactions"][
                                tables["interactions"][schema.USER_ID].isin(kept_raw)
                            ],
                            "items": tables["items"],
                            "users": tables["users"][
                                tables["users"][schema.USER_ID].isin(kept_raw)
                            ],
                        }
                        _, data_rest = appended(params, rest, root, f"rest-{label}", check=False)
                        dropped = scores_of(data_rest, params, target, real)
                    else:
                        dropped = clean
                    defended = clean if on.status == "quarantined" else attacked
                    for name in MODELS:
                        c, a = clean[name], attacked[name]
                        hr_clean = c.loc[c["eligible"], "hit"].mean()
                        effect_rows.append(
                            f"| {target} | {kind} | {share:.0%} | {name} | {hr_clean:.4f} | "
                            f"{shift(c, a, 'hit', True)} | {c['ndcg'].mean():.4f} | "
                            f"{shift(c, a, 'ndcg', False)} |"
                        )
                        defence_rows.append(
                            f"| {target} | {kind} | {share:.0%} | {name} | "
                            f"{shift(c, a, 'hit', True)} | "
                            f"{shift(c, defended[name], 'hit', True)} | "
                            f"{shift(c, dropped[name], 'hit', True)} |"
                        )
                    print(
                        f"  {label}: {on.status}, flagged {len(flagged & fake_ids)}/{n}", flush=True
                    )
    effect_head = [
        "| target | attack | share | model | target HR@10 clean | attacked (Δ [95% CI]) | "
        "NDCG@10 clean | attacked (Δ [95% CI]) |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    door_head = [
        "| target | attack | share | profiles | status (check on) | attackers flagged | "
        "real users flagged |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    defence_head = [
        "| target | attack | share | model | target HR@10 undefended (Δ) | batch quarantined (Δ) "
        "| flagged users dropped (Δ) |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    return "\n\n".join(
        [
            "\n".join(effect_head + effect_rows),
            "\n".join(door_head + door_rows),
            "\n".join(defence_head + defence_rows),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--targets", type=int, default=1, help="target items pushed, one at a time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    params = load_params(PROJECT.params)
    settings = detector_settings(params.ingest)
    events = pd.read_parquet(PROJECT.interactions)
    raw_users = read_movielens(params.ingest.movielens.recbole_version).users
    print(f"ingest.shilling: {params.ingest.shilling.model_dump()}\n", flush=True)
    table, raw = false_alarms(events, settings)
    print("## False alarms on real MovieLens weeks\n\n" + table + "\n", flush=True)
    print(f"push-group scores per week: {json.dumps(raw)}\n", flush=True)
    n_users = events[schema.USER_ID].nunique()
    print("## Detection, attacks mixed into the 20 replay weeks\n", flush=True)
    print(detection(events, raw_users, settings, n_users, args.seed) + "\n", flush=True)
    print("## Effect on the models and the defence\n", flush=True)
    print(effect(params, raw_users, args.targets, args.seed), flush=True)
    print(f"\n{time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
