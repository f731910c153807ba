"""The loop without Airflow: one replayed week through ingest → monitor → retrain → deploy.

The same steps the DAG tasks call (``loop.steps``), in the same order, for one week at a
time, with each step timed, in a replay workspace (``loop.workspace``). The replay entry
point (``pipelines/stages/replay.py``) runs week 0 (the initial snapshot: ingest, then the
first training) and then each weekly batch.

Each week is scored **before** it is trained on (the monitor step, design.md §6): the
champion as served (live history, a growing catalogue, its blend with what is popular
now), the same champion stale (frozen at its training), after a switch the champion it
replaced, popularity and the last 7 days' popularity, on every event of known users. The
table shows them with intervals; ``pooled`` adds up every week's cases for the verdicts
the loop is judged by.
"""

from __future__ import annotations

import logging
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
    curve_entries,
    deploy_release,
    ingest_batch,
    monitor_batch,
    record_lineage,
    repro,
)
from pipelines.monitoring import quality

log = logging.getLogger(__name__)

STEPS = ("land", "ingest", "monitor", "retrain", "deploy")  # as Week.seconds names them
SERVED, STALE, PREVIOUS = "as served", "stale", "previous champion, as served"
POPULAR, RECENT = "popularity", "popularity, last 7 days"


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
    quality: dict[str, Any] | None = None  # the monitor's prequential numbers (before training)
    gate: str = ""  # the blessing reason that decided (package stage)
    note: str = ""  # what went wrong in the switch, if anything
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metric(self, ranker: str, slice_name: str = "all") -> dict[str, Any] | None:
        """NDCG@k of a ranker on a slice of this week ({mean, low, high, ...}), if scored."""
        if not self.quality:
            return None
        k = self.quality["k"]
        return self.quality["slices"].get(slice_name, {}).get(ranker, {}).get(f"ndcg@{k}")

    def difference(self, ranker: str, slice_name: str = "all") -> dict[str, Any] | None:
        if not self.quality:
            return None
        k = self.quality["k"]
        entry = self.quality["slices"].get(slice_name, {}).get(ranker, {})
        return entry.get(f"ndcg@{k} vs popularity")


@contextmanager
def timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[step] = round(time.perf_counter() - started, 1)


def retrain(layout: Layout, week: Week, version: str, params: Params) -> None:
    """`dvc repro` (the gate and the release are its gate and package stages), then the
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
    """The blessing reason that decided: a failed floor, else the paired comparison."""
    failed = [r for r in reasons if r.startswith("floor") and r.endswith("failed")]
    compared = [r for r in reasons if r.startswith(("paired ", "no champion", "too few"))]
    others = [r for r in reasons if not r.startswith("floor")]
    return (failed or compared or others or reasons or [""])[0]


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
            decision = monitor_batch(
                layout, path.name, params.monitoring, params.evaluate.mask_history
            )
        week.decision, week.reason = decision["status"], decision["reasons"][0]
        week.quality = decision["quality"]
        if decision["drift"] or params.replay.retrain_on == "schedule":
            retrain(layout, week, version, params)
    week.champion = (deploy.current(layout.serving) or {}).get("bento")
    return week


# ---- the table -----------------------------------------------------------------------------


def _interval(value: dict[str, Any] | None, signed: bool = False) -> str:
    if not value or value.get("mean") is None:
        return "—"
    form = "+.4f" if signed else ".4f"
    return f"{value['mean']:{form}} [{value['low']:{form}}, {value['high']:{form}}]"


def _mean(value: dict[str, Any] | None) -> str:
    return "—" if not value or value.get("mean") is None else f"{value['mean']:.4f}"


def retrain_cell(week: Week) -> str:
    """What a retrain came to: switched, not blessed (and why), or blessed but not served."""
    if not week.retrained:
        return "—"
    if week.switched:
        return "switched" + ("" if week.week else " (first release)")
    if week.blessed:
        return f"blessed, not served: {week.note}"
    return f"not blessed: {week.gate}"


def row(week: Week) -> str:
    """One Markdown row: rows in and out, the decision, the retrain, the week's numbers as
    served and beside it (all scored before the week was trained on), seconds."""
    if week.status == "quarantined":
        rows = f"0 | {week.quarantined:,} ({week.rejected} failed a check)"
    else:
        rows = f"{week.accepted:,} | 0"
    decision = week.decision or ("initial snapshot" if week.week == 0 else week.status)
    reason = week.reason or ("first training" if week.week == 0 else "")
    cases = (week.quality or {}).get("slices", {}).get("all", {})
    cells = [
        str(week.week),
        week.batch,
        rows,
        f"{decision}: {reason}".replace("|", "/"),
        retrain_cell(week).replace("|", "/"),
        f"{cases.get('cases', 0):,} / {cases.get('users', 0)}",
        _interval(week.metric(SERVED)),
        _mean(week.metric(STALE)),
        _mean(week.metric(POPULAR)),
        _mean(week.metric(RECENT)),
        _interval(week.difference(SERVED), signed=True),
        f"{_mean(week.metric(SERVED, 'after a break'))} / "
        f"{_mean(week.metric(RECENT, 'after a break'))}",
        f"{_mean(week.metric(SERVED, 'first of week'))} / "
        f"{_mean(week.metric(RECENT, 'first of week'))}",
        _mean(week.metric(SERVED, "new users")),
        _mean(week.metric(PREVIOUS)),
        f"{sum(week.seconds.values()):.0f}",
    ]
    return f"| {' | '.join(cells)} |"


HEADER = (
    "| week | batch | accepted | quarantined | drift: main reason | retrain | cases / users | "
    "as served NDCG@10 [95%] | stale | popularity | 7-day popularity | as served − popularity "
    "| after a break: served / 7-day | first of week: served / 7-day | new users: served | "
    "previous champion, as served | seconds |\n"
    "|---:|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
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


def write_outputs(
    weeks: list[Week], layout: Layout, out: Path, header: str, k: int = 10
) -> list[str]:
    """weeks.md (the table, the verdicts, the timings), weeks.json (every field), quality.csv
    (the curve, one row per monitored week: the workspace's monitoring curve)."""
    table = "\n".join([HEADER, *(row(w) for w in weeks)])
    shown = verdicts(layout, weeks, k)
    listed = "\n".join(f"- {line}" for line in shown)
    write_text(f"{header}\n\n{table}\n\n{listed}\n\n{timing(weeks)}\n", out / "weeks.md")
    write_json(
        {"header": header, "weeks": [w.to_dict() for w in weeks], "verdicts": shown},
        out / "weeks.json",
    )
    write_text(quality.curve_csv(quality.curve_rows(curve_entries(layout))), out / "quality.csv")
    return shown


# ---- what the replay shows -----------------------------------------------------------------


def verdicts(layout: Layout, weeks: list[Week], k: int, seed: int = 42) -> list[str]:
    """The loop's targets (issue 16), each with its paired interval: as served against
    popularity in every week, after a break against the last 7 days' popularity and on all
    events over the whole stream, and after each switch against the champion it replaced."""
    from pipelines.evaluation.stats import mean_interval, paired_difference
    from pipelines.loop.steps import CASES

    lines = []
    scored_weeks = [w for w in weeks if w.metric(SERVED)]
    above = [w for w in scored_weeks if (w.difference(SERVED) or {}).get("mean", -1) >= 0]
    shown = [w for w in scored_weeks if (w.difference(SERVED) or {}).get("low", -1) > 0]
    lines.append(
        f"as served >= popularity: {len(above)} of {len(scored_weeks)} weeks "
        f"(interval above 0 in {len(shown)}); below: "
        + (", ".join(w.batch for w in scored_weeks if w not in above) or "none")
    )
    parts = [
        quality.load_cases(layout.monitoring / w.batch / CASES)
        for w in scored_weeks
        if (layout.monitoring / w.batch / CASES).exists()
    ]
    if parts:
        scored, cases = quality.pool(parts)
        by_name = {s.name: s for s in scored}
        known = cases.known
        served, recent = by_name.get(SERVED), by_name.get(RECENT)
        if served is not None:
            total = mean_interval(served.ndcg[known], cases.users[known], seed=seed)
            verdict = "met" if total.mean >= 0.075 else f"missed by {0.075 - total.mean:.4f}"
            lines.append(
                f"all events of known users, pooled over {len(parts)} weeks ({known.sum():,} "
                f"cases): as served NDCG@{k} {total.text()} (target >= 0.075: {verdict})"
            )
        if served is not None and recent is not None:
            mask = known & cases.after_break
            diff = paired_difference(
                served.ndcg[mask], recent.ndcg[mask], cases.users[mask], seed=seed
            )
            ours = mean_interval(served.ndcg[mask], cases.users[mask], seed=seed)
            theirs = mean_interval(recent.ndcg[mask], cases.users[mask], seed=seed)
            verdict = "met" if diff.mean >= 0 else f"missed by {-diff.mean:.4f}"
            lines.append(
                f"after a break (gap > 1 day, {mask.sum():,} cases): as served {ours.text()} vs "
                f"7-day popularity {theirs.text()}; difference {diff.text()} "
                f"(target >= 0: {verdict}; {diff.verdict})"
            )
    for position, before in enumerate(weeks):
        after = next((w for w in weeks[position + 1 :] if w.quality), None)
        if not before.switched or after is None or before.week == 0:
            continue
        path = layout.monitoring / after.batch / CASES
        if not path.exists():
            continue
        scored, cases = quality.load_cases(path)
        by_name = {s.name: s for s in scored}
        if SERVED not in by_name or PREVIOUS not in by_name:
            continue
        mask = cases.known
        diff = paired_difference(
            by_name[SERVED].ndcg[mask], by_name[PREVIOUS].ndcg[mask], cases.users[mask], seed=seed
        )
        verdict = "met" if diff.mean >= 0 else f"missed by {-diff.mean:.4f}"
        lines.append(
            f"after the switch in {before.batch}: {after.batch} as served by the new champion "
            f"vs the one it replaced, on the same {mask.sum():,} cases: {diff.text()} "
            f"(target >= 0: {verdict}; {diff.verdict})"
        )
    return lines
