"""The loop without Airflow: one replayed week through ingest → monitor → retrain → deploy.

The same steps the DAG tasks call (``monitoring.loop``), in the same order, for one week
at a time, with each step timed; the replay entry point (``pipelines/stages/replay.py``)
runs week 0 (the initial snapshot: ingest, then the first training) and then each weekly
batch, and prints the table.

Retraining is the real pipeline: ``dvc repro`` in a **replay workspace**, a copy of the
project (pipeline code, ``dvc.yaml``, ``params.yaml`` with the replay's overrides) with
its own ``data/``, ``artifacts/``, ``.bentoml/`` and DVC state, so a replay never touches
the project's data, models, ``data.dvc`` or ``dvc.lock``.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.data import replay
from pipelines.monitoring import deploy as deploy_mod
from pipelines.monitoring.loop import (
    batch_slices,
    bundle_scorer,
    deploy_release,
    ingest_batch,
    monitor_batch,
    record_lineage,
    repro,
)
from pipelines.monitoring.quality import next_item_ndcg, popularity_ranker
from pipelines.monitoring.settings import Workspace, load_settings

log = logging.getLogger(__name__)

# what a replay workspace copies from the project: the code `dvc repro` runs, the Bento's
# serving code, the pipeline definition (params.yaml is written, with the overrides)
PROJECT_FILES = ("dvc.yaml",)
PROJECT_FOLDERS = ("pipelines", "services")
CACHES = (Path(".cache") / "embeddings",)  # content-addressed: reusing them changes nothing


# ---- the replay workspace ----------------------------------------------------------------


def parse_overrides(lines: list[str]) -> dict[str, Any]:
    """``-S a.b=value`` lines (the ``dvc exp run`` format of ``profiles/*.args``) as a dict of
    dotted keys to YAML values; blank lines and ``#`` comments are skipped."""
    out: dict[str, Any] = {}
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        flag, _, assignment = line.partition(" ")
        key, sep, value = assignment.strip().partition("=")
        if flag != "-S" or not sep or not key:
            raise ValueError(f"expected '-S key=value', got {raw.strip()!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def with_overrides(params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``params`` with each dotted key set; its parent sections must exist, so a
    misspelt section fails here (a misspelt key fails when the stages validate params)."""
    out = yaml.safe_load(yaml.safe_dump(params))
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"{dotted}: params.yaml has no section {part!r} there")
            node = node[part]
        node[leaf] = value
    return out


def prepare_workspace(
    project: Path, root: Path, params: dict[str, Any], dvc: str = "dvc"
) -> Workspace:
    """A fresh replay workspace at ``root``: the project's code and pipeline, ``params``,
    the embedding cache, and its own DVC project (no git). An old one is removed first
    (after stopping the server it may still run)."""
    if root.exists():
        stop_serving(Workspace(root))
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for name in PROJECT_FILES:
        shutil.copy2(project / name, root / name)
    for name in PROJECT_FOLDERS:
        shutil.copytree(project / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for cache in CACHES:
        if (project / cache).is_dir():
            shutil.copytree(project / cache, root / cache)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = subprocess.run(
        [dvc, "init", "--no-scm", "--quiet"], cwd=root, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"dvc init in {root} failed: {(done.stderr or done.stdout).strip()}")
    return Workspace(root)


def stop_serving(ws: Workspace) -> str | None:
    """Stop the server the workspace's loop deployed (its own process group); its Bento tag."""
    served = deploy_mod.current(ws.serving)
    if not served or not served.get("pid"):
        return None
    deploy_mod.stop(int(served["pid"]))
    return served.get("bento")


# ---- one week ------------------------------------------------------------------------------


@dataclass
class Week:
    """What one replayed week did; ``seconds`` per step (land, ingest, monitor, retrain, deploy)."""

    week: int
    batch: str
    status: str = ""  # accepted | quarantined | duplicate
    events: int = 0
    accepted: int = 0
    quarantined: int = 0  # rows of a quarantined batch (none of them appended)
    rejected: int = 0  # of those, rows that failed a check
    decision: str = ""  # drift | no_drift | insufficient | "" (initial snapshot, quarantined)
    reason: str = ""
    retrained: bool = False
    blessed: bool | None = None
    switched: bool = False
    champion: str | None = None  # the model served after the week
    ndcg_before: float | None = None
    ndcg_after: float | None = None
    ndcg_popularity: float | None = None  # same cases, the most popular items so far: a floor
    users: int = 0  # users the NDCG averages over
    gate: str = ""  # the blessing reason that decided (package stage)
    note: str = ""  # what went wrong in the switch, if anything
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def champion_ndcg(ws: Workspace, batch: str) -> tuple[float | None, int]:
    """The served champion's next-item NDCG@k on an appended batch (histories: all before it)."""
    served = deploy_mod.current(ws.serving) or {}
    if not served.get("bundle"):
        return None, 0
    _, current, history = batch_slices(ws, batch)
    ranker, _ = bundle_scorer(Path(served["bundle"]))
    k = load_settings(ws.params).monitoring.k
    return next_item_ndcg(history, current["interactions"], ranker, k)


def popularity_ndcg(ws: Workspace, batch: str) -> tuple[float | None, int]:
    """NDCG@k on the same cases of the items most popular in everything before the batch: a
    floor, retrained every week for free, to read the champion's number against."""
    _, current, history = batch_slices(ws, batch)
    k = load_settings(ws.params).monitoring.k
    return next_item_ndcg(history, current["interactions"], popularity_ranker(history), k)


@contextmanager
def timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[step] = round(time.perf_counter() - started, 1)


def retrain(ws: Workspace, week: Week, version: str) -> None:
    """`dvc repro` (the blessing gate and the release are its package stage), then the
    readiness-checked switch, then the lineage; what happened goes into ``week``."""
    log.info(
        "week %d: dvc repro in %s (log: artifacts/orchestration/repro.log)", week.week, ws.root
    )
    with timed(week.seconds, "retrain"):
        blessing = repro(ws)
    week.retrained, week.blessed = True, bool(blessing.get("blessed"))
    with timed(week.seconds, "deploy"):
        try:
            week.switched = deploy_release(ws, blessing, version)["switched"]
        except deploy_mod.NotReady as err:
            week.note = str(err)
    served = deploy_mod.current(ws.serving)
    record_lineage(ws, version, blessing, served)
    week.gate = gate_reason(blessing.get("reasons", []))


def gate_reason(reasons: list[str]) -> str:
    """The blessing reason that decided: a failed floor, else the champion comparison."""
    failed = [r for r in reasons if r.startswith("floor") and r.endswith("failed")]
    compared = [r for r in reasons if r.startswith(("valid ", "no champion"))]
    return (failed or compared or reasons or [""])[0]


def run_week(ws: Workspace, stream: replay.Stream, number: int, *, corrupted: bool = False) -> Week:
    """Land week ``number`` (0: the initial snapshot) and take it through the loop."""
    week = Week(number, "")
    with timed(week.seconds, "land"):
        path = replay.drop_week(stream, ws.landing, number, corrupted=corrupted)
    week.batch = path.name
    with timed(week.seconds, "ingest"):
        result = ingest_batch(ws, path.name)
    week.status = result["status"]
    counts = result["counts"].get("interactions", {})
    week.events = counts.get("input", 0)
    if week.status == "accepted":
        week.accepted = counts["accepted"]
    elif week.status == "quarantined":
        week.quarantined, week.rejected = counts["input"], counts["rejected"]
        week.reason = result["messages"][0] if result["messages"] else "quarantined"
    if week.status != "accepted":
        week.champion = (deploy_mod.current(ws.serving) or {}).get("bento")
        return week
    version = result["data_version"]
    if number == 0:  # the initial snapshot: nothing to compare with, the first training
        retrain(ws, week, version)
    else:
        with timed(week.seconds, "monitor"):
            decision = monitor_batch(ws, path.name)
        week.decision, week.reason = decision["status"], decision["reasons"][0]
        k = load_settings(ws.params).monitoring.k
        week.ndcg_before = decision["signals"].get(f"ndcg@{k}")
        week.users = int(decision["signals"].get("ndcg_users", 0))
        week.ndcg_popularity, _ = popularity_ndcg(ws, path.name)
        if decision["drift"]:
            retrain(ws, week, version)
        week.ndcg_after = week.ndcg_before
        if week.switched:
            with timed(week.seconds, "score"):
                week.ndcg_after, _ = champion_ndcg(ws, path.name)
    week.champion = (deploy_mod.current(ws.serving) or {}).get("bento")
    return week
