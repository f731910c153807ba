"""The loop without Airflow: one replayed week through ingest → monitor → retrain → deploy.

The same steps the DAG tasks call (``loop.steps``), in the same order, for one week at a
time, with each step timed, in a replay workspace (``loop.workspace``). The replay entry
point (``pipelines/stages/replay.py``) runs week 0 (the initial snapshot: ingest, then the
first training) and then each weekly batch; ``write_outputs`` renders the table (one row
per week), the timings and the quality curve.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines.core.config import Params
from pipelines.core.io import write_json, write_text
from pipelines.core.paths import Layout
from pipelines.loop import deploy, stream
from pipelines.loop.steps import (
    batch_slices,
    bundle_scorer,
    deploy_release,
    ingest_batch,
    monitor_batch,
    record_lineage,
    repro,
)
from pipelines.monitoring.quality import next_item_ndcg, popularity_ranker

log = logging.getLogger(__name__)

STEPS = ("land", "ingest", "monitor", "retrain", "deploy", "score")  # as Week.seconds names them


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


def champion_ndcg(layout: Layout, batch: str, k: int) -> tuple[float | None, int]:
    """The served champion's next-item NDCG@k on an appended batch (histories: all before it)."""
    served = deploy.current(layout.serving) or {}
    if not served.get("bundle"):
        return None, 0
    _, current, history = batch_slices(layout, batch)
    ranker, _ = bundle_scorer(Path(served["bundle"]))
    return next_item_ndcg(history, current["interactions"], ranker, k)


def popularity_ndcg(layout: Layout, batch: str, k: int) -> tuple[float | None, int]:
    """NDCG@k on the same cases of the items most popular in everything before the batch: a
    floor, retrained every week for free, to read the champion's number against."""
    _, current, history = batch_slices(layout, batch)
    return next_item_ndcg(history, current["interactions"], popularity_ranker(history), k)


@contextmanager
def timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[step] = round(time.perf_counter() - started, 1)


def retrain(layout: Layout, week: Week, version: str, params: Params) -> None:
    """`dvc repro` (the blessing gate and the release are its package stage), then the
    readiness-checked switch, then the lineage; what happened goes into ``week``."""
    log.info("week %d: dvc repro in %s (log: %s)", week.week, layout.root, layout.repro_log)
    with timed(week.seconds, "retrain"):
        blessing = repro(layout)
    week.retrained, week.blessed = True, bool(blessing.get("blessed"))
    with timed(week.seconds, "deploy"):
        try:
            week.switched = deploy_release(layout, blessing, version, params.retrain)["switched"]
        except deploy.NotReady as err:
            week.note = str(err)
    served = deploy.current(layout.serving)
    record_lineage(layout, version, blessing, served)
    week.gate = gate_reason(blessing.get("reasons", []))


def gate_reason(reasons: list[str]) -> str:
    """The blessing reason that decided: a failed floor, else the champion comparison."""
    failed = [r for r in reasons if r.startswith("floor") and r.endswith("failed")]
    compared = [r for r in reasons if r.startswith(("valid ", "no champion"))]
    return (failed or compared or reasons or [""])[0]


def run_week(
    layout: Layout, feed: stream.Stream, number: int, params: Params, *, corrupted: bool = False
) -> Week:
    """Land week ``number`` (0: the initial snapshot) and take it through the loop."""
    week = Week(number, "")
    with timed(week.seconds, "land"):
        path = stream.drop_week(feed, layout.landing, number, corrupted=corrupted)
    week.batch = path.name
    with timed(week.seconds, "ingest"):
        result = ingest_batch(layout, path.name, params.ingest, params.replay)
    week.status = result["status"]
    counts = result["counts"].get("interactions", {})
    week.events = counts.get("input", 0)
    if week.status == "accepted":
        week.accepted = counts["accepted"]
    elif week.status == "quarantined":
        week.quarantined, week.rejected = counts["input"], counts["rejected"]
        week.reason = result["messages"][0] if result["messages"] else "quarantined"
    if week.status != "accepted":
        week.champion = (deploy.current(layout.serving) or {}).get("bento")
        return week
    version = result["data_version"]
    if number == 0:  # the initial snapshot: nothing to compare with, the first training
        retrain(layout, week, version, params)
    else:
        with timed(week.seconds, "monitor"):
            decision = monitor_batch(layout, path.name, params.monitoring)
        week.decision, week.reason = decision["status"], decision["reasons"][0]
        k = params.monitoring.k
        week.ndcg_before = decision["signals"].get(f"ndcg@{k}")
        week.users = int(decision["signals"].get("ndcg_users", 0))
        week.ndcg_popularity, _ = popularity_ndcg(layout, path.name, k)
        if decision["drift"]:
            retrain(layout, week, version, params)
        week.ndcg_after = week.ndcg_before
        if week.switched:
            with timed(week.seconds, "score"):
                week.ndcg_after, _ = champion_ndcg(layout, path.name, k)
    week.champion = (deploy.current(layout.serving) or {}).get("bento")
    return week


# ---- the table -----------------------------------------------------------------------------


def _ndcg(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def retrain_cell(week: Week) -> str:
    """What a retrain came to: switched, not blessed (and why), or blessed but not served."""
    if not week.retrained:
        return "—"
    compared = re.search(r"valid ndcg@10: ([0-9.]+) vs champion \S+ ([0-9.]+)", week.gate)
    why = f" (valid NDCG@10 {compared[1]} vs {compared[2]})" if compared else ""
    if week.switched:
        return f"switched{why or ' (first release)'}"
    if week.blessed:
        return f"blessed, not served: {week.note}"
    return f"not blessed{why or f': {week.gate}'}"


def row(week: Week) -> str:
    """One Markdown row: rows in and out, the decision and its main reason, what the retrain
    did, the champion's NDCG before and after, the popularity floor, seconds."""
    if week.status == "quarantined":
        rows = f"0 | {week.quarantined:,} ({week.rejected} failed a check)"
    else:
        rows = f"{week.accepted:,} | 0"
    decision = week.decision or ("initial snapshot" if week.week == 0 else week.status)
    reason = week.reason or ("first training" if week.week == 0 else "")
    cells = [
        str(week.week),
        week.batch,
        rows,
        f"{decision}: {reason}".replace("|", "/"),
        retrain_cell(week).replace("|", "/"),
        _ndcg(week.ndcg_before),
        _ndcg(week.ndcg_after),
        str(week.users),
        _ndcg(week.ndcg_popularity),
        f"{sum(week.seconds.values()):.0f}",
    ]
    return f"| {' | '.join(cells)} |"


HEADER = (
    "| week | batch | accepted | quarantined | decision: main reason | retrain | "
    "champion NDCG@10 before | after | users | popularity NDCG@10 | seconds |\n"
    "|---:|---|---:|---:|---|---|---:|---:|---:|---:|---:|"
)


def timing(weeks: list[Week]) -> str:
    """Mean seconds of one weekly cycle, with and without a retrain, and per step."""
    later = [w for w in weeks if w.week > 0 and w.status == "accepted"]
    lines = []
    for label, chosen in (
        ("without a retrain", [w for w in later if not w.retrained]),
        ("with a retrain", [w for w in later if w.retrained]),
    ):
        if not chosen:
            continue
        steps = dict.fromkeys(STEPS, 0.0)
        for w in chosen:
            for step, s in w.seconds.items():
                steps[step] = steps.get(step, 0.0) + s / len(chosen)
        steps = {step: s for step, s in steps.items() if s}
        total = sum(steps.values())
        parts = ", ".join(f"{step} {s:.0f}" for step, s in steps.items())
        lines.append(f"one weekly cycle {label}: {total:.0f} s (mean of {len(chosen)}; {parts})")
    return "\n".join(lines)


def quality_csv(weeks: list[Week]) -> str:
    """The curve `dvc plots` draws: one row per accepted weekly batch."""
    columns = ["week", "batch", "ndcg_before", "ndcg_after", "ndcg_popularity"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*columns, "retrained", "switched"])
    for w in weeks:
        if w.week == 0 or w.status != "accepted":
            continue
        writer.writerow([*(getattr(w, c) for c in columns), int(w.retrained), int(w.switched)])
    return out.getvalue()


def write_outputs(weeks: list[Week], out: Path, header: str) -> None:
    """weeks.md (the table and timings), weeks.json (every field), quality.csv (the curve)."""
    table = "\n".join([HEADER, *(row(w) for w in weeks)])
    write_text(f"{header}\n\n{table}\n\n{timing(weeks)}\n", out / "weeks.md")
    write_json({"header": header, "weeks": [w.to_dict() for w in weeks]}, out / "weeks.json")
    write_text(quality_csv(weeks), out / "quality.csv")
