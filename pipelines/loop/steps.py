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

import numpy as np
import pandas as pd

from pipelines.core import schema
from pipelines.core.config import IngestParams, MonitoringParams, ReplayParams, RetrainParams
from pipelines.core.io import write_json
from pipelines.core.paths import Layout
from pipelines.data.append import append_batch, track_with_dvc
from pipelines.data.privacy import PUBLIC_DEMO_KEY
from pipelines.data.snapshot import current_version, read_ledger, read_snapshot
from pipelines.loop import deploy
from pipelines.monitoring.drift import assess
from pipelines.monitoring.quality import popularity_ranker

log = logging.getLogger(__name__)

# the training command; `dvc repro` unless set (the DAG tests set a tiny one)
REPRO_ENV = "RECOPS_REPRO_CMD"


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
    layout.processed.mkdir(parents=True, exist_ok=True)
    target = layout.processed / name
    if source != target:
        if target.exists():
            shutil.rmtree(target)
        os.replace(source, target)
    return result.to_dict()


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


def champion_scorer(layout: Layout, reference: dict[str, pd.DataFrame]):
    """(ranker, vectoriser) of what is served; popularity without vectors before a release."""
    record = deploy.current(layout.serving) or {}
    bundle = record.get("bundle")
    if bundle and Path(bundle).is_dir():
        return bundle_scorer(Path(bundle))
    return popularity_ranker(reference["interactions"]), None


def bundle_scorer(bundle: Path):
    """(ranker, vectoriser) of one served bundle, loaded once."""
    from pipelines.inference.bundle import load_bundle
    from pipelines.monitoring.quality import ranker_of

    loaded = load_bundle(Path(bundle))
    index, vectors = loaded.catalogue.index, loaded.catalogue.vectors

    def vectorise(ids):
        rows = [vectors[index[i]] for i in ids if i in index]
        return None if not rows else np.stack(rows)

    return ranker_of(loaded), vectorise


def baseline_ndcg(layout: Layout) -> float | None:
    """The served champion's NDCG on its first week in service (None before it has one)."""
    served = deploy.current(layout.serving) or {}
    saved = json.loads(layout.baseline.read_text()) if layout.baseline.exists() else {}
    if served.get("bento") and saved.get("bento") == served["bento"]:
        return float(saved["ndcg"])
    return None


def monitor_batch(layout: Layout, batch: str, monitoring: MonitoringParams) -> dict[str, Any]:
    """Drift of one appended batch against the reference: artifacts/monitoring/<batch>/."""
    reference, current, history = batch_slices(layout, batch)
    ranker, vectoriser = champion_scorer(layout, reference)
    baseline = baseline_ndcg(layout)
    decision = assess(
        batch,
        reference,
        current,
        monitoring,
        out_dir=layout.monitoring / batch,
        ranker=ranker,
        baseline_ndcg=baseline,
        vectoriser=vectoriser,
        history=history,
    )
    signals = decision.signals
    served = deploy.current(layout.serving) or {}
    ndcg, users = signals.get(f"ndcg@{monitoring.k}"), signals.get("ndcg_users", 0)
    # the first week with enough users to judge by becomes this champion's baseline
    first = baseline is None and served.get("bento") and ndcg is not None
    if first and users >= monitoring.min_quality_users:
        record = {"bento": served["bento"], "batch": batch, "ndcg": ndcg, "users": users}
        write_json(record, layout.baseline)
    out = decision.to_dict()
    out["data_version"] = current_version(layout.data)
    out["report"] = str(layout.monitoring / batch / "report.html")
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
    env = {"BENTOML_HOME": str(layout.bentoml_home)}
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
        "data_version": trained_on.get("data_version", version),
        "ledger_batches": trained_on.get("ledger_batches", len(read_ledger(layout.data))),
        "valid_ndcg": (challenger.get("valid") or {}).get("ndcg@10"),
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
