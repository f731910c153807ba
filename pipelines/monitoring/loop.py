"""The steps the ingest, monitor and retrain DAGs call, one function per task.

Every step reads and writes files in a ``Workspace`` (no state in memory between
steps), returns a small JSON-able dict for XCom, and is idempotent: a batch already
appended, a data version already retrained on, a model already served is a no-op.
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

from pipelines import schema
from pipelines.config import IngestParams
from pipelines.data.append import (
    append_batch,
    current_version,
    read_ledger,
    read_snapshot,
    track_with_dvc,
)
from pipelines.data.privacy import PUBLIC_DEMO_KEY
from pipelines.io import write_json
from pipelines.monitoring import deploy as deploy_mod
from pipelines.monitoring.drift import assess
from pipelines.monitoring.quality import popularity_ranker
from pipelines.monitoring.settings import Workspace, load_settings

log = logging.getLogger(__name__)

REPRO_ENV = (
    "RECOPS_REPRO_CMD"  # the training command; `dvc repro` unless set (tests set a tiny one)
)
BLESSING = Path("artifacts") / "release" / "blessing.json"


def _ingest_params(ws: Workspace) -> IngestParams:
    import yaml

    raw = (yaml.safe_load(ws.params.read_text()) or {}) if ws.params.exists() else {}
    return IngestParams.model_validate(raw.get("ingest", {}))


# ---- ingest ---------------------------------------------------------------------------------


def pending_batches(ws: Workspace) -> list[str]:
    """Landed batch folders not processed yet, oldest name first."""
    if not ws.landing.is_dir():
        return []
    return sorted(p.name for p in ws.landing.iterdir() if p.is_dir() and not p.name.startswith("."))


def ingest_batch(ws: Workspace, name: str) -> dict[str, Any]:
    """Append (or quarantine) one landed batch, then move it out of the landing folder."""
    settings = load_settings(ws.params)
    key = PUBLIC_DEMO_KEY if settings.replay.demo_key else None
    result = append_batch(
        _ingest_params(ws),
        ws.landing / name,
        data_dir=ws.data,
        quarantine_dir=ws.quarantine,
        key=key,
        key_path=ws.root / ".secrets" / "pseudonym.key",
    )
    if result.accepted and ws.is_dvc_project:
        track_with_dvc(ws.data, ws.root)  # data.dvc names the new snapshot
    ws.processed.mkdir(parents=True, exist_ok=True)
    target = ws.processed / name
    if target.exists():
        shutil.rmtree(target)
    os.replace(ws.landing / name, target)
    return result.to_dict()


# ---- monitor --------------------------------------------------------------------------------


def _reference_batches(ws: Workspace) -> int:
    """How many ledger batches the champion was trained on (all before the first training)."""
    record = deploy_mod.current(ws.serving)
    if record and "ledger_batches" in record:
        return int(record["ledger_batches"])
    return 1  # before any retrain the initial snapshot is the reference


def batch_slices(
    ws: Workspace, batch: str
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], pd.DataFrame]:
    """(reference, batch, history) cut from data/ by the ledger's row counts (append keeps order).

    The reference is what the champion was trained on (drift is measured against it); the
    history is every event before the batch (the users' histories when the champion is scored
    on it, trained on or not).
    """
    ledger = read_ledger(ws.data)
    names = [e["batch"] for e in ledger]
    position = names.index(batch)
    ends = pd.Series([e["rows"]["interactions"] for e in ledger]).cumsum().tolist()
    snapshot = read_snapshot(ws.data)
    events = snapshot["interactions"]
    ref_end = ends[min(_reference_batches(ws), position) - 1] if position else 0
    start = ends[position - 1] if position else 0
    reference = {**snapshot, "interactions": events.iloc[:ref_end].reset_index(drop=True)}
    current = {
        **snapshot,
        "interactions": events.iloc[start : ends[position]].reset_index(drop=True),
    }
    return reference, current, events.iloc[:start].reset_index(drop=True)


def champion_scorer(ws: Workspace, reference: dict[str, pd.DataFrame]):
    """(ranker, vectoriser) of what is served; popularity without vectors before a release."""
    record = deploy_mod.current(ws.serving) or {}
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


def baseline_ndcg(ws: Workspace) -> float | None:
    """The served champion's NDCG on its first week in service (None before it has one)."""
    served = deploy_mod.current(ws.serving) or {}
    saved = json.loads(ws.baseline.read_text()) if ws.baseline.exists() else {}
    if served.get("bento") and saved.get("bento") == served["bento"]:
        return float(saved["ndcg"])
    return None


def monitor_batch(ws: Workspace, batch: str) -> dict[str, Any]:
    """Drift of one appended batch against the reference: artifacts/monitoring/<batch>/."""
    cfg = load_settings(ws.params).monitoring
    reference, current, history = batch_slices(ws, batch)
    ranker, vectoriser = champion_scorer(ws, reference)
    baseline = baseline_ndcg(ws)
    decision = assess(
        batch,
        reference,
        current,
        cfg,
        out_dir=ws.monitoring / batch,
        ranker=ranker,
        baseline_ndcg=baseline,
        vectoriser=vectoriser,
        history=history,
    )
    signals = decision.signals
    served = deploy_mod.current(ws.serving) or {}
    ndcg, users = signals.get(f"ndcg@{cfg.k}"), signals.get("ndcg_users", 0)
    # the first week with enough users to judge by becomes this champion's baseline
    first = baseline is None and served.get("bento") and ndcg is not None
    if first and users >= cfg.min_quality_users:
        record = {"bento": served["bento"], "batch": batch, "ndcg": ndcg, "users": users}
        write_json(record, ws.baseline)
    out = decision.to_dict()
    out["data_version"] = current_version(ws.data)
    out["report"] = str(ws.monitoring / batch / "report.html")
    return out


# ---- retrain --------------------------------------------------------------------------------


def lineage(ws: Workspace) -> dict[str, Any]:
    return json.loads(ws.retrain_state.read_text()) if ws.retrain_state.exists() else {"runs": {}}


def already_retrained(ws: Workspace, version: str) -> bool:
    return version in lineage(ws)["runs"]


def repro(ws: Workspace) -> dict[str, Any]:
    """`dvc repro` (or $RECOPS_REPRO_CMD) in the workspace; its package stage blesses, releases.

    Returns blessing.json plus ``trained_on``: the data version and ledger length data/ had
    when the run started (the DAG runs it in the pool appends use too, so data/ holds still).
    The command's output is appended to artifacts/orchestration/repro.log (the stages log
    what they read, wrote and how long it took); a failure raises with its last lines.
    """
    trained_on = {
        "data_version": current_version(ws.data),
        "ledger_batches": len(read_ledger(ws.data)),
    }
    command = shlex.split(os.environ.get(REPRO_ENV) or "dvc repro")
    path = ws.root / "artifacts" / "orchestration" / "repro.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
        handle.flush()
        done = subprocess.run(
            command, cwd=ws.root, stdout=handle, stderr=subprocess.STDOUT, check=False
        )
    if done.returncode != 0:
        tail = path.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {' | '.join(tail)}")
    blessing = ws.root / BLESSING
    out = json.loads(blessing.read_text()) if blessing.exists() else {"blessed": False}
    return {"released": None, **out, "trained_on": trained_on}


def bundle_path(ws: Workspace, model_tag: str) -> Path:
    """The bundle folder of a released model in the workspace's BentoML model store.

    BentoML keeps a model ``name:version`` under ``<home>/models/<name>/<version>/``; read
    from the path rather than through ``bentoml`` so a task never imports BentoML (which
    fixes its home on first import) just to find a folder.
    """
    name, _, version = model_tag.partition(":")
    path = ws.bentoml_home / "models" / name / version
    if not (path / "model.yaml").is_file():
        raise FileNotFoundError(f"model {model_tag} is not in the store {ws.bentoml_home}")
    return path


def serve_env(ws: Workspace) -> dict[str, str]:
    """What a served Bento of this workspace needs: its store, and the local token if made."""
    env = {"BENTOML_HOME": str(ws.bentoml_home)}
    token = ws.root / ".secrets" / "serve.token"
    if token.is_file():
        env["RECOPS_API_TOKEN_FILE"] = str(token)
    return env


def deploy_release(ws: Workspace, blessing: dict[str, Any], version: str) -> dict[str, Any]:
    """Serve a newly released Bento once ready; returns what is served afterwards.

    Raises ``deploy.NotReady`` when the new server does not answer /readyz within
    ``retrain.ready_timeout`` seconds: the old one, and current.json, stay as they were.
    """
    released, serving = blessing.get("released"), deploy_mod.current(ws.serving)
    if not blessing.get("blessed") or not released:
        return {"switched": False, "serving": serving, "why": "not blessed"}
    if serving and serving.get("bento") == released["bento"]:
        return {"switched": False, "serving": serving, "why": "already serving it"}
    challenger = blessing.get("challenger") or {}
    trained_on = blessing.get("trained_on") or {}
    extra = {
        "model": released.get("model"),
        "data_version": trained_on.get("data_version", version),
        "ledger_batches": trained_on.get("ledger_batches", len(read_ledger(ws.data))),
        "valid_ndcg": (challenger.get("valid") or {}).get("ndcg@10"),
        "bundle": str(bundle_path(ws, released["model"])),
    }
    served = deploy_mod.deploy(
        released["bento"],
        ws.serving,
        ready_timeout=load_settings(ws.params).retrain.ready_timeout,
        env=serve_env(ws),
        extra=extra,
    )
    return {"switched": True, "serving": served}


def record_lineage(
    ws: Workspace, version: str, blessing: dict[str, Any], served: dict[str, Any] | None
) -> dict[str, Any]:
    """data version -> model: which snapshot produced which model (the card's data_hash too)."""
    state = lineage(ws)
    trained_on = blessing.get("trained_on") or {}
    ledger = [e["batch"] for e in read_ledger(ws.data)]
    entry = {
        "data_version": version,
        "ledger": ledger[: trained_on.get("ledger_batches", len(ledger))],
        "blessed": bool(blessing.get("blessed")),
        "released": blessing.get("released"),
        "reasons": blessing.get("reasons", []),
        "serving": None if served is None else served.get("bento"),
    }
    state["runs"][version] = entry
    write_json(state, ws.retrain_state)
    return entry


def events_count(ws: Workspace) -> int:
    path = ws.data / "interactions.parquet"
    return 0 if not path.exists() else len(pd.read_parquet(path, columns=[schema.USER_ID]))


# ---- Airflow callbacks (plain functions of the context dict: no Airflow import here) -------


def failure_line(context: dict[str, Any]) -> str:
    """One readable line per failed task, appended to artifacts/orchestration/failures.log."""
    ti = context.get("task_instance") or context.get("ti")
    dag_id = getattr(ti, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    run_id = getattr(ti, "run_id", context.get("run_id", "?"))
    error = context.get("exception")
    kind = type(error).__name__ if error else "error"
    line = f"FAILED {dag_id}.{task_id} run {run_id}: {kind}: {str(error)[:300]}"
    ws = Workspace.from_env()
    path = ws.root / "artifacts" / "orchestration" / "failures.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(line + "\n")
    log.error(line)
    return line


def monitored(ws: Workspace, batch: str) -> bool:
    return (ws.monitoring / batch / "decision.json").exists()


def unmonitored_batches(ws: Workspace) -> list[str]:
    """Appended batches without a decision yet (the initial snapshot is the reference: skipped)."""
    return [e["batch"] for e in read_ledger(ws.data)[1:] if not monitored(ws, e["batch"])]
