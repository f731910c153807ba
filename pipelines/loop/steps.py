"""The steps the ingest, monitor and retrain DAGs call, one function per task.

Every step reads and writes files in one ``Layout`` (no state in memory between
steps), takes the typed params sections it needs (the caller read params.yaml once),
returns a small JSON-able dict for XCom, and is idempotent: a batch already appended,
a data version already retrained on, a model already served is a no-op.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.core import schema
from pipelines.core.config import IngestParams, MonitoringParams, ReplayParams, RetrainParams
from pipelines.core.io import write_json, write_text
from pipelines.core.paths import Layout
from pipelines.data.append import append_batch, track_with_dvc
from pipelines.data.privacy import PUBLIC_DEMO_KEY
from pipelines.data.snapshot import current_version, read_ledger, read_snapshot
from pipelines.loop import deploy
from pipelines.monitoring import quality
from pipelines.monitoring.drift import assess

log = logging.getLogger(__name__)

# the training command; `dvc repro` unless set (the DAG tests set a tiny one)
REPRO_ENV = "RECOPS_REPRO_CMD"
CURVE = "curve.csv"  # in the monitoring folder: one row per monitored batch (a DVC plot)
CASES = "cases.npz"  # beside a batch's decision: every case's score per ranker, for pooling
LIVE_STATE_ENV = "RECOPS_LIVE_STATE"  # the served live state (a SQLite file or redis:// URL)


# ---- ingest ---------------------------------------------------------------------------------


def pending_batches(layout: Layout) -> list[str]:
    """Landed batch folders not processed yet, oldest name first."""
    if not layout.landing.is_dir():
        return []
    return sorted(
        p.name for p in layout.landing.iterdir() if p.is_dir() and not p.name.startswith(".")
    )


def ingest_batch(
    layout: Layout, name: str, ingest: IngestParams, replay: ReplayParams
) -> dict[str, Any]:
    """Append (or quarantine) one landed batch, then move it out of the landing folder.

    A batch an earlier try of the same task already moved (the task died after the move:
    a killed worker) is read from the processed folder; the ledger answers "already done".
    """
    source = layout.landing / name
    if not source.is_dir() and (layout.processed / name).is_dir():
        source = layout.processed / name
    result = append_batch(
        ingest,
        source,
        data_dir=layout.data,
        quarantine_dir=layout.quarantine,
        key=PUBLIC_DEMO_KEY if replay.demo_key else None,
        key_path=layout.pseudonym_key,
    )
    if result.accepted and layout.is_dvc_project:
        track_with_dvc(layout.data, layout.root)  # data.dvc names the new snapshot
    out = result.to_dict()
    if result.accepted:
        out["live"] = sync_live_state(layout, result.batch)
    layout.processed.mkdir(parents=True, exist_ok=True)
    target = layout.processed / name
    if source != target:
        if target.exists():
            shutil.rmtree(target)
        os.replace(source, target)
    return out


def sync_live_state(layout: Layout, batch: str, encoder: Any = None) -> dict[str, int] | None:
    """An appended batch reaches what is served without a retrain (design.md §8): its users'
    profiles, its events, and its new items (encoded from their text) go into the layout's
    live state, which every worker of the served Bento reads. The initial snapshot is what
    the first model is trained on: nothing to push. Returns what was added."""
    from pipelines.inference.live import open_state, sync_batch

    ledger = [e["batch"] for e in read_ledger(layout.data)]
    if batch not in ledger or ledger.index(batch) == 0:
        return None
    _, current, _ = batch_slices(layout, batch)
    served = served_bundles(layout).get("champion")
    served_items = (
        pd.read_parquet(served / "items.parquet", columns=[schema.ITEM_ID])[schema.ITEM_ID]
        if served is not None
        else []
    )
    if encoder is None:
        from pipelines.features.text import TextEncoder

        encoder = TextEncoder(device="cpu")
    state = open_state(os.environ.get(LIVE_STATE_ENV) or layout.live_state)
    added = sync_batch(
        state, current["interactions"], current["items"], current["users"], encoder, served_items
    )
    log.info("batch %s: live state +%s", batch, added)
    return added


# ---- monitor --------------------------------------------------------------------------------


def _reference_batches(layout: Layout) -> int:
    """How many ledger batches the champion was trained on (all before the first training)."""
    record = deploy.current(layout.serving)
    if record and "ledger_batches" in record:
        return int(record["ledger_batches"])
    return 1  # before any retrain the initial snapshot is the reference


def batch_slices(
    layout: Layout, batch: str
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], pd.DataFrame]:
    """(reference, batch, history) cut from data/ by the ledger's row counts (append keeps order).

    The reference is what the champion was trained on (drift is measured against it); the
    history is every event before the batch (the users' histories when the champion is scored
    on it, trained on or not).
    """
    ledger = read_ledger(layout.data)
    names = [e["batch"] for e in ledger]
    position = names.index(batch)
    ends = pd.Series([e["rows"]["interactions"] for e in ledger]).cumsum().tolist()
    snapshot = read_snapshot(layout.data)
    events = snapshot["interactions"]
    ref_end = ends[min(_reference_batches(layout), position) - 1] if position else 0
    start = ends[position - 1] if position else 0
    reference = {**snapshot, "interactions": events.iloc[:ref_end].reset_index(drop=True)}
    current = {
        **snapshot,
        "interactions": events.iloc[start : ends[position]].reset_index(drop=True),
    }
    return reference, current, events.iloc[:start].reset_index(drop=True)


def served_bundles(layout: Layout) -> dict[str, Path]:
    """The bundle served now and, after a switch, the one it replaced (their folders)."""
    record = deploy.current(layout.serving) or {}
    out = {}
    for role, key in (("champion", "bundle"), ("previous champion", "previous_bundle")):
        if record.get(key) and Path(record[key]).is_dir():
            out[role] = Path(record[key])
    return out


def batch_quality(
    layout: Layout,
    batch: str,
    monitoring: MonitoringParams,
    vectoriser=None,
    exclude_seen: bool = True,
) -> dict[str, Any]:
    """The prequential numbers of one appended batch (``monitoring.quality``): the champion as
    served and stale, the previous champion as served (after a switch), popularity and recent
    popularity, every event of known users scored with every earlier event as history."""
    from pipelines.inference.bundle import load_bundle

    _, current, history = batch_slices(layout, batch)
    events = pd.concat([history, current["interactions"]], ignore_index=True)
    times = current["interactions"][schema.TIMESTAMP]
    timeline = quality.Timeline.from_events(events)
    cases = quality.window_cases(timeline, int(times.min()), int(times.max()) + 1)
    users = current["users"]
    popularity = quality.Popularity()
    popularity.exclude_seen = exclude_seen
    rankers: list[Any] = [popularity, quality.RecentPopularity(7, exclude_seen)]
    for role, path in served_bundles(layout).items():
        bundle = load_bundle(path)
        live = quality.Served(
            bundle, live=True, users=users, vectoriser=vectoriser, exclude_seen=exclude_seen
        )
        live.name = "as served" if role == "champion" else "previous champion, as served"
        rankers.append(live)
        if role == "champion":
            rankers.append(quality.Served(bundle, live=False, exclude_seen=exclude_seen))
    scored = quality.score(rankers, timeline, cases, monitoring.k)
    quality.save_cases(layout.monitoring / batch / CASES, scored, cases)
    out = quality.summary(scored, cases, monitoring.k, seed=monitoring.seed)
    return {"batch": batch, "k": monitoring.k, "slices": out}


def pooled_quality(layout: Layout, monitoring: MonitoringParams) -> dict[str, Any] | None:
    """Every monitored batch's cases as one set (``batch_quality`` kept them): the loop's
    numbers over the whole stream, with intervals over users."""
    parts = [
        quality.load_cases(layout.monitoring / batch / CASES)
        for batch, _, _ in curve_entries(layout)
        if (layout.monitoring / batch / CASES).exists()
    ]
    if not parts:
        return None
    scored, cases = quality.pool(parts)
    return {
        "batches": len(parts),
        "k": monitoring.k,
        "slices": quality.summary(scored, cases, monitoring.k, seed=monitoring.seed),
    }


def monitor_batch(
    layout: Layout, batch: str, monitoring: MonitoringParams, mask_history: bool = True
) -> dict[str, Any]:
    """Drift of one appended batch against the reference, and the champion's quality on it as
    served: artifacts/monitoring/<batch>/{decision.json,report.html}, one row of the curve.
    ``mask_history`` is the protocol's (evaluate.mask_history): repeats ranked or not."""
    reference, current, _ = batch_slices(layout, batch)
    vectoriser = quality.text_vectoriser(current["items"])
    measured = batch_quality(layout, batch, monitoring, vectoriser, mask_history)
    decision = assess(
        batch,
        reference,
        current,
        monitoring,
        out_dir=layout.monitoring / batch,
        vectoriser=vectoriser,
        quality=measured,
    )
    write_text(
        quality.curve_csv(quality.curve_rows(curve_entries(layout))), layout.monitoring / CURVE
    )
    out = decision.to_dict()
    out["quality"] = measured
    out["data_version"] = current_version(layout.data)
    out["report"] = str(layout.monitoring / batch / "report.html")
    return out


def curve_entries(layout: Layout) -> list[tuple[str, str, dict[str, Any]]]:
    """(batch, drift status, quality) of every monitored batch, in ledger order."""
    out = []
    for entry in read_ledger(layout.data)[1:]:
        path = layout.monitoring / entry["batch"] / "decision.json"
        if path.exists():
            decision = json.loads(path.read_text())
            if decision.get("quality"):
                out.append((entry["batch"], decision["status"], decision["quality"]))
    return out


def monitored(layout: Layout, batch: str) -> bool:
    return (layout.monitoring / batch / "decision.json").exists()


def unmonitored_batches(layout: Layout) -> list[str]:
    """Appended batches without a decision yet (the initial snapshot is the reference: skipped)."""
    return [e["batch"] for e in read_ledger(layout.data)[1:] if not monitored(layout, e["batch"])]


# ---- retrain --------------------------------------------------------------------------------


def lineage(layout: Layout) -> dict[str, Any]:
    return json.loads(layout.lineage.read_text()) if layout.lineage.exists() else {"runs": {}}


def already_retrained(layout: Layout, version: str) -> bool:
    return version in lineage(layout)["runs"]


def repro(layout: Layout) -> dict[str, Any]:
    """`dvc repro` (or $RECOPS_REPRO_CMD) in the layout's root; its package stage blesses.

    Returns blessing.json plus ``trained_on``: the data version and ledger length data/ had
    when the run started (the DAG runs it in the pool appends use too, so data/ holds still).
    The command's output is appended to the repro log (the stages log what they read, wrote
    and how long it took); a failure raises with its last lines.
    """
    trained_on = {
        "data_version": current_version(layout.data),
        "ledger_batches": len(read_ledger(layout.data)),
    }
    command = shlex.split(os.environ.get(REPRO_ENV) or "dvc repro")
    path = layout.repro_log
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
        handle.flush()
        done = subprocess.run(
            command, cwd=layout.root, stdout=handle, stderr=subprocess.STDOUT, check=False
        )
    if done.returncode != 0:
        tail = path.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {' | '.join(tail)}")
    blessing = layout.blessing
    out = json.loads(blessing.read_text()) if blessing.exists() else {"blessed": False}
    return {"released": None, **out, "trained_on": trained_on}


def bundle_path(layout: Layout, model_tag: str) -> Path:
    """The bundle folder of a released model in the layout's BentoML model store.

    BentoML keeps a model ``name:version`` under ``<home>/models/<name>/<version>/``; read
    from the path rather than through ``bentoml`` so a task never imports BentoML (which
    fixes its home on first import) just to find a folder.
    """
    name, _, version = model_tag.partition(":")
    path = layout.bentoml_home / "models" / name / version
    if not (path / "model.yaml").is_file():
        raise FileNotFoundError(f"model {model_tag} is not in the store {layout.bentoml_home}")
    return path


def serve_env(layout: Layout) -> dict[str, str]:
    """What a served Bento of this layout needs: its store, and the local token if made."""
    env = {
        "BENTOML_HOME": str(layout.bentoml_home),
        # the live state the loop pushes appended batches into (else a Bento would look
        # for it inside its own folder in the store)
        LIVE_STATE_ENV: os.environ.get(LIVE_STATE_ENV) or str(layout.live_state),
    }
    if layout.serve_token.is_file():
        env["RECOPS_API_TOKEN_FILE"] = str(layout.serve_token)
    return env


def deploy_release(
    layout: Layout, blessing: dict[str, Any], version: str, retrain: RetrainParams
) -> dict[str, Any]:
    """Serve a newly released Bento once ready; returns what is served afterwards.

    Raises ``deploy.NotReady`` when the new server does not answer /readyz within
    ``retrain.ready_timeout`` seconds: the old one, and current.json, stay as they were.
    """
    released, serving = blessing.get("released"), deploy.current(layout.serving)
    if not blessing.get("blessed") or not released:
        return {"switched": False, "serving": serving, "why": "not blessed"}
    if serving and serving.get("bento") == released["bento"]:
        return {"switched": False, "serving": serving, "why": "already serving it"}
    challenger = blessing.get("challenger") or {}
    trained_on = blessing.get("trained_on") or {}
    extra = {
        "model": released.get("model"),
        # what it replaces keeps being scored beside it: did the switch serve users better?
        "previous_bundle": (serving or {}).get("bundle"),
        "data_version": trained_on.get("data_version", version),
        "ledger_batches": trained_on.get("ledger_batches", len(read_ledger(layout.data))),
        "valid": challenger.get("valid"),
        "bundle": str(bundle_path(layout, released["model"])),
    }
    served = deploy.deploy(
        released["bento"],
        layout.serving,
        ready_timeout=retrain.ready_timeout,
        env=serve_env(layout),
        extra=extra,
    )
    return {"switched": True, "serving": served}


def record_lineage(
    layout: Layout, version: str, blessing: dict[str, Any], served: dict[str, Any] | None
) -> dict[str, Any]:
    """data version -> model: which snapshot produced which model (the card's data_hash too)."""
    state = lineage(layout)
    trained_on = blessing.get("trained_on") or {}
    ledger = [e["batch"] for e in read_ledger(layout.data)]
    entry = {
        "data_version": version,
        "ledger": ledger[: trained_on.get("ledger_batches", len(ledger))],
        "blessed": bool(blessing.get("blessed")),
        "released": blessing.get("released"),
        "reasons": blessing.get("reasons", []),
        "serving": None if served is None else served.get("bento"),
    }
    state["runs"][version] = entry
    write_json(state, layout.lineage)
    return entry


def events_count(layout: Layout) -> int:
    path = layout.interactions
    return 0 if not path.exists() else len(pd.read_parquet(path, columns=[schema.USER_ID]))


# ---- Airflow callbacks (plain functions of the context dict: no Airflow import here) -------


def failure_line(context: dict[str, Any], layout: Layout | None = None) -> str:
    """One readable line per failed task, appended to the layout's failures log."""
    ti = context.get("task_instance") or context.get("ti")
    dag_id = getattr(ti, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    run_id = getattr(ti, "run_id", context.get("run_id", "?"))
    error = context.get("exception")
    kind = type(error).__name__ if error else "error"
    line = f"FAILED {dag_id}.{task_id} run {run_id}: {kind}: {str(error)[:300]}"
    path = (layout or Layout.from_env()).failures_log
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(line + "\n")
    log.error(line)
    return line
